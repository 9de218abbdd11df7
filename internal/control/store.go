package control

import (
	"context"
	"time"

	"github.com/cmk-project/cmk/internal/store"
)

// Store is the part of the state store the control plane uses (*store.Store
// implements it).
type Store interface {
	// EnsureOrg creates the org if it does not exist and reports whether it did.
	EnsureOrg(ctx context.Context, id string) (created bool, err error)
	// Org returns an org.
	Org(ctx context.Context, id string) (store.Org, error)
	// Sandboxes lists an org's sandbox names in order.
	Sandboxes(ctx context.Context, org string) ([]string, error)
	// SandboxExists reports whether an org has the sandbox.
	SandboxExists(ctx context.Context, org, name string) (bool, error)
	// DeleteOrg removes an org and everything the database holds for it: its
	// sandboxes and their data keys (which makes every stored ciphertext of the
	// org unreadable), configurations, tenant bindings, key health, alerts,
	// webhooks and pending deliveries. The audit trail is kept.
	DeleteOrg(ctx context.Context, org string) error
	// KeyHolderTenant reports another org whose data the same vault key
	// protects (its job passed validation), and the Azure tenant its vault
	// was found in then ("" when not recorded).
	KeyHolderTenant(ctx context.Context, org, vaultURL, keyName string) (tenant string, taken bool, err error)
	// OrgsUsingKey lists the orgs whose data the vault's key protects (of
	// every key in the vault when keyName is "").
	OrgsUsingKey(ctx context.Context, vaultURL, keyName string) ([]string, error)
	// BindTenant records that org is bound to an Azure tenant and reports
	// whether the binding is new; store.ErrNotFound when the org is gone.
	BindTenant(ctx context.Context, org, tenant string) (bool, error)
	// OrgTenants lists the Azure tenants an org is bound to.
	OrgTenants(ctx context.Context, org string) ([]string, error)
	// ConsentStateUsed reports whether a consent state (consent.StateID)
	// was used.
	ConsentStateUsed(ctx context.Context, id string) (bool, error)
	// UseConsentState records a consent state as used until expires and
	// reports whether it was not used before (exactly one caller wins).
	UseConsentState(ctx context.Context, id string, expires time.Time) (bool, error)
	// CreateConfig inserts a NEW configuration. It fails with store.ErrAlreadyEnabled
	// when the org already uses its customer key, store.ErrJobActive when another job
	// is unfinished, and store.ErrDuplicateName when the name is taken in the org.
	CreateConfig(ctx context.Context, c *store.Config) error
	// ConfigByName returns an org's configuration by its case-sensitive name.
	ConfigByName(ctx context.Context, org, name string) (*store.Config, error)
	// Configs lists an org's configurations, newest first.
	Configs(ctx context.Context, org string) ([]*store.Config, error)
	// Health returns an org's key health, or store.ErrNotFound when it is not monitored.
	Health(ctx context.Context, org string) (*store.Health, error)
	// CountAtVersion counts an org's customer-wrapped data keys at version.
	CountAtVersion(ctx context.Context, org, version string) (total, at int, err error)
	// Alerts lists an org's alerts, newest first; status "" means all.
	Alerts(ctx context.Context, org, status string) ([]*store.Alert, error)
	// Alert returns one alert of an org.
	Alert(ctx context.Context, org, id string) (*store.Alert, error)
	// AcknowledgeAlert records who acknowledged an alert.
	AcknowledgeAlert(ctx context.Context, org, id, by string) (*store.Alert, error)
	// Webhooks lists an org's webhooks.
	Webhooks(ctx context.Context, org string) ([]store.Webhook, error)
	// CreateWebhook subscribes a URL.
	CreateWebhook(ctx context.Context, w *store.Webhook) error
	// DeleteWebhook removes a subscription and its pending deliveries.
	DeleteWebhook(ctx context.Context, org, id string) error
	// Audit lists an org's audit entries, newest first, optionally filtered by
	// op and by time (since), at most limit.
	AuditQuery(ctx context.Context, org string, f store.AuditFilter) ([]store.AuditEntry, error)
	// AllHealth and UnfinishedJobs read every org (the operator's view).
	AllHealth(ctx context.Context) ([]*store.Health, error)
	UnfinishedJobs(ctx context.Context) ([]*store.Config, error)
	CustomerOrgs(ctx context.Context) ([]store.Org, error)
	// Episodes lists an org's key-health episodes that overlap [since,
	// until), newest first, at most limit, each with its stores.
	Episodes(ctx context.Context, org string, since, until time.Time, limit int) ([]*store.Episode, error)
}

var _ Store = (*store.Store)(nil)
