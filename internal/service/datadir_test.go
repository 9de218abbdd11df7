//go:build unix

package service

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func quiet() Config {
	return Config{Addr: "127.0.0.1:0", Workers: -1, NoMonitor: true, DevTokenIssuer: true, Log: slog.New(slog.DiscardHandler)}
}

// refused checks that New refused dir with an UnsafeDataDirError whose text
// names each of names and whose hint holds each of fixes.
func refused(t *testing.T, what string, err error, dir string, names, fixes []string) {
	t.Helper()
	var ue *UnsafeDataDirError
	if !errors.As(err, &ue) {
		t.Fatalf("New(%s) = %v, want an *UnsafeDataDirError", what, err)
	}
	if ue.Dir != dir || !strings.Contains(err.Error(), "will not start") {
		t.Errorf("New(%s) = %q, want a refusal naming %s", what, err, dir)
	}
	for _, n := range names {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("New(%s) = %q, want it to name %s", what, err, n)
		}
	}
	for _, f := range fixes {
		if !strings.Contains(ue.Hint(), f) {
			t.Errorf("New(%s) hint = %q, want it to hold %q", what, ue.Hint(), f)
		}
	}
}

func TestNewRefusesOpenDataDir(t *testing.T) {
	ctx := context.Background()
	cfg := quiet()

	// An open directory that holds state.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cmk.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(os.Chmod(dir, 0o755), os.Chmod(filepath.Join(dir, "cmk.db"), 0o600)); err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = dir
	_, err := New(ctx, cfg)
	refused(t, "directory 0755", err, dir, []string{dir + " (drwxr-xr-x)"}, []string{"chmod 700 " + dir})

	// A private directory holding open state.
	dir = t.TempDir()
	db := filepath.Join(dir, "cmk.db")
	lake := filepath.Join(dir, "lake")
	if err := os.WriteFile(db, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(lake, 0o700); err != nil {
		t.Fatal(err)
	}
	// Chmod, not the create mode: the umask must not decide the test.
	if err := errors.Join(os.Chmod(dir, 0o700), os.Chmod(db, 0o644), os.Chmod(lake, 0o750)); err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = dir
	_, err = New(ctx, cfg)
	refused(t, "cmk.db 0644, lake 0750", err, dir, []string{db + " (-rw-r--r--)", lake + " (drwxr-x---)"},
		[]string{"chmod 600 " + db, "chmod 700 " + lake})
	if strings.Contains(err.Error(), dir+" (") {
		t.Errorf("New(cmk.db 0644, lake 0750) = %q; it names the data directory, which is private", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "system.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused start created a system key (stat: %v); it must stop before touching anything", err)
	}
	if err := errors.Join(os.Chmod(db, 0o600), os.Chmod(lake, 0o700)); err != nil {
		t.Fatal(err)
	}
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New(after the hint's chmods) = %v, want a service", err)
	}
	s.Close()

	// An open directory that is still empty is made private.
	dir = t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = dir
	s, err = New(ctx, cfg)
	if err != nil {
		t.Fatalf("New(empty directory 0755) = %v, want a service", err)
	}
	s.Close()
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("empty data directory after New: %v, %v; want drwx------", st.Mode(), err)
	}
}

// TestNewRefusesOthersDataDir: a data directory owned by another user is
// refused. As root the test gives its directory to nobody; otherwise it
// points at one root owns.
func TestNewRefusesOthersDataDir(t *testing.T) {
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	} else {
		dir = "/"
	}
	err := checkDataDir(dir, slog.New(slog.DiscardHandler))
	var ue *UnsafeDataDirError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "owned by uid") || !strings.Contains(ue.Hint(), "chown") {
		t.Errorf("checkDataDir(another user's directory) = %v, want a refusal naming the owner, with a chown hint", err)
	}
}

// TestFreshStartIsPrivate: whatever the umask, a new data directory is
// 0700, and after the service has written state, lake objects and profile
// records, every directory in it is 0700 and every file 0600.
func TestFreshStartIsPrivate(t *testing.T) {
	defer syscall.Umask(syscall.Umask(0))
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	cfg := quiet()
	cfg.DataDir = dir
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const org = "ORGA@CmkOrg"
	if err := s.Control.EnsureOrg(ctx, org); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lake.Put(ctx, org, "prod", "events", "day1.json", strings.NewReader(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Profiles.Upsert(ctx, org, "prod", "p1", []byte(`{"name":"a"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MintDevToken("admin", org, nil, time.Minute); err != nil {
		t.Fatal(err)
	}

	var files int
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		} else {
			files++
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %s = %v, want %v", path, got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"cmk.db", "cmk.db-wal", "profiles.db", "system.key", "token-signing.pem"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("stat %s: %v; the walk should have covered it", name, err)
		}
	}
	if files < 7 {
		t.Errorf("walk saw %d files; want the databases with their -wal and -shm, both keys and a lake object", files)
	}
	if err := checkDataDir(dir, slog.New(slog.DiscardHandler)); err != nil {
		t.Errorf("checkDataDir(after a run) = %v, want nil", err)
	}
}
