// Package monitor watches the key of every org that uses customer-managed
// keys: on a schedule (spread over the interval, bounded in concurrency) and
// on demand, it describes the key and proves access with real unwrap and
// wrap calls, classifies what it finds, moves the org between HEALTHY,
// DEGRADED, COASTING and REVOKED, raises and resolves alerts, wipes the
// org's data keys from memory on revocation, and starts the re-wrap of
// every data key when the customer adds a key version.
//
// Policy:
//   - The key's attributes are read first (Describe): Key Vault still wraps
//     under a disabled key and refuses only unwrap, so "wrap works" proves
//     nothing. Enabled=false revokes like a 403 KeyDisabled; a key without
//     unwrapKey revokes; a key outside its nbf/exp dates or without wrapKey
//     (which Azure still lets unwrap) is DEGRADED, without a wrap being tried.
//   - Only an answer recognised as loss of access revokes at once
//     (kms.Kind.LossOfAccess): key disabled, deleted or missing, vault gone,
//     role or access policy removed, consent withdrawn, firewall, operation
//     not permitted, Entra ID refusing the sign-in, or the vault saying it
//     cannot decrypt a ciphertext the monitor itself wrapped under that
//     version (its probe). The next request for the org's data is refused.
//   - Anything else never revokes at once: no answer (timeouts, 5xx), and
//     answers not recognised as loss of access: a 400 such as Key Vault's
//     BadParameter for an api-version it does not know, any other
//     KindInvalidRequest, a stored key reference the configuration no
//     longer allows, or a data key's stored wrapping that does not unwrap
//     (one damaged row says nothing about the key). The org coasts on keys
//     already in memory for Grace (DefaultGrace, ten minutes; the gate
//     enforces the same bound even if no check runs) with an Alert
//     notification naming the answer (HTTP status and code, never key
//     material), then fails closed.
//   - Throttling is the vault answering: it changes nothing but the time of
//     the next check (the vault's Retry-After, at least the interval, which
//     is longer than Key Vault's documented 1/2/4/8/16 s backoff).
//   - Unwrap working but wrap failing (key expired, wrapKey removed) is
//     DEGRADED: data stays readable, and the alert says new keys cannot be
//     made.
//   - The first successful check after a failure restores access (audited
//     as a recovery, from DEGRADED and COASTING as from REVOKED) and
//     resolves the open alerts about access; a check with none open
//     resolves nothing.
//   - While data is refused, an open alert names the blocking cause.
//     Flapping (FlapCount state changes within FlapWindow) is an Alert
//     notification in addition, counted once per state change and closed
//     after a whole window without one (decide).
//   - Rotation re-wraps a data key only under a key version Describe shows
//     usable, and proves each new wrapping unwraps to the same data key
//     before the old wrapping is replaced (rotate.go).
//   - A Key Vault event only asks for a check (Nudge): at once, then at
//     most once per NudgeGap per org however many arrive; the check decides.
//   - The key's expiry date is warned of 30, 7 and 1 days ahead, once per
//     threshold and date (expiry.go).
package monitor

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/cmk-project/cmk/internal/alerts"
	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/dekcache"
	"github.com/cmk-project/cmk/internal/guidance"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/metrics"
	"github.com/cmk-project/cmk/internal/store"
)

// Defaults. Thirty seconds keeps a revocation visible within a minute while
// costing about 240 vault calls per org per hour; ten minutes of coasting
// rides out ordinary Key Vault incidents without serving data for long after
// a real outage; four changes in fifteen minutes is flapping. A replica runs
// at most Concurrency checks at once, so it keeps Concurrency / (check
// time) orgs per second on schedule: 64 carries 10,000 orgs at the default
// interval (333 checks a second) while a check takes up to 190 ms, three
// vault calls (the fleet benchmark, docs/operations.md "Fleet figures");
// 8 did not, at 28 checks a second.
const (
	DefaultInterval    = 30 * time.Second
	DefaultGrace       = 10 * time.Minute
	DefaultConcurrency = 64
	DefaultWrapEvery   = 10
	DefaultFlapWindow  = 15 * time.Minute
	DefaultFlapCount   = 4
	// DefaultLease is how long a replica's claim on an org's check
	// lasts (at least two intervals), and half of how long its claim on
	// a rotation lasts (renewed every page of data keys): the time after
	// which another replica, or this one restarted, takes over what a
	// crashed replica was doing.
	DefaultLease = 30 * time.Second
)

// Config tunes the monitor.
type Config struct {
	Interval    time.Duration
	Grace       time.Duration
	Concurrency int
	WrapEvery   int // prove wrap on every Nth check (unwrap is proved every time)
	FlapWindow  time.Duration
	FlapCount   int
	// NudgeGap is the least time between two checks of one org asked for
	// by Nudge (key events), default DefaultNudgeGap.
	NudgeGap time.Duration
	// Lease bounds how long the work of a crashed replica waits for
	// another: a check is claimed for max(2×Interval, Lease), a rotation
	// for 2×Lease. Default DefaultLease.
	Lease time.Duration
}

// Monitor checks keys. Several monitors (replicas) can share one database:
// checks are leased per org.
type Monitor struct {
	Config
	Store    Store
	Provider kms.Provider
	Keyring  *keyring.Keyring
	Cache    *dekcache.Cache
	Gate     *keyhealth.Gate
	Notifier *alerts.Notifier
	Audit    *audit.Recorder
	Env      guidance.Env
	Metrics  *metrics.Metrics
	Log      *slog.Logger
	Owner    string
	Now      func() time.Time
	// Sleep pauses a rotation the vault throttles (nil: a timer that ends
	// with ctx).
	Sleep func(ctx context.Context, d time.Duration) error
	// Stop, when closed, ends Run after the checks it has started (and
	// those of the orgs it already claimed) finish; cancelling Run's ctx
	// cuts them short instead.
	Stop <-chan struct{}

	once   sync.Once // fills defaults once, before any loop reads the config
	nudge  *nudges   // orgs to check now (nudge.go)
	leases leaseBook // the check leases this monitor holds
}

// leaseBook counts the orgs whose check lease this monitor holds and uses,
// and remembers that a claim or a check failed, after which it may hold
// leases it does not use.
type leaseBook struct {
	mu       sync.Mutex
	held     map[string]int
	stranded bool
}

func (b *leaseBook) hold(org string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.held == nil {
		b.held = map[string]int{}
	}
	b.held[org]++
}

// done ends the use of org's lease; failed says the claim or the check
// failed, so the lease may be left behind.
func (b *leaseBook) done(org string, failed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.held[org]--; b.held[org] <= 0 {
		delete(b.held, org)
	}
	b.stranded = b.stranded || failed
}

func (b *leaseBook) failed() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stranded = true
}

// strandedExcept reports whether leases may be left behind, and the orgs
// whose leases are in use.
func (b *leaseBook) strandedExcept() (bool, []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.stranded {
		return false, nil
	}
	keep := make([]string, 0, len(b.held))
	for org := range b.held {
		keep = append(keep, org)
	}
	return true, keep
}

func (b *leaseBook) released() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stranded = false
}

// releaseStranded gives back the check leases a failed claim or check may
// have left behind (the database unreachable when the answer or the save
// was due), so that the orgs are checked again as soon as the database
// answers rather than when the leases expire. Failures leave the work for
// the next call.
func (m *Monitor) releaseStranded(ctx context.Context) {
	stranded, keep := m.leases.strandedExcept()
	if !stranded {
		return
	}
	if err := m.Store.ReleaseChecks(ctx, m.Owner, keep); err != nil {
		return // still unreachable: the claim below says so in the log
	}
	m.leases.released()
}

func (m *Monitor) defaults() { m.once.Do(m.fillDefaults) }

func (m *Monitor) fillDefaults() {
	if m.Interval == 0 {
		m.Interval = DefaultInterval
	}
	if m.Grace == 0 {
		m.Grace = DefaultGrace
	}
	if m.Concurrency == 0 {
		m.Concurrency = DefaultConcurrency
	}
	if m.WrapEvery == 0 {
		m.WrapEvery = DefaultWrapEvery
	}
	if m.FlapWindow == 0 {
		m.FlapWindow = DefaultFlapWindow
	}
	if m.FlapCount == 0 {
		m.FlapCount = DefaultFlapCount
	}
	if m.Log == nil {
		m.Log = slog.Default()
	}
	if m.Now == nil {
		m.Now = time.Now
	}
	if m.Lease == 0 {
		m.Lease = DefaultLease
	}
	if m.NudgeGap == 0 {
		m.NudgeGap = DefaultNudgeGap
	}
	m.nudge = newNudges()
	if m.Sleep == nil {
		m.Sleep = sleepCtx
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Run checks due orgs until ctx ends.
func (m *Monitor) Run(ctx context.Context) {
	m.defaults()
	poll := min(m.Interval/10, 500*time.Millisecond)
	sem := make(chan struct{}, m.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil && !closed(m.Stop) {
		m.releaseStranded(ctx)
		// Claim only as many due checks as can start now: a check claimed
		// and left waiting for a slot is late, and no other replica may
		// take it while this one holds its lease.
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		case <-m.Stop:
			return
		}
		free := 1 + cap(sem) - len(sem)
		due, err := m.Store.ClaimDueChecks(ctx, m.Owner, max(2*m.Interval, m.Lease), free)
		if err != nil && ctx.Err() == nil {
			m.Log.Error("claim key checks", "err", err)
			m.leases.failed()
		}
		for _, h := range due {
			m.leases.hold(h.OrgID)
		}
		if len(due) == 0 {
			<-sem
		}
		for i, h := range due {
			if i > 0 {
				sem <- struct{}{}
			}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				m.observeLateness(h)
				_, err := m.check(ctx, h)
				if err != nil && ctx.Err() == nil {
					m.Log.Error("key check", "org", h.OrgID, "err", err)
				}
				m.leases.done(h.OrgID, err != nil)
			}()
		}
		if len(due) == 0 {
			select {
			case <-ctx.Done():
			case <-m.Stop:
			case <-time.After(poll):
			}
		}
	}
}

// observeLateness records how long after its scheduled time a scheduled
// check starts. A row due "now" (the first check after enablement, or a
// re-check asked for) has no schedule to be late for.
func (m *Monitor) observeLateness(h *keyhealth.Health) {
	if m.Metrics == nil || h.NextCheck.IsZero() {
		return
	}
	m.Metrics.CheckLateness.Observe(max(m.Now().Sub(h.NextCheck), 0).Seconds())
}

// closed reports whether ch is closed (false for nil).
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// CheckOrg checks one org now (the "re-check" of the API and CLI). When a
// scheduled check of the org is running, it waits for that one instead.
func (m *Monitor) CheckOrg(ctx context.Context, org string) (*keyhealth.Health, error) {
	m.defaults()
	deadline := m.Now().Add(10 * time.Second)
	for {
		m.leases.hold(org)
		h, err := m.Store.ClaimCheck(ctx, org, m.Owner, max(2*m.Interval, m.Lease))
		if err == nil {
			h, err = m.check(ctx, h)
			m.leases.done(org, err != nil)
			return h, err
		}
		m.leases.done(org, !errors.Is(err, store.ErrLeaseLost))
		if !errors.Is(err, store.ErrLeaseLost) {
			return nil, err
		}
		if m.Now().After(deadline) {
			return m.Store.Health(ctx, org)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// probe describes the key and proves access to it (checks numbers this
// check, for WrapEvery). A failure of the key service is classified into the
// outcome; the error is only for our own failures (the database), which are
// no verdict on the key.
func (m *Monitor) probe(ctx context.Context, ref kms.KeyRef, h *keyhealth.Health, checks int) (outcome, error) {
	var o outcome
	err := m.prove(ctx, ref, h, checks, &o)
	if err == nil {
		return o, nil
	}
	var ke *kms.Error
	if !errors.As(err, &ke) || ke.Kind == "" {
		return o, err
	}
	o.kind, o.message, o.retryAfter = ke.Kind, guidance.Describe(err), ke.RetryAfter
	return o, nil
}

// prove makes the calls of probe and returns the first failure.
func (m *Monitor) prove(ctx context.Context, ref kms.KeyRef, h *keyhealth.Health, checks int, o *outcome) error {
	info, err := m.Provider.Describe(ctx, ref)
	if err != nil {
		return err
	}
	o.version, o.expires = info.Version, info.Expires
	// The attributes first: Key Vault still wraps under a disabled key
	// (only unwrap is refused), so a wrap that works proves nothing.
	if !info.Enabled {
		return &kms.Error{Kind: kms.KindKeyDisabled, Op: "describe", Key: ref.String(), Err: errors.New("the key's newest version is disabled")}
	}
	if !info.HasOp("unwrapKey") {
		return &kms.Error{Kind: kms.KindKeyOperationForbidden, Op: "describe", Key: ref.String(), Err: errors.New("the key's newest version does not permit unwrapKey")}
	}
	// Prove unwrap: the stored probe, or else a real data key of the org.
	w := kms.Wrapped{KeyVersion: h.ProbeVersion, Ciphertext: h.Probe, Alg: "RSA-OAEP-256"}
	if len(h.Probe) == 0 {
		keys, err := m.Store.CustomerKeysNotAt(ctx, h.OrgID, "", "", 1)
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			w = kms.Wrapped{KeyVersion: keys[0].KEKVersion, Ciphertext: keys[0].Wrapped, Alg: keys[0].Alg}
		}
	}
	unwrapOK := false
	if len(w.Ciphertext) > 0 {
		dek, err := m.Provider.Unwrap(ctx, ref, w)
		clear(dek)
		if err != nil {
			o.dataKey = len(h.Probe) == 0
			return err
		}
		unwrapOK = true
	}
	// A key outside its dates or without wrapKey still unwraps (Azure
	// refuses only wrap then): data stays readable, new keys cannot be made.
	now := m.Now()
	if err := wrapRefused(ref, info, now); err != nil {
		o.wrapOnly = unwrapOK
		return err
	}
	// Prove wrap now and then, whenever there is no probe, and when the key
	// has a new version (the probe then moves to it).
	if len(h.Probe) == 0 || info.Version != h.ProbeVersion || checks%m.WrapEvery == 0 {
		secret := make([]byte, 32)
		rand.Read(secret)
		nw, err := m.Provider.Wrap(ctx, ref, secret)
		clear(secret) // the probe protects nothing, but it is a key as far as the vault knows
		if err != nil {
			o.wrapOnly = unwrapOK
			return err
		}
		o.wrappedAt = now
		if !unwrapOK {
			back, err := m.Provider.Unwrap(ctx, ref, nw)
			clear(back)
			if err != nil {
				return err
			}
		}
		o.probe, o.probeVer = nw.Ciphertext, nw.KeyVersion
	}
	return nil
}

// wrapRefused returns the failure Key Vault would give a wrap under info's
// version at now, read from its attributes (nil when a wrap may work):
// outside the nbf/exp window, or without wrapKey in its key_ops.
func wrapRefused(ref kms.KeyRef, info kms.KeyInfo, now time.Time) error {
	switch {
	case info.NotBefore != nil && now.Before(*info.NotBefore):
		return &kms.Error{Kind: kms.KindKeyNotActive, Op: "describe", Key: ref.String(),
			Err: fmt.Errorf("the key's newest version is not active until %s", info.NotBefore.UTC().Format(time.RFC3339))}
	case info.Expires != nil && !now.Before(*info.Expires):
		return &kms.Error{Kind: kms.KindKeyNotActive, Op: "describe", Key: ref.String(),
			Err: fmt.Errorf("the key's newest version expired at %s", info.Expires.UTC().Format(time.RFC3339))}
	case !info.HasOp("wrapKey"):
		return &kms.Error{Kind: kms.KindKeyOperationForbidden, Op: "describe", Key: ref.String(),
			Err: errors.New("the key's newest version does not permit wrapKey")}
	}
	return nil
}

// check probes an org's key, decides its next health and applies the
// decision. The caller holds the org's check lease.
func (m *Monitor) check(ctx context.Context, h *keyhealth.Health) (*keyhealth.Health, error) {
	m.defaults()
	start := m.Now()
	ctx = audit.WithOrg(ctx, h.OrgID)
	org, err := m.Store.Org(ctx, h.OrgID)
	if err != nil {
		return nil, err
	}
	ref := keyring.CustomerRef(org)
	if h.MemoErr != nil {
		m.Log.Warn("key health memo unreadable; flap history starts afresh", "org", h.OrgID, "err", h.MemoErr)
	}
	o, err := m.probe(ctx, ref, h, h.Memo.Checks+1)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	now := m.Now()
	if err != nil {
		return nil, err
	}
	if m.Metrics != nil {
		label := "ok"
		if o.kind != "" {
			label = string(o.kind)
		}
		m.Metrics.KeyChecks.WithLabelValues(label).Inc()
		m.Metrics.CheckDurations.Observe(now.Sub(start).Seconds())
	}
	open, err := m.openAlerts(ctx, h.OrgID)
	if err != nil {
		return nil, err
	}
	d := decide(*h, open, o, now, m.policy())
	// The expiry warnings follow the exp the check saw; without an answer
	// from describe there is nothing to go on, and the memory stays.
	var exp expiryStep
	if o.version != "" {
		exp = expiryWarning(h.Memo.Expiry, o.expires, now)
		d.next.Memo.Expiry = exp.memo
	}
	next, err := m.apply(ctx, h, ref, d)
	if err != nil {
		return nil, err
	}
	m.applyExpiry(ctx, h.OrgID, ref, exp, o.expires, now)
	return next, nil
}

// policy is the configuration as decide takes it, with this check's jitter.
func (m *Monitor) policy() policy {
	return policy{
		interval:   m.Interval,
		nextIn:     m.jitter(m.Interval),
		grace:      m.Grace,
		flapWindow: m.FlapWindow,
		flapCount:  m.FlapCount,
	}
}

func (m *Monitor) jitter(d time.Duration) time.Duration {
	// ±10% so checks of many orgs spread over the interval instead of
	// arriving at the vault together.
	return d - d/10 + time.Duration(mrand.Int64N(int64(d/5)+1))
}

// apply carries out a decision about the org of prev: gate, wipe, audit,
// save (while the lease holds), gate again, alerts.
func (m *Monitor) apply(ctx context.Context, prev *keyhealth.Health, ref kms.KeyRef, d decision) (*keyhealth.Health, error) {
	org := prev.OrgID
	next := d.next
	// Close the gate first, then wipe: a request that passed the gate just
	// before may still load a key, but the wipe (which also voids loads in
	// flight) comes after it, so no key of a revoked org stays in memory.
	if d.failClosed {
		m.Gate.Set(&next)
	}
	if d.wipe {
		n := m.Cache.WipeOrg(org)
		m.Log.Warn("customer key revoked; org data locked", "org", org, "cause", next.Cause, "keys_wiped", n)
	}
	for _, a := range d.audits {
		switch a.op {
		case opRotation:
			m.Log.Info("key rotation detected", "org", org, "from", prev.KeyVersion, "to", a.version)
		case opRecovery:
			m.Log.Info("customer key access restored", "org", org, "was", prev.State)
		}
		m.Audit.Record(ctx, a.op, ref, a.version, a.outcome, a.detail)
	}
	// The episode history moves with the health row, under the same lease
	// (keyhealth.StepOf).
	// Stamped with the check's time, from before the gate closed above, so
	// refusals the closed gate counts come after the episode's start.
	at := next.LastCheck
	if at.IsZero() {
		at = m.Now()
	}
	step := keyhealth.StepOf(*prev, next, at, m.Grace, ref.String())
	if err := m.Store.SaveHealthStep(context.WithoutCancel(ctx), &next, m.Owner, step); err != nil {
		if errors.Is(err, store.ErrLeaseLost) {
			// Another check owns the row now: show what it saved.
			if cur, rerr := m.Store.Health(context.WithoutCancel(ctx), org); rerr == nil {
				m.Gate.Set(cur)
			}
		}
		return nil, err
	}
	m.Gate.Set(&next)
	if m.Notifier == nil {
		return &next, nil
	}
	for _, r := range d.raise {
		detail := guidance.Alert(r.kind, r.cause, r.message, r.blocked, m.Env, ref)
		if _, err := m.Notifier.Raise(ctx, org, r.kind, r.cause, detail); err != nil {
			m.Log.Error("raise alert", "org", org, "err", err)
		}
	}
	for _, a := range d.resolve {
		f := store.AlertFilter{Kinds: []string{a.kind}, Causes: []string{a.cause}}
		if _, err := m.Notifier.ResolveWhere(ctx, org, f); err != nil {
			m.Log.Error("resolve alerts", "org", org, "kind", a.kind, "cause", a.cause, "err", err)
		}
	}
	return &next, nil
}

// openAlerts lists the kind and cause of the org's open alerts, which
// decide needs to raise and resolve only what the check changes (none
// without a notifier).
func (m *Monitor) openAlerts(ctx context.Context, org string) ([]openAlert, error) {
	if m.Notifier == nil {
		return nil, nil
	}
	as, err := m.Notifier.Open(ctx, org)
	if err != nil {
		return nil, fmt.Errorf("open alerts of org %s: %w", org, err)
	}
	out := make([]openAlert, 0, len(as))
	for _, a := range as {
		out = append(out, openAlert{a.Kind, a.Cause})
	}
	return out, nil
}
