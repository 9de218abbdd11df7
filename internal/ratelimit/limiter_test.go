package ratelimit

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// clock is a fake clock the tests step by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// step is one call of a script against a limiter: advance the clock, take
// need tokens of key, and expect ok or a refusal with wait.
type step struct {
	advance time.Duration
	key     string
	need    int
	ok      bool
	wait    time.Duration
}

func runSteps(t *testing.T, lim Limit, steps []step) {
	t.Helper()
	c := newClock()
	l := NewLimiter(lim, 100, c.Now)
	for i, s := range steps {
		c.Advance(s.advance)
		key := s.key
		if key == "" {
			key = "org1"
		}
		wait, ok := l.Take(key, max(s.need, 1))
		if ok != s.ok || wait != s.wait {
			t.Errorf("step %d: Take(%q, %d) after +%s = (%s, %v), want (%s, %v)", i, key, max(s.need, 1), s.advance, wait, ok, s.wait, s.ok)
		}
	}
}

func TestBucketRefill(t *testing.T) {
	// 6 per minute, burst 3: one token every 10 s, at most 3 held.
	runSteps(t, Limit{N: 6, Per: time.Minute, Burst: 3}, []step{
		{ok: true}, {ok: true}, {ok: true},
		{ok: false, wait: 10 * time.Second},                          // empty: the next token in 10 s
		{advance: 4 * time.Second, ok: false, wait: 6 * time.Second}, // refusals spend nothing
		{advance: 6 * time.Second, ok: true},                         // one token back
		{ok: false, wait: 10 * time.Second},
		{advance: 10 * time.Minute, ok: true}, // idle for long: full again, but never more than the burst
		{ok: true}, {ok: true},
		{ok: false, wait: 10 * time.Second},
		{key: "org2", ok: true}, // another key has its own bucket
	})
}

func TestRetryAfterValues(t *testing.T) {
	for _, tc := range []struct {
		lim  Limit
		want time.Duration // the wait after the burst is spent
	}{
		{Limit{N: 6, Per: time.Minute, Burst: 3}, 10 * time.Second},
		{Limit{N: 12, Per: time.Minute, Burst: 4}, 5 * time.Second},
		{Limit{N: 10, Per: time.Hour, Burst: 5}, 6 * time.Minute},
		{Limit{N: 30, Per: time.Hour, Burst: 10}, 2 * time.Minute},
		{Limit{N: 60, Per: time.Minute, Burst: 30}, time.Second},
		{Limit{N: 2, Per: time.Second}, 500 * time.Millisecond}, // burst 0 = N
	} {
		c := newClock()
		l := NewLimiter(tc.lim, 10, c.Now)
		for i := range tc.lim.burst() {
			if _, ok := l.Take("k", 1); !ok {
				t.Fatalf("%s: call %d of the burst refused", tc.lim, i+1)
			}
		}
		if wait, ok := l.Take("k", 1); ok || wait != tc.want {
			t.Errorf("%s: Take after the burst = (%s, %v), want (%s, false)", tc.lim, wait, ok, tc.want)
		}
	}
}

func TestHeadroom(t *testing.T) {
	// need asks for that many tokens to be held, and spends one.
	runSteps(t, Limit{N: 60, Per: time.Minute, Burst: 5}, []step{
		{need: 3, ok: true}, {need: 3, ok: true}, {need: 3, ok: true}, // 5 → 2 held
		{need: 3, ok: false, wait: time.Second},     // 2 held, 3 needed: one more second
		{need: 1, ok: true},                         // a single token is still there
		{need: 3, ok: false, wait: 2 * time.Second}, // 1 held
		{advance: 2 * time.Second, need: 3, ok: true},
		{need: 9, ok: false, wait: 3 * time.Second}, // need is capped at the burst (5; 2 held)
	})
}

func TestLimitString(t *testing.T) {
	for _, tc := range []struct {
		lim  Limit
		want string
	}{
		{Limit{N: 6, Per: time.Minute, Burst: 3}, "6 per minute (burst 3)"},
		{Limit{N: 10, Per: time.Hour, Burst: 5}, "10 per hour (burst 5)"},
		{Limit{N: 2, Per: time.Second}, "2 per second (burst 2)"},
		{Limit{N: 5, Per: 10 * time.Second, Burst: 1}, "5 per 10s (burst 1)"},
	} {
		if got := tc.lim.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.lim, got, tc.want)
		}
	}
}

// TestEvictionBound checks that no stream of keys grows the table past its
// bound, and that idle buckets go on their own.
func TestEvictionBound(t *testing.T) {
	c := newClock()
	const maxKeys = 100
	l := NewLimiter(Limit{N: 6, Per: time.Minute, Burst: 3}, maxKeys, c.Now)
	// An attacker with many orgs, all busy at once.
	for i := range 10_000 {
		l.Take(fmt.Sprintf("org%d", i), 1)
		if n := l.Len(); n > maxKeys {
			t.Fatalf("after %d keys the limiter holds %d buckets, want at most %d", i+1, n, maxKeys)
		}
	}
	if n := l.Len(); n != maxKeys {
		t.Errorf("Len() = %d, want %d (full of busy buckets)", n, maxKeys)
	}
	// Once every bucket has refilled, one busy key empties the table of
	// the idle ones as it calls.
	c.Advance(10 * time.Second)
	for range maxKeys {
		l.Take("busy", 1)
		c.Advance(10 * time.Second)
	}
	if n := l.Len(); n > 1 {
		t.Errorf("Len() after the others went idle = %d, want 1", n)
	}
}

// TestEvictedBucketStartsFull documents the cost of the bound: a busy key
// pushed out of a full table comes back with a fresh burst.
func TestEvictedBucketStartsFull(t *testing.T) {
	c := newClock()
	l := NewLimiter(Limit{N: 1, Per: time.Hour, Burst: 1}, 2, c.Now)
	if _, ok := l.Take("a", 1); !ok {
		t.Fatal("first call of a refused")
	}
	if _, ok := l.Take("a", 1); ok {
		t.Fatal("second call of a admitted within the hour")
	}
	l.Take("b", 1)
	l.Take("c", 1) // table full: a, the least recently used, goes
	if _, ok := l.Take("a", 1); !ok {
		t.Error("a after eviction refused; want a fresh bucket")
	}
}

func TestConcurrentTakesNeverExceedTheBurst(t *testing.T) {
	c := newClock()
	l := NewLimiter(Limit{N: 30, Per: time.Minute, Burst: 30}, 10, c.Now)
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := 0
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if _, ok := l.Take("vault", 1); ok {
					mu.Lock()
					admitted++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if admitted != 30 {
		t.Errorf("500 concurrent calls at one instant admitted %d, want the burst, 30", admitted)
	}
}
