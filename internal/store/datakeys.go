package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// KEK kinds on a data key.
const (
	KEKSystem   = "system"
	KEKCustomer = "customer"
)

// DataKey is one wrapped data-encryption key of one store.
type DataKey struct {
	ID         string
	OrgID      string
	Sandbox    string
	Store      string
	KEK        string // KEKSystem or KEKCustomer
	KEKRef     string
	KEKVersion string
	Alg        string
	Wrapped    []byte
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

func insertDataKey(ctx context.Context, tx txn, k DataKey, now int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO data_keys (id, org_id, sandbox, store, kek, kek_ref, kek_version, alg, wrapped, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.OrgID, k.Sandbox, k.Store, k.KEK, k.KEKRef, k.KEKVersion, k.Alg, k.Wrapped, now, now)
	if err != nil {
		return fmt.Errorf("store data key for %s/%s/%s: %w", k.OrgID, k.Sandbox, k.Store, err)
	}
	return nil
}

const dataKeyCols = `id, org_id, sandbox, store, kek, kek_ref, kek_version, alg, wrapped, created_at, updated_at`

func scanDataKey(sc scanner) (DataKey, error) {
	var k DataKey
	var c, u int64
	err := sc.Scan(&k.ID, &k.OrgID, &k.Sandbox, &k.Store, &k.KEK, &k.KEKRef, &k.KEKVersion, &k.Alg, &k.Wrapped, &c, &u)
	k.CreatedAt, k.UpdatedAt = fromMS(c), fromMS(u)
	return k, err
}

// DataKeysByKEK pages through an org's data keys wrapped by the given KEK
// kind, in id order, starting after afterID.
func (s *Store) DataKeysByKEK(ctx context.Context, org, kek, afterID string, limit int) ([]DataKey, error) {
	out, err := queryAll(ctx, s.db, scanDataKey, `SELECT `+dataKeyCols+` FROM data_keys WHERE org_id = ? AND kek = ? AND id > ? ORDER BY id LIMIT ?`, org, kek, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("list data keys of %s: %w", org, err)
	}
	return out, nil
}

// DataKeys returns every data key of an org (tests, small orgs).
func (s *Store) DataKeys(ctx context.Context, org string) ([]DataKey, error) {
	out, err := queryAll(ctx, s.db, scanDataKey, `SELECT `+dataKeyCols+` FROM data_keys WHERE org_id = ? ORDER BY id`, org)
	if err != nil {
		return nil, fmt.Errorf("list data keys of %s: %w", org, err)
	}
	return out, nil
}

// CountDataKeys returns how many data keys an org has, and how many of them
// are wrapped by the customer key.
func (s *Store) CountDataKeys(ctx context.Context, org string) (total, customer int, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(CASE WHEN kek = ? THEN 1 ELSE 0 END), 0) FROM data_keys WHERE org_id = ?`, KEKCustomer, org).Scan(&total, &customer)
	if err != nil {
		return 0, 0, fmt.Errorf("count data keys of %s: %w", org, err)
	}
	return total, customer, nil
}

// ReplaceWrapping swaps a data key's wrapping in one statement, only if it
// is still wrapped by fromKEK. The new wrapping is durable when this returns.
func (s *Store) ReplaceWrapping(ctx context.Context, id, fromKEK string, to DataKey) error {
	res, err := s.db.ExecContext(ctx, `UPDATE data_keys SET kek = ?, kek_ref = ?, kek_version = ?, alg = ?, wrapped = ?, updated_at = ? WHERE id = ? AND kek = ?`,
		to.KEK, to.KEKRef, to.KEKVersion, to.Alg, to.Wrapped, s.now().UnixMilli(), id, fromKEK)
	if err != nil {
		return fmt.Errorf("rewrap data key %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("rewrap data key %s: %w", id, ErrWrappingChanged)
	}
	return nil
}

// ActiveDataKey returns the data key new objects of a store are sealed with:
// the store's newest.
func (s *Store) ActiveDataKey(ctx context.Context, org, sandbox, storeKind string) (DataKey, error) {
	k, err := scanDataKey(s.db.QueryRowContext(ctx, `SELECT `+dataKeyCols+` FROM data_keys WHERE org_id = ? AND sandbox = ? AND store = ? ORDER BY created_at DESC, id DESC LIMIT 1`,
		org, sandbox, storeKind))
	if errors.Is(err, sql.ErrNoRows) {
		return k, ErrNotFound
	}
	return k, err
}

// DataKey returns one data key by id.
func (s *Store) DataKey(ctx context.Context, id string) (DataKey, error) {
	k, err := scanDataKey(s.db.QueryRowContext(ctx, `SELECT `+dataKeyCols+` FROM data_keys WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return k, ErrNotFound
	}
	return k, err
}

// AddDataKey stores a new data key for an existing store (data-key rotation).
func (s *Store) AddDataKey(ctx context.Context, k DataKey) error {
	return s.tx(ctx, func(tx txn) error {
		if err := checkMode(ctx, tx, k.OrgID, []DataKey{k}); err != nil {
			return err
		}
		return insertDataKey(ctx, tx, k, s.now().UnixMilli())
	})
}

// ReserveUses reserves n more uses of a data key and returns the total
// reserved so far (including these n).
func (s *Store) ReserveUses(ctx context.Context, id string, n int64) (int64, error) {
	var total int64
	err := s.tx(ctx, func(tx txn) error {
		if _, err := tx.ExecContext(ctx, `UPDATE data_keys SET uses_reserved = uses_reserved + ? WHERE id = ?`, n, id); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT uses_reserved FROM data_keys WHERE id = ?`, id).Scan(&total)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrNotFound
	}
	return total, err
}

// CustomerKeysNotAt pages through an org's customer-wrapped data keys whose
// key version is not version.
func (s *Store) CustomerKeysNotAt(ctx context.Context, org, version, afterID string, limit int) ([]DataKey, error) {
	return queryAll(ctx, s.db, scanDataKey, `SELECT `+dataKeyCols+` FROM data_keys WHERE org_id = ? AND kek = ? AND kek_version <> ? AND id > ? ORDER BY id LIMIT ?`,
		org, KEKCustomer, version, afterID, limit)
}

// CountAtVersion counts an org's customer-wrapped data keys at version.
func (s *Store) CountAtVersion(ctx context.Context, org, version string) (total, at int, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(CASE WHEN kek_version = ? THEN 1 ELSE 0 END), 0) FROM data_keys WHERE org_id = ? AND kek = ?`,
		version, org, KEKCustomer).Scan(&total, &at)
	return total, at, err
}

// ReplaceVersion swaps a customer-wrapped data key to a new wrapping only if
// it is still at fromVersion.
func (s *Store) ReplaceVersion(ctx context.Context, id, fromVersion string, to DataKey) error {
	res, err := s.db.ExecContext(ctx, `UPDATE data_keys SET kek_version = ?, alg = ?, wrapped = ?, updated_at = ? WHERE id = ? AND kek = ? AND kek_version = ?`,
		to.KEKVersion, to.Alg, to.Wrapped, s.now().UnixMilli(), id, KEKCustomer, fromVersion)
	if err != nil {
		return fmt.Errorf("rewrap data key %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("rewrap data key %s: %w", id, ErrWrappingChanged)
	}
	return nil
}
