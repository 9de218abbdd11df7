package keyhealth

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// The stores whose refusals the gate counts (StoreUse.Store). The values
// are stable: they are stored and shown in the access report.
const (
	StoreLake         = "lake"          // the data lake
	StoreProfile      = "profile"       // the profile store
	StoreProfileCache = "profile-cache" // the profile store's read cache held the record asked for
)

// DefaultMaxTracked bounds the (org, store) pairs the gate counts between
// two flushes. Ten thousand pairs is a few megabytes at most; past it, new
// pairs are not counted (Dropped says how many refusals went uncounted)
// rather than letting a storm of refused orgs grow memory without end.
const DefaultMaxTracked = 10000

// StoreUse is what the gate saw of one store of one org since the last
// flush: the refusals (first, last, how many) while the org's key was
// unusable, and Resumed, the first request served after them.
type StoreUse struct {
	Org, Store   string
	FirstRefused time.Time // zero when none since the last flush
	LastRefused  time.Time
	Refused      int64
	Resumed      time.Time // zero until a request is served again
}

type useKey struct{ org, store string }

type useEntry struct {
	use      StoreUse
	awaiting bool // refused, and no request served since
}

// uses are the gate's in-memory counters. Nothing here writes to a
// database: the data path only takes a mutex (and only when there is
// something to count), and FlushUses hands the counts to the store.
type uses struct {
	mu       sync.Mutex
	m        map[useKey]*useEntry
	awaiting atomic.Int64 // entries refused and not yet served again
	dropped  atomic.Int64
}

// AllowStore is Allow for a request of one store of the org's data
// (StoreLake, StoreProfile, StoreProfileCache). It counts a refusal, and
// the first request served after refusals, for the access history.
func (g *Gate) AllowStore(org, store string) error {
	err := g.Allow(org)
	if err != nil {
		g.countRefused(org, store)
		return err
	}
	// The common case costs one atomic load: nothing awaits a resume.
	if g.uses.awaiting.Load() > 0 {
		g.countServed(org, store)
	}
	return nil
}

func (g *Gate) maxTracked() int {
	if g.MaxTracked > 0 {
		return g.MaxTracked
	}
	return DefaultMaxTracked
}

func (g *Gate) countRefused(org, store string) {
	now := g.now()
	u := &g.uses
	u.mu.Lock()
	defer u.mu.Unlock()
	k := useKey{org, store}
	e := u.m[k]
	if e == nil {
		if len(u.m) >= g.maxTracked() {
			u.dropped.Add(1)
			return
		}
		if u.m == nil {
			u.m = map[useKey]*useEntry{}
		}
		e = &useEntry{use: StoreUse{Org: org, Store: store}}
		u.m[k] = e
	}
	if e.use.Refused == 0 || now.Before(e.use.FirstRefused) {
		e.use.FirstRefused = now
	}
	if now.After(e.use.LastRefused) {
		e.use.LastRefused = now
	}
	e.use.Refused++
	// A refusal after a resume not yet flushed starts the wait again.
	e.use.Resumed = time.Time{}
	if !e.awaiting {
		e.awaiting = true
		u.awaiting.Add(1)
	}
}

func (g *Gate) countServed(org, store string) {
	u := &g.uses
	u.mu.Lock()
	defer u.mu.Unlock()
	e := u.m[useKey{org, store}]
	if e == nil || !e.awaiting {
		return
	}
	e.use.Resumed = g.now()
	e.awaiting = false
	u.awaiting.Add(-1)
}

// DrainUses returns what was counted since the last drain and resets the
// counts. A pair still waiting for its first served request stays (with no
// refusals), so its resume is seen later; a pair that resumed is dropped.
func (g *Gate) DrainUses() []StoreUse {
	u := &g.uses
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []StoreUse
	for k, e := range u.m {
		if e.use.Refused > 0 || !e.use.Resumed.IsZero() {
			out = append(out, e.use)
		}
		if e.awaiting {
			e.use = StoreUse{Org: k.org, Store: k.store}
			continue
		}
		delete(u.m, k)
	}
	return out
}

// RequeueUses puts back counts a flush could not write, merged with what
// was counted since, so a database outage loses no refusal (within the
// bound on pairs).
func (g *Gate) RequeueUses(back []StoreUse) {
	u := &g.uses
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, b := range back {
		k := useKey{b.Org, b.Store}
		e := u.m[k]
		if e == nil {
			if len(u.m) >= g.maxTracked() {
				u.dropped.Add(b.Refused)
				continue
			}
			if u.m == nil {
				u.m = map[useKey]*useEntry{}
			}
			u.m[k] = &useEntry{use: b}
			continue
		}
		if b.Refused > 0 {
			if e.use.Refused == 0 || b.FirstRefused.Before(e.use.FirstRefused) {
				e.use.FirstRefused = b.FirstRefused
			}
			if b.LastRefused.After(e.use.LastRefused) {
				e.use.LastRefused = b.LastRefused
			}
			e.use.Refused += b.Refused
		}
		if e.use.Resumed.IsZero() && !b.Resumed.IsZero() && !e.awaiting {
			e.use.Resumed = b.Resumed
		}
	}
}

// DroppedUses is how many refusals went uncounted because the gate was
// already counting DefaultMaxTracked (or MaxTracked) pairs.
func (g *Gate) DroppedUses() int64 { return g.uses.dropped.Load() }

// forgetUses drops an org's counts (the org was deleted).
func (g *Gate) forgetUses(org string) {
	u := &g.uses
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, e := range u.m {
		if k.org == org {
			if e.awaiting {
				u.awaiting.Add(-1)
			}
			delete(u.m, k)
		}
	}
}

// UseSink writes drained counts into the org's open or last episode.
type UseSink func(ctx context.Context, uses []StoreUse) error

// FlushUses drains the counts into sink every interval until ctx ends, and
// once more then (on shutdown, with a context that is not cancelled and a
// few seconds to finish).
func (g *Gate) FlushUses(ctx context.Context, sink UseSink, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	flush := func(ctx context.Context) {
		uses := g.DrainUses()
		if len(uses) == 0 {
			return
		}
		if err := sink(ctx, uses); err != nil {
			g.RequeueUses(uses)
			log.Error("flush data refusals to the key history", "err", err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			flush(fctx)
			cancel()
			return
		case <-t.C:
			flush(ctx)
		}
	}
}
