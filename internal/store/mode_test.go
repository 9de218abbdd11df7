//go:build unix

package store

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestFileModes: the database and its -wal and -shm files are created 0600
// even with a umask that would let anyone read them.
func TestFileModes(t *testing.T) {
	defer syscall.Umask(syscall.Umask(0))
	dir := t.TempDir()
	s, err := Open(context.Background(), filepath.Join(dir, "cmk.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.EnsureOrg(context.Background(), "o1"); err != nil { // a write: the WAL is in use
		t.Fatal(err)
	}
	for _, name := range []string{"cmk.db", "cmk.db-wal", "cmk.db-shm"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("stat %s: %v", name, err)
			continue
		}
		if got := st.Mode().Perm(); got != 0o600 {
			t.Errorf("mode of %s = %v, want -rw-------", name, got)
		}
	}
}
