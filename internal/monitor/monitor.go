// Package monitor watches the key of every org that uses customer-managed
// keys: on a schedule (spread over the interval, bounded in concurrency) and
// on demand, it describes the key and proves access with real unwrap and
// wrap calls, classifies what it finds, moves the org between HEALTHY,
// DEGRADED, COASTING and REVOKED, raises and resolves alerts, wipes the
// org's data keys from memory on revocation, and starts the re-wrap of
// every data key when the customer adds a key version.
//
// Policy:
//   - A definitive failure (key disabled, deleted or missing, vault gone,
//     role removed, consent withdrawn, firewall, unwrap refused) revokes at
//     once: the next request for the org's data is refused.
//   - A transient failure (timeouts, 5xx) never revokes at once: the org
//     coasts on keys already in memory for Grace, with an Alert notification,
//     then fails closed.
//   - Throttling is the vault answering: it changes nothing but the time of
//     the next check.
//   - Unwrap working but wrap failing (key expired, wrapKey removed) is
//     DEGRADED: data stays readable, and the alert says new keys cannot be
//     made.
//   - The first successful check after a failure restores access and
//     resolves the alerts.
package monitor

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/cmk-project/cmk/internal/alerts"
	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/dekcache"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/metrics"
	"github.com/cmk-project/cmk/internal/preflight"
	"github.com/cmk-project/cmk/internal/store"
)

// Defaults. Thirty seconds keeps a revocation visible within a minute while
// costing about 240 vault calls per org per hour; ten minutes of coasting
// rides out ordinary Key Vault incidents without serving data for long after
// a real outage; four changes in fifteen minutes is flapping.
const (
	DefaultInterval    = 30 * time.Second
	DefaultGrace       = 10 * time.Minute
	DefaultConcurrency = 8
	DefaultWrapEvery   = 10
	DefaultFlapWindow  = 15 * time.Minute
	DefaultFlapCount   = 4
)

// Config tunes the monitor.
type Config struct {
	Interval    time.Duration
	Grace       time.Duration
	Concurrency int
	WrapEvery   int // prove wrap on every Nth check (unwrap is proved every time)
	FlapWindow  time.Duration
	FlapCount   int
}

// Monitor checks keys. Several monitors (replicas) can share one database:
// checks are leased per org.
type Monitor struct {
	Config
	Store    *store.Store
	Provider kms.Provider
	Keyring  *keyring.Keyring
	Cache    *dekcache.Cache
	Gate     *keyhealth.Gate
	Notifier *alerts.Notifier
	Audit    *audit.Recorder
	Env      preflight.Env
	Metrics  *metrics.Metrics
	Log      *slog.Logger
	Owner    string
	Now      func() time.Time

	once sync.Once // fills defaults once, before any loop reads the config
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
}

// Run checks due orgs until ctx ends.
func (m *Monitor) Run(ctx context.Context) {
	m.defaults()
	poll := min(m.Interval/10, 500*time.Millisecond)
	sem := make(chan struct{}, m.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		due, err := m.Store.ClaimDueChecks(ctx, m.Owner, max(2*m.Interval, 30*time.Second), m.Concurrency*2)
		if err != nil && ctx.Err() == nil {
			m.Log.Error("claim key checks", "err", err)
		}
		for _, h := range due {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				if _, err := m.check(ctx, h); err != nil && ctx.Err() == nil {
					m.Log.Error("key check", "org", h.OrgID, "err", err)
				}
			}()
		}
		if len(due) == 0 {
			select {
			case <-ctx.Done():
			case <-time.After(poll):
			}
		}
	}
}

// CheckOrg checks one org now (the "re-check" of the API and CLI). When a
// scheduled check of the org is running, it waits for that one instead.
func (m *Monitor) CheckOrg(ctx context.Context, org string) (*keyhealth.Health, error) {
	m.defaults()
	deadline := m.Now().Add(10 * time.Second)
	for {
		h, err := m.Store.ClaimCheck(ctx, org, m.Owner, max(2*m.Interval, 30*time.Second))
		if err == nil {
			return m.check(ctx, h)
		}
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

// outcome of probing the key.
type outcome struct {
	info     kms.KeyInfo
	err      error // first failure
	unwrapOK bool  // unwrap was proved
	wrapErr  bool  // the failure was on wrap only
	probe    []byte
	probeVer string
}

func (m *Monitor) probe(ctx context.Context, ref kms.KeyRef, h *keyhealth.Health, mem *keyhealth.Memo) outcome {
	var o outcome
	info, err := m.Provider.Describe(ctx, ref)
	if err != nil {
		o.err = err
		return o
	}
	o.info = info
	if !info.Enabled {
		o.err = &kms.Error{Kind: kms.KindKeyDisabled, Op: "describe", Key: ref.String(), Err: errors.New("the key's newest version is disabled")}
		return o
	}
	// Prove unwrap: the stored probe, or else a real data key of the org.
	w := kms.Wrapped{KeyVersion: h.ProbeVersion, Ciphertext: h.Probe, Alg: "RSA-OAEP-256"}
	if len(h.Probe) == 0 {
		keys, err := m.Store.CustomerKeysNotAt(ctx, h.OrgID, "", "", 1)
		if err != nil {
			o.err = err
			return o
		}
		if len(keys) > 0 {
			w = kms.Wrapped{KeyVersion: keys[0].KEKVersion, Ciphertext: keys[0].Wrapped, Alg: keys[0].Alg}
		}
	}
	if len(w.Ciphertext) > 0 {
		dek, err := m.Provider.Unwrap(ctx, ref, w)
		clear(dek)
		if err != nil {
			o.err = err
			return o
		}
		o.unwrapOK = true
	}
	// Prove wrap now and then, whenever there is no probe, and when the key
	// has a new version (the probe then moves to it).
	now := m.Now()
	if len(h.Probe) == 0 || info.Version != h.ProbeVersion || mem.Checks%m.WrapEvery == 0 {
		secret := make([]byte, 32)
		rand.Read(secret)
		nw, err := m.Provider.Wrap(ctx, ref, secret)
		if err != nil {
			o.err, o.wrapErr = err, o.unwrapOK
			return o
		}
		mem.LastWrap = now
		if !o.unwrapOK {
			back, err := m.Provider.Unwrap(ctx, ref, nw)
			clear(back)
			if err != nil {
				o.err = err
				return o
			}
			o.unwrapOK = true
		}
		o.probe, o.probeVer = nw.Ciphertext, nw.KeyVersion
	}
	return o
}

func (m *Monitor) check(ctx context.Context, h *keyhealth.Health) (*keyhealth.Health, error) {
	m.defaults()
	start := m.Now()
	ctx = audit.WithOrg(ctx, h.OrgID)
	org, err := m.Store.Org(ctx, h.OrgID)
	if err != nil {
		return nil, err
	}
	ref := keyring.CustomerRef(org)
	mem := h.Memo
	mem.Changes = slices.Clone(mem.Changes)
	mem.Checks++
	o := m.probe(ctx, ref, h, &mem)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	now := m.Now()
	next := *h
	next.LastCheck = now
	next.NextCheck = now.Add(m.jitter(m.Interval))
	if o.probe != nil {
		next.Probe, next.ProbeVersion = o.probe, o.probeVer
	}
	kind := kms.KindOf(o.err)
	if o.err != nil && kind == "" {
		return nil, o.err // our own failure (database); not a verdict on the key
	}
	if m.Metrics != nil {
		outcomeLabel := "ok"
		if kind != "" {
			outcomeLabel = string(kind)
		}
		m.Metrics.KeyChecks.WithLabelValues(outcomeLabel).Inc()
		m.Metrics.CheckDurations.Observe(now.Sub(start).Seconds())
	}

	switch {
	case o.err == nil:
		next.State, next.Cause, next.Message, next.LastOK = keyhealth.Healthy, "", "", now
		if o.info.Version != "" && o.info.Version != h.KeyVersion && o.info.Version != h.RotateTo {
			next.RotateTo = o.info.Version
			m.Audit.Record(ctx, "rotation", ref, o.info.Version, "started", "new key version detected; re-wrapping data keys from "+h.KeyVersion)
			m.Log.Info("key rotation detected", "org", h.OrgID, "from", h.KeyVersion, "to", o.info.Version)
		}
	case kind == kms.KindThrottled:
		// The vault answered: access is not in question. Check again when
		// it asks us to.
		var ke *kms.Error
		errors.As(o.err, &ke)
		next.NextCheck = now.Add(max(ke.RetryAfter, m.Interval))
	case kind.Transient():
		switch h.State {
		case keyhealth.Healthy, keyhealth.Degraded:
			next.State, next.Cause, next.Message, next.Since = keyhealth.Coasting, string(kind), preflight.Describe(o.err), now
		case keyhealth.Coasting:
			if now.Sub(h.Since) >= m.Grace {
				next.State, next.Cause, next.Message = keyhealth.Revoked, alerts.CauseGraceExhausted, "The key vault has been unreachable for longer than the grace period: "+preflight.Describe(o.err)
			}
		}
	case o.wrapErr:
		next.State, next.Cause, next.Message = keyhealth.Degraded, string(kind), preflight.Describe(o.err)
	default:
		next.State, next.Cause, next.Message = keyhealth.Revoked, string(kind), preflight.Describe(o.err)
	}
	if next.State != h.State {
		next.Since = now
		mem.Changes = append(mem.Changes, now)
	}
	cut := 0
	for cut < len(mem.Changes) && now.Sub(mem.Changes[cut]) > m.FlapWindow {
		cut++
	}
	mem.Changes = mem.Changes[cut:]
	next.Memo = mem

	// Close the gate first, then wipe: a request that passed the gate just
	// before may still load a key, but the wipe (which also voids loads in
	// flight) comes after it, so no key of a revoked org stays in memory.
	next.UpdatedAt = now
	next.Version = h.Version + 1
	if next.State == keyhealth.Revoked {
		// Failing closed is published at once; anything else only once it
		// is saved, so a check that lost its lease cannot open the gate.
		m.Gate.Set(&next)
	}
	if next.State == keyhealth.Revoked && h.State != keyhealth.Revoked {
		n := m.Cache.WipeOrg(h.OrgID)
		m.Log.Warn("customer key revoked; org data locked", "org", h.OrgID, "cause", next.Cause, "keys_wiped", n)
		m.Audit.Record(ctx, "revocation", ref, o.info.Version, next.Cause, next.Message)
	}
	if h.State != keyhealth.Healthy && next.State == keyhealth.Healthy {
		m.Log.Info("customer key access restored", "org", h.OrgID, "was", h.State)
		m.Audit.Record(ctx, "recovery", ref, o.info.Version, "ok", "access restored after "+h.State+" ("+h.Cause+")")
	}
	if err := m.Store.SaveHealth(context.WithoutCancel(ctx), &next, m.Owner); err != nil {
		if errors.Is(err, store.ErrLeaseLost) {
			// Another check owns the row now: show what it saved.
			if cur, rerr := m.Store.Health(context.WithoutCancel(ctx), h.OrgID); rerr == nil {
				m.Gate.Set(cur)
			}
		}
		return nil, err
	}
	m.Gate.Set(&next)
	m.alert(ctx, h, &next, ref, len(mem.Changes) >= m.FlapCount)
	return &next, nil
}

func (m *Monitor) jitter(d time.Duration) time.Duration {
	// ±10% so checks of many orgs spread over the interval instead of
	// arriving at the vault together.
	return d - d/10 + time.Duration(mrand.Int64N(int64(d/5)+1))
}

// alert raises and resolves alerts for a check's outcome.
func (m *Monitor) alert(ctx context.Context, prev, cur *keyhealth.Health, ref kms.KeyRef, flapping bool) {
	if m.Notifier == nil {
		return
	}
	org := cur.OrgID
	if flapping {
		d := alerts.Describe(alerts.KindNotification, alerts.CauseFlapping, cur.Message, cur.State == keyhealth.Revoked, m.Env, ref)
		if _, err := m.Notifier.Raise(ctx, org, alerts.KindNotification, alerts.CauseFlapping, d); err != nil {
			m.Log.Error("raise alert", "org", org, "err", err)
		}
	}
	switch cur.State {
	case keyhealth.Healthy:
		if prev.State != keyhealth.Healthy || !flapping {
			kinds := []string{alerts.KindAccessDisabled, alerts.KindAccessFailure}
			// The flapping notification stays open until the key has
			// been stable for a whole window.
			if !flapping {
				kinds = nil
			}
			if _, err := m.Notifier.Resolve(ctx, org, kinds...); err != nil {
				m.Log.Error("resolve alerts", "org", org, "err", err)
			}
		}
	default:
		if flapping {
			return // one notification for the whole episode, not one per flap
		}
		kind := alerts.KindFor(cur.Cause)
		if cur.State == keyhealth.Revoked && kind == alerts.KindNotification {
			kind = alerts.KindAccessFailure
		}
		d := alerts.Describe(kind, cur.Cause, cur.Message, cur.State == keyhealth.Revoked, m.Env, ref)
		if _, err := m.Notifier.Raise(ctx, org, kind, cur.Cause, d); err != nil {
			m.Log.Error("raise alert", "org", org, "err", err)
		}
	}
}
