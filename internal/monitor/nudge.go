package monitor

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/cmk-project/cmk/internal/store"
)

// DefaultNudgeGap is the least time between two checks of one org asked for
// by Nudge. A burst of events about one key costs one check at once and at
// most one more per gap, about three vault calls each, so a flood of events
// (real or forged) cannot turn into a flood of calls to the customer's vault.
const DefaultNudgeGap = 5 * time.Second

// nudges are the orgs asked to be checked now, coalesced per org.
type nudges struct {
	mu      sync.Mutex
	pending map[string]bool
	last    map[string]time.Time // when each org's nudged check last started
	wake    chan struct{}
	kick    chan struct{} // wakes RunRotations
	count   int           // nudges received
	checks  int           // nudged checks started
}

func newNudges() *nudges {
	return &nudges{pending: map[string]bool{}, last: map[string]time.Time{},
		wake: make(chan struct{}, 1), kick: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Nudge asks for a check of org soon: at once, unless a nudged check of it
// started less than NudgeGap ago, then when the gap is over. Nudges of an
// org that arrive while one is pending are one. It never blocks, and it
// changes nothing by itself: the check decides what the key's state is.
// RunNudges carries the checks out.
func (m *Monitor) Nudge(org string) {
	m.defaults()
	m.nudge.mu.Lock()
	m.nudge.pending[org] = true
	m.nudge.count++
	m.nudge.mu.Unlock()
	signal(m.nudge.wake)
}

// Nudged says how many nudges the monitor received and how many checks
// they started since it began.
func (m *Monitor) Nudged() (nudges, checks int) {
	m.defaults()
	m.nudge.mu.Lock()
	defer m.nudge.mu.Unlock()
	return m.nudge.count, m.nudge.checks
}

// KickRotations makes RunRotations look for a rotation to run now rather
// than at its next poll.
func (m *Monitor) KickRotations() {
	m.defaults()
	signal(m.nudge.kick)
}

// due takes the pending orgs whose gap is over and says how long until the
// next one's is.
func (n *nudges) due(now time.Time, gap time.Duration) (orgs []string, wait time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	wait = -1
	for org := range n.pending {
		if at := n.last[org].Add(gap); now.Before(at) {
			if w := at.Sub(now); wait < 0 || w < wait {
				wait = w
			}
			continue
		}
		delete(n.pending, org)
		n.last[org] = now
		n.checks++
		orgs = append(orgs, org)
	}
	for org, t := range n.last {
		if now.Sub(t) >= gap && !n.pending[org] {
			delete(n.last, org) // bounded: only orgs nudged within the gap are kept
		}
	}
	return orgs, wait
}

// RunNudges checks nudged orgs (see Nudge) until ctx ends, at most
// Concurrency at a time. A check that finds a new key version starts its
// re-wrap at once (KickRotations).
func (m *Monitor) RunNudges(ctx context.Context) {
	m.defaults()
	sem := make(chan struct{}, m.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		orgs, wait := m.nudge.due(m.Now(), m.NudgeGap)
		for _, org := range orgs {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				h, err := m.CheckOrg(ctx, org)
				switch {
				case errors.Is(err, store.ErrNotFound):
					// Not monitored (not on its own key, or deleted): nothing to do.
				case err != nil:
					if ctx.Err() == nil {
						m.Log.Warn("key check on an event", "org", org, "err", err)
					}
				case h.RotateTo != "":
					m.KickRotations()
				}
			}()
		}
		// Wait for a nudge, or for the next gap to end; with an injected
		// clock the gap is looked at again every second at most.
		if wait < 0 || wait > time.Second {
			wait = time.Second
		}
		select {
		case <-ctx.Done():
		case <-m.nudge.wake:
		case <-time.After(wait):
		}
	}
}
