// Package dekcache holds unwrapped data-encryption keys in memory so the data
// path makes no key-vault call in steady state.
//
// Guarantees:
//   - Keys live only in this process's memory, never on disk or in logs.
//   - An entry is dropped after MaxAge or after MaxUses lookups, whichever
//     comes first; the next lookup unwraps again (proving access again).
//   - Concurrent misses for one key make a single unwrap call.
//   - WipeOrg zeroes and forgets every key of an org at once, and a load that
//     was in flight when the wipe happened is not cached, so no key of a
//     revoked org survives the wipe.
//   - Callers receive a copy of the key and must clear it when done.
package dekcache

import (
	"context"
	"sync"
	"time"
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
	loaded time.Time
	uses   int64
}

type call struct {
	done chan struct{}
	key  []byte
	err  error
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
}

// New returns a cache with the default bounds.
func New() *Cache {
	return &Cache{MaxAge: DefaultMaxAge, MaxUses: DefaultMaxUses}
}

func (c *Cache) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
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
	c.mu.Lock()
	c.init()
	if e, ok := c.entries[id]; ok {
		if c.fresh(e) {
			e.uses++
			out := clone(e.key)
			c.mu.Unlock()
			return out, nil
		}
		c.dropLocked(id)
	}
	if cl, ok := c.inflight[id]; ok {
		c.mu.Unlock()
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
	cl := &call{done: make(chan struct{})}
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
	if err != nil {
		return nil, err
	}
	// key itself stays as cl.key for the waiters to copy; it is not cleared
	// here because a waiter may not have copied it yet.
	return clone(key), nil
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

func (c *Cache) dropLocked(id string) {
	if e, ok := c.entries[id]; ok {
		clear(e.key)
		delete(c.entries, id)
	}
}

// Drop forgets one key.
func (c *Cache) Drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	c.dropLocked(id)
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
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	c.gen[org]++
	n := 0
	for id, e := range c.entries {
		if e.org == org {
			clear(e.key)
			delete(c.entries, id)
			n++
		}
	}
	return n
}

// Sweep zeroes and forgets keys past their age or use bound, so idle keys
// do not outlive MaxAge waiting for a lookup.
func (c *Cache) Sweep() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	n := 0
	for id, e := range c.entries {
		if !c.fresh(e) {
			c.dropLocked(id)
			n++
		}
	}
	return n
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

func clone(b []byte) []byte { return append([]byte(nil), b...) }
