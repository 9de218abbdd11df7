package control

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/guidance"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/store"
)

// Health is the read model of an org's key health.
type Health struct {
	OrgID string
	// Health is nil for an org on system-managed keys.
	Health      *keyhealth.Health
	Org         store.Org
	DataBlocked bool
	Remedy      []string  // numbered steps when the key is not healthy
	Rotation    *Rotation // a re-wrap to a new key version in progress
	// CoastingUntil is, while the state is COASTING, when the org's data
	// stops being served unless the vault answers again; zero otherwise.
	CoastingUntil time.Time
	// The monitor's policy, to say how fast revocation takes effect.
	CheckInterval, Grace time.Duration
	// AWS describes a key in AWS KMS (aws.go); nil for a Key Vault key.
	AWS *cmkapi.AWSKeyHealth
}

// Rotation is the progress of a re-wrap to a new key version.
type Rotation struct {
	TargetVersion string
	Rewrapped     int
	Total         int
}

// RevocationExplanation says in a paragraph how withdrawal and return of
// access behave under the monitor's policy.
func (h *Health) RevocationExplanation() string {
	iv, grace := h.CheckInterval, h.Grace
	return fmt.Sprintf("The platform checks your key every %s. When you disable or delete the key, remove the app's role or block the vault, "+
		"every read and write of your data — data lake, profile store and caches — is refused within about %s, and the keys held in memory are wiped. "+
		"When access returns, the next check restores everything within about %s; nothing is lost and nothing needs re-ingesting. "+
		"If the vault is only unreachable (timeouts, outages), data stays available for %s before it is refused.",
		guidance.Duration(iv), guidance.Duration(2*iv), guidance.Duration(2*iv), guidance.Duration(grace))
}

// Health reads the org's key health.
func (s *Service) Health(ctx context.Context, org string) (*Health, error) {
	v := &Health{OrgID: org, CheckInterval: s.Monitor.Interval, Grace: s.Monitor.Grace}
	o, err := s.Store.Org(ctx, org)
	if err != nil {
		return nil, err
	}
	v.Org = o
	h, err := s.Store.Health(ctx, org)
	if errors.Is(err, store.ErrNotFound) {
		return v, nil
	}
	if err != nil {
		return nil, err
	}
	v.Health = h
	v.DataBlocked = s.Gate.Allow(org) != nil
	if h.State == keyhealth.Coasting && !h.Since.IsZero() && v.Grace > 0 {
		v.CoastingUntil = h.Since.Add(v.Grace)
	}
	if h.State != keyhealth.Healthy {
		v.Remedy = guidance.Steps(h.Cause, s.Env, keyring.CustomerRef(o))
	}
	v.AWS = s.awsKeyHealth(ctx, org, keyring.CustomerRef(o), false)
	if h.RotateTo != "" {
		total, at, err := s.Store.CountAtVersion(ctx, org, h.RotateTo)
		if err == nil {
			v.Rotation = &Rotation{TargetVersion: h.RotateTo, Rewrapped: at, Total: total}
		}
	}
	return v, nil
}

// Recheck checks the org's key now and returns its health.
func (s *Service) Recheck(ctx context.Context, org string) (_ *Health, err error) {
	defer func() { s.action(ctx, org, audit.OpRecheck, "", err) }()
	// The check and what it decides are the system's work; the
	// health.recheck entry (same request id) says who asked for it.
	_, err = s.Monitor.CheckOrg(audit.WithActor(ctx, store.SystemActor), org)
	if errors.Is(err, store.ErrNotFound) {
		return nil, problem(ErrNotEnabled, "Customer-managed keys not enabled", "This org uses system-managed keys; there is no customer key to check.",
			"Enable customer-managed keys first, or run a preflight check of a key with POST /data/infrastructure/manager/byok/preflight.")
	}
	if err != nil {
		return nil, err
	}
	s.refreshAWSKey(ctx, org)
	return s.Health(ctx, org)
}
