// Package audit records every operation on a customer key — describe, wrap,
// unwrap, and the rotation, revocation and recovery events around them —
// and every administrator's action (a configuration submitted, an alert
// acknowledged, a webhook added or removed, a re-check, a sandbox created,
// a tenant bound), with time, org, actor, key name and version, outcome
// and request id. Entries never hold key material or secrets: only
// references, failure kinds and the actor's token subject.
package audit

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/store"
)

type ctxKey int

const (
	keyOrg ctxKey = iota
	keyRequest
	keyActor
)

// WithActor tags ctx with who is acting: the subject of the caller's token.
// Work without one (the monitor, the enablement job) is the system's.
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, keyActor, actor)
}

// UserActor is the actor of a request made with a platform token: "user:"
// and the token's subject. The prefix keeps a subject that happens to read
// "system" from passing for the service's own work.
func UserActor(subject string) string { return "user:" + subject }

// TenantAdminActor is the actor of a consent: an administrator of the Azure
// tenant, whose account cmk never learns.
func TenantAdminActor(tenant string) string { return "tenant-admin:" + tenant }

// ActorOf returns the actor in ctx, or store.SystemActor.
func ActorOf(ctx context.Context) string {
	if s, _ := ctx.Value(keyActor).(string); s != "" {
		return s
	}
	return store.SystemActor
}

// BindingProbeOrg is an org id no org can have (org ids hold no spaces): the
// validation of a key in AWS KMS asks for it to prove the key policy refuses
// every org but the key's own.
const BindingProbeOrg = "binding probe: no such org"

// WithOrg tags ctx with the org a key operation is for.
func WithOrg(ctx context.Context, org string) context.Context {
	return context.WithValue(ctx, keyOrg, org)
}

// WithRequestID tags ctx with the request that caused a key operation.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, keyRequest, id)
}

// OrgOf returns the org ctx was tagged with by WithOrg, or "".
func OrgOf(ctx context.Context) string { return orgOf(ctx) }

func orgOf(ctx context.Context) string {
	s, _ := ctx.Value(keyOrg).(string)
	return s
}

// RequestID returns the request id in ctx, or "".
func RequestID(ctx context.Context) string {
	s, _ := ctx.Value(keyRequest).(string)
	return s
}

// Recorder writes audit entries.
type Recorder struct {
	Store Store
	Log   *slog.Logger
	// OnCall, when set, is told of every key call: its provider, operation,
	// outcome and duration (metrics).
	OnCall func(c Call)
}

// Record writes one entry; failures to record are logged, never returned, so
// auditing cannot block a revocation or a read.
func (r *Recorder) Record(ctx context.Context, op string, ref kms.KeyRef, version, outcome, detail string) {
	org := orgOf(ctx)
	r.add(ctx, store.AuditEntry{OrgID: org, Op: op, KeyRef: ref.String(), KeyVersion: version, Outcome: outcome, Detail: detail})
}

// Administrators' actions, as recorded by Action.
const (
	OpConfigSubmit  = "config.submit"
	OpAlertAck      = "alert.acknowledge"
	OpWebhookAdd    = "webhook.add"
	OpWebhookDelete = "webhook.delete"
	OpWebhookTest   = "webhook.test"
	OpRecheck       = "health.recheck"
	OpSandboxCreate = "sandbox.create"
	OpTenantBind    = "tenant.bind"
)

// Action records an administrator's action on org: op (one of the Op
// constants), what it was about (a configuration name, an alert or webhook
// id) in detail, and outcome ("ok" or the error code it was refused with).
// The actor comes from ctx. Like Record, it never fails the action.
func (r *Recorder) Action(ctx context.Context, org, op, outcome, detail string) {
	if r == nil {
		return
	}
	r.add(ctx, store.AuditEntry{OrgID: org, Op: op, Outcome: outcome, Detail: detail})
}

func (r *Recorder) add(ctx context.Context, e store.AuditEntry) {
	if e.OrgID == BindingProbeOrg {
		return // a validation's probe under an org that does not exist: no trail to keep
	}
	e.ID, e.RequestID, e.Actor = uuid.NewString(), RequestID(ctx), ActorOf(ctx)
	if err := r.Store.AddAudit(context.WithoutCancel(ctx), e); err != nil && r.Log != nil {
		r.Log.Error("audit entry not recorded", "org", e.OrgID, "op", e.Op, "err", err)
	}
}

// Call is one call to a key service, as OnCall is told of it.
type Call struct {
	Provider string // "azure_key_vault" or "aws_kms"
	Op       string // "describe", "wrap", "unwrap"
	Outcome  string // "ok" or the failure kind
	Took     time.Duration
}

// ProviderOf names the key service of ref for metrics: an AWS KMS key is
// named by its ARN, anything else is an Azure Key Vault (or Managed HSM)
// key.
func ProviderOf(ref kms.KeyRef) string {
	if strings.HasPrefix(ref.VaultURL, "arn:") {
		return "aws_kms"
	}
	return "azure_key_vault"
}

// Provider wraps a key provider so every call is audited.
type Provider struct {
	Inner    kms.Provider
	Recorder *Recorder
}

func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	if k := kms.KindOf(err); k != "" {
		return string(k)
	}
	return "error"
}

func (p *Provider) done(ctx context.Context, op string, ref kms.KeyRef, version string, start time.Time, err error) {
	o := outcome(err)
	p.Recorder.Record(ctx, op, ref, version, o, "")
	if p.Recorder.OnCall != nil {
		p.Recorder.OnCall(Call{Provider: ProviderOf(ref), Op: op, Outcome: o, Took: time.Since(start)})
	}
}

// Describe implements kms.Provider.
func (p *Provider) Describe(ctx context.Context, ref kms.KeyRef) (kms.KeyInfo, error) {
	start := time.Now()
	info, err := p.Inner.Describe(ctx, ref)
	p.done(ctx, "describe", ref, info.Version, start, err)
	return info, err
}

// Wrap implements kms.Provider.
func (p *Provider) Wrap(ctx context.Context, ref kms.KeyRef, dek []byte) (kms.Wrapped, error) {
	start := time.Now()
	w, err := p.Inner.Wrap(ctx, ref, dek)
	p.done(ctx, "wrap", ref, w.KeyVersion, start, err)
	return w, err
}

// Unwrap implements kms.Provider.
func (p *Provider) Unwrap(ctx context.Context, ref kms.KeyRef, w kms.Wrapped) ([]byte, error) {
	start := time.Now()
	dek, err := p.Inner.Unwrap(ctx, ref, w)
	p.done(ctx, "unwrap", ref, w.KeyVersion, start, err)
	return dek, err
}
