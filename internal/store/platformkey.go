package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// PlatformGeneration is one generation of the system key, wrapped by the
// platform's KMS key (internal/platformkey).
type PlatformGeneration struct {
	ID         string // the generation's fingerprint; system-wrapped data keys name it in KEKRef
	Root       bool   // secrets derived from the system key come from this generation
	KMSKey     string // the wrapping KMS key, without version
	KMSVersion string
	Alg        string
	Wrapped    []byte
	CreatedAt  time.Time
	RetiredAt  time.Time // zero while data keys may still be under it
}

// ErrGenerationExists is returned when a generation with the same id (or a
// second root) is added.
var ErrGenerationExists = errors.New("platform key generation already exists")

const generationCols = `id, root, kms_key, kms_version, alg, wrapped, created_at, retired_at`

func scanGeneration(sc scanner) (PlatformGeneration, error) {
	var g PlatformGeneration
	var root *int64
	var c, r int64
	err := sc.Scan(&g.ID, &root, &g.KMSKey, &g.KMSVersion, &g.Alg, &g.Wrapped, &c, &r)
	g.Root = root != nil && *root == 1
	g.CreatedAt, g.RetiredAt = fromMS(c), fromMS(r)
	return g, err
}

// PlatformGenerations returns every generation of the system key, oldest
// first.
func (s *Store) PlatformGenerations(ctx context.Context) ([]PlatformGeneration, error) {
	out, err := queryAll(ctx, s.db, scanGeneration, `SELECT `+generationCols+` FROM platform_key_generations ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list platform key generations: %w", err)
	}
	return out, nil
}

// AddPlatformGeneration stores a new generation. It fails with
// ErrGenerationExists when the id is taken or g is a second root.
func (s *Store) AddPlatformGeneration(ctx context.Context, g PlatformGeneration) error {
	var root any
	if g.Root {
		root = 1
	}
	created := g.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO platform_key_generations (`+generationCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		g.ID, root, g.KMSKey, g.KMSVersion, g.Alg, g.Wrapped, created.UnixMilli(), ms(g.RetiredAt))
	if isUnique(err) {
		return fmt.Errorf("add platform key generation %s: %w", g.ID, ErrGenerationExists)
	}
	if err != nil {
		return fmt.Errorf("add platform key generation %s: %w", g.ID, err)
	}
	return nil
}

// RewrapPlatformGeneration replaces a generation's wrapping, only if it is
// still wrapped by fromKey at fromVersion (ErrWrappingChanged otherwise).
func (s *Store) RewrapPlatformGeneration(ctx context.Context, id, fromKey, fromVersion string, to PlatformGeneration) error {
	res, err := s.db.ExecContext(ctx, `UPDATE platform_key_generations SET kms_key = ?, kms_version = ?, alg = ?, wrapped = ? WHERE id = ? AND kms_key = ? AND kms_version = ?`,
		to.KMSKey, to.KMSVersion, to.Alg, to.Wrapped, id, fromKey, fromVersion)
	if err != nil {
		return fmt.Errorf("rewrap platform key generation %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("rewrap platform key generation %s: %w", id, ErrWrappingChanged)
	}
	return nil
}

// RetirePlatformGeneration marks a generation retired (no data key left
// under it); a retired generation is kept, and still opens.
func (s *Store) RetirePlatformGeneration(ctx context.Context, id string, at time.Time) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE platform_key_generations SET retired_at = ? WHERE id = ? AND retired_at = 0`, ms(at), id); err != nil {
		return fmt.Errorf("retire platform key generation %s: %w", id, err)
	}
	return nil
}

// SystemKeysUnder pages through the system-wrapped data keys of every org
// whose KEKRef is ref, in id order after afterID.
func (s *Store) SystemKeysUnder(ctx context.Context, ref, afterID string, limit int) ([]DataKey, error) {
	out, err := queryAll(ctx, s.db, scanDataKey, `SELECT `+dataKeyCols+` FROM data_keys WHERE kek = ? AND kek_ref = ? AND id > ? ORDER BY id LIMIT ?`, KEKSystem, ref, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("list data keys under %s: %w", ref, err)
	}
	return out, nil
}

// CountSystemKeys returns how many system-wrapped data keys each system key
// reference (generation) wraps.
func (s *Store) CountSystemKeys(ctx context.Context) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT kek_ref, COUNT(*) FROM data_keys WHERE kek = ? GROUP BY kek_ref`, KEKSystem)
	if err != nil {
		return nil, fmt.Errorf("count system-wrapped data keys: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var ref string
		var n int
		if err := rows.Scan(&ref, &n); err != nil {
			return nil, err
		}
		out[ref] = n
	}
	return out, rows.Err()
}

// ReplaceSystemWrapping swaps a system-wrapped data key to a new system
// wrapping, only if it is still system-wrapped under fromRef
// (ErrWrappingChanged otherwise: the org enabled its own key meanwhile, or
// another replica re-wrapped it).
func (s *Store) ReplaceSystemWrapping(ctx context.Context, id, fromRef string, to DataKey) error {
	res, err := s.db.ExecContext(ctx, `UPDATE data_keys SET kek_ref = ?, kek_version = ?, alg = ?, wrapped = ?, updated_at = ? WHERE id = ? AND kek = ? AND kek_ref = ?`,
		to.KEKRef, to.KEKVersion, to.Alg, to.Wrapped, s.now().UnixMilli(), id, KEKSystem, fromRef)
	if err != nil {
		return fmt.Errorf("rewrap data key %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("rewrap data key %s: %w", id, ErrWrappingChanged)
	}
	return nil
}

// ClaimPlatformLease takes (or renews) the named lease for owner until
// now+lease, and reports whether owner holds it.
func (s *Store) ClaimPlatformLease(ctx context.Context, name, owner string, lease time.Duration) (bool, error) {
	var held bool
	err := s.tx(ctx, func(tx txn) error {
		now := s.now()
		res, err := tx.ExecContext(ctx, `UPDATE platform_key_lease SET owner = ?, lease_until = ? WHERE name = ? AND (owner = ? OR lease_until < ?)`,
			owner, ms(now.Add(lease)), name, owner, ms(now))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			held = true
			return nil
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM platform_key_lease WHERE name = ?`, name).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil // another owner holds it
		}
		res, err = tx.ExecContext(ctx, `INSERT INTO platform_key_lease (name, owner, lease_until) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING`, name, owner, ms(now.Add(lease)))
		if err != nil {
			return err
		}
		n2, _ := res.RowsAffected()
		held = n2 == 1
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("claim platform key lease %s: %w", name, err)
	}
	return held, nil
}

// ReleasePlatformLease gives up owner's lease.
func (s *Store) ReleasePlatformLease(ctx context.Context, name, owner string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE platform_key_lease SET lease_until = 0 WHERE name = ? AND owner = ?`, name, owner)
	return err
}
