package dekcache

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/envelope"
)

func TestHitMissAndBounds(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	c := &Cache{MaxAge: time.Minute, MaxUses: 3, Now: func() time.Time { return now }}
	var loads atomic.Int32
	load := func(ctx context.Context) ([]byte, error) { loads.Add(1); return []byte("k1k1k1k1"), nil }
	ctx := context.Background()
	for i := range 3 {
		k, err := c.Get(ctx, "o", "k1", load)
		if err != nil || !bytes.Equal(k, []byte("k1k1k1k1")) {
			t.Fatalf("Get #%d = %q, %v", i, k, err)
		}
		clear(k) // callers clear their copy; the cache's must survive
	}
	if got := loads.Load(); got != 1 {
		t.Errorf("loads after 3 gets = %d, want 1", got)
	}
	c.Get(ctx, "o", "k1", load) // 4th use: over MaxUses, reloads
	if got := loads.Load(); got != 2 {
		t.Errorf("loads after exceeding MaxUses = %d, want 2", got)
	}
	now = now.Add(2 * time.Minute)
	c.Get(ctx, "o", "k1", load)
	if got := loads.Load(); got != 3 {
		t.Errorf("loads after MaxAge = %d, want 3", got)
	}
	// Five lookups: three loads, two answered from the cache.
	if h, l := c.Hits(), c.Loads(); h != 2 || l != 3 {
		t.Errorf("Hits, Loads = %d, %d; want 2, 3", h, l)
	}
}

func TestSingleFlight(t *testing.T) {
	c := New()
	var loads atomic.Int32
	release := make(chan struct{})
	load := func(ctx context.Context) ([]byte, error) {
		loads.Add(1)
		<-release
		return []byte("key"), nil
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if k, err := c.Get(context.Background(), "o", "k", load); err != nil || string(k) != "key" {
				t.Errorf("Get = %q, %v", k, err)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if got := loads.Load(); got != 1 {
		t.Errorf("concurrent misses made %d loads, want 1", got)
	}
}

// TestLoadedKeyZeroed checks that the slice a load returns is zeroed once
// the caller that started the load and every waiter on it (including one
// that gave up) have their copies, while the cached key stays usable.
func TestLoadedKeyZeroed(t *testing.T) {
	c := New()
	want := bytes.Repeat([]byte{0xA5}, 32)
	var loaded []byte
	release := make(chan struct{})
	started := make(chan struct{})
	load := func(ctx context.Context) ([]byte, error) {
		close(started)
		<-release
		loaded = bytes.Clone(want)
		return loaded, nil
	}
	var wg sync.WaitGroup
	get := func() {
		defer wg.Done()
		if k, err := c.Get(context.Background(), "o", "k", load); err != nil || !bytes.Equal(k, want) {
			t.Errorf("Get = %x, %v; want %x", k, err, want)
		}
	}
	wg.Add(1)
	go get()
	<-started
	for range 10 {
		wg.Add(1)
		go get()
	}
	gaveUp, cancel := context.WithCancel(context.Background())
	cancel()
	waiting := make(chan struct{})
	go func() {
		defer close(waiting)
		for {
			c.mu.Lock()
			n := c.inflight["k"].refs
			c.mu.Unlock()
			if n == 11 {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	<-waiting
	if _, err := c.Get(gaveUp, "o", "k", load); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a cancelled context = %v, want context.Canceled", err)
	}
	close(release)
	wg.Wait()
	if !bytes.Equal(loaded, make([]byte, len(want))) {
		t.Errorf("the loader's key after every Get returned = %x, want zeroes", loaded)
	}
	if k, err := c.Get(context.Background(), "o", "k", load); err != nil || !bytes.Equal(k, want) {
		t.Errorf("cached Get = %x, %v; want %x", k, err, want)
	}
}

func TestErrorsNotCached(t *testing.T) {
	c := New()
	boom := errors.New("vault says no")
	if _, err := c.Get(context.Background(), "o", "k", func(context.Context) ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("Get = %v, want the loader's error", err)
	}
	if c.Len() != 0 {
		t.Errorf("a failed load was cached")
	}
}

func TestWipeOrg(t *testing.T) {
	c := New()
	ctx := context.Background()
	load := func(ctx context.Context) ([]byte, error) { return []byte("secret"), nil }
	c.Get(ctx, "a", "a1", load)
	c.Get(ctx, "a", "a2", load)
	c.Get(ctx, "b", "b1", load)
	held := c.entries["a1"].key
	if n := c.WipeOrg("a"); n != 2 {
		t.Errorf("WipeOrg = %d, want 2", n)
	}
	if !bytes.Equal(held, make([]byte, 6)) {
		t.Errorf("wiped key bytes = %q, want zeroes", held)
	}
	if c.Len() != 1 {
		t.Errorf("Len after wipe = %d, want 1 (org b untouched)", c.Len())
	}

	// A load in flight during the wipe must not be cached afterwards.
	started, finish := make(chan struct{}), make(chan struct{})
	go func() {
		c.Get(ctx, "a", "a3", func(context.Context) ([]byte, error) { close(started); <-finish; return []byte("late"), nil })
	}()
	<-started
	c.WipeOrg("a")
	close(finish)
	time.Sleep(20 * time.Millisecond)
	c.mu.Lock()
	_, cached := c.entries["a3"]
	c.mu.Unlock()
	if cached {
		t.Error("a key loaded across a wipe was cached")
	}
}

func TestSweep(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	c := &Cache{MaxAge: time.Minute, MaxUses: 100, Now: func() time.Time { return now }}
	c.Get(context.Background(), "o", "k", func(context.Context) ([]byte, error) { return []byte("key"), nil })
	if n := c.Sweep(); n != 0 {
		t.Errorf("Sweep of a fresh key = %d, want 0", n)
	}
	held := c.entries["k"].key
	now = now.Add(2 * time.Minute)
	if n := c.Sweep(); n != 1 || c.Len() != 0 {
		t.Errorf("Sweep of an expired key = %d (len %d), want 1 (len 0)", n, c.Len())
	}
	if !bytes.Equal(held, make([]byte, 3)) {
		t.Errorf("swept key bytes = %q, want zeroes", held)
	}
}

func TestWithRecordKey(t *testing.T) {
	ctx := context.Background()
	dek := bytes.Repeat([]byte{7}, 32)
	var loads atomic.Int32
	load := func(ctx context.Context) ([]byte, error) { loads.Add(1); return bytes.Clone(dek), nil }
	c := &Cache{MaxUses: 4}
	var first *envelope.RecordKey
	var sealed []byte
	for i := range 3 {
		err := c.WithRecordKey(ctx, "o", "k1", load, func(k *envelope.RecordKey) error {
			if first == nil {
				first = k
			} else if k != first {
				t.Errorf("lookup %d prepared the key again", i)
			}
			var err error
			sealed, err = k.Seal(envelope.Binding{}, []byte("doc"))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := loads.Load(); got != 1 {
		t.Errorf("loads after 3 lookups = %d, want 1", got)
	}
	// The use bound drops the key and wipes the prepared one; the next
	// lookup loads and prepares again, and still opens what was sealed.
	for range 3 {
		err := c.WithRecordKey(ctx, "o", "k1", load, func(k *envelope.RecordKey) error {
			_, err := k.Open(envelope.Binding{}, sealed)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := loads.Load(); got != 2 {
		t.Errorf("loads after passing MaxUses = %d, want 2", got)
	}
	if _, err := first.Open(envelope.Binding{}, sealed); !errors.Is(err, envelope.ErrWiped) {
		t.Errorf("the dropped prepared key still opens: %v", err)
	}

	// A key dropped while in use is fetched again, invisibly to the caller.
	calls := 0
	err := c.WithRecordKey(ctx, "o", "k1", load, func(k *envelope.RecordKey) error {
		calls++
		if calls == 1 {
			c.Drop("k1")
		}
		_, err := k.Open(envelope.Binding{}, sealed)
		return err
	})
	if err != nil || calls != 2 {
		t.Errorf("WithRecordKey across a drop = %v after %d calls, want nil after 2", err, calls)
	}

	// WipeOrg wipes the prepared key; a refusing loader then ends it.
	var held *envelope.RecordKey
	c.WithRecordKey(ctx, "o", "k1", load, func(k *envelope.RecordKey) error { held = k; return nil })
	c.WipeOrg("o")
	if _, err := held.Open(envelope.Binding{}, sealed); !errors.Is(err, envelope.ErrWiped) {
		t.Errorf("Open with a key of a wiped org = %v, want ErrWiped", err)
	}
	refused := errors.New("revoked")
	err = c.WithRecordKey(ctx, "o", "k1", func(context.Context) ([]byte, error) { return nil, refused }, func(*envelope.RecordKey) error {
		t.Error("use called with no key")
		return nil
	})
	if !errors.Is(err, refused) {
		t.Errorf("WithRecordKey after WipeOrg = %v, want the loader's refusal", err)
	}
}

// TestMaxAgeOnTheRealClock checks the age bound with the coarse clock the
// cache reads when no Now is set.
func TestMaxAgeOnTheRealClock(t *testing.T) {
	if d := time.Since(coarseNow()); d < -clockTick || d > 2*clockTick {
		t.Fatalf("coarse clock is %v off", d)
	}
	c := &Cache{MaxAge: 3 * clockTick}
	var loads atomic.Int32
	load := func(ctx context.Context) ([]byte, error) { loads.Add(1); return []byte("k"), nil }
	c.Get(context.Background(), "o", "k", load)
	c.Get(context.Background(), "o", "k", load)
	if got := loads.Load(); got != 1 {
		t.Fatalf("loads = %d, want 1 within MaxAge", got)
	}
	time.Sleep(6 * clockTick)
	c.Get(context.Background(), "o", "k", load)
	if got := loads.Load(); got != 2 {
		t.Errorf("loads = %d after twice MaxAge, want 2", got)
	}
}

// TestCoarseClockStops: the coarse clock's ticker stops once nothing asks
// for the time, and the first use after that reads the time afresh.
func TestCoarseClockStops(t *testing.T) {
	coarseNow()
	if !clock.running.Load() {
		t.Fatal("coarse clock not running after a use")
	}
	for deadline := time.Now().Add(5 * time.Second); clock.running.Load(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("coarse clock still running 5 s after its last use")
		}
	}
	time.Sleep(3 * clockTick)
	got, now := coarseNow(), time.Now()
	if d := now.Sub(got); d < 0 || d > clockTick {
		t.Errorf("coarseNow() after a restart is %s behind time.Now(), want at most %s", d, clockTick)
	}
}
