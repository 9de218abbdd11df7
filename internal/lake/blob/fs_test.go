package blob_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/lake/blob"
	"github.com/cmk-project/cmk/internal/lake/blob/blobtest"
)

func newFS(t testing.TB, dir string, opts blob.FSOptions) *blob.FS {
	t.Helper()
	b, err := blob.NewFS(dir, opts)
	if err != nil {
		t.Fatalf("NewFS(%s) error: %v", dir, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestFSConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Backend {
		return newFS(t, t.TempDir(), blob.DefaultFSOptions())
	})
}

func TestFSConformanceNoFsync(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Backend {
		return newFS(t, t.TempDir(), blob.FSOptions{})
	})
}

func TestFSLock(t *testing.T) {
	dir := t.TempDir()
	b := newFS(t, dir, blob.FSOptions{})
	if _, err := blob.NewFS(dir, blob.FSOptions{}); err == nil {
		t.Fatal("second NewFS on an open directory succeeded, want an error")
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close error: %v", err)
	}
	newFS(t, dir, blob.FSOptions{})
}

// TestFSCleansStaging checks that NewFS deletes what a crashed Put left in
// staging/ and that List never shows it.
func TestFSCleansStaging(t *testing.T) {
	dir := t.TempDir()
	b := newFS(t, dir, blob.FSOptions{})
	if _, err := b.Put(context.Background(), "k", bytes.NewReader([]byte("v"))); err != nil {
		t.Fatal(err)
	}
	b.Close()
	stale := filepath.Join(dir, "staging", "put-123")
	if err := os.WriteFile(stale, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	b = newFS(t, dir, blob.FSOptions{})
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale temp file after NewFS: Stat error = %v, want not exist", err)
	}
	objs, err := b.List(context.Background(), "")
	if err != nil || len(objs) != 1 || objs[0].Key != "k" {
		t.Fatalf("List = %v, %v; want only k", objs, err)
	}
}

// TestFSDeletePrunesDirectories checks that deleting the last object of a
// dataset leaves no empty directories behind.
func TestFSDeletePrunesDirectories(t *testing.T) {
	dir := t.TempDir()
	b := newFS(t, dir, blob.FSOptions{})
	ctx := context.Background()
	for _, k := range []string{"o/s/d/1", "o/s/d/2", "o/x"} {
		if _, err := b.Put(ctx, k, bytes.NewReader(nil)); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"o/s/d/1", "o/s/d/2"} {
		if err := b.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "objects", "o.d", "s.d")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("objects/o.d/s.d after deleting its objects: Stat error = %v, want not exist", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "objects", "o.d", "x.f")); err != nil {
		t.Errorf("objects/o.d/x.f: %v", err)
	}
}

// zeros is an endless reader of zero bytes that costs no memory.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestFSPutMemory checks that a Put's memory does not grow with the object:
// a 256 MiB Put must keep the heap within a few MiB of where it started.
func TestFSPutMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 256 MiB")
	}
	checkPutMemory(t, newFS(t, t.TempDir(), blob.FSOptions{}), 256<<20, 16<<20)
}

// checkPutMemory Puts size bytes into b while sampling the heap, and fails
// if the heap in use grows by more than limit.
func checkPutMemory(t *testing.T, b blob.Backend, size, limit int64) {
	t.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, allocBase := ms.HeapInuse, ms.TotalAlloc

	peak := base
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	n, err := b.Put(context.Background(), "big", io.LimitReader(zeros{}, size))
	close(done)
	<-sampled
	if err != nil || n != size {
		t.Fatalf("Put = %d, %v; want %d, nil", n, err, size)
	}
	runtime.ReadMemStats(&ms)
	t.Logf("%d MiB Put: heap in use grew by %.1f MiB at peak; %.1f MiB allocated in all",
		size>>20, float64(peak-base)/(1<<20), float64(ms.TotalAlloc-allocBase)/(1<<20))
	if int64(peak-base) > limit {
		t.Fatalf("%d MiB Put grew the heap by %d MiB, want at most %d MiB", size>>20, (peak-base)>>20, limit>>20)
	}
}

const benchSize = 64 << 20

func BenchmarkFSPut(b *testing.B) {
	be := newFS(b, b.TempDir(), blob.DefaultFSOptions())
	ctx := context.Background()
	data := bytes.Repeat([]byte("0123456789abcdef"), benchSize/16)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for i := range b.N {
		if _, err := be.Put(ctx, fmt.Sprintf("bench/%d", i%4), bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFSGet(b *testing.B) {
	be := newFS(b, b.TempDir(), blob.DefaultFSOptions())
	ctx := context.Background()
	if _, err := be.Put(ctx, "bench/obj", io.LimitReader(zeros{}, benchSize)); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for range b.N {
		rc, _, err := be.Get(ctx, "bench/obj")
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{rc}, buf)
		rc.Close()
		if err != nil || n != benchSize {
			b.Fatalf("read %d, %v; want %d", n, err, benchSize)
		}
	}
}
