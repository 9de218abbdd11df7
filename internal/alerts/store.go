package alerts

import (
	"context"
	"time"

	"github.com/cmk-project/cmk/internal/store"
)

// NotifierStore is the part of the state store the notifier uses (*store.Store
// implements it).
type NotifierStore interface {
	// RaiseAlert opens an alert, or when one is already open for the same org,
	// kind and cause, bumps its last-seen time and count. It reports whether a
	// new alert was opened.
	RaiseAlert(ctx context.Context, a *store.Alert) (opened bool, err error)
	// ResolveAlerts resolves the org's open alerts (all kinds when kinds is
	// empty) and returns the ones it resolved.
	ResolveAlerts(ctx context.Context, org string, kinds ...string) ([]*store.Alert, error)
	// ResolveAlertsWhere resolves the org's open alerts the filter picks
	// (kinds, causes, causes to keep) and returns the ones it resolved.
	ResolveAlertsWhere(ctx context.Context, org string, f store.AlertFilter) ([]*store.Alert, error)
	// Alerts lists the org's alerts of a status ("" for all), newest first.
	Alerts(ctx context.Context, org, status string) ([]*store.Alert, error)
	// EnqueueEvent queues an event for every webhook of the org. Queuing the same
	// event id twice is a no-op.
	EnqueueEvent(ctx context.Context, org, eventID, payload string) (int, error)
}

// DelivererStore is the part of the state store the webhook deliverer uses (*store.Store
// implements it).
type DelivererStore interface {
	SecretStore
	// ClaimDeliveries leases up to limit due deliveries.
	ClaimDeliveries(ctx context.Context, lease time.Duration, limit int) ([]store.Delivery, error)
	// FinishDelivery records the outcome of an attempt: delivered, or retry at
	// next (zero next = give up).
	FinishDelivery(ctx context.Context, id string, delivered bool, next time.Time, lastErr string) error
}

var (
	_ NotifierStore  = (*store.Store)(nil)
	_ DelivererStore = (*store.Store)(nil)
)
