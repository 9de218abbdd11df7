package alerts

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/store"
)

// ViewOf is a stored alert as the API and webhooks publish it.
func ViewOf(a *store.Alert) cmkapi.Alert {
	v := cmkapi.Alert{ID: a.ID, OrgID: a.OrgID, Kind: a.Kind, Cause: a.Cause, Status: a.Status, Occurrences: a.Occurrences, FirstSeen: a.FirstSeen, LastSeen: a.LastSeen, AcknowledgedBy: a.AcknowledgedBy,
		AlertDetail: a.Detail}
	if !a.ResolvedAt.IsZero() {
		t := a.ResolvedAt
		v.ResolvedAt = &t
	}
	if !a.AcknowledgedAt.IsZero() {
		t := a.AcknowledgedAt
		v.AcknowledgedAt = &t
	}
	return v
}

// Webhook event types.
const (
	EventOpened   = cmkapi.EventAlertOpened
	EventResolved = cmkapi.EventAlertResolved
)

// Notifier raises and resolves alerts and queues their webhook events.
type Notifier struct {
	Store NotifierStore
	Log   *slog.Logger
	// OnEvent, when set, is told of every opened and resolved alert (metrics).
	OnEvent func(eventType, kind string)
}

// Raise opens an alert (or counts another occurrence of the open one) and
// queues an event when it is new.
func (n *Notifier) Raise(ctx context.Context, org, kind, cause string, d cmkapi.AlertDetail) (*store.Alert, error) {
	a := &store.Alert{ID: uuid.NewString(), OrgID: org, Kind: kind, Cause: cause, Detail: d}
	opened, err := n.Store.RaiseAlert(ctx, a)
	if err != nil {
		return nil, err
	}
	if opened {
		n.log().Warn("alert opened", "org", org, "kind", kind, "cause", cause, "alert", a.ID)
		n.emit(ctx, EventOpened, a)
	}
	return a, nil
}

// Open lists the org's open alerts, newest first.
func (n *Notifier) Open(ctx context.Context, org string) ([]*store.Alert, error) {
	return n.Store.Alerts(ctx, org, store.AlertOpen)
}

// Resolve resolves the org's open alerts of the given kinds (all when none)
// and queues a resolved event for each.
func (n *Notifier) Resolve(ctx context.Context, org string, kinds ...string) ([]*store.Alert, error) {
	return n.ResolveWhere(ctx, org, store.AlertFilter{Kinds: kinds})
}

// ResolveWhere resolves the org's open alerts the filter picks and queues a
// resolved event for each.
func (n *Notifier) ResolveWhere(ctx context.Context, org string, f store.AlertFilter) ([]*store.Alert, error) {
	resolved, err := n.Store.ResolveAlertsWhere(ctx, org, f)
	if err != nil {
		return nil, err
	}
	for _, a := range resolved {
		n.log().Info("alert resolved", "org", org, "kind", a.Kind, "cause", a.Cause, "alert", a.ID)
		n.emit(ctx, EventResolved, a)
	}
	return resolved, nil
}

func (n *Notifier) emit(ctx context.Context, typ string, a *store.Alert) {
	if a.DetailErr != nil {
		n.log().Warn("alert detail unreadable; event sent without it", "org", a.OrgID, "alert", a.ID, "err", a.DetailErr)
	}
	view := ViewOf(a)
	ev := cmkapi.Event{ID: a.ID + ":" + typ, Type: typ, OrgID: a.OrgID, OccurredAt: time.Now().UTC(), Alert: &view}
	raw, _ := json.Marshal(ev)
	if _, err := n.Store.EnqueueEvent(ctx, a.OrgID, ev.ID, string(raw)); err != nil {
		n.log().Error("queue webhook event", "org", a.OrgID, "event", ev.ID, "err", err)
	}
	if n.OnEvent != nil {
		n.OnEvent(typ, a.Kind)
	}
}

func (n *Notifier) log() *slog.Logger {
	if n.Log == nil {
		return slog.Default()
	}
	return n.Log
}
