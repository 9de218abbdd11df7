// Package control holds the operations of cmk's control plane — submit and
// read a key configuration, run a preflight, ensure an org and its
// sandboxes, read key health and re-check it, list and acknowledge alerts,
// manage webhooks, query the audit trail, delete an org — as methods with
// typed inputs, typed results and typed errors.
//
// It holds the product's rules (a key protects one org; enabling is one
// way; a revoked org cannot make sandboxes) and nothing of HTTP: the API
// authenticates, decodes, calls one method and encodes its result, and maps
// the errors below to statuses through one table.
//
// Every method takes the org it acts for, which the caller has already
// authorised; nothing here reads or changes another org.
package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cmk-project/cmk/internal/alerts"
	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/guidance"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/keyid"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/lake"
	"github.com/cmk-project/cmk/internal/monitor"
	"github.com/cmk-project/cmk/internal/orgkeys"
	"github.com/cmk-project/cmk/internal/profile"
	"github.com/cmk-project/cmk/internal/ratelimit"
	"github.com/cmk-project/cmk/internal/store"
)

// Service runs the control-plane operations.
type Service struct {
	Store         Store
	Keyring       *keyring.Keyring
	Provider      kms.Provider
	Policy        keyid.Policy
	Env           guidance.Env
	Gate          *keyhealth.Gate
	Monitor       *monitor.Monitor
	WebhookPolicy alerts.URLPolicy
	// WebhookSecrets seals each new webhook's signing secret for storage.
	WebhookSecrets *alerts.SecretBox
	Log            *slog.Logger

	// What deleting an org clears besides the database; nil parts are skipped.
	Keys     *orgkeys.Resolver
	Lake     *lake.Lake
	Profiles *profile.Store

	// PreflightTimeout bounds a synchronous key check (default 30 s).
	PreflightTimeout time.Duration

	// Ownership binds orgs to the Azure tenants that own their keys.
	Ownership Ownership

	// AuditLog records administrators' actions (nil: not recorded).
	AuditLog *audit.Recorder

	// WebhookTester sends a webhook its test event (nil: testing is off).
	WebhookTester WebhookTester

	refusedOnce sync.Once
	refused     *ratelimit.Limiter // refused attempts recorded per org

	// Now is the clock of the history's periods (nil: time.Now).
	Now func() time.Time

	// AWS enables customer keys in AWS KMS (nil: off); AWSKeys reads an
	// AWS key's details for its health (nil: not shown).
	AWS      *AWS
	AWSKeys  AWSKeyReader
	awsFacts awsKeyFacts

	// PlatformKey is the platform's own key (zero: a key file). No org may
	// configure it, nor any key in its vault or its AWS account, as its
	// customer key (platformOwned).
	PlatformKey kms.KeyRef
}

// Refused attempts are recorded up to this rate per org: enough to show
// anyone probing, without letting an org grow the shared database (and
// flood its own trail) by calling refused operations in a loop. Accepted
// actions are bounded by their own rules and always recorded.
var refusedAuditLimit = ratelimit.Limit{N: 60, Per: time.Minute, Burst: 60}

// WebhookTester sends one signed test event to a webhook now and says what
// happened (alerts.Deliverer). An error means no attempt was made.
type WebhookTester interface {
	Test(ctx context.Context, h store.Webhook) (alerts.TestResult, error)
}

// action records an administrator's action on org in the audit trail,
// with its outcome: "ok", "refused: <rule>" for a *Problem, or "failed".
func (s *Service) action(ctx context.Context, org, op, detail string, err error) {
	outcome := "ok"
	var p *Problem
	switch {
	case errors.As(err, &p):
		outcome = "refused: " + p.Err.Error()
	case err != nil:
		outcome = "failed"
	}
	if p != nil {
		s.refusedOnce.Do(func() { s.refused = ratelimit.NewLimiter(refusedAuditLimit, 10_000, time.Now) })
		if _, ok := s.refused.Take(org, 1); !ok {
			return
		}
	}
	if len(detail) > maxAuditDetail {
		cut := maxAuditDetail
		for cut > 0 && !utf8.RuneStart(detail[cut]) {
			cut--
		}
		detail = detail[:cut] + "…"
	}
	s.AuditLog.Action(ctx, org, op, outcome, detail)
}

// maxAuditDetail bounds what a request puts in one audit entry.
const maxAuditDetail = 300

// DefaultSandboxes are created with an org the first time it is seen.
var DefaultSandboxes = []string{"prod"}

// Errors callers branch on. Each failure of an operation is a *Problem that
// wraps exactly one of them; the API maps each to a status and a stable
// error code.
var (
	ErrMalformed           = errors.New("malformed request")               // the body is not what the operation takes
	ErrInvalidField        = errors.New("invalid field")                   // a field breaks its rule
	ErrOrgMismatch         = errors.New("org in body differs from caller") // imsOrgId is not the caller's org
	ErrInvalidConfigType   = errors.New("invalid configuration type")
	ErrUnsupportedProvider = errors.New("unsupported provider type")
	ErrInvalidKeyID        = errors.New("invalid key identifier")
	ErrNotFound            = errors.New("not found")
	ErrNameTaken           = errors.New("configuration name taken")
	ErrJobActive           = errors.New("enablement in progress")
	ErrIrreversible        = errors.New("customer-managed keys cannot be reverted")
	ErrKeyInUse            = errors.New("key protects another org")
	ErrNotEnabled          = errors.New("customer-managed keys not enabled")
	ErrSandboxExists       = errors.New("sandbox exists")
	ErrLimitReached        = errors.New("limit reached")
	ErrConfirmation        = errors.New("confirmation required")
	ErrKeyUnavailable      = errors.New("customer key unavailable")
	ErrConsent             = errors.New("consent not confirmed")         // a consent redirect that binds nothing
	ErrIdentityUnavailable = errors.New("identity provider unavailable") // Entra ID could not be asked; try again
	// ErrConsentNotAdmin is the one refinement of another rule: an
	// ErrConsent whose code was good but whose user may not consent for the
	// tenant (the API answers it 403 rather than 400).
	ErrConsentNotAdmin = fmt.Errorf("%w: the user is not an administrator of the tenant", ErrConsent)
)

// Problem is a failure the caller can act on: which rule (Err, one of the
// errors above), and the text for a person — a title, what was wrong, and
// what to do.
type Problem struct {
	Err    error
	Title  string
	Detail string
	Hint   string
}

func (p *Problem) Error() string { return p.Title + ": " + p.Detail }
func (p *Problem) Unwrap() error { return p.Err }

func problem(err error, title, detail, hint string) *Problem {
	return &Problem{Err: err, Title: title, Detail: detail, Hint: hint}
}

func (s *Service) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

// defaultPreflightTimeout bounds a preflight: long enough for every check
// against a slow vault, short enough that a caller is not left waiting.
const defaultPreflightTimeout = 30 * time.Second
