package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
)

// Alert statuses.
const (
	AlertOpen     = cmkapi.AlertOpen
	AlertResolved = cmkapi.AlertResolved
)

// Alert is one alert about an org's key.
type Alert struct {
	ID             string
	OrgID          string
	Kind           string
	Cause          string
	Detail         cmkapi.AlertDetail // what a person is told
	DetailErr      error              // the stored detail did not decode (Detail left empty)
	Status         string
	Occurrences    int
	FirstSeen      time.Time
	LastSeen       time.Time
	ResolvedAt     time.Time
	AcknowledgedAt time.Time
	AcknowledgedBy string
}

const alertCols = `id, org_id, kind, cause, detail, status, occurrences, first_seen, last_seen, resolved_at, acknowledged_at, acknowledged_by`

func scanAlert(sc scanner) (*Alert, error) {
	var a Alert
	var fs, ls, ra, aa int64
	var detail string
	if err := sc.Scan(&a.ID, &a.OrgID, &a.Kind, &a.Cause, &detail, &a.Status, &a.Occurrences, &fs, &ls, &ra, &aa, &a.AcknowledgedBy); err != nil {
		return nil, err
	}
	a.FirstSeen, a.LastSeen, a.ResolvedAt, a.AcknowledgedAt = fromMS(fs), fromMS(ls), fromMS(ra), fromMS(aa)
	// A detail that does not decode leaves the alert listed, without its text.
	if err := decodeJSON(detail, &a.Detail); err != nil {
		a.Detail, a.DetailErr = cmkapi.AlertDetail{}, fmt.Errorf("alert %s of org %s: stored detail: %w", a.ID, a.OrgID, err)
	}
	return &a, nil
}

// RaiseAlert opens an alert, or when one is already open for the same org,
// kind and cause, bumps its last-seen time and count. It reports whether a
// new alert was opened.
func (s *Store) RaiseAlert(ctx context.Context, a *Alert) (opened bool, err error) {
	detail, err := encodeJSON(a.Detail)
	if err != nil {
		return false, fmt.Errorf("raise alert for %s: %w", a.OrgID, err)
	}
	err = s.tx(ctx, func(tx txn) error {
		now := s.now()
		key := a.OrgID + "/" + a.Kind + "/" + a.Cause
		existing, err := scanAlert(tx.QueryRowContext(ctx, `SELECT `+alertCols+` FROM alerts WHERE open_key = ?`, key))
		if err == nil {
			_, err = tx.ExecContext(ctx, `UPDATE alerts SET occurrences = occurrences + 1, last_seen = ?, detail = ? WHERE id = ?`, ms(now), detail, existing.ID)
			d := a.Detail
			*a = *existing
			a.Detail, a.DetailErr = d, nil
			a.Occurrences++
			a.LastSeen = now
			return err
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		a.Status, a.Occurrences, a.FirstSeen, a.LastSeen = AlertOpen, 1, now, now
		_, err = tx.ExecContext(ctx, `INSERT INTO alerts (id, org_id, kind, cause, detail, status, open_key, occurrences, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)`,
			a.ID, a.OrgID, a.Kind, a.Cause, detail, AlertOpen, key, ms(now), ms(now))
		opened = err == nil
		return err
	})
	return opened, err
}

// ResolveAlerts resolves the org's open alerts (all kinds when kinds is
// empty) and returns the ones it resolved.
func (s *Store) ResolveAlerts(ctx context.Context, org string, kinds ...string) ([]*Alert, error) {
	return s.ResolveAlertsWhere(ctx, org, AlertFilter{Kinds: kinds})
}

// AlertFilter picks open alerts to resolve: of Kinds (any when empty), of
// Causes (any when empty), and none of KeepCauses.
type AlertFilter struct {
	Kinds, Causes, KeepCauses []string
}

// ResolveAlertsWhere resolves the org's open alerts the filter picks and
// returns the ones it resolved.
func (s *Store) ResolveAlertsWhere(ctx context.Context, org string, f AlertFilter) ([]*Alert, error) {
	var out []*Alert
	err := s.tx(ctx, func(tx txn) error {
		q := `SELECT ` + alertCols + ` FROM alerts WHERE org_id = ? AND status = ?`
		args := []any{org, AlertOpen}
		for _, c := range []struct {
			col, op string
			vals    []string
		}{{"kind", "IN", f.Kinds}, {"cause", "IN", f.Causes}, {"cause", "NOT IN", f.KeepCauses}} {
			if len(c.vals) == 0 {
				continue
			}
			q += ` AND ` + c.col + ` ` + c.op + ` (?` + strings.Repeat(", ?", len(c.vals)-1) + `)`
			for _, v := range c.vals {
				args = append(args, v)
			}
		}
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			a, err := scanAlert(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out = append(out, a)
		}
		rows.Close()
		now := s.now()
		for _, a := range out {
			if _, err := tx.ExecContext(ctx, `UPDATE alerts SET status = ?, open_key = NULL, resolved_at = ? WHERE id = ?`, AlertResolved, ms(now), a.ID); err != nil {
				return err
			}
			a.Status, a.ResolvedAt = AlertResolved, now
		}
		return nil
	})
	return out, err
}

// Alerts lists an org's alerts, newest first; status "" means all.
func (s *Store) Alerts(ctx context.Context, org, status string) ([]*Alert, error) {
	q := `SELECT ` + alertCols + ` FROM alerts WHERE org_id = ?`
	args := []any{org}
	if status != "" {
		q += ` AND status = ?`
		args = append(args, status)
	}
	return queryAll(ctx, s.db, scanAlert, q+` ORDER BY first_seen DESC, id`, args...)
}

// Alert returns one alert of an org.
func (s *Store) Alert(ctx context.Context, org, id string) (*Alert, error) {
	a, err := scanAlert(s.db.QueryRowContext(ctx, `SELECT `+alertCols+` FROM alerts WHERE org_id = ? AND id = ?`, org, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return a, err
}

// AcknowledgeAlert records who acknowledged an alert.
func (s *Store) AcknowledgeAlert(ctx context.Context, org, id, by string) (*Alert, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE alerts SET acknowledged_at = ?, acknowledged_by = ? WHERE org_id = ? AND id = ?`, s.now().UnixMilli(), by, org, id)
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil, ErrNotFound
	}
	return s.Alert(ctx, org, id)
}
