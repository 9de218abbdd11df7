package usage

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

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

// backend answers a count with a figure the test sets, and counts the
// calls. Once block is set, a count signals started and waits for release.
type backend struct {
	mu     sync.Mutex
	figure Int
	calls  atomic.Int32
	// running and maxRunning count the counts in progress, and the most
	// there ever were at once.
	running, maxRunning atomic.Int32
	block               bool
	started             chan struct{}
	release             chan struct{}
}

func (b *backend) count(ctx context.Context) (Int, error) {
	b.calls.Add(1)
	now := b.running.Add(1)
	defer b.running.Add(-1)
	for {
		m := b.maxRunning.Load()
		if now <= m || b.maxRunning.CompareAndSwap(m, now) {
			break
		}
	}
	b.mu.Lock()
	block := b.block
	b.block = false
	b.mu.Unlock()
	if block {
		b.started <- struct{}{}
		<-b.release
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.figure, nil
}

func (b *backend) set(f Int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.figure = f
}

// blockNext makes the next count wait for release.
func (b *backend) blockNext() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.block = true
	b.started, b.release = make(chan struct{}, 1), make(chan struct{})
}

var errOver = errors.New("over")

// limit admits a growth by add while the figure stays within max.
func limit(add, max Int) func(used, held Int) error {
	return func(used, _ Int) error {
		if used+add > max {
			return errOver
		}
		return nil
	}
}

func newTracker() (*Tracker[Int], *backend, *fakeClock) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	return &Tracker[Int]{Now: clk.now}, &backend{}, clk
}

const ttl = time.Minute

func grow(t *testing.T, tr *Tracker[Int], b *backend, add, max Int) (*Claim[Int], error) {
	t.Helper()
	c := tr.Claim("org", ttl, b.count)
	return c, c.Grow(t.Context(), add, limit(add, max))
}

func TestCountsOncePerTTL(t *testing.T) {
	tr, b, clk := newTracker()
	for i := range 10 {
		c, err := grow(t, tr, b, 1, 100)
		if err != nil {
			t.Fatalf("grow %d = %v", i, err)
		}
		c.End(1)
	}
	if n := b.calls.Load(); n != 1 {
		t.Errorf("10 writes within the TTL counted %d times, want 1", n)
	}
	clk.step(ttl)
	if c, err := grow(t, tr, b, 1, 100); err != nil {
		t.Fatal(err)
	} else {
		c.End(1)
	}
	if n := b.calls.Load(); n != 2 {
		t.Errorf("a write after the TTL counted %d times in all, want 2", n)
	}
}

// TestPendingAndStored checks that what claims hold counts while they are
// under way, that End gives it back, and adds what was stored.
func TestPendingAndStored(t *testing.T) {
	tr, b, _ := newTracker()
	b.set(500)
	c, err := grow(t, tr, b, 500, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var seen, held Int
	err = tr.Claim("org", ttl, b.count).Grow(t.Context(), 1, func(used, h Int) error {
		seen, held = used, h
		return errOver
	})
	if !errors.Is(err, errOver) || seen != 1000 || held != 0 {
		t.Fatalf("a second claim while the first holds 500 saw %d (held %d), %v; want 1000, 0, errOver", seen, held, err)
	}
	if err := c.Grow(t.Context(), 10, func(used, h Int) error { seen, held = used, h; return nil }); err != nil || seen != 1000 || held != 500 {
		t.Fatalf("the first claim growing saw %d (held %d), %v; want 1000, 500", seen, held, err)
	}
	if got := c.Held(); got != 510 {
		t.Errorf("Held = %d, want 510", got)
	}
	c.End(0) // failed: its room comes back
	if _, err := grow(t, tr, b, 500, 1000); err != nil {
		t.Errorf("a claim after a failed one = %v, want its room back", err)
	}
	if err := c.Grow(t.Context(), 1, limit(1, 1<<20)); !errors.Is(err, ErrEnded) {
		t.Errorf("Grow after End = %v, want ErrEnded", err)
	}
	c2, err := grow(t, tr, b, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	c2.End(300) // stored more than it claimed
	err = tr.Claim("org", ttl, b.count).Grow(t.Context(), 0, func(used, _ Int) error { seen = used; return nil })
	if err != nil || seen != 500+500+300 {
		t.Errorf("figure = %d, %v; want 1300 (count, a claim under way, a write stored)", seen, err)
	}
}

// TestRecountsBeforeRefusing checks that a refusal is made only on a count
// under RecountAfter old, and that room freed meanwhile shows after it.
func TestRecountsBeforeRefusing(t *testing.T) {
	tr, b, clk := newTracker()
	b.set(100)
	if _, err := grow(t, tr, b, 1, 100); !errors.Is(err, errOver) {
		t.Fatalf("grow at the quota = %v, want errOver", err)
	}
	b.set(0) // deleted; the figure does not know
	clk.step(RecountAfter - time.Millisecond)
	if _, err := grow(t, tr, b, 1, 100); !errors.Is(err, errOver) {
		t.Fatalf("grow just after the delete = %v, want errOver until the count is %v old", err, RecountAfter)
	}
	if n := b.calls.Load(); n != 1 {
		t.Errorf("counted %d times, want 1 (the count was under %v old)", n, RecountAfter)
	}
	clk.step(time.Millisecond)
	if _, err := grow(t, tr, b, 100, 100); err != nil {
		t.Errorf("grow once the count is %v old = %v, want nil", RecountAfter, err)
	}
	// Over the quota on a count RecountAfter old: counted again, and
	// refused on that count, once.
	b.set(100)
	clk.step(RecountAfter)
	if _, err := grow(t, tr, b, 1, 100); !errors.Is(err, errOver) {
		t.Errorf("grow over the quota = %v, want errOver", err)
	}
	if n := b.calls.Load(); n != 3 {
		t.Errorf("counted %d times, want 3", n)
	}
}

// TestErrsHigh checks that a write that ends while a count runs, and is not
// in the count's result, still counts.
func TestErrsHigh(t *testing.T) {
	tr, b, clk := newTracker()
	a, err := grow(t, tr, b, 1, 2) // counts 0; write A under way
	if err != nil {
		t.Fatal(err)
	}
	clk.step(ttl)
	b.blockNext()
	errB := make(chan error, 1)
	var cB *Claim[Int]
	go func() {
		var err error
		cB, err = grow(t, tr, b, 1, 2)
		errB <- err
	}()
	<-b.started
	a.End(1)
	close(b.release)
	if err := <-errB; err != nil {
		t.Fatalf("write B = %v, want admitted", err)
	}
	cB.End(1)
	if _, err := grow(t, tr, b, 1, 2); !errors.Is(err, errOver) {
		t.Errorf("third write = %v, want errOver (write A lost from the figure)", err)
	}
}

// TestOneCountAtATime checks that claims racing for the rest of a quota
// get no more than it, and share one count.
func TestOneCountAtATime(t *testing.T) {
	tr, b, _ := newTracker()
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			c := tr.Claim("org", ttl, b.count)
			for range 10 {
				if err := c.Grow(t.Context(), 7, limit(7, 1000)); err != nil {
					if !errors.Is(err, errOver) {
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
		t.Errorf("claims racing for 1000 got %d, want 994 to 1000", n)
	}
	// Claims that arrive while the first count runs do not take its result
	// but share one later count (TestWaiterTakesOnlyALaterCount), so a
	// hundred racing claims cost one count, or two when some arrived
	// during the first; never one each.
	if n := b.calls.Load(); n < 1 || n > 2 {
		t.Errorf("counted %d times, want 1 or 2", n)
	}
	if n := b.maxRunning.Load(); n != 1 {
		t.Errorf("%d counts ran at once, want 1", n)
	}
}

// TestWaiterTakesOnlyALaterCount checks the single-flight rule: callers
// that ask while a count runs do not take its result (it may have missed
// what they saw), but wait and make one more count between them.
func TestWaiterTakesOnlyALaterCount(t *testing.T) {
	tr, b, _ := newTracker()
	asked := make(chan struct{}, 3)
	tr.waiting = func() { asked <- struct{}{} }
	b.blockNext()
	var wg sync.WaitGroup
	claim := func() {
		if _, err := grow(t, tr, b, 1, 100); err != nil {
			t.Errorf("grow = %v", err)
		}
	}
	wg.Go(claim) // A: the first count, held
	<-asked
	<-b.started
	wg.Go(claim) // B and C ask while A's count runs
	wg.Go(claim)
	<-asked
	<-asked
	close(b.release)
	wg.Wait()
	if n := b.calls.Load(); n != 2 {
		t.Errorf("counted %d times, want 2 (A's count, then one shared by B and C)", n)
	}
}

func TestOrgsApartAndForget(t *testing.T) {
	tr, b, _ := newTracker()
	b.set(10)
	for _, org := range []string{"a", "b"} {
		if err := tr.Claim(org, ttl, b.count).Grow(t.Context(), 90, limit(90, 100)); err != nil {
			t.Fatalf("org %s = %v", org, err)
		}
	}
	tr.Forget("a") // its claims are gone with it
	if err := tr.Claim("a", ttl, b.count).Grow(t.Context(), 90, limit(90, 100)); err != nil {
		t.Errorf("org a after Forget = %v, want a fresh figure", err)
	}
	if n := b.calls.Load(); n != 3 {
		t.Errorf("counted %d times, want 3 (a, b, a again)", n)
	}
}

func TestCountError(t *testing.T) {
	tr, _, _ := newTracker()
	boom := errors.New("boom")
	err := tr.Claim("org", ttl, func(context.Context) (Int, error) { return 0, boom }).Grow(t.Context(), 1, limit(1, 100))
	if !errors.Is(err, boom) {
		t.Errorf("grow on a failing count = %v, want its error", err)
	}
}
