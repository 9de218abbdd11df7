package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// BindTenant records that an administrator of the Azure tenant consented
// for org through the org's own consent link: from now on the org may use
// keys from vaults of that tenant. It reports whether the binding is new,
// and fails with ErrNotFound when the org does not exist. tenant is stored
// in lowercase.
func (s *Store) BindTenant(ctx context.Context, org, tenant string) (bool, error) {
	var created bool
	err := s.tx(ctx, func(tx txn) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM orgs WHERE id = ?`, org).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("org %s: %w", org, ErrNotFound)
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO org_tenants (org_id, tenant_id, bound_at) VALUES (?, ?, ?) ON CONFLICT (org_id, tenant_id) DO NOTHING`,
			org, strings.ToLower(tenant), s.now().UnixMilli())
		if err != nil {
			return err
		}
		n64, _ := res.RowsAffected()
		created = n64 > 0
		return nil
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return false, fmt.Errorf("bind org %s to tenant %s: %w", org, tenant, err)
	}
	return created, err
}

// OrgTenants lists the Azure tenants an org is bound to, oldest first.
func (s *Store) OrgTenants(ctx context.Context, org string) ([]string, error) {
	out, err := queryAll(ctx, s.db, func(sc scanner) (t string, err error) {
		err = sc.Scan(&t)
		return t, err
	}, `SELECT tenant_id FROM org_tenants WHERE org_id = ? ORDER BY bound_at, tenant_id`, org)
	if err != nil {
		return nil, fmt.Errorf("list tenants of org %s: %w", org, err)
	}
	return out, nil
}

// ConsentStateUsed reports whether a consent state (by its id) was used.
func (s *Store) ConsentStateUsed(ctx context.Context, id string) (bool, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM used_consent_states WHERE state_id = ?`, id).Scan(&n); err != nil {
		return false, fmt.Errorf("look up consent state: %w", err)
	}
	return n > 0, nil
}

// UseConsentState records that a consent state (by its id) was used, and
// reports whether it was not used before: of two callers with the same
// state, exactly one is told true. The row is kept until expires, when the
// state itself expires; older rows are pruned on the way.
func (s *Store) UseConsentState(ctx context.Context, id string, expires time.Time) (bool, error) {
	var fresh bool
	err := s.tx(ctx, func(tx txn) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM used_consent_states WHERE expires_at < ?`, s.now().UnixMilli()); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO used_consent_states (state_id, expires_at) VALUES (?, ?) ON CONFLICT (state_id) DO NOTHING`,
			id, expires.UnixMilli())
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		fresh = n > 0
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("record consent state as used: %w", err)
	}
	return fresh, nil
}
