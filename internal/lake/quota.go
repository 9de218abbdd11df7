package lake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/cmk-project/cmk/internal/lake/blob"
)

// Quota bounds what the lake stores. Zero fields take the defaults.
type Quota struct {
	// FileBytes bounds one file's plaintext (DefaultFileBytes).
	FileBytes int64
	// OrgBytes bounds the stored bytes of all of an org's files, over all
	// its sandboxes (DefaultOrgBytes).
	OrgBytes int64
	// UsageTTL is how long a count of what an org stores is trusted
	// (DefaultUsageTTL); see usageTracker.
	UsageTTL time.Duration
}

// Defaults of Quota.
const (
	// DefaultFileBytes: 64 GiB holds any single dataset file we expect
	// and stays well under what one Azure block blob can hold (50,000
	// blocks of 4 MiB, 195 GiB), so a large upload meets our limit, named
	// in the answer, before the store's.
	DefaultFileBytes = 64 << 30
	// DefaultOrgBytes keeps one org from filling the storage every org
	// shares: 1 TiB.
	DefaultOrgBytes = 1 << 40
	// DefaultUsageTTL: an org's files are counted again after a minute, so
	// other replicas' uploads count against its quota within one.
	DefaultUsageTTL = time.Minute
)

// WithDefaults returns q with its zero fields set to the defaults.
func (q Quota) WithDefaults() Quota {
	if q.FileBytes <= 0 {
		q.FileBytes = DefaultFileBytes
	}
	if q.OrgBytes <= 0 {
		q.OrgBytes = DefaultOrgBytes
	}
	if q.UsageTTL <= 0 {
		q.UsageTTL = DefaultUsageTTL
	}
	return q
}

// Errors of the quota, matched by a *LimitError.
var (
	ErrFileTooLarge = errors.New("file too large")
	ErrOrgFull      = errors.New("org has reached its lake storage")
)

// LimitError is an upload refused by the Quota; nothing was stored, and a
// file it was to replace is intact. errors.Is matches it to Err.
type LimitError struct {
	Err      error // ErrFileTooLarge or ErrOrgFull
	Limit    int64 // bytes
	Declared int64 // ErrFileTooLarge: the size the upload declared; -1 = it passed the limit while streaming
	Used     int64 // ErrOrgFull: what the org stores without this upload
}

func (e *LimitError) Error() string {
	if e.Err == ErrOrgFull {
		return fmt.Sprintf("%v: %d of %d bytes used", e.Err, e.Used, e.Limit)
	}
	return fmt.Sprintf("%v: the limit is %d bytes", e.Err, e.Limit)
}

func (e *LimitError) Unwrap() error { return e.Err }

// metered passes an upload's plaintext through, counting it against the
// file limit and claiming it from the org's quota as it is read, so a
// stream of unknown length stops at the first read past either. Its
// error ends the backend's Put, which then stores nothing.
type metered struct {
	ctx   context.Context
	r     io.Reader
	limit int64 // the file limit
	n     int64 // read so far
	claim *claim
}

func (m *metered) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	m.n += int64(n)
	if m.n > m.limit {
		return 0, &LimitError{Err: ErrFileTooLarge, Limit: m.limit, Declared: -1}
	}
	if cerr := m.claim.cover(m.ctx, m.n); cerr != nil {
		return 0, cerr
	}
	return n, err
}

// usageTracker knows what each org stores in the lake, for its quota.
//
// The figure is the sum of the sizes the backend lists under the org,
// counted and kept, not a counter in the state store. The backend is the
// truth: a counter could not change atomically with an object (a crash
// between the two, or two overwrites of one file racing, would make it
// drift), and would need the old size of every replaced or deleted file.
// Listing an org is too slow to do per upload (a page of 5,000 objects per
// Azure request), so a count is trusted for UsageTTL, and this process
// adds its own uploads: each claims its bytes as it streams, so
// concurrent uploads cannot together pass the quota, and adds the bytes
// stored when it completes.
//
// A replaced or deleted file is not taken off (its size is unknown), so
// between counts the figure only errs high; a replacement needs room for
// both files until it completes in any case (the new one is staged beside
// the old). Before refusing an upload the lake counts again unless its
// count is under recountAfter old, so an upload is refused only on a
// fresh count, and room freed by deletes shows within recountAfter.
// Uploads through other replicas show at the next count: with several
// replicas an org can pass its quota by what the others store within
// UsageTTL.
type usageTracker struct {
	now func() time.Time // nil = time.Now; tests step it

	mu   sync.Mutex
	orgs map[string]*orgUsage
}

// recountAfter is how old a count may be and still refuse an upload. It
// bounds how often an org uploading at its quota makes the lake list all
// its files (a count per refused upload would let cheap requests make
// expensive listings), and so how long room freed by a delete can go
// unseen.
const recountAfter = time.Second

type orgUsage struct {
	counting chan struct{} // held (one slot) while the org is counted

	// Guarded by usageTracker.mu.
	counted time.Time // when the last count began; zero = never
	begun   int       // counts begun
	last    int       // the number (of begun) of the last count that succeeded
	base    int64     // the last count
	since   int64     // bytes this process stored since that count began
	pending int64     // bytes claimed by uploads under way
}

func (t *usageTracker) clock() time.Time {
	if t.now != nil {
		return t.now()
	}
	return time.Now()
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

// forget drops what is known of an org (deleted).
func (t *usageTracker) forget(org string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.orgs, org)
}

// claim is one upload's share of its org's quota.
type claim struct {
	t   *usageTracker
	o   *orgUsage
	b   blob.Backend
	org string
	q   Quota
	// Guarded by usageTracker.mu.
	n     int64 // bytes claimed
	ended bool
}

func (t *usageTracker) claim(b blob.Backend, org string, q Quota) *claim {
	return &claim{t: t, o: t.org(org), b: b, org: org, q: q}
}

// grow claims n more bytes, counting the org first if its count is stale,
// or returns a *LimitError.
func (c *claim) grow(ctx context.Context, n int64) error {
	t, o := c.t, c.o
	for recounted := false; ; recounted = true {
		t.mu.Lock()
		if c.ended {
			// A sealing goroutine reading on after its upload failed.
			t.mu.Unlock()
			return errClaimEnded
		}
		age := t.clock().Sub(o.counted)
		if !o.counted.IsZero() && age < c.q.UsageTTL {
			used := o.base + o.since + o.pending
			if used+n <= c.q.OrgBytes {
				o.pending += n
				c.n += n
				t.mu.Unlock()
				return nil
			}
			if recounted || age < recountAfter {
				t.mu.Unlock()
				return &LimitError{Err: ErrOrgFull, Limit: c.q.OrgBytes, Used: used - c.n}
			}
		}
		t.mu.Unlock()
		if err := c.count(ctx); err != nil {
			return err
		}
	}
}

// cover makes the claim at least total bytes.
func (c *claim) cover(ctx context.Context, total int64) error {
	c.t.mu.Lock()
	more := total - c.n
	c.t.mu.Unlock()
	if more <= 0 {
		return nil
	}
	return c.grow(ctx, more)
}

// end gives the claim back; stored is what the backend stored (0 when the
// upload failed).
func (c *claim) end(stored int64) {
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	c.o.pending -= c.n
	c.o.since += stored
	c.n, c.ended = 0, true
}

var errClaimEnded = errors.New("lake: upload already ended")

// count lists the org's files, unless a count that began after this call
// asked has succeeded meanwhile (one that waited for another to finish
// takes its result).
func (c *claim) count(ctx context.Context) error {
	t, o := c.t, c.o
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
	objs, err := c.b.List(ctx, c.org+"/")
	if err != nil {
		return fmt.Errorf("count the lake files of org %s: %w", c.org, err)
	}
	var sum int64
	for _, obj := range objs {
		sum += obj.Size
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// Uploads that completed before the count began are in it; later ones
	// may or may not be, and stay added (the figure errs high).
	o.base, o.counted, o.last = sum, began, n
	o.since -= before
	return nil
}
