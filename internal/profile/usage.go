package profile

import (
	"context"
	"sync"
	"time"

	"github.com/cmk-project/cmk/internal/profile/records"
)

// usageTracker knows what each org stores, for the org quotas.
//
// The figure is counted from the backend (records.Backend.Usage) and kept,
// not held in a counter table beside the records. The records are the
// truth: a counter would have to change in the same transaction as every
// write, making one row per org that all of the org's writes queue on, and
// would still drift from a backend changed by other means (org deletion,
// a restore). A count reads no values but scans the org's index entries,
// so it is not made per write: it is trusted for UsageTTL, and this
// process adds its own writes to it as it makes them.
//
// An overwrite or a delete is not taken off (the old size is unknown), so
// between counts the figure only errs high. Before refusing a write the
// store counts again unless its count is under recountAfter old, so a
// write is refused only on a fresh count, and room that deletes and
// overwrites free is seen within recountAfter. (Store.Upsert also checks
// whether a write refused is an overwrite, which adds no record.) Writes of other replicas show at
// the next count: with several replicas an org can pass its quota by what
// the others write within UsageTTL.
type usageTracker struct {
	now func() time.Time // nil = time.Now; tests step it

	mu   sync.Mutex
	orgs map[string]*orgUsage
}

func (t *usageTracker) clock() time.Time {
	if t.now != nil {
		return t.now()
	}
	return time.Now()
}

// recountAfter is how old a count may be and still refuse a write. It
// bounds how often an org writing at its quota makes the store count (a
// count scans the org's records, so a count per refused write would let
// cheap requests make expensive scans), and so how long room freed by a
// delete can go unseen.
const recountAfter = time.Second

type orgUsage struct {
	counting chan struct{} // held (one slot) while the org is counted

	// Guarded by usageTracker.mu.
	counted time.Time     // when the last count began; zero = never
	begun   int           // counts begun
	last    int           // the number (of begun) of the last count that succeeded
	base    records.Usage // the last count
	since   records.Usage // this process's writes since that count began
	pending records.Usage // writes under way
}

func plus(u, v records.Usage) records.Usage {
	return records.Usage{Records: u.Records + v.Records, Bytes: u.Bytes + v.Bytes}
}

func minus(u, v records.Usage) records.Usage {
	return records.Usage{Records: u.Records - v.Records, Bytes: u.Bytes - v.Bytes}
}

func (t *usageTracker) org(org string) *orgUsage {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.orgs == nil {
		t.orgs = map[string]*orgUsage{}
	}
	o := t.orgs[org]
	if o == nil {
		o = &orgUsage{counting: make(chan struct{}, 1)}
		t.orgs[org] = o
	}
	return o
}

// reserve admits a write that adds add (which may be negative) to what org
// stores, within l's quotas, counting the org's usage first if needed. The
// caller must call done once the write has succeeded (true) or failed
// (false).
func (t *usageTracker) reserve(ctx context.Context, b records.Backend, org string, add records.Usage, l Limits) (done func(ok bool), err error) {
	o := t.org(org)
	for recounted := false; ; recounted = true {
		t.mu.Lock()
		age := t.clock().Sub(o.counted)
		if !o.counted.IsZero() && age < l.UsageTTL {
			used := plus(plus(o.base, o.since), o.pending)
			var over *LimitError
			// Only what a write adds can pass a quota: one that shrinks an
			// org over its quota (the quota was lowered) is let through.
			switch {
			case add.Records > 0 && used.Records+add.Records > l.OrgRecords:
				over = &LimitError{Err: ErrOrgRecords, Limit: l.OrgRecords, Used: used.Records}
			case add.Bytes > 0 && used.Bytes+add.Bytes > l.OrgBytes:
				over = &LimitError{Err: ErrOrgBytes, Limit: l.OrgBytes, Used: used.Bytes}
			}
			if over == nil {
				o.pending = plus(o.pending, add)
				t.mu.Unlock()
				return func(ok bool) {
					t.mu.Lock()
					defer t.mu.Unlock()
					o.pending = minus(o.pending, add)
					if ok {
						o.since = plus(o.since, add)
					}
				}, nil
			}
			if recounted || age < recountAfter {
				t.mu.Unlock()
				return nil, over
			}
		}
		t.mu.Unlock()
		if err := t.count(ctx, b, org, o); err != nil {
			return nil, err
		}
	}
}

// count counts the org's usage, unless a count that began after this call
// asked has succeeded meanwhile (one that waited for another to finish
// takes its result).
func (t *usageTracker) count(ctx context.Context, b records.Backend, org string, o *orgUsage) error {
	t.mu.Lock()
	asked := o.begun
	t.mu.Unlock()
	select {
	case o.counting <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-o.counting }()
	t.mu.Lock()
	if o.last > asked {
		t.mu.Unlock()
		return nil
	}
	o.begun++
	n, began, before := o.begun, t.clock(), o.since
	t.mu.Unlock()
	u, err := b.Usage(ctx, org)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// Writes that ended before the count began are in it; later ones may
	// or may not be, and stay added (the figure errs high).
	o.base, o.counted, o.last = u, began, n
	o.since = minus(o.since, before)
	return nil
}
