// Package blobtest is the conformance suite for blob.Backend
// implementations. A backend's tests call Run; passing it is what makes a
// backend correct.
package blobtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/lake/blob"
)

// Run checks that the backends newBackend returns meet the blob.Backend
// contract. newBackend is called once per subtest and must return an empty
// backend that the subtest may use alone.
func Run(t *testing.T, newBackend func(t *testing.T) blob.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b blob.Backend)
	}{
		{"RoundTrip", testRoundTrip},
		{"Overwrite", testOverwrite},
		{"NotFound", testNotFound},
		{"Delete", testDelete},
		{"NestedKeys", testNestedKeys},
		{"List", testList},
		{"InvalidKeys", testInvalidKeys},
		{"FailingReader", testFailingReader},
		{"CancelMidPut", testCancelMidPut},
		{"WriterToSource", testWriterToSource},
		{"ConcurrentPuts", testConcurrentPuts},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newBackend(t)) })
	}
}

// data returns n bytes that differ with seed and position, so that a
// shifted, truncated or mixed-up object never compares equal.
func data(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed ^ byte(i) ^ byte(i>>8) ^ byte(i>>16)
	}
	return b
}

func put(t *testing.T, b blob.Backend, key string, want []byte) {
	t.Helper()
	n, err := b.Put(context.Background(), key, bytes.NewReader(want))
	if err != nil {
		t.Fatalf("Put(%q) error: %v", key, err)
	}
	if n != int64(len(want)) {
		t.Fatalf("Put(%q) = %d bytes, want %d", key, n, len(want))
	}
}

func get(t *testing.T, b blob.Backend, key string) []byte {
	t.Helper()
	rc, size, err := b.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q) error: %v", key, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%q) read error: %v", key, err)
	}
	if size != int64(len(got)) {
		t.Fatalf("Get(%q) size = %d, but read %d bytes", key, size, len(got))
	}
	return got
}

func wantObject(t *testing.T, b blob.Backend, key string, want []byte) {
	t.Helper()
	if got := get(t, b, key); !bytes.Equal(got, want) {
		t.Fatalf("Get(%q) = %d bytes (%s), want %d bytes (%s)", key, len(got), head(got), len(want), head(want))
	}
}

func head(b []byte) string {
	if len(b) > 8 {
		return fmt.Sprintf("%x…", b[:8])
	}
	return fmt.Sprintf("%x", b)
}

func wantNotFound(t *testing.T, b blob.Backend, key string) {
	t.Helper()
	rc, _, err := b.Get(context.Background(), key)
	if err == nil {
		rc.Close()
		t.Fatalf("Get(%q) succeeded, want ErrNotFound", key)
	}
	if !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Get(%q) error = %v, want ErrNotFound", key, err)
	}
}

func listKeys(t *testing.T, b blob.Backend, prefix string) []string {
	t.Helper()
	objs, err := b.List(context.Background(), prefix)
	if err != nil {
		t.Fatalf("List(%q) error: %v", prefix, err)
	}
	keys := []string{}
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	return keys
}

func wantList(t *testing.T, b blob.Backend, prefix string, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	got := listKeys(t, b, prefix)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("List(%q) = %q, want %q", prefix, got, want)
	}
}

func testRoundTrip(t *testing.T, b blob.Backend) {
	sizes := []int{0, 1, 64<<10 - 1, 64 << 10, 64<<10 + 1, 5<<20 + 3}
	for i, n := range sizes {
		key := fmt.Sprintf("org/sandbox/ds/size-%d", n)
		want := data(byte(i), n)
		put(t, b, key, want)
		wantObject(t, b, key, want)
	}
	objs, err := b.List(context.Background(), "org/sandbox/ds/")
	if err != nil {
		t.Fatalf("List error: %v", err)
	}
	if len(objs) != len(sizes) {
		t.Fatalf("List = %d objects, want %d", len(objs), len(sizes))
	}
	for _, o := range objs {
		var n int64
		fmt.Sscanf(o.Key, "org/sandbox/ds/size-%d", &n)
		if o.Size != n {
			t.Errorf("List: %q has Size %d, want %d", o.Key, o.Size, n)
		}
		if since := time.Since(o.Modified); since < -time.Hour || since > time.Hour {
			t.Errorf("List: %q has Modified %v, want about now", o.Key, o.Modified)
		}
	}
}

func testOverwrite(t *testing.T, b blob.Backend) {
	const key = "o/s/d/f"
	put(t, b, key, data(1, 5<<20+3))
	put(t, b, key, data(2, 10))
	wantObject(t, b, key, data(2, 10))
	put(t, b, key, data(3, 5<<20+3))
	wantObject(t, b, key, data(3, 5<<20+3))
	wantList(t, b, "", key)
}

func testNotFound(t *testing.T, b blob.Backend) {
	wantNotFound(t, b, "no/such/object")
	put(t, b, "a/b", data(0, 3))
	// Neighbours of an existing key are not it.
	for _, key := range []string{"a", "a/b/c", "a/bc", "a/b2"} {
		wantNotFound(t, b, key)
	}
	if err := b.Delete(context.Background(), "no/such/object"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Delete(missing) error = %v, want ErrNotFound", err)
	}
	wantList(t, b, "no/", []string{}...)
}

func testDelete(t *testing.T, b blob.Backend) {
	ctx := context.Background()
	put(t, b, "d/x/1", data(1, 100))
	put(t, b, "d/x/2", data(2, 100))
	if err := b.Delete(ctx, "d/x/1"); err != nil {
		t.Fatalf("Delete error: %v", err)
	}
	wantNotFound(t, b, "d/x/1")
	wantObject(t, b, "d/x/2", data(2, 100))
	if err := b.Delete(ctx, "d/x/1"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("second Delete error = %v, want ErrNotFound", err)
	}
	if err := b.Delete(ctx, "d/x/2"); err != nil {
		t.Fatalf("Delete error: %v", err)
	}
	wantList(t, b, "")
	// The key can be used again after Delete.
	put(t, b, "d/x/1", data(3, 7))
	wantObject(t, b, "d/x/1", data(3, 7))
}

// testNestedKeys checks that a key may be both an object and a prefix of
// other objects' keys, as in Azure.
func testNestedKeys(t *testing.T, b blob.Backend) {
	put(t, b, "n/a", data(1, 10))
	put(t, b, "n/a/b", data(2, 20))
	put(t, b, "n/a/b/c", data(3, 30))
	wantObject(t, b, "n/a", data(1, 10))
	wantObject(t, b, "n/a/b", data(2, 20))
	wantObject(t, b, "n/a/b/c", data(3, 30))
	wantList(t, b, "n/", "n/a", "n/a/b", "n/a/b/c")
	if err := b.Delete(context.Background(), "n/a/b"); err != nil {
		t.Fatalf("Delete error: %v", err)
	}
	wantList(t, b, "n/", "n/a", "n/a/b/c")
}

func testList(t *testing.T, b blob.Backend) {
	keys := []string{
		"a/b/1", "a/b/2", "a/b/sub/3", "a/bc/4", "a/b.x", "a/c/5",
		"b/1", "z", "Z", "a/b-", "a/b0",
	}
	for i, k := range keys {
		put(t, b, k, data(byte(i), i))
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"Z", "a/b-", "a/b.x", "a/b/1", "a/b/2", "a/b/sub/3", "a/b0", "a/bc/4", "a/c/5", "b/1", "z"}},
		{"a/b/", []string{"a/b/1", "a/b/2", "a/b/sub/3"}},
		{"a/b", []string{"a/b-", "a/b.x", "a/b/1", "a/b/2", "a/b/sub/3", "a/b0", "a/bc/4"}},
		{"a/b/s", []string{"a/b/sub/3"}},
		{"a/b/sub/3", []string{"a/b/sub/3"}},
		{"a/bc/", []string{"a/bc/4"}},
		{"a/", []string{"a/b-", "a/b.x", "a/b/1", "a/b/2", "a/b/sub/3", "a/b0", "a/bc/4", "a/c/5"}},
		{"b", []string{"b/1"}},
		{"q/", nil},
		{"a/b//", nil},
		{"a/../", nil},
		{"a/b/1/", nil},
	}
	for _, tc := range tests {
		wantList(t, b, tc.prefix, tc.want...)
	}
}

func testInvalidKeys(t *testing.T, b blob.Backend) {
	ctx := context.Background()
	bad := []string{
		"", "/a", "a/", "a//b", "..", "a/../b", "a/..", "./a", "a/./b",
		"a\x00b", "a\nb", "a\tb", "a\x7fb", "\xff\xfe",
		strings.Repeat("k", blob.MaxKeyLen+1),
		strings.Repeat("s/", blob.MaxKeyLen/2) + "x",
	}
	for _, key := range bad {
		if _, err := b.Put(ctx, key, bytes.NewReader([]byte("x"))); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Put(%q) error = %v, want ErrInvalidKey", key, err)
		}
		if _, _, err := b.Get(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Get(%q) error = %v, want ErrInvalidKey", key, err)
		}
		if err := b.Delete(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Delete(%q) error = %v, want ErrInvalidKey", key, err)
		}
	}
	wantList(t, b, "")

	// The longest key is fine, and so are dots and spaces inside segments.
	good := []string{
		strings.Repeat("kkkkkkkkk/", 80) + strings.Repeat("x", blob.MaxKeyLen-800),
		"a..b/.hidden/x.", "with space/ü/日本",
	}
	for i, key := range good {
		put(t, b, key, data(byte(i), 5))
		wantObject(t, b, key, data(byte(i), 5))
	}
}

// failingReader yields n bytes of data, then fails with err.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

var errBroken = errors.New("reader broke")

func testFailingReader(t *testing.T, b blob.Backend) {
	ctx := context.Background()
	const key = "f/s/d/obj"
	prior := data(9, 1000)
	put(t, b, key, prior)
	// Fail at the start, inside the first block, and after several blocks.
	for _, n := range []int{0, 100, 9<<20 + 5} {
		r := &failingReader{r: bytes.NewReader(data(1, n)), err: errBroken}
		if _, err := b.Put(ctx, key, r); !errors.Is(err, errBroken) {
			t.Fatalf("Put(reader failing after %d bytes) error = %v, want %v", n, err, errBroken)
		}
		wantObject(t, b, key, prior)

		r = &failingReader{r: bytes.NewReader(data(1, n)), err: errBroken}
		if _, err := b.Put(ctx, "f/s/d/new", r); !errors.Is(err, errBroken) {
			t.Fatalf("Put(new, reader failing after %d bytes) error = %v, want %v", n, err, errBroken)
		}
		wantNotFound(t, b, "f/s/d/new")
		wantList(t, b, "", key)
	}
}

// cancellingReader cancels its context after n bytes and keeps serving
// data, as a slow client would while the server gives up.
type cancellingReader struct {
	n      int
	cancel context.CancelFunc
	read   int
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	if c.read >= c.n {
		c.cancel()
	}
	if len(p) > 64<<10 {
		p = p[:64<<10]
	}
	for i := range p {
		p[i] = byte(c.read + i)
	}
	c.read += len(p)
	return len(p), nil
}

func testCancelMidPut(t *testing.T, b blob.Backend) {
	const key = "c/s/d/obj"
	prior := data(7, 300)
	put(t, b, key, prior)
	for _, n := range []int{0, 1 << 20, 9 << 20} {
		for _, k := range []string{key, "c/s/d/new"} {
			ctx, cancel := context.WithCancel(context.Background())
			_, err := b.Put(ctx, k, &cancellingReader{n: n, cancel: cancel})
			cancel()
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Put(%q) cancelled after %d bytes: error = %v, want context.Canceled", k, n, err)
			}
		}
		wantObject(t, b, key, prior)
		wantNotFound(t, b, "c/s/d/new")
		wantList(t, b, "", key)
	}
}

// writerTo is a source that can also write itself, as the lake's sealing
// source does; a backend may use either side, once.
type writerTo struct{ r io.Reader }

func (w *writerTo) Read(p []byte) (int, error) { return w.r.Read(p) }

func (w *writerTo) WriteTo(dst io.Writer) (int64, error) {
	buf := make([]byte, 100<<10)
	var total int64
	for {
		n, err := w.r.Read(buf)
		if n > 0 {
			m, werr := dst.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func testWriterToSource(t *testing.T, b blob.Backend) {
	ctx := context.Background()
	want := data(3, 5<<20+3)
	if n, err := b.Put(ctx, "w/s/d/obj", &writerTo{bytes.NewReader(want)}); err != nil || n != int64(len(want)) {
		t.Fatalf("Put(io.WriterTo source) = %d, %v, want %d, nil", n, err, len(want))
	}
	wantObject(t, b, "w/s/d/obj", want)
	for _, n := range []int{0, 100, 9<<20 + 5} {
		r := &failingReader{r: bytes.NewReader(data(1, n)), err: errBroken}
		if _, err := b.Put(ctx, "w/s/d/obj", &writerTo{r}); !errors.Is(err, errBroken) {
			t.Fatalf("Put(io.WriterTo source failing after %d bytes) error = %v, want %v", n, err, errBroken)
		}
		wantObject(t, b, "w/s/d/obj", want)
		wantNotFound(t, b, "w/s/d/new")
	}
	for _, n := range []int{0, 9 << 20} {
		ctx, cancel := context.WithCancel(context.Background())
		_, err := b.Put(ctx, "w/s/d/new", &writerTo{&cancellingReader{n: n, cancel: cancel}})
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Put(io.WriterTo source) cancelled after %d bytes: error = %v, want context.Canceled", n, err)
		}
		wantNotFound(t, b, "w/s/d/new")
	}
}

func testConcurrentPuts(t *testing.T, b blob.Backend) {
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("p/s/d/%d", i)
			want := data(byte(i), 4<<20+i*1000)
			if _, err := b.Put(context.Background(), key, bytes.NewReader(want)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Put error: %v", err)
	}
	for i := range workers {
		wantObject(t, b, fmt.Sprintf("p/s/d/%d", i), data(byte(i), 4<<20+i*1000))
	}
	if got := listKeys(t, b, "p/"); len(got) != workers {
		t.Fatalf("List(p/) = %d keys, want %d", len(got), workers)
	}
}
