// Package usage keeps, per org, a figure of what the org stores, for its
// quotas: counted from the backend, which is the truth, and trusted for a
// while, with this process's own writes added as it makes them.
//
// The figure is base + since + pending: base is the last count, since is
// what this process stored after that count began, pending is what writes
// under way have claimed. A count is made by one caller at a time per org;
// one that waited for another takes its result only if it began after the
// waiter asked. A write that ends while a count runs stays added, so the
// figure errs high, never low. Overwrites and deletes are not taken off
// (their old size is unknown) and show at the next count. Before refusing,
// the tracker counts again unless its count is under RecountAfter old, so
// a write is refused only on a fresh count.
package usage

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Figure is what is counted: one number ([Int]) or several.
type Figure[F any] interface {
	Plus(F) F
	Minus(F) F
}

// Int is a one-dimensional Figure, such as bytes.
type Int int64

// Plus returns a + b.
func (a Int) Plus(b Int) Int { return a + b }

// Minus returns a - b.
func (a Int) Minus(b Int) Int { return a - b }

// RecountAfter is how old a count may be and still refuse a write. It
// bounds how often an org writing at its quota makes the backend count (a
// count per refused write would let cheap requests make expensive counts),
// and so how long room freed by a delete can go unseen.
const RecountAfter = time.Second

// ErrEnded is returned by Claim.Grow after Claim.End.
var ErrEnded = errors.New("usage: claim already ended")

// Tracker holds the figures of the orgs. The zero Tracker is ready.
type Tracker[F Figure[F]] struct {
	Now func() time.Time // nil = time.Now; tests step it

	waiting func() // test hook: a count has read what it asked, and waits for its turn

	mu   sync.Mutex
	orgs map[string]*org[F]
}

type org[F any] struct {
	counting chan struct{} // held (one slot) while the org is counted

	// Guarded by Tracker.mu.
	counted time.Time // when the last count began; zero = never
	begun   int       // counts begun
	last    int       // the number (of begun) of the last count that succeeded
	base    F         // the last count
	since   F         // this process's writes since that count began
	pending F         // claimed by writes under way
}

func (t *Tracker[F]) clock() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

func (t *Tracker[F]) org(name string) *org[F] {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.orgs == nil {
		t.orgs = map[string]*org[F]{}
	}
	o := t.orgs[name]
	if o == nil {
		o = &org[F]{counting: make(chan struct{}, 1)}
		t.orgs[name] = o
	}
	return o
}

// Forget drops what is known of an org (deleted).
func (t *Tracker[F]) Forget(org string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.orgs, org)
}

// Claim is one write's share of its org's figure. It holds nothing until
// it grows, and must be ended.
type Claim[F Figure[F]] struct {
	t     *Tracker[F]
	o     *org[F]
	ttl   time.Duration
	count func(context.Context) (F, error)
	// Guarded by Tracker.mu.
	held  F
	ended bool
}

// Claim starts a claim on org's figure. A count is trusted for ttl; count
// counts the org from the backend.
func (t *Tracker[F]) Claim(org string, ttl time.Duration, count func(context.Context) (F, error)) *Claim[F] {
	return &Claim[F]{t: t, o: t.org(org), ttl: ttl, count: count}
}

// Grow claims add more, counting the org first if its count is older than
// the ttl. check is called, under the tracker's lock, with the figure
// (this claim's share included) and this claim's share; an error from it
// refuses the growth, after a recount if the count is RecountAfter old or
// older, and is returned.
func (c *Claim[F]) Grow(ctx context.Context, add F, check func(used, held F) error) error {
	t, o := c.t, c.o
	for recounted := false; ; recounted = true {
		t.mu.Lock()
		if c.ended {
			t.mu.Unlock()
			return ErrEnded
		}
		age := t.clock().Sub(o.counted)
		if !o.counted.IsZero() && age < c.ttl {
			over := check(o.base.Plus(o.since).Plus(o.pending), c.held)
			if over == nil {
				o.pending = o.pending.Plus(add)
				c.held = c.held.Plus(add)
				t.mu.Unlock()
				return nil
			}
			if recounted || age < RecountAfter {
				t.mu.Unlock()
				return over
			}
		}
		t.mu.Unlock()
		if err := c.recount(ctx); err != nil {
			return err
		}
	}
}

// Held is what the claim holds.
func (c *Claim[F]) Held() F {
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	return c.held
}

// End gives the claim back and adds stored, what the write stored (zero
// when it failed), to the figure. Later Grows return ErrEnded.
func (c *Claim[F]) End(stored F) {
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	var zero F
	c.o.pending = c.o.pending.Minus(c.held)
	c.o.since = c.o.since.Plus(stored)
	c.held, c.ended = zero, true
}

// recount counts the org, unless a count that began after this call asked
// has succeeded meanwhile (one that waited for another to finish takes its
// result).
func (c *Claim[F]) recount(ctx context.Context) error {
	t, o := c.t, c.o
	t.mu.Lock()
	asked := o.begun
	t.mu.Unlock()
	if t.waiting != nil {
		t.waiting()
	}
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
	u, err := c.count(ctx)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// Writes that ended before the count began are in it; later ones may
	// or may not be, and stay added (the figure errs high).
	o.base, o.counted, o.last = u, began, n
	o.since = o.since.Minus(before)
	return nil
}
