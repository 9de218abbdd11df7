package keyhealth

import (
	"context"
	"log/slog"
	"time"
)

// syncLookBack is how far behind the newest change seen the poll re-reads.
const syncLookBack = 5 * time.Second

// Rows is the part of the state store the gate reads.
type Rows interface {
	// AllHealth returns every monitored org's health.
	AllHealth(ctx context.Context) ([]*Health, error)
	// HealthChangedSince lists the rows whose state or cause changed after t.
	HealthChangedSince(ctx context.Context, t time.Time) ([]*Health, error)
	// OrgsDeletedSince lists orgs deleted after t, with the newest deletion time.
	OrgsDeletedSince(ctx context.Context, t time.Time) ([]string, time.Time, error)
}

// Load fills the gate from the database; a service calls it before serving,
// so a revoked org is refused from the first request after a restart.
func (g *Gate) Load(ctx context.Context, rows Rows) (time.Time, error) {
	all, err := rows.AllHealth(ctx)
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

// SyncHooks are what Sync does besides updating the gate.
type SyncHooks struct {
	// Revoked is called when another replica revoked an org: wipe its keys.
	Revoked func(org string)
	// Deleted is called after an org deleted through any replica was dropped
	// from the gate.
	Deleted func(org string)
}

// Sync keeps the gate current with changes other replicas write, polling
// every poll until ctx ends.
func (g *Gate) Sync(ctx context.Context, rows Rows, since time.Time, poll time.Duration, log *slog.Logger, hooks SyncHooks) {
	t := time.NewTicker(poll)
	defer t.Stop()
	deletedSince := time.Now().Add(-syncLookBack)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		deleted, last, err := rows.OrgsDeletedSince(ctx, deletedSince.Add(-syncLookBack))
		if err == nil {
			for _, org := range deleted {
				g.Forget(org)
				if hooks.Deleted != nil {
					hooks.Deleted(org)
				}
			}
			if last.After(deletedSince) {
				deletedSince = last
			}
		}
		// Re-read a window behind the newest change seen, so a change stamped
		// by a replica whose clock lags ours by up to that much is not missed
		// (replicas are expected to keep their clocks in sync, e.g. NTP).
		changed, err := rows.HealthChangedSince(ctx, since.Add(-syncLookBack))
		if err != nil {
			if ctx.Err() == nil {
				log.Error("sync key health", "err", err)
			}
			continue
		}
		for _, h := range changed {
			prev, known := g.State(h.OrgID)
			if g.Set(h) && h.State == Revoked && (!known || prev.State != Revoked) && hooks.Revoked != nil {
				hooks.Revoked(h.OrgID)
			}
			if h.ChangedAt.After(since) {
				since = h.ChangedAt
			}
		}
	}
}
