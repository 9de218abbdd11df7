package control

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/cmk-project/cmk/internal/alerts"
	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/store"
)

// Alerts lists the org's alerts, newest first; status "" means all.
func (s *Service) Alerts(ctx context.Context, org, status string) ([]*store.Alert, error) {
	if status != "" && status != store.AlertOpen && status != store.AlertResolved {
		return nil, problem(ErrInvalidField, "Invalid status filter", fmt.Sprintf("status is %q; use OPEN or RESOLVED, or leave it out for all.", status), "")
	}
	list, err := s.Store.Alerts(ctx, org, status)
	for _, a := range list {
		s.reportDetail(a)
	}
	return list, err
}

// reportDetail logs an alert whose stored detail did not decode; it is
// shown without its text rather than failing the read.
func (s *Service) reportDetail(a *store.Alert) {
	if a != nil && a.DetailErr != nil {
		s.log().Warn("alert detail unreadable; shown without it", "org", a.OrgID, "alert", a.ID, "err", a.DetailErr)
	}
}

// Alert returns one alert of the org.
func (s *Service) Alert(ctx context.Context, org, id string) (*store.Alert, error) {
	a, err := s.Store.Alert(ctx, org, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, problem(ErrNotFound, "Alert not found", fmt.Sprintf("Org %q has no alert %q.", org, id), "List alerts with GET /data/infrastructure/manager/byok/alerts.")
	}
	s.reportDetail(a)
	return a, err
}

// AcknowledgeAlert records that by has seen the alert.
func (s *Service) AcknowledgeAlert(ctx context.Context, org, id, by string) (_ *store.Alert, err error) {
	defer func() { s.action(ctx, org, audit.OpAlertAck, "alert "+id, err) }()
	a, err := s.Store.AcknowledgeAlert(ctx, org, id, by)
	if errors.Is(err, store.ErrNotFound) {
		return nil, problem(ErrNotFound, "Alert not found", fmt.Sprintf("Org %q has no alert %q.", org, id), "")
	}
	return a, err
}

// MaxWebhooksPerOrg bounds the deliveries one org's alerts can cause.
const MaxWebhooksPerOrg = 10

// NewWebhook is a webhook just created, with its signing secret: the one
// time the secret is shown. The store keeps it sealed (alerts.SecretBox).
type NewWebhook struct {
	store.Webhook
	Secret string
}

// CreateWebhook subscribes url to the org's alert events; the returned
// webhook holds its signing secret, shown this once.
func (s *Service) CreateWebhook(ctx context.Context, org, url string) (_ *NewWebhook, err error) {
	var id string
	// The webhook's id only: the path, query and for some services the host
	// of a webhook URL are what lets anyone post to it.
	defer func() { s.action(ctx, org, audit.OpWebhookAdd, strings.TrimSpace("webhook "+id), err) }()
	if err := s.WebhookPolicy.Check(url); err != nil {
		return nil, problem(ErrInvalidField, "Webhook URL not allowed", err.Error(), "Use an https URL on a public host.")
	}
	if hooks, err := s.Store.Webhooks(ctx, org); err != nil {
		return nil, err
	} else if len(hooks) >= MaxWebhooksPerOrg {
		return nil, problem(ErrLimitReached, "Too many webhooks", fmt.Sprintf("An org may subscribe at most %d webhooks.", MaxWebhooksPerOrg), "Delete one you no longer use.")
	}
	if s.WebhookSecrets == nil {
		return nil, errors.New("create webhook: the control plane has no webhook secret box")
	}
	b := make([]byte, 32)
	rand.Read(b)
	hook := &NewWebhook{Webhook: store.Webhook{ID: uuid.NewString(), OrgID: org, URL: url}, Secret: hex.EncodeToString(b)}
	sealed, err := s.WebhookSecrets.Seal(org, hook.ID, hook.Secret)
	if err != nil {
		return nil, fmt.Errorf("create webhook: %w", err)
	}
	hook.SealedSecret = sealed
	if err := s.Store.CreateWebhook(ctx, &hook.Webhook); err != nil {
		return nil, err
	}
	id = hook.ID
	return hook, nil
}

// Webhooks lists the org's webhooks.
func (s *Service) Webhooks(ctx context.Context, org string) ([]store.Webhook, error) {
	return s.Store.Webhooks(ctx, org)
}

// DeleteWebhook removes one of the org's webhooks.
func (s *Service) DeleteWebhook(ctx context.Context, org, id string) (err error) {
	defer func() { s.action(ctx, org, audit.OpWebhookDelete, "webhook "+id, err) }()
	err = s.Store.DeleteWebhook(ctx, org, id)
	if errors.Is(err, store.ErrNotFound) {
		return problem(ErrNotFound, "Webhook not found", fmt.Sprintf("Org %q has no webhook %q.", org, id), "")
	}
	return err
}

// AuditQuery selects audit entries.
type AuditQuery struct {
	Operation string    // "" = all
	Actor     string    // "" = all; "system", "user:<subject>", "tenant-admin:<tenant>"
	Since     time.Time // zero = from the start (inclusive)
	Until     time.Time // zero = up to now (exclusive)
	Limit     int       // 1 to MaxAuditLimit
}

// Audit page sizes.
const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = 1000
)

// Audit lists the org's audit entries, newest first.
func (s *Service) Audit(ctx context.Context, org string, q AuditQuery) ([]store.AuditEntry, error) {
	if q.Limit < 1 || q.Limit > MaxAuditLimit {
		return nil, problem(ErrInvalidField, "Invalid limit", fmt.Sprintf("limit is %d; use a number from 1 to %d.", q.Limit, MaxAuditLimit), "")
	}
	if !q.Until.IsZero() && !q.Since.IsZero() && !q.Until.After(q.Since) {
		return nil, problem(ErrInvalidField, "Invalid time range", fmt.Sprintf("until (%s) is not after since (%s).", q.Until.Format(time.RFC3339), q.Since.Format(time.RFC3339)),
			"Give an until later than since, or leave one of them out.")
	}
	return s.Store.AuditQuery(ctx, org, store.AuditFilter{Op: q.Operation, Actor: q.Actor, Since: q.Since, Until: q.Until, Limit: q.Limit})
}

// TestWebhook sends one of the org's webhooks a signed webhook.test event
// now and returns what its receiver answered.
func (s *Service) TestWebhook(ctx context.Context, org, id string) (_ *alerts.TestResult, err error) {
	defer func() { s.action(ctx, org, audit.OpWebhookTest, "webhook "+id, err) }()
	if s.WebhookTester == nil {
		return nil, errors.New("test webhook: the control plane has no webhook tester")
	}
	hooks, err := s.Store.Webhooks(ctx, org)
	if err != nil {
		return nil, err
	}
	for _, h := range hooks {
		if h.ID == id { // only the org's own webhooks: another org's id is not found
			res, err := s.WebhookTester.Test(ctx, h)
			if err != nil {
				return nil, err
			}
			return &res, nil
		}
	}
	return nil, problem(ErrNotFound, "Webhook not found", fmt.Sprintf("Org %q has no webhook %q.", org, id), "List the org's webhooks with GET /data/infrastructure/manager/byok/webhooks.")
}
