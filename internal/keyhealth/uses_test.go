package keyhealth

import (
	"sync"
	"testing"
	"time"
)

func TestGateCountsRefusalsAndResume(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	g := &Gate{Now: func() time.Time { return now }}
	g.Set(&Health{OrgID: "o", State: Revoked, Version: 1})
	for i := 0; i < 3; i++ {
		if err := g.AllowStore("o", StoreLake); err == nil {
			t.Fatal("AllowStore of a revoked org = nil, want refused")
		}
		now = now.Add(time.Second)
	}
	if err := g.AllowStore("other", StoreLake); err != nil {
		t.Fatalf("AllowStore of an org not in the gate = %v", err)
	}
	u := g.DrainUses()
	if len(u) != 1 || u[0].Refused != 3 || !u[0].FirstRefused.Equal(time.Unix(1_800_000_000, 0)) || !u[0].LastRefused.Equal(now.Add(-time.Second)) || !u[0].Resumed.IsZero() {
		t.Fatalf("DrainUses = %+v, want 3 refusals of o's lake, no resume", u)
	}
	// Drained: nothing new until a request is served again.
	if u := g.DrainUses(); len(u) != 0 {
		t.Fatalf("second DrainUses = %+v, want none", u)
	}
	g.Set(&Health{OrgID: "o", State: Healthy, Version: 2})
	now = now.Add(time.Minute)
	resumed := now
	g.AllowStore("o", StoreLake)
	now = now.Add(time.Second)
	g.AllowStore("o", StoreLake)    // a second served request changes nothing
	g.AllowStore("o", StoreProfile) // a store that never refused has no resume
	u = g.DrainUses()
	if len(u) != 1 || u[0].Refused != 0 || !u[0].Resumed.Equal(resumed) {
		t.Fatalf("DrainUses after the resume = %+v, want the lake resumed at %v", u, resumed)
	}
	if g.uses.awaiting.Load() != 0 || len(g.uses.m) != 0 {
		t.Errorf("after the resume was drained: %d awaiting, %d pairs held, want 0, 0", g.uses.awaiting.Load(), len(g.uses.m))
	}
}

func TestGateCountsGraceRunningOut(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	now := t0
	g := &Gate{Grace: time.Minute, Now: func() time.Time { return now }}
	g.Set(&Health{OrgID: "o", State: Coasting, Since: t0, Version: 1})
	if err := g.AllowStore("o", StoreProfileCache); err != nil {
		t.Fatalf("within the grace: %v", err)
	}
	now = t0.Add(time.Minute)
	if err := g.AllowStore("o", StoreProfileCache); err == nil {
		t.Fatal("past the grace: nil, want refused")
	}
	if u := g.DrainUses(); len(u) != 1 || u[0].Store != StoreProfileCache || !u[0].FirstRefused.Equal(now) {
		t.Fatalf("DrainUses = %+v, want one refusal of the profile cache at %v", u, now)
	}
}

func TestGateCountsBounded(t *testing.T) {
	g := &Gate{MaxTracked: 10}
	for i := 0; i < 20; i++ {
		org := string(rune('a' + i))
		g.Set(&Health{OrgID: org, State: Revoked, Version: 1})
		g.AllowStore(org, StoreLake)
		g.AllowStore(org, StoreLake)
	}
	if n := len(g.uses.m); n != 10 {
		t.Errorf("pairs held = %d, want the bound 10", n)
	}
	if d := g.DroppedUses(); d != 20 {
		t.Errorf("DroppedUses = %d, want 20 (two refusals of each of 10 orgs past the bound)", d)
	}
	// Requeued counts respect the bound too.
	u := g.DrainUses()
	g.RequeueUses(append(u, StoreUse{Org: "zz", Store: StoreLake, Refused: 5}))
	if n := len(g.uses.m); n != 10 {
		t.Errorf("pairs held after requeue = %d, want 10", n)
	}
	if d := g.DroppedUses(); d != 25 {
		t.Errorf("DroppedUses after requeue = %d, want 25", d)
	}
	// Forgetting an org drops its counts.
	g.Forget("a")
	if _, ok := g.uses.m[useKey{"a", StoreLake}]; ok {
		t.Error("a forgotten org's counts are still held")
	}
}

func TestGateCountsConcurrently(t *testing.T) {
	g := &Gate{}
	g.Set(&Health{OrgID: "o", State: Revoked, Version: 1})
	const workers, each = 8, 500
	var wg sync.WaitGroup
	var drained []StoreUse
	var mu sync.Mutex
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // a flusher draining while requests are refused
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			u := g.DrainUses()
			mu.Lock()
			drained = append(drained, u...)
			mu.Unlock()
		}
	}()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				g.AllowStore("o", StoreLake)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-done
	drained = append(drained, g.DrainUses()...)
	var total int64
	for _, u := range drained {
		total += u.Refused
	}
	if total != workers*each {
		t.Errorf("refusals counted = %d, want %d", total, workers*each)
	}
}

func TestStepOf(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	now := t0.Add(15 * time.Minute)
	grace := 10 * time.Minute
	ok := Health{State: Healthy}
	coast := Health{State: Coasting, Cause: "TRANSIENT", Since: t0}
	revoked := Health{State: Revoked, Cause: "KEY_DISABLED", Since: now}
	degraded := Health{State: Degraded, Cause: "KEY_NOT_ACTIVE", Since: t0}
	for _, c := range []struct {
		name               string
		prev, next         Health
		open, close, cause bool
		block, unblock     time.Time
	}{
		{"healthy stays", ok, ok, false, false, false, time.Time{}, time.Time{}},
		{"degraded opens", ok, degraded, true, false, true, time.Time{}, time.Time{}},
		{"revoked opens and blocks", ok, revoked, true, false, true, now, time.Time{}},
		{"same state, same cause", degraded, degraded, false, false, false, time.Time{}, time.Time{}},
		{"coasting past grace to revoked blocks from the grace's end", coast, revoked, false, false, true, t0.Add(grace), time.Time{}},
		{"coasting past grace to healthy", coast, ok, false, true, false, t0.Add(grace), now},
		{"revoked to healthy unblocks", revoked, ok, false, true, false, now, now},
	} {
		s := StepOf(c.prev, c.next, now, grace, "k")
		if s.Open != c.open || s.Close != c.close || (s.Cause != nil) != c.cause || !s.Block.Equal(c.block) || !s.Unblock.Equal(c.unblock) {
			t.Errorf("%s: StepOf = open %v close %v cause %v block %v unblock %v, want %v %v %v %v %v", c.name, s.Open, s.Close, s.Cause != nil, s.Block, s.Unblock, c.open, c.close, c.cause, c.block, c.unblock)
		}
	}
}
