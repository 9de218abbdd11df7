package monitor

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/kms"
)

func (e *checkEnv) episodes(t *testing.T) []*keyhealth.Episode {
	t.Helper()
	eps, err := e.st.Episodes(context.Background(), e.org, time.Time{}, time.Time{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	return eps
}

// TestEpisodeAcrossTransitions: HEALTHY → COASTING → (grace runs out)
// REVOKED → HEALTHY is one episode with its causes in order, data refused
// from the grace's end to the recovery; a later revocation is a second.
func TestEpisodeAcrossTransitions(t *testing.T) {
	e := newCheckEnv(t)
	e.m.Grace = 10 * time.Minute
	e.check(t, keyhealth.Healthy, "")
	if n := len(e.episodes(t)); n != 0 {
		t.Fatalf("episodes while healthy = %d, want 0", n)
	}
	t0 := e.now
	e.kms.set(func(f *fakeKMS) {
		f.fail["unwrap"] = &kms.Error{Kind: kms.KindTransient, Status: 503, Code: "ServiceUnavailable"}
	})
	e.check(t, keyhealth.Coasting, string(kms.KindTransient))
	e.now = t0.Add(11 * time.Minute)
	e.check(t, keyhealth.Revoked, cmkapi.CauseGraceExhausted)
	e.now = t0.Add(20 * time.Minute)
	e.kms.set(func(f *fakeKMS) { delete(f.fail, "unwrap") })
	e.check(t, keyhealth.Healthy, "")

	eps := e.episodes(t)
	if len(eps) != 1 {
		t.Fatalf("episodes = %d, want 1", len(eps))
	}
	ep := eps[0]
	if !ep.Start.Equal(t0.Truncate(time.Millisecond)) || !ep.End.Equal(e.now.Truncate(time.Millisecond)) || ep.Worst != keyhealth.Revoked {
		t.Errorf("episode = %v to %v worst %s, want %v to %v worst REVOKED", ep.Start, ep.End, ep.Worst, t0, e.now)
	}
	if len(ep.Causes) != 2 || ep.Causes[0].State != keyhealth.Coasting || ep.Causes[1].State != keyhealth.Revoked {
		t.Errorf("causes = %+v, want COASTING then REVOKED", ep.Causes)
	}
	graceEnd := t0.Add(10 * time.Minute).Truncate(time.Millisecond)
	if !ep.BlockedFrom.Equal(graceEnd) || !ep.BlockedUntil.Equal(e.now.Truncate(time.Millisecond)) || ep.Blocked != 10*time.Minute {
		t.Errorf("blocked from %v until %v for %v, want from the grace's end %v until the recovery, 10m", ep.BlockedFrom, ep.BlockedUntil, ep.Blocked, graceEnd)
	}

	e.now = t0.Add(time.Hour)
	e.kms.set(func(f *fakeKMS) { f.disabled = true })
	e.check(t, keyhealth.Revoked, string(kms.KindKeyDisabled))
	eps = e.episodes(t)
	if len(eps) != 2 || !eps[0].End.IsZero() || eps[0].Worst != keyhealth.Revoked || eps[0].Causes[0].Cause != string(kms.KindKeyDisabled) {
		t.Fatalf("after a second revocation: %d episodes, newest %+v; want 2, the newest open, REVOKED/KEY_DISABLED", len(eps), eps[0])
	}
}

// TestEpisodeOneReplicaWrites: two replicas checking the same org at once
// (each its own monitor on the shared database) write one episode with one
// cause: only the holder of the check lease writes.
func TestEpisodeOneReplicaWrites(t *testing.T) {
	e := newCheckEnv(t)
	e.check(t, keyhealth.Healthy, "")
	other := &Monitor{Store: e.m.Store, Provider: e.m.Provider, Cache: e.m.Cache, Gate: &keyhealth.Gate{},
		Notifier: e.m.Notifier, Audit: e.m.Audit, Log: e.m.Log, Owner: "replica-2", Now: e.m.Now}
	e.kms.set(func(f *fakeKMS) { f.disabled = true })
	var wg sync.WaitGroup
	for _, m := range []*Monitor{e.m, other} {
		for i := 0; i < 3; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := m.CheckOrg(context.Background(), e.org); err != nil {
					t.Errorf("CheckOrg: %v", err)
				}
			}()
		}
	}
	wg.Wait()
	eps := e.episodes(t)
	if len(eps) != 1 || len(eps[0].Causes) != 1 {
		t.Fatalf("episodes = %d (causes %+v), want 1 with one cause", len(eps), eps)
	}
}
