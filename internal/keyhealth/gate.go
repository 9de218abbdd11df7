package keyhealth

import (
	"fmt"
	"sync"
	"time"

	"github.com/cmk-project/cmk/internal/kms"
)

// Refused is the error every data-plane operation of an org gets while its
// key is unusable. It names the cause and what to do.
type Refused struct {
	Org     string
	State   string
	Cause   string
	Message string
	Since   time.Time
}

func (e *Refused) Error() string {
	return fmt.Sprintf("data of org %s is locked: customer-managed key %s since %s (%s): %s", e.Org, e.State, e.Since.UTC().Format(time.RFC3339), e.Cause, e.Message)
}

// Gate is the in-memory answer to "may this org's data be served right
// now?", consulted by every data-plane request. The monitor (and, across
// replicas, the health poller) keeps it current.
type Gate struct {
	Grace time.Duration
	Now   func() time.Time
	// MaxTracked bounds the (org, store) pairs whose refusals are counted
	// between flushes (0: DefaultMaxTracked).
	MaxTracked int

	mu   sync.RWMutex
	m    map[string]Health
	uses uses // refusals and resumes per org and store (uses.go)
}

func (g *Gate) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

// Set records an org's health, unless the gate already holds a newer view
// (a replica's poll can deliver a row older than a local check's result).
// Rows are ordered by their version, which the database bumps on every
// write, so no replica's clock decides. It reports whether h was taken.
func (g *Gate) Set(h *Health) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[string]Health{}
	}
	if cur, ok := g.m[h.OrgID]; ok && h.Version < cur.Version {
		return false
	}
	cp := *h
	cp.Probe = nil
	g.m[h.OrgID] = cp
	return true
}

// Forget drops an org (deleted). A later row of an org created again under
// the same id starts at a higher version, so nothing stale can win.
func (g *Gate) Forget(org string) {
	g.mu.Lock()
	delete(g.m, org)
	g.mu.Unlock()
	g.forgetUses(org)
}

// State returns what the gate knows of an org.
func (g *Gate) State(org string) (Health, bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	h, ok := g.m[org]
	return h, ok
}

// Allow returns nil when the org's data may be served, or *Refused. Orgs on
// system-managed keys are not in the gate and are always allowed. A coasting
// org is allowed until its grace runs out, even before the monitor notices.
func (g *Gate) Allow(org string) error {
	g.mu.RLock()
	h, ok := g.m[org]
	g.mu.RUnlock()
	if !ok {
		return nil
	}
	switch h.State {
	case Revoked:
		return &Refused{Org: org, State: h.State, Cause: h.Cause, Message: h.Message, Since: h.Since}
	case Coasting:
		if g.Grace > 0 && g.now().Sub(h.Since) >= g.Grace {
			return &Refused{Org: org, State: Revoked, Cause: string(kms.KindTransient),
				Message: "the key vault has been unreachable for longer than the grace period", Since: h.Since.Add(g.Grace)}
		}
	}
	return nil
}
