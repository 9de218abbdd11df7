package profile

import (
	"container/list"
	"sync"
	"time"
)

// ReadCache is the profile store's transient read cache: recent records, kept
// as the sealed bytes the store holds (so encrypted under the org's data
// keys), for a TTL, bounded in size. It is unreadable without the org's keys,
// and WipeOrg drops the org's entries the moment its keys are wiped.
type ReadCache struct {
	TTL        time.Duration
	MaxEntries int
	Now        func() time.Time

	mu    sync.Mutex
	ll    *list.List
	items map[string]*list.Element
	hits  int64
}

type cacheEntry struct {
	key, org string
	sealed   []byte
	expires  time.Time
}

// NewReadCache returns a cache; the defaults are 5 minutes and 100,000 records.
func NewReadCache(ttl time.Duration, max int) *ReadCache {
	if ttl == 0 {
		ttl = 5 * time.Minute
	}
	if max == 0 {
		max = 100_000
	}
	return &ReadCache{TTL: ttl, MaxEntries: max, ll: list.New(), items: map[string]*list.Element{}}
}

func (c *ReadCache) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func cacheKey(org, sandbox, id string) string { return org + "\x00" + sandbox + "\x00" + id }

// Get returns the sealed record, if cached and fresh.
func (c *ReadCache) Get(org, sandbox, id string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[cacheKey(org, sandbox, id)]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if !c.now().Before(e.expires) {
		c.remove(el)
		return nil, false
	}
	c.ll.MoveToFront(el)
	c.hits++
	return e.sealed, true
}

// Put caches a sealed record.
func (c *ReadCache) Put(org, sandbox, id string, sealed []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := cacheKey(org, sandbox, id)
	if el, ok := c.items[k]; ok {
		c.remove(el)
	}
	c.items[k] = c.ll.PushFront(&cacheEntry{key: k, org: org, sealed: sealed, expires: c.now().Add(c.TTL)})
	for c.ll.Len() > c.MaxEntries {
		c.remove(c.ll.Back())
	}
}

// Drop forgets one record.
func (c *ReadCache) Drop(org, sandbox, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[cacheKey(org, sandbox, id)]; ok {
		c.remove(el)
	}
}

// WipeOrg forgets every record of an org.
func (c *ReadCache) WipeOrg(org string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.ll.Front(); el != nil; {
		next := el.Next()
		if el.Value.(*cacheEntry).org == org {
			c.remove(el)
		}
		el = next
	}
}

// Len is the number of cached records.
func (c *ReadCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

func (c *ReadCache) remove(el *list.Element) {
	e := el.Value.(*cacheEntry)
	clear(e.sealed)
	delete(c.items, e.key)
	c.ll.Remove(el)
}
