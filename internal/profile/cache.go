package profile

import (
	"bytes"
	"container/list"
	"hash/fnv"
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
	gen   [genStripes]uint64 // per stripe of records, bumped by every write and delete
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

// genStripes bounds the write-generation table: records share counters by
// hash, so a write to one may stop a read of another from being cached,
// which only costs a later cache miss.
const genStripes = 4096

func stripe(key string) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % genStripes)
}

// Gen returns the record's write generation. A reader that missed the cache
// takes it before reading the store and passes it to Fill, so a read that
// raced a write or delete does not cache what it read.
func (c *ReadCache) Gen(org, sandbox, id string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen[stripe(cacheKey(org, sandbox, id))]
}

// Fill caches a record read from the store, unless it was written or
// deleted since gen was taken.
func (c *ReadCache) Fill(org, sandbox, id string, gen uint64, sealed []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen[stripe(cacheKey(org, sandbox, id))] != gen {
		return
	}
	c.putLocked(org, sandbox, id, sealed)
}

// Get returns a copy of the sealed record, if cached and fresh.
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
	return bytes.Clone(e.sealed), true
}

// Put caches a record just written.
func (c *ReadCache) Put(org, sandbox, id string, sealed []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen[stripe(cacheKey(org, sandbox, id))]++
	c.putLocked(org, sandbox, id, sealed)
}

func (c *ReadCache) putLocked(org, sandbox, id string, sealed []byte) {
	k := cacheKey(org, sandbox, id)
	if el, ok := c.items[k]; ok {
		c.remove(el)
	}
	c.items[k] = c.ll.PushFront(&cacheEntry{key: k, org: org, sealed: sealed, expires: c.now().Add(c.TTL)})
	for c.ll.Len() > c.MaxEntries {
		c.remove(c.ll.Back())
	}
}

// Drop forgets one record (it was deleted or changed elsewhere).
func (c *ReadCache) Drop(org, sandbox, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen[stripe(cacheKey(org, sandbox, id))]++
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
	delete(c.items, e.key)
	c.ll.Remove(el)
}
