// Package cmkapi is cmk's HTTP API as Go types: every route (one table, from
// which the OpenAPI document is checked), the JSON shape of every request
// and answer, the stable error codes, the file `cmk dev --info` writes, and
// a typed client.
//
// The server encodes these types and nothing else; the CLI, the demo and the
// tests decode them. A field added here is added for every one of them, so
// there is no second copy of a view to drift.
//
// The package imports nothing of cmk: it is the contract, not the service.
package cmkapi

// Headers every call carries (besides Authorization: Bearer <token>).
const (
	HeaderAPIKey    = "x-api-key"       // the token's client_id
	HeaderOrgID     = "x-gw-ims-org-id" // an org the token holds
	HeaderSandbox   = "x-sandbox-name"  // data-plane calls: a sandbox of the org
	HeaderRequestID = "x-request-id"
)

// Permissions a token grants per org (its "orgs" claim).
const (
	PermManageCMK       = "manage_customer_managed_key"
	PermManageSandboxes = "manage_sandboxes"
	PermDataRead        = "data_read"
	PermDataWrite       = "data_write"
)

// ConfigTypeBYOK is the only configuration type (seed 001).
const ConfigTypeBYOK = "BYOK_CONFIG"

// The key provider types: a key in Azure Key Vault (or Managed HSM), named
// by configData.keyVaultKeyIdentifier, or in AWS KMS, named by
// configData.keyArn.
const (
	ProviderAzureKeyVault = "AZURE_KEYVAULT"
	ProviderAWSKMS        = "AWS_KMS"
)

// Configuration (enablement job) statuses of seed 001.
const (
	StatusNew       = "NEW"
	StatusRunning   = "RUNNING"
	StatusUpdating  = "UPDATE_EXISTING_RESOURCES"
	StatusCompleted = "COMPLETED"
	StatusFailed    = "FAILED"
)

// Key health states. SYSTEM_MANAGED is reported for an org without a
// customer key; the other four are the monitor's.
const (
	StateHealthy       = "HEALTHY"
	StateDegraded      = "DEGRADED"
	StateCoasting      = "COASTING"
	StateRevoked       = "REVOKED"
	StateSystemManaged = "SYSTEM_MANAGED"
)

// Causes of a key's health state (Health.Cause, Alert.Cause) besides the
// key service's failure kinds, whose values are causes too. Each name
// spells its value.
const (
	CauseFlapping       = "FLAPPING"        // the key keeps switching between usable and unusable
	CauseGraceExhausted = "GRACE_EXHAUSTED" // transient failures outlasted the grace: data now refused
	CauseKeyNearExpiry  = "KEY_NEAR_EXPIRY" // the key's newest version expires within 30, 7 or 1 days
)

// Alert statuses.
const (
	AlertOpen     = "OPEN"
	AlertResolved = "RESOLVED"
)

// Alert kinds.
const (
	AlertKeyAccessDisabled = "KEY_ACCESS_DISABLED"
	AlertKeyAccessFailure  = "KEY_ACCESS_FAILURE"
	AlertNotification      = "ALERT_NOTIFICATION"
)

// Check statuses of a preflight or of a job's validation.
const (
	CheckPassed  = "PASSED"
	CheckFailed  = "FAILED"
	CheckError   = "ERROR" // could not tell (throttled, transient): try again
	CheckSkipped = "SKIPPED"
)

// Failure codes of a check (Check.Code, Failure.Code) besides the key
// service's failure kinds, whose values are codes too, and CodeKeyInUse.
// Each name spells its value.
const (
	CodeKeyNotBound             = "KEY_NOT_BOUND"             // the key's vault is not in an Azure tenant bound to the org
	CodeKeyTypeUnsupported      = "KEY_TYPE_UNSUPPORTED"      // the key is not RSA
	CodeKeyTooSmall             = "KEY_TOO_SMALL"             // the RSA key has fewer bits than required
	CodeSoftDeleteDisabled      = "SOFT_DELETE_DISABLED"      // the vault's recovery level is not Recoverable
	CodePurgeProtectionDisabled = "PURGE_PROTECTION_DISABLED" // the vault's recovery level is Purgeable
)

// Webhook event types.
const (
	EventAlertOpened   = "alert.opened"
	EventAlertResolved = "alert.resolved"
	// EventWebhookTest is sent to one webhook on request (POST
	// .../webhooks/{id}/test), signed like any event, with no alert.
	EventWebhookTest = "webhook.test"
)
