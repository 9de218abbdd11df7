package ratelimit

import (
	"container/list"
	"sync"
	"time"
)

// Limiter keeps a token bucket per key, all with one Limit, in bounded
// memory. It is safe for concurrent use.
//
// A bucket is kept as the time at which it would be full again (the
// "theoretical arrival time" of GCRA, which is a token bucket counted in
// time): each call pushes that time one interval (Per/N) later, and a call
// is admitted while it lies no more than Burst-1 intervals ahead of now.
// Waits come out exact, and a bucket whose time has passed is full, so it
// can be dropped without losing anything.
type Limiter struct {
	limit    Limit
	interval time.Duration // Per/N: one token's worth of time
	burst    int
	maxKeys  int
	now      func() time.Time

	mu      sync.Mutex
	buckets map[string]*list.Element // values are *bucket
	lru     list.List                // front: most recently used
}

type bucket struct {
	key  string
	full time.Time // the bucket holds Burst tokens from this time on
}

// idleDrops is how many idle buckets each call removes from the cold end of
// the table at most: more than one, so the table shrinks while busy keys
// keep calling.
const idleDrops = 2

// NewLimiter returns a limiter of l keeping at most maxKeys buckets, on the
// clock now. l needs N and Per above zero.
func NewLimiter(l Limit, maxKeys int, now func() time.Time) *Limiter {
	return &Limiter{
		limit: l, interval: l.Per / time.Duration(l.N), burst: l.burst(), maxKeys: max(maxKeys, 1), now: now,
		buckets: map[string]*list.Element{},
	}
}

// Limit returns the limiter's limit.
func (l *Limiter) Limit() Limit { return l.limit }

// Take spends one token of key's bucket when the bucket holds at least need
// tokens (need above one asks for headroom; it is capped at the burst).
// Otherwise it spends nothing and returns how long until the bucket holds
// need tokens.
func (l *Limiter) Take(key string, need int) (wait time.Duration, ok bool) {
	now := l.now()
	need = min(max(need, 1), l.burst)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucket(key, now)
	start := b.full
	if start.Before(now) {
		start = now
	}
	// Holding need tokens means the bucket is full again within
	// burst-need intervals.
	if over := start.Sub(now) - time.Duration(l.burst-need)*l.interval; over > 0 {
		wait = over
	} else {
		b.full = start.Add(l.interval)
		ok = true
	}
	l.dropIdle(now)
	return wait, ok
}

// bucket returns key's bucket, made full and most recently used; a new one
// may push the least recently used out of a full table.
func (l *Limiter) bucket(key string, now time.Time) *bucket {
	if e := l.buckets[key]; e != nil {
		l.lru.MoveToFront(e)
		return e.Value.(*bucket)
	}
	if len(l.buckets) >= l.maxKeys {
		l.remove(l.lru.Back())
	}
	b := &bucket{key: key, full: now}
	l.buckets[key] = l.lru.PushFront(b)
	return b
}

// dropIdle removes up to idleDrops full buckets from the cold end.
func (l *Limiter) dropIdle(now time.Time) {
	for range idleDrops {
		e := l.lru.Back()
		if e == nil || e == l.lru.Front() || e.Value.(*bucket).full.After(now) {
			return
		}
		l.remove(e)
	}
}

func (l *Limiter) remove(e *list.Element) {
	delete(l.buckets, e.Value.(*bucket).key)
	l.lru.Remove(e)
}

// Len returns how many buckets the limiter holds.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
