package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Webhook is an org's subscription to alert events.
type Webhook struct {
	ID    string
	OrgID string
	URL   string
	// SealedSecret is the signing secret as stored: sealed by the caller
	// (package alerts), or, in rows written before secrets were sealed, the
	// secret itself. The store neither seals nor reads it.
	SealedSecret string
	CreatedAt    time.Time
}

// Delivery is one event on its way to one webhook.
type Delivery struct {
	ID           string
	WebhookID    string
	OrgID        string // the webhook's org
	URL          string
	SealedSecret string // the webhook's, as stored
	EventID      string
	Payload      string
	Attempts     int
}

// Delivery statuses.
const (
	DeliveryPending   = "PENDING"
	DeliveryDelivered = "DELIVERED"
	DeliveryGaveUp    = "GAVE_UP"
)

// CreateWebhook subscribes a URL.
func (s *Store) CreateWebhook(ctx context.Context, w *Webhook) error {
	w.CreatedAt = s.now()
	_, err := s.db.ExecContext(ctx, `INSERT INTO webhooks (id, org_id, url, secret, created_at) VALUES (?, ?, ?, ?, ?)`, w.ID, w.OrgID, w.URL, w.SealedSecret, ms(w.CreatedAt))
	if err != nil {
		return fmt.Errorf("create webhook: %w", err)
	}
	return nil
}

// Webhooks lists an org's webhooks.
func (s *Store) Webhooks(ctx context.Context, org string) ([]Webhook, error) {
	return queryAll(ctx, s.db, scanWebhook, `SELECT id, org_id, url, secret, created_at FROM webhooks WHERE org_id = ? ORDER BY created_at, id`, org)
}

// AllWebhooks lists every org's webhooks (at most a few per org).
func (s *Store) AllWebhooks(ctx context.Context) ([]Webhook, error) {
	return queryAll(ctx, s.db, scanWebhook, `SELECT id, org_id, url, secret, created_at FROM webhooks ORDER BY org_id, created_at, id`)
}

func scanWebhook(sc scanner) (Webhook, error) {
	var w Webhook
	var c int64
	err := sc.Scan(&w.ID, &w.OrgID, &w.URL, &w.SealedSecret, &c)
	w.CreatedAt = fromMS(c)
	return w, err
}

// ReplaceWebhookSecret swaps a webhook's stored secret from old to sealed
// in one compare-and-swap; it reports false when the webhook is gone or its
// secret is no longer old (another replica replaced it first).
func (s *Store) ReplaceWebhookSecret(ctx context.Context, id, old, sealed string) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE webhooks SET secret = ? WHERE id = ? AND secret = ?`, sealed, id, old)
	if err != nil {
		return false, fmt.Errorf("replace secret of webhook %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// DeleteWebhook removes a subscription and its pending deliveries.
func (s *Store) DeleteWebhook(ctx context.Context, org, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM webhooks WHERE org_id = ? AND id = ?`, org, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// EnqueueEvent queues an event for every webhook of the org. Queuing the same
// event id twice is a no-op.
func (s *Store) EnqueueEvent(ctx context.Context, org, eventID, payload string) (int, error) {
	hooks, err := s.Webhooks(ctx, org)
	if err != nil {
		return 0, err
	}
	now := ms(s.now())
	n := 0
	for _, w := range hooks {
		res, err := s.db.ExecContext(ctx, `INSERT INTO deliveries (id, webhook_id, event_id, payload, next_at, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (webhook_id, event_id) DO NOTHING`, uuid.NewString(), w.ID, eventID, payload, now, DeliveryPending, now)
		if err != nil {
			return n, fmt.Errorf("queue event %s: %w", eventID, err)
		}
		if k, _ := res.RowsAffected(); k > 0 {
			n++
		}
	}
	return n, nil
}

// ClaimDeliveries leases up to limit due deliveries.
func (s *Store) ClaimDeliveries(ctx context.Context, lease time.Duration, limit int) ([]Delivery, error) {
	var out []Delivery
	err := s.tx(ctx, func(tx txn) error {
		now := s.now()
		rows, err := tx.QueryContext(ctx, `SELECT d.id, d.webhook_id, w.org_id, w.url, w.secret, d.event_id, d.payload, d.attempts FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
			WHERE d.status = ? AND d.next_at <= ? AND d.lease_until < ? ORDER BY d.next_at LIMIT ?`, DeliveryPending, ms(now), ms(now), limit)
		if err != nil {
			return err
		}
		for rows.Next() {
			var d Delivery
			if err := rows.Scan(&d.ID, &d.WebhookID, &d.OrgID, &d.URL, &d.SealedSecret, &d.EventID, &d.Payload, &d.Attempts); err != nil {
				rows.Close()
				return err
			}
			out = append(out, d)
		}
		rows.Close()
		claimed := out[:0]
		for _, d := range out {
			res, err := tx.ExecContext(ctx, `UPDATE deliveries SET lease_until = ? WHERE id = ? AND lease_until < ?`, ms(now.Add(lease)), d.ID, ms(now))
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 1 {
				claimed = append(claimed, d)
			}
		}
		out = claimed
		return nil
	})
	return out, err
}

// FinishDelivery records the outcome of an attempt: delivered, or retry at
// next (zero next = give up).
func (s *Store) FinishDelivery(ctx context.Context, id string, delivered bool, next time.Time, lastErr string) error {
	status := DeliveryPending
	switch {
	case delivered:
		status = DeliveryDelivered
	case next.IsZero():
		status = DeliveryGaveUp
	}
	_, err := s.db.ExecContext(ctx, `UPDATE deliveries SET status = ?, attempts = attempts + 1, next_at = ?, last_error = ?, lease_until = 0 WHERE id = ?`, status, ms(next), lastErr, id)
	return err
}

// DeliveryStatus returns a delivery's status and attempts (tests, API).
func (s *Store) DeliveryStatus(ctx context.Context, webhookID, eventID string) (status string, attempts int, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT status, attempts FROM deliveries WHERE webhook_id = ? AND event_id = ?`, webhookID, eventID).Scan(&status, &attempts)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	return status, attempts, err
}
