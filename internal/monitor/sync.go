package monitor

import (
	"context"
	"log/slog"
	"time"

	"github.com/cmk-project/cmk/internal/dekcache"
	"github.com/cmk-project/cmk/internal/store"
)

// syncLookBack is how far behind the newest change seen the poll re-reads.
const syncLookBack = 5 * time.Second

// Load fills the gate from the database; a service calls it before serving,
// so a revoked org is refused from the first request after a restart.
func (g *Gate) Load(ctx context.Context, st *store.Store) (time.Time, error) {
	all, err := st.AllHealth(ctx)
	if err != nil {
		return time.Time{}, err
	}
	var last time.Time
	for _, h := range all {
		g.Set(h)
		if h.ChangedAt.After(last) {
			last = h.ChangedAt
		}
	}
	return last, nil
}

// Sync keeps the gate current with changes other replicas write, and wipes
// cached keys of orgs they revoked, polling every poll until ctx ends.
//
// It also follows org deletions made through any replica, calling
// forget(org) after dropping the org from the gate and wiping its keys.
func (g *Gate) Sync(ctx context.Context, st *store.Store, cache *dekcache.Cache, since time.Time, poll time.Duration, log *slog.Logger, forget func(org string)) {
	t := time.NewTicker(poll)
	defer t.Stop()
	deletedSince := time.Now().Add(-syncLookBack)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		deleted, last, err := st.OrgsDeletedSince(ctx, deletedSince.Add(-syncLookBack))
		if err == nil {
			for _, org := range deleted {
				g.Forget(org)
				cache.WipeOrg(org)
				if forget != nil {
					forget(org)
				}
			}
			if last.After(deletedSince) {
				deletedSince = last
			}
		}
		// Re-read a window behind the newest change seen, so a change stamped
		// by a replica whose clock lags ours by up to that much is not missed
		// (replicas are expected to keep their clocks in sync, e.g. NTP).
		changed, err := st.HealthChangedSince(ctx, since.Add(-syncLookBack))
		if err != nil {
			if ctx.Err() == nil {
				log.Error("sync key health", "err", err)
			}
			continue
		}
		for _, h := range changed {
			prev, known := g.State(h.OrgID)
			if g.Set(h) && h.State == store.HealthRevoked && (!known || prev.State != store.HealthRevoked) {
				cache.WipeOrg(h.OrgID)
			}
			if h.ChangedAt.After(since) {
				since = h.ChangedAt
			}
		}
	}
}
