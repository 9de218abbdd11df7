// Package dekcache holds unwrapped data-encryption keys in memory so the data
// path makes no key-vault call in steady state.
//
// Guarantees:
//   - Keys live only in this process's memory, never on disk or in logs.
//   - An entry is dropped after MaxAge (give or take a tenth of a second) or
//     after MaxUses lookups, whichever
//     comes first; the next lookup unwraps again (proving access again).
//   - Concurrent misses for one key make a single unwrap call.
//   - WipeOrg zeroes and forgets every key of an org at once, and a load that
//     was in flight when the wipe happened is not cached, so no key of a
//     revoked org survives the wipe.
//   - The key a load returns is zeroed once every caller waiting on that
//     load has its copy.
//   - Callers receive a copy of the key and must clear it when done, or a
//     prepared envelope.RecordKey, which the cache wipes when it drops the
//     key (a caller holding it then gets envelope.ErrWiped). Wiping zeroes
//     the RecordKey's copy of the key; the AES key schedule of its record
//     key, derived from the key, is dropped but not zeroed, since Go gives
//     no way to zero it, and stays in memory until it is overwritten.
package dekcache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cmk-project/cmk/internal/envelope"
)

// Defaults. An hour bounds how long a key can outlive a monitor that stopped
// working; revocation does not wait for it (the monitor wipes at once). A
// million uses keeps steady-state vault calls at zero for ordinary traffic
// while still re-proving access on very hot keys.
const (
	DefaultMaxAge  = time.Hour
	DefaultMaxUses = 1 << 20
)

// loadTimeout bounds one unwrap made on behalf of all waiters.
const loadTimeout = 30 * time.Second

// Loader unwraps a data key (one key-vault call, for customer keys).
type Loader func(ctx context.Context) ([]byte, error)

type entry struct {
	org    string
	key    []byte
	rec    *envelope.RecordKey // prepared on first use for records
	loaded time.Time
	uses   int64
}

// forget zeroes what the entry holds; nil is a no-op.
func (e *entry) forget() {
	if e == nil {
		return
	}
	clear(e.key)
	if e.rec != nil {
		e.rec.Wipe()
	}
}

// call is one load shared by the caller that started it and the waiters
// that joined it. Its key is the loader's own slice; the last holder to let
// go of the call (refs, under Cache.mu) zeroes it.
type call struct {
	done chan struct{}
	key  []byte
	err  error
	refs int
}

// release lets go of cl; the last holder zeroes the loaded key.
func (c *Cache) release(cl *call) {
	c.mu.Lock()
	cl.refs--
	last := cl.refs == 0
	c.mu.Unlock()
	if last {
		clear(cl.key)
	}
}

// Cache is safe for concurrent use.
type Cache struct {
	MaxAge  time.Duration
	MaxUses int64
	Now     func() time.Time
	// OnWipe, when set, is called after WipeOrg, so caches of data sealed
	// under the org's keys can drop it too.
	OnWipe []func(org string)

	mu       sync.Mutex
	entries  map[string]*entry
	inflight map[string]*call
	gen      map[string]uint64 // per org, bumped by WipeOrg
	loads    int64
	hits     int64 // lookups answered from the cache
}

// New returns a cache with the default bounds.
func New() *Cache {
	return &Cache{MaxAge: DefaultMaxAge, MaxUses: DefaultMaxUses}
}

func (c *Cache) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return coarseNow()
}

// coarseNow is the time to within about clockTick. A lookup needs the time
// only to compare a key's age with MaxAge (an hour by default), and reading
// the clock took about a tenth of a record lookup; a ticker refreshes it
// instead, from the first use on. The ticker stops after a tick in which
// nothing asked for the time, and the next use starts it again, so an idle
// process (or a test binary at its end) runs no goroutine for it.
func coarseNow() time.Time {
	if !clock.running.Load() {
		startClock()
	} else if !clock.used.Load() {
		clock.used.Store(true) // stored only when unset: no shared write per lookup
	}
	return time.Unix(0, clock.ns.Load())
}

const clockTick = 100 * time.Millisecond

var clock struct {
	ns      atomic.Int64
	running atomic.Bool // the ticker goroutine runs
	used    atomic.Bool // the time was asked for since the last tick
	mu      sync.Mutex  // serializes starting and stopping the ticker
}

func startClock() {
	clock.mu.Lock()
	defer clock.mu.Unlock()
	clock.ns.Store(time.Now().UnixNano())
	clock.used.Store(true)
	if clock.running.Load() {
		return
	}
	clock.running.Store(true)
	go tickClock()
}

// tickClock refreshes the coarse time every clockTick until a tick finds
// it unused.
func tickClock() {
	t := time.NewTicker(clockTick)
	defer t.Stop()
	for now := range t.C {
		clock.ns.Store(now.UnixNano())
		if clock.used.Swap(false) {
			continue
		}
		clock.mu.Lock()
		idle := !clock.used.Load()
		if idle {
			clock.running.Store(false)
		}
		clock.mu.Unlock()
		if idle {
			return
		}
	}
}

func (c *Cache) init() {
	if c.entries == nil {
		c.entries = map[string]*entry{}
		c.inflight = map[string]*call{}
		c.gen = map[string]uint64{}
	}
}

// Get returns a copy of the key with the given id, loading it on a miss.
func (c *Cache) Get(ctx context.Context, org, id string, load Loader) ([]byte, error) {
	var stale *entry
	defer func() { stale.forget() }() // once c.mu is released
	c.mu.Lock()
	c.init()
	if e, ok := c.entries[id]; ok {
		if c.fresh(e) {
			e.uses++
			c.hits++
			out := clone(e.key)
			c.mu.Unlock()
			return out, nil
		}
		stale = c.removeLocked(id)
	}
	if cl, ok := c.inflight[id]; ok {
		cl.refs++
		c.mu.Unlock()
		defer c.release(cl)
		select {
		case <-cl.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if cl.err != nil {
			return nil, cl.err
		}
		return clone(cl.key), nil
	}
	cl := &call{done: make(chan struct{}), refs: 1}
	c.inflight[id] = cl
	gen := c.gen[org]
	c.loads++
	c.mu.Unlock()

	// The load serves every waiter, so one caller going away must not fail
	// the others: it runs detached from the caller's cancellation, bounded
	// by its own timeout.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
	key, err := load(lctx)
	cancel()

	c.mu.Lock()
	delete(c.inflight, id)
	cl.err = err
	if err == nil {
		cl.key = key
		if c.gen[org] == gen { // not wiped meanwhile
			c.entries[id] = &entry{org: org, key: clone(key), loaded: c.now(), uses: 1}
		}
	}
	c.mu.Unlock()
	close(cl.done)
	defer c.release(cl) // key stays as cl.key until every waiter has copied it
	if err != nil {
		return nil, err
	}
	return clone(key), nil
}

// WithRecordKey calls use with the key of the given id (whose DEK id is
// also id) prepared for sealing and opening records, loading the key on a
// miss. The prepared key is kept with the cached key, so only the first
// lookup pays for the derivation; every lookup counts as a use. If the
// cache drops the key while use runs, use gets envelope.ErrWiped and is
// called again with the key fetched afresh (so a drop at the age or use
// bound is invisible, and a drop by WipeOrg ends in the loader's refusal).
func (c *Cache) WithRecordKey(ctx context.Context, org, id string, load Loader, use func(*envelope.RecordKey) error) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var k *envelope.RecordKey
		var ok bool
		if k, ok, err = c.cachedRecordKey(id, true); err != nil {
			return err
		}
		if !ok {
			key, err := c.Get(ctx, org, id, load) // counts the use
			if err != nil {
				return err
			}
			if k, ok, err = c.cachedRecordKey(id, false); err != nil {
				clear(key)
				return err
			}
			if !ok {
				// Loaded but not cached (the org was wiped meanwhile, or
				// the bounds are that tight): use it once, then wipe it.
				k, err = envelope.NewRecordKey(key, id)
				clear(key)
				if err != nil {
					return err
				}
				defer k.Wipe()
			} else {
				clear(key)
			}
		}
		if err = use(k); !errors.Is(err, envelope.ErrWiped) {
			return err
		}
	}
	return err
}

// cachedRecordKey returns the prepared key of a fresh entry, counting the
// use if count, and reports whether there was one. The derivation runs
// outside c.mu.
func (c *Cache) cachedRecordKey(id string, count bool) (*envelope.RecordKey, bool, error) {
	c.mu.Lock()
	c.init()
	e, ok := c.entries[id]
	if !ok {
		c.mu.Unlock()
		return nil, false, nil
	}
	if !c.fresh(e) {
		stale := c.removeLocked(id)
		c.mu.Unlock()
		stale.forget()
		return nil, false, nil
	}
	if count {
		e.uses++
		c.hits++
	}
	if rec := e.rec; rec != nil {
		c.mu.Unlock()
		return rec, true, nil
	}
	key := clone(e.key)
	c.mu.Unlock()

	rec, err := envelope.NewRecordKey(key, id)
	clear(key)
	if err != nil {
		return nil, false, err
	}
	c.mu.Lock()
	var other *envelope.RecordKey
	kept := c.entries[id] == e // not dropped meanwhile
	if kept {
		if e.rec == nil {
			e.rec = rec
		} else {
			other = e.rec // another lookup prepared it first
		}
	}
	c.mu.Unlock()
	switch {
	case kept && other == nil:
		return rec, true, nil
	case kept:
		rec.Wipe()
		return other, true, nil
	default:
		rec.Wipe()
		return nil, false, nil
	}
}

func (c *Cache) fresh(e *entry) bool {
	maxAge, maxUses := c.MaxAge, c.MaxUses
	if maxAge == 0 {
		maxAge = DefaultMaxAge
	}
	if maxUses == 0 {
		maxUses = DefaultMaxUses
	}
	return c.now().Sub(e.loaded) < maxAge && e.uses < maxUses
}

// removeLocked takes the entry of id out of the cache and returns it (nil
// if there is none). The caller forgets it once it has released c.mu:
// forgetting waits for record operations in progress under the key, which
// must not hold up lookups of other keys.
func (c *Cache) removeLocked(id string) *entry {
	e, ok := c.entries[id]
	if !ok {
		return nil
	}
	delete(c.entries, id)
	return e
}

// Drop forgets one key.
func (c *Cache) Drop(id string) {
	c.mu.Lock()
	c.init()
	e := c.removeLocked(id)
	c.mu.Unlock()
	e.forget()
}

// WipeOrg zeroes and forgets every cached key of org, and makes loads in
// flight for it uncacheable. It returns how many keys were wiped.
func (c *Cache) WipeOrg(org string) int {
	n := c.wipe(org)
	for _, f := range c.OnWipe {
		f(org)
	}
	return n
}

func (c *Cache) wipe(org string) int {
	return c.removeWhere(func(e *entry) bool { return e.org == org }, func() { c.gen[org]++ })
}

// Sweep zeroes and forgets keys past their age or use bound, so idle keys
// do not outlive MaxAge waiting for a lookup.
func (c *Cache) Sweep() int {
	return c.removeWhere(func(e *entry) bool { return !c.fresh(e) }, nil)
}

// removeWhere takes every entry match selects out of the cache, after
// running locked (if set) under c.mu, then forgets them once c.mu is
// released. It returns how many it removed.
func (c *Cache) removeWhere(match func(*entry) bool, locked func()) int {
	c.mu.Lock()
	c.init()
	if locked != nil {
		locked()
	}
	var gone []*entry
	for id, e := range c.entries {
		if match(e) {
			gone = append(gone, c.removeLocked(id))
		}
	}
	c.mu.Unlock()
	for _, e := range gone {
		e.forget()
	}
	return len(gone)
}

// Len is the number of cached keys.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Loads is how many times a loader was called (each is a vault call for a
// customer key).
func (c *Cache) Loads() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loads
}

// Hits is how many lookups were answered from the cache, without a load.
// Hits / (Hits + Loads) is the cache's hit ratio.
func (c *Cache) Hits() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }
