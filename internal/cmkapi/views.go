package cmkapi

import (
	"encoding/csv"
	"encoding/json"
	"io"
	"strings"
	"time"
)

// App is the platform's multi-tenant Azure app and the calling org's
// admin-consent link (GET .../byok/app-registration).
type App struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	ApplicationURI string `json:"applicationUri"`
	ApplicationID  string `json:"applicationId"`
	// RedirectURL is the org's own consent link: it names the org (sealed,
	// expiring) and brings the administrator back to the consent callback.
	RedirectURL string `json:"applicationRedirectUrl"`
	// BoundTenants are the Azure tenants whose administrators consented
	// through the org's link: the org may use keys from their vaults only.
	BoundTenants []string `json:"boundTenants"`
}

// ConsentBinding answers the consent callback when it is asked for JSON:
// the org the link was made for is now bound to the tenant.
type ConsentBinding struct {
	IMSOrgID string `json:"imsOrgId"`
	TenantID string `json:"tenantId"`
	New      bool   `json:"new"` // false when the org was already bound to it
}

// ConfigRequest is the body of POST .../customer/config (seed 001).
type ConfigRequest struct {
	Name       string     `json:"name"`
	Type       string     `json:"type"`
	IMSOrgID   string     `json:"imsOrgId"`
	ConfigData ConfigData `json:"configData"`
}

// ConfigData names the customer's key.
type ConfigData struct {
	KeyVaultURI           string `json:"keyVaultUri,omitempty"`
	KeyVaultKeyIdentifier string `json:"keyVaultKeyIdentifier"`
	KeyArn                string `json:"keyArn,omitempty"` // AWS_KMS: the key ARN or alias ARN
	KeyVersion            string `json:"keyVersion,omitempty"`
	KeyName               string `json:"keyName,omitempty"`
	ProviderType          string `json:"providerType"`
}

// ConfigCreated answers a submitted configuration (201).
type ConfigCreated struct {
	ID     string        `json:"id"`
	Config ConfigSummary `json:"config"`
	Status string        `json:"status"` // "CREATED"
}

// ConfigSummary is the configuration as submitted, with its job status.
type ConfigSummary struct {
	ConfigData ConfigData `json:"configData"`
	Name       string     `json:"name"`
	Type       string     `json:"type"`
	IMSOrgID   string     `json:"imsOrgId"`
	Status     string     `json:"status"`
}

// Config is a configuration and its enablement job
// (GET .../customer/config/{name}).
type Config struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Type       string     `json:"type"`
	Status     string     `json:"status"`
	ConfigData ConfigData `json:"configData"`
	IMSOrgID   string     `json:"imsOrgId"`
	RowType    string     `json:"rowType"` // "BYOK_KEY"
	CreatedAt  string     `json:"createdAt"`
	UpdatedAt  string     `json:"updatedAt"`
	Progress   Progress   `json:"progress"`
	Failure    *Failure   `json:"failure,omitempty"`
	LastError  *Problem   `json:"lastError,omitempty"`
	Checks     []Check    `json:"checks,omitempty"`
}

// ConfigList is GET .../customer/config.
type ConfigList struct {
	Configs []Config `json:"configs"`
}

// Progress counts the data keys the job re-wrapped.
type Progress struct {
	DataKeysRewrapped int `json:"dataKeysRewrapped"`
	DataKeysTotal     int `json:"dataKeysTotal"`
}

// Failure is why a job FAILED: the check, its code, what was found, and
// numbered steps to fix it.
type Failure struct {
	Check   string   `json:"check"`
	Title   string   `json:"title"`
	Code    string   `json:"code"`
	Message string   `json:"message"`
	Remedy  []string `json:"remedy"`
}

// Problem is the latest retryable problem of an unfinished job.
type Problem struct {
	Code    string    `json:"code"`
	Message string    `json:"message"`
	Remedy  []string  `json:"remedy,omitempty"`
	At      time.Time `json:"at"`
	RetryAt time.Time `json:"retryAt"`
}

// PreflightRequest is the body of POST .../byok/preflight.
type PreflightRequest struct {
	KeyVaultKeyIdentifier string `json:"keyVaultKeyIdentifier,omitempty"`
	KeyArn                string `json:"keyArn,omitempty"` // a key in AWS KMS instead
}

// AWSKeyPolicy answers GET .../byok/aws-key-policy: the key-policy
// statements the calling org's administrator adds to its AWS KMS key, made
// for that org (using the key is bound to its encryption context).
type AWSKeyPolicy struct {
	IMSOrgID          string               `json:"imsOrgId"`
	PlatformAccount   string               `json:"platformAccount"`
	Region            string               `json:"region"`
	Regions           []string             `json:"regions"`
	KeySpec           string               `json:"keySpec"`
	KeyUsage          string               `json:"keyUsage"`
	EncryptionContext map[string]string    `json:"encryptionContext"`
	Statements        []AWSPolicyStatement `json:"statements"`
	StatementsJSON    string               `json:"statementsJson"` // Statements, indented, to paste
}

// AWSPolicyStatement is one statement of an AWS key policy.
type AWSPolicyStatement struct {
	Sid       string                    `json:"Sid"`
	Effect    string                    `json:"Effect"`
	Principal map[string]string         `json:"Principal"`
	Action    []string                  `json:"Action"`
	Resource  string                    `json:"Resource"`
	Condition map[string]map[string]any `json:"Condition"`
}

// Check is the outcome of one validation check.
type Check struct {
	Check   string   `json:"check"`
	Title   string   `json:"title"`
	Status  string   `json:"status"`            // CheckPassed, CheckFailed, CheckError, CheckSkipped
	Code    string   `json:"code,omitempty"`    // stable failure code
	Message string   `json:"message,omitempty"` // what was found
	Remedy  []string `json:"remedy,omitempty"`  // numbered steps, in order
}

// PreflightReport is the outcome of every check against a key.
type PreflightReport struct {
	KeyIdentifier string    `json:"keyIdentifier"` // the key checked (canonical once it parses)
	CheckedAt     time.Time `json:"checkedAt"`     // when the checks were made
	Passed        bool      `json:"passed"`
	Retryable     bool      `json:"retryable"` // a check could not run for a transient reason
	Results       []Check   `json:"results"`
}

// Health is an org's key health (GET .../byok/health).
type Health struct {
	OrgID       string     `json:"orgId"`
	State       string     `json:"state"`
	Cause       string     `json:"cause,omitempty"`
	Message     string     `json:"message,omitempty"`
	DataBlocked bool       `json:"dataBlocked"`
	Remedy      []string   `json:"remedy,omitempty"`
	KeyVaultURI string     `json:"keyVaultUri,omitempty"`
	KeyName     string     `json:"keyName,omitempty"`
	KeyVersion  string     `json:"keyVersion,omitempty"`
	Since       *time.Time `json:"since,omitempty"`
	LastCheck   *time.Time `json:"lastCheck,omitempty"`
	LastOK      *time.Time `json:"lastOk,omitempty"`
	NextCheck   *time.Time `json:"nextCheck,omitempty"`
	// CoastingUntil, while the state is COASTING, is when the org's data
	// stops being served unless the vault answers again (since + grace).
	CoastingUntil *time.Time `json:"coastingUntil,omitempty"`
	Rotation      *Rotation  `json:"rotation,omitempty"`
	Revocation    Revocation `json:"revocation"`
	// AWS describes a key in AWS KMS (nil for a Key Vault key).
	AWS *AWSKeyHealth `json:"aws,omitempty"`
}

// AWSKeyHealth is what the key health says of a key in AWS KMS beyond its
// state. AWS rotates key material behind the same ARN and old ciphertexts
// keep decrypting, so a rotation needs no re-wrap and there is no version
// to follow.
type AWSKeyHealth struct {
	KeyArn        string     `json:"keyArn"`
	KeyState      string     `json:"keyState,omitempty"`      // as AWS KMS last said: Enabled, Disabled, PendingDeletion
	LastRotation  *time.Time `json:"lastRotation,omitempty"`  // when AWS lets the platform read it (ListKeyRotations is the key account's)
	KeyMaterialID string     `json:"keyMaterialId,omitempty"` // the current key material, when AWS says
	ReadAt        *time.Time `json:"readAt,omitempty"`        // when these were read
	Rotation      string     `json:"rotation"`                // how rotation works for this key
}

// Rotation is a re-wrap to a new key version in progress.
type Rotation struct {
	TargetVersion     string `json:"targetVersion"`
	DataKeysRewrapped int    `json:"dataKeysRewrapped"`
	DataKeysTotal     int    `json:"dataKeysTotal"`
}

// Revocation says how fast a withdrawal of access takes effect.
type Revocation struct {
	CheckInterval string `json:"checkInterval"`
	Grace         string `json:"grace"`
	Explanation   string `json:"explanation"`
}

// Alert is one alert about an org's key, with its person-facing detail.
type Alert struct {
	ID             string     `json:"id"`
	OrgID          string     `json:"orgId"`
	Kind           string     `json:"kind"`
	Cause          string     `json:"cause"`
	Status         string     `json:"status"`
	Occurrences    int        `json:"occurrences"`
	FirstSeen      time.Time  `json:"firstSeen"`
	LastSeen       time.Time  `json:"lastSeen"`
	ResolvedAt     *time.Time `json:"resolvedAt,omitempty"`
	AcknowledgedAt *time.Time `json:"acknowledgedAt,omitempty"`
	AcknowledgedBy string     `json:"acknowledgedBy,omitempty"`
	AlertDetail
}

// AlertDetail is the person-facing content of an alert.
type AlertDetail struct {
	Title          string   `json:"title"`
	Summary        string   `json:"summary"`
	Cause          string   `json:"cause"`
	Message        string   `json:"message"` // what the last check found
	DataBlocked    bool     `json:"dataBlocked"`
	ProbableCauses []string `json:"probableCauses"`
	Steps          []string `json:"steps"`
}

// AlertList is GET .../byok/alerts.
type AlertList struct {
	Alerts []Alert `json:"alerts"`
}

// Event is what a webhook receives, signed (X-Cmk-Signature).
type Event struct {
	ID         string    `json:"id"` // stable per alert and event type: receivers drop duplicates by it
	Type       string    `json:"type"`
	OrgID      string    `json:"orgId"`
	OccurredAt time.Time `json:"occurredAt"`
	Alert      *Alert    `json:"alert,omitempty"` // absent in a webhook.test event
}

// WebhookTest is the answer of POST .../byok/webhooks/{id}/test: what
// happened when the platform sent the webhook a signed webhook.test event.
type WebhookTest struct {
	WebhookID string `json:"webhookId"`
	EventID   string `json:"eventId"`
	Delivered bool   `json:"delivered"`        // the receiver answered 2xx
	Status    int    `json:"status,omitempty"` // the receiver's HTTP status, 0 when none came
	Error     string `json:"error,omitempty"`  // why it was not delivered (never the URL)
	TookMs    int64  `json:"tookMs"`
}

// WebhookRequest is the body of POST .../byok/webhooks.
type WebhookRequest struct {
	URL string `json:"url"`
}

// Webhook is a subscription; Secret is shown once, when it is created.
type Webhook struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Secret    string    `json:"secret,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

// WebhookList is GET .../byok/webhooks.
type WebhookList struct {
	Webhooks []Webhook `json:"webhooks"`
}

// AuditEntry is one recorded key operation.
type AuditEntry struct {
	ID         string    `json:"id"`
	At         time.Time `json:"at"`
	Operation  string    `json:"operation"`
	Key        string    `json:"key,omitempty"`
	KeyVersion string    `json:"keyVersion,omitempty"`
	Outcome    string    `json:"outcome"`
	RequestID  string    `json:"requestId,omitempty"`
	Detail     string    `json:"detail,omitempty"`
	// Actor is who acted: "system" (the monitor, the enablement job,
	// rotation), "user:<token subject>" or "tenant-admin:<Azure tenant>".
	Actor string `json:"actor"`
}

// AuditList is GET .../byok/audit.
type AuditList struct {
	Entries []AuditEntry `json:"entries"`
}

// Sandbox is one sandbox of an org.
type Sandbox struct {
	Name string `json:"name"`
}

// SandboxList is GET /data/foundation/sandbox-management/sandboxes.
type SandboxList struct {
	Sandboxes []Sandbox `json:"sandboxes"`
}

// OrgDeleted answers DELETE .../manager/org.
type OrgDeleted struct {
	OrgID   string `json:"orgId"`
	Deleted bool   `json:"deleted"`
	Note    string `json:"note"`
}

// LakeFile is one file of the data lake; a PUT answers it without Modified.
type LakeFile struct {
	Dataset  string    `json:"dataset"`
	Name     string    `json:"name"`
	Size     int64     `json:"size"` // plaintext bytes
	Modified time.Time `json:"modified,omitzero"`
}

// LakeFileList is GET /data/lake/files.
type LakeFileList struct {
	Files []LakeFile `json:"files"`
}

// ProfileRecord is one stored profile: its id and its JSON as stored.
type ProfileRecord struct {
	ID     string          `json:"id"`
	Record json.RawMessage `json:"record"`
}

// ProfileList is GET /data/profiles: one page, and the cursor of the next
// ("" at the end).
type ProfileList struct {
	Records []ProfileRecord `json:"records"`
	Next    string          `json:"next"`
}

// ProfileSaved answers PUT /data/profiles/{id}.
type ProfileSaved struct {
	ID string `json:"id"`
}

// Status is the answer of GET /healthz.
type Status struct {
	Status string `json:"status"`
}

// Readiness is the answer of /readyz: "ready", or "not ready" with the
// checks that failed. A check's detail is a fixed phrase, never an error's
// text, so the public answer carries no address, DSN or secret.
type Readiness struct {
	Status string       `json:"status"`
	Checks []ReadyCheck `json:"checks"`
}

// ReadyCheck is one condition of readiness.
type ReadyCheck struct {
	Name   string `json:"name"` // database, storage, platform_key, draining
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Info is what `cmk dev --info FILE` writes: everything a script needs to
// call the local service and its emulator.
type Info struct {
	BaseURL          string `json:"baseUrl"`
	OrgID            string `json:"orgId"`
	APIKey           string `json:"apiKey"`
	Token            string `json:"token"`
	KeyIdentifier    string `json:"keyIdentifier"`
	EmulatorURL      string `json:"emulatorUrl"`
	EmulatorCA       string `json:"emulatorCaPem"`
	VaultURL         string `json:"vaultUrl"`
	ConsentURL       string `json:"consentUrl"` // the org's consent link, as the app registration gives it
	CustomerTenant   string `json:"customerTenantId"`
	ServicePrincipal string `json:"servicePrincipalObjectId"`
	// The org whose key is in the local AWS KMS, when it runs.
	AWS *AWSInfo `json:"aws,omitempty"`
}

// AWSInfo is the AWS half of a local environment: the local AWS KMS, the
// org whose key is there, and the key owner's credentials (local only).
type AWSInfo struct {
	EmulatorURL     string `json:"emulatorUrl"`
	OrgID           string `json:"orgId"`
	Token           string `json:"token"`
	KeyARN          string `json:"keyArn"`
	OwnerAccessKey  string `json:"ownerAccessKeyId"`
	OwnerSecretKey  string `json:"ownerSecretAccessKey"`
	PlatformAccount string `json:"platformAccount"`
}

// AuditCSVHeader is the header row of the audit trail as CSV.
var AuditCSVHeader = []string{"at", "actor", "operation", "outcome", "key", "key_version", "detail", "request_id", "id"}

// WriteAuditCSV writes entries as CSV (RFC 4180) with AuditCSVHeader. A
// field that a spreadsheet would run as a formula (starting with =, +, -,
// @, tab or carriage return) is prefixed with a single quote, since the
// detail of an entry can carry text an org's admin typed.
func WriteAuditCSV(w io.Writer, entries []AuditEntry) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(AuditCSVHeader); err != nil {
		return err
	}
	for _, e := range entries {
		row := []string{e.At.UTC().Format(time.RFC3339Nano), e.Actor, e.Operation, e.Outcome, e.Key, e.KeyVersion, e.Detail, e.RequestID, e.ID}
		for i, f := range row {
			if f != "" && strings.ContainsRune("=+-@\t\r", rune(f[0])) {
				row[i] = "'" + f
			}
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// EventGridValidation answers Event Grid's subscription-validation
// handshake: the validation code of the request's event, echoed.
type EventGridValidation struct {
	ValidationResponse string `json:"validationResponse"`
}

// OperatorOrg is one org in the operator's view: its key health (absent for
// an org still on system-managed keys), and its unfinished enablement job.
type OperatorOrg struct {
	OrgID         string       `json:"orgId"`
	State         string       `json:"state"` // a key state, or SYSTEM_MANAGED
	Cause         string       `json:"cause,omitempty"`
	Message       string       `json:"message,omitempty"`
	Since         *time.Time   `json:"since,omitempty"`
	CoastingUntil *time.Time   `json:"coastingUntil,omitempty"`
	LastCheck     *time.Time   `json:"lastCheck,omitempty"`
	LastOK        *time.Time   `json:"lastOk,omitempty"`
	Key           string       `json:"key,omitempty"` // vault URL and key name
	KeyVersion    string       `json:"keyVersion,omitempty"`
	RotatingTo    string       `json:"rotatingTo,omitempty"`
	Job           *OperatorJob `json:"job,omitempty"`
}

// OperatorJob is an org's unfinished enablement job.
type OperatorJob struct {
	Name      string    `json:"name"`
	Status    string    `json:"status"`
	Done      int       `json:"dataKeysDone"`
	Total     int       `json:"dataKeysTotal"`
	Attempts  int       `json:"attempts"`
	CreatedAt time.Time `json:"createdAt"`
	LastError *Problem  `json:"lastError,omitempty"`
	// LeaseHolder is the worker holding the job's lease, as
	// "<host>/<pid>/<worker>/<random>", and LeaseUntil when that lease
	// ends unless renewed; both are absent while no worker holds it. A
	// LeaseUntil in the past is a lease left by a worker that stopped:
	// another replica takes the job over at its next poll.
	LeaseHolder string     `json:"leaseHolder,omitempty"`
	LeaseUntil  *time.Time `json:"leaseUntil,omitempty"`
}

// OperatorOrgList is GET /operator/v1/orgs: the orgs on their own keys and
// those with an unfinished job, by org id, with the count per state over
// all of them (not only this page).
type OperatorOrgList struct {
	GeneratedAt time.Time      `json:"generatedAt"`
	Counts      map[string]int `json:"counts"`
	Orgs        []OperatorOrg  `json:"orgs"`
	// Next, when set, is the after= of the next page.
	Next string `json:"next,omitempty"`
}

// Episode is one stretch of an org's key not being HEALTHY, from the check
// that left HEALTHY to the check that returned to it.
type Episode struct {
	ID    string     `json:"id"`
	Start time.Time  `json:"start"`
	End   *time.Time `json:"end,omitempty"` // absent while the episode goes on
	// DurationSeconds runs to End, or to the time of the answer while the
	// episode goes on.
	DurationSeconds int64          `json:"durationSeconds"`
	Ongoing         bool           `json:"ongoing"`
	WorstState      string         `json:"worstState"`
	Key             string         `json:"key,omitempty"`
	Causes          []EpisodeCause `json:"causes"`
	// BlockedFrom is when the org's data was first refused in the episode
	// (REVOKED, or the grace of COASTING running out), BlockedUntil when it
	// was served again; BlockedSeconds the total time it was refused.
	BlockedFrom    *time.Time   `json:"blockedFrom,omitempty"`
	BlockedUntil   *time.Time   `json:"blockedUntil,omitempty"`
	BlockedSeconds int64        `json:"blockedSeconds"`
	Stores         []StoreUsage `json:"stores"`
}

// EpisodeCause is one state and cause an episode went through.
type EpisodeCause struct {
	At      time.Time `json:"at"`
	State   string    `json:"state"`
	Cause   string    `json:"cause"`
	Message string    `json:"message,omitempty"`
}

// StoreUsage is what one store of the org refused in an episode, counted
// by every replica: the first and last refusal, how many, and the first
// request served after them (absent until one is).
type StoreUsage struct {
	Store        string     `json:"store"` // lake, profile or profile-cache
	FirstRefused *time.Time `json:"firstRefused,omitempty"`
	LastRefused  *time.Time `json:"lastRefused,omitempty"`
	Refused      int64      `json:"refused"`
	Resumed      *time.Time `json:"resumed,omitempty"`
}

// History is GET .../byok/history: the org's episodes, newest first.
type History struct {
	Org      string    `json:"org"`
	Since    time.Time `json:"since"`
	Until    time.Time `json:"until"`
	Episodes []Episode `json:"episodes"`
}

// AccessReport is GET .../byok/history/report: what an auditor takes away
// about one org's access to its data over a period.
type AccessReport struct {
	Org         string    `json:"org"`
	GeneratedAt time.Time `json:"generatedAt"`
	Since       time.Time `json:"since"`
	Until       time.Time `json:"until"`
	// Keys are the customer keys the org's episodes and current
	// configuration name.
	Keys []string `json:"keys"`
	// BlockedSeconds is the total time within the period the org's data
	// was refused.
	BlockedSeconds int64     `json:"blockedSeconds"`
	Episodes       []Episode `json:"episodes"`
	// Audit holds the revocation and recovery entries of the period.
	Audit []AuditEntry `json:"audit"`
}
