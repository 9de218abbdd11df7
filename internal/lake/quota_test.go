package lake

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/lake/blob"
	"github.com/cmk-project/cmk/internal/usage"
)

// listBackend lists objects whose sizes the test sets, and counts the
// calls; the tracker uses nothing else of a backend.
type listBackend struct {
	blob.Backend
	mu    sync.Mutex
	sizes []int64
	calls atomic.Int32
}

func (b *listBackend) List(_ context.Context, prefix string) ([]blob.Object, error) {
	b.calls.Add(1)
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []blob.Object
	for _, s := range b.sizes {
		out = append(out, blob.Object{Key: prefix + "x", Size: s})
	}
	return out, nil
}

func (b *listBackend) set(sizes ...int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sizes = sizes
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTracker() (*usageTracker, *listBackend, *fakeClock) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	return &usageTracker{usage.Tracker[usage.Int]{Now: clk.now}}, &listBackend{}, clk
}

func TestClaimWithinQuota(t *testing.T) {
	tr, b, clk := newTracker()
	q := Quota{OrgBytes: 1000}.WithDefaults()
	b.set(300, 200)
	c := tr.claim(b, "org", q)
	if err := c.grow(t.Context(), 500); err != nil {
		t.Fatalf("grow(500) with 500 of 1000 stored = %v, want nil", err)
	}
	err := tr.claim(b, "org", q).grow(t.Context(), 1)
	var le *LimitError
	if !errors.As(err, &le) || le.Err != ErrOrgFull || le.Limit != 1000 || le.Used != 1000 {
		t.Fatalf("a second upload's first byte while the first holds the rest = %v, want ErrOrgFull, 1000 of 1000", err)
	}
	c.end(510) // stored, sealed
	clk.step(recountAfter)
	b.set(300, 200, 510)
	if err := tr.claim(b, "org", q).grow(t.Context(), 1); !errors.Is(err, ErrOrgFull) {
		t.Errorf("grow(1) with 1010 of 1000 stored = %v, want ErrOrgFull", err)
	}
	if n := b.calls.Load(); n != 2 {
		t.Errorf("listed %d times, want 2 (once at first, once before refusing on a count %v old)", n, recountAfter)
	}
}

func TestClaimFailedUploadIsReleased(t *testing.T) {
	tr, b, _ := newTracker()
	q := Quota{OrgBytes: 100}.WithDefaults()
	c := tr.claim(b, "org", q)
	if err := c.grow(t.Context(), 100); err != nil {
		t.Fatal(err)
	}
	c.end(0)
	if err := c.grow(t.Context(), 1); !errors.Is(err, errClaimEnded) {
		t.Errorf("grow after end = %v, want errClaimEnded", err)
	}
	if err := tr.claim(b, "org", q).grow(t.Context(), 100); err != nil {
		t.Errorf("an upload after a failed one = %v, want its room back", err)
	}
}

func TestClaimSeesDeletesAfterRecountAfter(t *testing.T) {
	tr, b, clk := newTracker()
	q := Quota{OrgBytes: 100}.WithDefaults()
	b.set(100)
	if err := tr.claim(b, "org", q).grow(t.Context(), 1); !errors.Is(err, ErrOrgFull) {
		t.Fatalf("grow at the quota = %v, want ErrOrgFull", err)
	}
	b.set() // the file was deleted
	clk.step(recountAfter - time.Millisecond)
	if err := tr.claim(b, "org", q).grow(t.Context(), 1); !errors.Is(err, ErrOrgFull) {
		t.Fatalf("grow just after the delete = %v, want ErrOrgFull until the count is %v old", err, recountAfter)
	}
	clk.step(time.Millisecond)
	if err := tr.claim(b, "org", q).grow(t.Context(), 100); err != nil {
		t.Errorf("grow once the count is %v old = %v, want nil", recountAfter, err)
	}
}

func TestClaimCountsAgainAfterTTL(t *testing.T) {
	tr, b, clk := newTracker()
	q := Quota{OrgBytes: 1 << 20, UsageTTL: time.Minute}.WithDefaults()
	for range 5 {
		c := tr.claim(b, "org", q)
		if err := c.grow(t.Context(), 10); err != nil {
			t.Fatal(err)
		}
		c.end(10)
	}
	clk.step(time.Minute)
	if err := tr.claim(b, "org", q).grow(t.Context(), 10); err != nil {
		t.Fatal(err)
	}
	if n := b.calls.Load(); n != 2 {
		t.Errorf("listed %d times over 6 uploads and one TTL, want 2", n)
	}
}

// TestClaimConcurrent checks that uploads racing for the rest of a quota
// get no more than it, and share one listing.
func TestClaimConcurrent(t *testing.T) {
	tr, b, _ := newTracker()
	q := Quota{OrgBytes: 1000}.WithDefaults()
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			c := tr.claim(b, "org", q)
			for range 10 {
				if err := c.grow(t.Context(), 7); err != nil {
					if !errors.Is(err, ErrOrgFull) {
						t.Errorf("grow = %v", err)
					}
					return
				}
				admitted.Add(7)
			}
		})
	}
	wg.Wait()
	if n := admitted.Load(); n > 1000 || n < 1000-7 {
		t.Errorf("uploads racing for 1000 bytes claimed %d, want 994 to 1000", n)
	}
	if n := b.calls.Load(); n != 1 {
		t.Errorf("listed %d times, want 1", n)
	}
}

// TestMeteredStopsPastTheFileLimit checks that a stream of unknown length
// fails at the first read past the file limit, and not before.
func TestMeteredStopsPastTheFileLimit(t *testing.T) {
	tr, b, _ := newTracker()
	q := Quota{FileBytes: 1000, OrgBytes: 1 << 20}.WithDefaults()
	for _, tc := range []struct {
		size int
		want error
	}{{999, nil}, {1000, nil}, {1001, ErrFileTooLarge}, {5000, ErrFileTooLarge}} {
		c := tr.claim(b, "org", q)
		m := &metered{ctx: t.Context(), r: bytes.NewReader(make([]byte, tc.size)), limit: q.FileBytes, claim: c}
		n, err := io.Copy(io.Discard, m)
		if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
			t.Errorf("reading %d bytes under a limit of 1000 = %d, %v; want %v", tc.size, n, err, tc.want)
		}
		if n > 1000 {
			t.Errorf("reading %d bytes passed on %d, want at most the 1000 allowed", tc.size, n)
		}
		c.end(0)
	}
}
