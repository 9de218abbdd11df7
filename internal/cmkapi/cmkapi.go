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

// ProviderAzureKeyVault is the only key provider type.
const ProviderAzureKeyVault = "AZURE_KEYVAULT"

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

// Webhook event types.
const (
	EventAlertOpened   = "alert.opened"
	EventAlertResolved = "alert.resolved"
)
