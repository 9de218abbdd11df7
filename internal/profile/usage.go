package profile

import (
	"context"

	"github.com/cmk-project/cmk/internal/profile/records"
	"github.com/cmk-project/cmk/internal/usage"
)

// usageTracker knows what each org stores, for the org quotas (package
// usage holds the mechanism).
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
	usage.Tracker[records.Usage]
}

// recountAfter is how old a count may be and still refuse a write: it
// bounds how often an org writing at its quota makes the store count.
const recountAfter = usage.RecountAfter

// reserve admits a write that adds add (which may be negative) to what org
// stores, within l's quotas, counting the org's usage first if needed. The
// caller must call done once the write has succeeded (true) or failed
// (false).
func (t *usageTracker) reserve(ctx context.Context, b records.Backend, org string, add records.Usage, l Limits) (done func(ok bool), err error) {
	c := t.Claim(org, l.UsageTTL, func(ctx context.Context) (records.Usage, error) {
		return b.Usage(ctx, org)
	})
	err = c.Grow(ctx, add, func(used, _ records.Usage) error {
		// Only what a write adds can pass a quota: one that shrinks an
		// org over its quota (the quota was lowered) is let through.
		switch {
		case add.Records > 0 && used.Records+add.Records > l.OrgRecords:
			return &LimitError{Err: ErrOrgRecords, Limit: l.OrgRecords, Used: used.Records}
		case add.Bytes > 0 && used.Bytes+add.Bytes > l.OrgBytes:
			return &LimitError{Err: ErrOrgBytes, Limit: l.OrgBytes, Used: used.Bytes}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return func(ok bool) {
		if ok {
			c.End(add)
		} else {
			c.End(records.Usage{})
		}
	}, nil
}
