package blob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cmk-project/cmk/internal/lake/blob"
	"github.com/cmk-project/cmk/internal/outage"
	"github.com/cmk-project/cmk/internal/testsvc"
)

// TestFSDurabilityFaults makes each call a Put's durability rests on fail
// (fsync of the data, the rename into place, fsync of the directory) and
// checks that the Put fails, that no new object is visible, that the object
// it was to replace is intact, that nothing is left in staging, and that
// the next Put, once the fault is gone, succeeds.
func TestFSDurabilityFaults(t *testing.T) {
	eio := func() error { return &os.PathError{Op: "fsync", Path: "x", Err: syscall.EIO} }
	for _, tc := range []struct {
		name   string
		faults blob.Faults
	}{
		{"sync file", blob.Faults{SyncFile: func(*os.File) error { return eio() }}},
		{"rename", blob.Faults{Rename: func(string, string) error { return eio() }}},
		{"sync directory", blob.Faults{SyncDir: func(string) error { return eio() }}},
	} {
		for _, replace := range []bool{false, true} {
			ctx := context.Background()
			dir := t.TempDir()
			b := newFS(t, dir, blob.DefaultFSOptions())
			const key = "org/sb/ds/file"
			old := []byte("the object before")
			if replace {
				if _, err := b.Put(ctx, key, bytes.NewReader(old)); err != nil {
					t.Fatal(err)
				}
			}
			blob.SetFaults(b, tc.faults)
			n, err := b.Put(ctx, key, bytes.NewReader(bytes.Repeat([]byte("new "), 5000)))
			if err == nil || !errors.Is(err, syscall.EIO) {
				t.Errorf("%s (replace %v): Put = %d, %v; want an error wrapping EIO", tc.name, replace, n, err)
			}
			got, gerr := get(b, key)
			switch {
			case replace && (gerr != nil || !bytes.Equal(got, old)):
				t.Errorf("%s: after the failed Put, Get = %q, %v; want the object before, intact", tc.name, got, gerr)
			case !replace && !errors.Is(gerr, blob.ErrNotFound):
				t.Errorf("%s: after the failed Put of a new key, Get = %d bytes, %v; want ErrNotFound", tc.name, len(got), gerr)
			}
			if left, _ := os.ReadDir(filepath.Join(dir, "staging")); len(left) != 0 {
				t.Errorf("%s (replace %v): staging holds %d entries after the failed Put, want none", tc.name, replace, len(left))
			}

			blob.SetFaults(b, blob.Faults{})
			want := []byte("after the fault")
			if _, err := b.Put(ctx, key, bytes.NewReader(want)); err != nil {
				t.Errorf("%s (replace %v): Put after the fault = %v", tc.name, replace, err)
			}
			if got, err := get(b, key); err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s (replace %v): Get after the fault = %q, %v; want %q", tc.name, replace, got, err, want)
			}
		}
	}
}

// TestFSFull runs a Put into a file system that is full for real and
// checks that it fails as Full, leaves nothing behind, and that the same
// Put succeeds once space is freed.
func TestFSFull(t *testing.T) {
	ctx := context.Background()
	dir := testsvc.SmallFS(t, 4<<20)
	b := newFS(t, filepath.Join(dir, "lake"), blob.DefaultFSOptions())
	old := []byte("kept")
	if _, err := b.Put(ctx, "o/s/d/f", bytes.NewReader(old)); err != nil {
		t.Fatal(err)
	}
	free := testsvc.Fill(t, dir)
	data := bytes.Repeat([]byte{7}, 256<<10)
	_, err := b.Put(ctx, "o/s/d/f", bytes.NewReader(data))
	if outage.Of(err) != outage.Full {
		t.Fatalf("Put on a full file system = %v, want an error classified full", err)
	}
	if got, err := get(b, "o/s/d/f"); err != nil || !bytes.Equal(got, old) {
		t.Errorf("after the failed Put, Get = %q, %v; want %q intact", got, err, old)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "lake", "staging")); len(left) != 0 {
		t.Errorf("staging holds %d entries after the failed Put, want none", len(left))
	}
	free()
	if _, err := b.Put(ctx, "o/s/d/f", bytes.NewReader(data)); err != nil {
		t.Fatalf("Put after freeing space = %v", err)
	}
	if got, err := get(b, "o/s/d/f"); err != nil || !bytes.Equal(got, data) {
		t.Errorf("Get after freeing space = %d bytes, %v; want %d identical", len(got), err, len(data))
	}
}

func get(b blob.Backend, key string) ([]byte, error) {
	rc, _, err := b.Get(context.Background(), key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// TestFSFloor: with MinFree set, a Put that finds no more free space than
// the floor, before it starts or while it writes, fails as storage full and
// stores nothing; without a floor, free space is never looked at.
func TestFSFloor(t *testing.T) {
	ctx := context.Background()
	const floor = 1 << 30
	for _, tc := range []struct {
		name   string
		free   []int64 // answers of the free-space call, in turn; the last repeats
		size   int
		stored bool
	}{
		{"room", []int64{floor + 64<<20}, 40 << 20, true},
		{"at the floor before it starts", []int64{floor}, 10, false},
		{"the floor reached while it writes", []int64{floor + 64<<20, floor - 1}, 40 << 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := blob.DefaultFSOptions()
			opts.MinFree = floor
			b := newFS(t, dir, opts)
			calls := 0
			blob.SetFaults(b, blob.Faults{Free: func(string) (int64, error) {
				v := tc.free[min(calls, len(tc.free)-1)]
				calls++
				return v, nil
			}})
			data := bytes.Repeat([]byte{9}, tc.size)
			_, err := b.Put(ctx, "o/s/d/f", bytes.NewReader(data))
			if tc.stored {
				if err != nil {
					t.Fatalf("Put with room above the floor = %v", err)
				}
				if got, err := get(b, "o/s/d/f"); err != nil || !bytes.Equal(got, data) {
					t.Errorf("Get = %d bytes, %v; want the %d written", len(got), err, len(data))
				}
				return
			}
			if outage.Of(err) != outage.Full || !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Put at the floor = %v, want ENOSPC, classified full", err)
			}
			if _, err := get(b, "o/s/d/f"); err == nil {
				t.Error("the refused object is visible")
			}
			if left, _ := os.ReadDir(filepath.Join(dir, "staging")); len(left) != 0 {
				t.Errorf("staging holds %d entries after the refused Put, want none", len(left))
			}
		})
	}

	b := newFS(t, t.TempDir(), blob.DefaultFSOptions())
	blob.SetFaults(b, blob.Faults{Free: func(string) (int64, error) { t.Error("free space looked at with no floor"); return 0, nil }})
	if _, err := b.Put(ctx, "o/s/d/f", bytes.NewReader(make([]byte, 20<<20))); err != nil {
		t.Fatal(err)
	}
}
