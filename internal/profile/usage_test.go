package profile

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/profile/records"
	"github.com/cmk-project/cmk/internal/usage"
)

// countingBackend answers Usage with a figure the test sets, and counts the
// calls; the tracker uses nothing else of a backend.
type countingBackend struct {
	records.Backend
	mu    sync.Mutex
	usage records.Usage
	calls atomic.Int32
}

func (b *countingBackend) Usage(context.Context, string) (records.Usage, error) {
	b.calls.Add(1)
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.usage, nil
}

func (b *countingBackend) set(u records.Usage) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.usage = u
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

func newTracker() (*usageTracker, *countingBackend, *fakeClock) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	return &usageTracker{usage.Tracker[records.Usage]{Now: clk.now}}, &countingBackend{}, clk
}

var one = records.Usage{Records: 1, Bytes: 100}

func TestUsageCountsOncePerTTL(t *testing.T) {
	tr, b, clk := newTracker()
	l := Limits{OrgRecords: 1000, OrgBytes: 1 << 20, UsageTTL: time.Minute}.WithDefaults()
	for i := range 10 {
		done, err := tr.reserve(t.Context(), b, "org", one, l)
		if err != nil {
			t.Fatalf("reserve %d = %v", i, err)
		}
		done(true)
	}
	if n := b.calls.Load(); n != 1 {
		t.Errorf("10 writes within the TTL counted %d times, want 1", n)
	}
	clk.step(time.Minute)
	if done, err := tr.reserve(t.Context(), b, "org", one, l); err != nil {
		t.Fatal(err)
	} else {
		done(true)
	}
	if n := b.calls.Load(); n != 2 {
		t.Errorf("a write after the TTL counted %d times in all, want 2", n)
	}
}

func TestUsageRefusesOnAFreshCountOnly(t *testing.T) {
	tr, b, clk := newTracker()
	l := Limits{OrgRecords: 3, OrgBytes: 1 << 20}.WithDefaults()
	b.set(records.Usage{Records: 2, Bytes: 200})
	done, err := tr.reserve(t.Context(), b, "org", one, l)
	if err != nil {
		t.Fatalf("third record = %v, want admitted", err)
	}
	done(true)
	// A fourth is over; the count is fresh, so it is refused at once.
	_, err = tr.reserve(t.Context(), b, "org", one, l)
	var le *LimitError
	if !errors.Is(err, ErrOrgRecords) || !errors.As(err, &le) || le.Limit != 3 || le.Used != 3 {
		t.Fatalf("fourth record = %v, want ErrOrgRecords with Limit 3, Used 3", err)
	}
	if n := b.calls.Load(); n != 1 {
		t.Errorf("counted %d times, want 1 (the count was under %v old)", n, recountAfter)
	}
	// Records were deleted meanwhile (the tracker does not see deletes).
	// Once the count is older than recountAfter, a write over the figure
	// makes a new count, which admits it.
	b.set(records.Usage{Records: 1, Bytes: 100})
	clk.step(recountAfter)
	done, err = tr.reserve(t.Context(), b, "org", one, l)
	if err != nil {
		t.Fatalf("record after deletes = %v, want admitted on a new count", err)
	}
	done(true)
	if n := b.calls.Load(); n != 2 {
		t.Errorf("counted %d times, want 2", n)
	}
}

func TestUsageRecountsAfterADelete(t *testing.T) {
	tr, b, clk := newTracker()
	l := Limits{OrgRecords: 1, OrgBytes: 1 << 20}.WithDefaults()
	done, err := tr.reserve(t.Context(), b, "org", one, l)
	if err != nil {
		t.Fatal(err)
	}
	done(true)
	b.set(records.Usage{Records: 1, Bytes: 100})
	if _, err := tr.reserve(t.Context(), b, "org", one, l); !errors.Is(err, ErrOrgRecords) {
		t.Fatalf("second record = %v, want ErrOrgRecords", err)
	}
	// The record is deleted. Within recountAfter of the count the figure
	// stands; after it, a write is counted again and admitted.
	b.set(records.Usage{})
	clk.step(recountAfter - time.Millisecond)
	if _, err := tr.reserve(t.Context(), b, "org", one, l); !errors.Is(err, ErrOrgRecords) {
		t.Fatalf("record just after the delete = %v, want ErrOrgRecords until the count is %v old", err, recountAfter)
	}
	clk.step(time.Millisecond)
	if done, err := tr.reserve(t.Context(), b, "org", one, l); err != nil {
		t.Errorf("record after a delete = %v, want admitted", err)
	} else {
		done(true)
	}
}

func TestUsageShrinkingWriteOverQuota(t *testing.T) {
	tr, b, _ := newTracker()
	b.set(records.Usage{Records: 5, Bytes: 500}) // the quota was lowered below this
	l := Limits{OrgRecords: 3, OrgBytes: 300}.WithDefaults()
	if _, err := tr.reserve(t.Context(), b, "org", records.Usage{Bytes: 1}, l); !errors.Is(err, ErrOrgBytes) {
		t.Errorf("an overwrite growing by 1 byte = %v, want ErrOrgBytes", err)
	}
	done, err := tr.reserve(t.Context(), b, "org", records.Usage{Bytes: -50}, l)
	if err != nil {
		t.Fatalf("an overwrite shrinking by 50 bytes = %v, want admitted", err)
	}
	done(true)
}

func TestUsageBytes(t *testing.T) {
	tr, b, _ := newTracker()
	l := Limits{OrgRecords: 100, OrgBytes: 250}.WithDefaults()
	for i, want := range []error{nil, nil, ErrOrgBytes} {
		done, err := tr.reserve(t.Context(), b, "org", one, l)
		if !errors.Is(err, want) || (err == nil) != (want == nil) {
			t.Fatalf("write %d of 100 bytes under 250 = %v, want %v", i, err, want)
		}
		if done != nil {
			done(true)
		}
	}
}

func TestUsageFailedWriteIsReleased(t *testing.T) {
	tr, b, _ := newTracker()
	l := Limits{OrgRecords: 1, OrgBytes: 1 << 20}.WithDefaults()
	done, err := tr.reserve(t.Context(), b, "org", one, l)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.reserve(t.Context(), b, "org", one, l); !errors.Is(err, ErrOrgRecords) {
		t.Errorf("a second write while the first is under way = %v, want ErrOrgRecords", err)
	}
	done(false)
	if done, err := tr.reserve(t.Context(), b, "org", one, l); err != nil {
		t.Errorf("a write after the first failed = %v, want admitted", err)
	} else {
		done(true)
	}
}

func TestUsageOrgsApart(t *testing.T) {
	tr, b, _ := newTracker()
	l := Limits{OrgRecords: 1, OrgBytes: 1 << 20}.WithDefaults()
	for _, org := range []string{"a", "b"} {
		done, err := tr.reserve(t.Context(), b, org, one, l)
		if err != nil {
			t.Fatalf("first record of org %s = %v", org, err)
		}
		done(true)
	}
}

// TestUsageConcurrent checks that writers racing for the last places of a
// quota get exactly those places.
func TestUsageConcurrent(t *testing.T) {
	tr, b, _ := newTracker()
	const quota, writers = 50, 200
	l := Limits{OrgRecords: quota, OrgBytes: 1 << 30}.WithDefaults()
	var admitted atomic.Int32
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			done, err := tr.reserve(t.Context(), b, "org", one, l)
			if err == nil {
				admitted.Add(1)
				done(true)
			} else if !errors.Is(err, ErrOrgRecords) {
				t.Errorf("reserve = %v", err)
			}
		})
	}
	wg.Wait()
	if n := admitted.Load(); n != quota {
		t.Errorf("%d writers raced for %d places: %d admitted, want %d", writers, quota, n, quota)
	}
	if n := b.calls.Load(); n != 1 {
		t.Errorf("counted %d times, want 1 (one count at a time, shared)", n)
	}
}

// TestUsageCountDuringWrites checks that a write that ends while a count is
// under way, and is not in the count's result, still counts.
func TestUsageCountDuringWrites(t *testing.T) {
	tr, _, clk := newTracker()
	l := Limits{OrgRecords: 2, OrgBytes: 1 << 20}.WithDefaults()
	b := &blockingBackend{}
	doneA, err := tr.reserve(t.Context(), b, "org", one, l) // counts 0; write A under way
	if err != nil {
		t.Fatal(err)
	}
	// The count is stale: write B's reservation counts again, and write A
	// ends while that count runs, which does not see it.
	clk.step(time.Hour)
	b.counting, b.release = make(chan struct{}), make(chan struct{})
	doneB := make(chan func(bool), 1)
	go func() {
		done, err := tr.reserve(t.Context(), b, "org", one, l)
		if err != nil {
			t.Errorf("write B = %v, want admitted", err)
		}
		doneB <- done
	}()
	<-b.counting
	doneA(true)
	close(b.release)
	if done := <-doneB; done != nil {
		done(true)
	}
	// A and B are stored: a third record is over the quota of 2.
	if _, err := tr.reserve(t.Context(), b, "org", one, l); !errors.Is(err, ErrOrgRecords) {
		t.Errorf("third record = %v, want ErrOrgRecords (write A lost from the figure)", err)
	}
}

// blockingBackend counts zero records, and once counting is set, signals
// it and waits for release before answering.
type blockingBackend struct {
	records.Backend
	counting, release chan struct{}
}

func (b *blockingBackend) Usage(ctx context.Context, _ string) (records.Usage, error) {
	if b.counting != nil {
		close(b.counting)
		<-b.release
	}
	return records.Usage{}, nil
}
