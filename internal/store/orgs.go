package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/preflight"
)

// Key-encryption modes of an org.
const (
	ModeSystem   = "SYSTEM"
	ModeCustomer = "CUSTOMER"
)

// Store kinds every sandbox has.
var StoreKinds = []string{"lake", "profile"}

// Org is a tenant organisation.
type Org struct {
	ID        string
	KEKMode   string
	VaultURL  string
	KeyName   string
	CreatedAt time.Time
}

// EnsureOrg creates the org if it does not exist and reports whether it did.
func (s *Store) EnsureOrg(ctx context.Context, id string) (created bool, err error) {
	res, err := s.db.ExecContext(ctx, `INSERT INTO orgs (id, created_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`, id, s.now().UnixMilli())
	if err != nil {
		return false, fmt.Errorf("create org %s: %w", id, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// Org returns an org.
func (s *Store) Org(ctx context.Context, id string) (Org, error) {
	var o Org
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT id, kek_mode, vault_url, key_name, created_at FROM orgs WHERE id = ?`, id).
		Scan(&o.ID, &o.KEKMode, &o.VaultURL, &o.KeyName, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return o, ErrNotFound
	}
	if err != nil {
		return o, fmt.Errorf("read org %s: %w", id, err)
	}
	o.CreatedAt = fromMS(created)
	return o, nil
}

// CustomerOrgs lists the orgs on their customer key, by id (the operator's
// view).
func (s *Store) CustomerOrgs(ctx context.Context) ([]Org, error) {
	return queryAll(ctx, s.db, func(sc scanner) (Org, error) {
		var o Org
		var created int64
		err := sc.Scan(&o.ID, &o.KEKMode, &o.VaultURL, &o.KeyName, &created)
		o.CreatedAt = fromMS(created)
		return o, err
	}, `SELECT id, kek_mode, vault_url, key_name, created_at FROM orgs WHERE kek_mode = ? ORDER BY id`, ModeCustomer)
}

// SetCustomerKEK switches an org to its customer key for all new data keys.
// It is one-way: there is no function that switches back.
func (s *Store) SetCustomerKEK(ctx context.Context, org, vaultURL, keyName string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE orgs SET kek_mode = ?, vault_url = ?, key_name = ? WHERE id = ?`, ModeCustomer, vaultURL, keyName, org)
	if err != nil {
		return fmt.Errorf("set customer key for org %s: %w", org, err)
	}
	return nil
}

// BeginCustomerKEK is the one-way switch of an enablement job: in one
// transaction, and only while owner holds the job's lease, the org starts
// using its customer key for new data keys, monitoring of the key starts,
// and the job moves to UPDATE_EXISTING_RESOURCES.
// vaultTenant is the Azure tenant the key's vault was found in by the
// ownership check ("" when unknown).
func (s *Store) BeginCustomerKEK(ctx context.Context, jobID, owner string, c *Config, keyVersion, vaultTenant string, checks []preflight.Result) error {
	rawChecks, err := encodeJSON(checks)
	if err != nil {
		return fmt.Errorf("job %s: checks: %w", jobID, err)
	}
	return s.tx(ctx, func(tx txn) error {
		now := s.now().UnixMilli()
		res, err := tx.ExecContext(ctx, `UPDATE configs SET status = ?, checks = ?, key_version = ?, last_error = '', updated_at = ? WHERE id = ? AND lease_owner = ?`,
			StatusUpdating, rawChecks, keyVersion, now, jobID, owner)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("job %s: %w", jobID, ErrLeaseLost)
		}
		var others int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM orgs WHERE id <> ? AND kek_mode = ? AND LOWER(vault_url) = LOWER(?) AND LOWER(key_name) = LOWER(?)`,
			c.OrgID, ModeCustomer, c.VaultURL, c.KeyName).Scan(&others); err != nil {
			return err
		}
		if others > 0 {
			return ErrKeyInUse
		}
		return s.switchToCustomer(ctx, tx, c.OrgID, c.VaultURL, c.KeyName, keyVersion, vaultTenant)
	})
}

// switchToCustomer moves org to its customer key and creates its health
// row, due for a check at once, within tx.
func (s *Store) switchToCustomer(ctx context.Context, tx txn, org, vaultURL, keyName, keyVersion, vaultTenant string) error {
	now := s.now().UnixMilli()
	if _, err := tx.ExecContext(ctx, `UPDATE orgs SET kek_mode = ?, vault_url = ?, key_name = ?, vault_tenant = ? WHERE id = ?`,
		ModeCustomer, vaultURL, keyName, strings.ToLower(vaultTenant), org); err != nil {
		return err
	}
	// The first version is the time in microseconds, so a row of an org
	// deleted and created again never sorts behind what replicas
	// remember of the old one.
	_, err := tx.ExecContext(ctx, `INSERT INTO key_health (org_id, state, key_version, since, last_ok, next_check, updated_at, changed_at, version) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?)
		ON CONFLICT (org_id) DO NOTHING`, org, keyhealth.Healthy, keyVersion, now, now, now, now, s.now().UnixMicro())
	return err
}

// SeedCustomerOrg creates org on its customer key, monitored from now on,
// in one transaction and without an enablement job: what a completed
// enablement leaves, for measurements that need thousands of orgs (the
// fleet benchmark). The caller then adds sandboxes whose data keys are
// already wrapped by that key. An org that exists is refused.
func (s *Store) SeedCustomerOrg(ctx context.Context, org, vaultURL, keyName, keyVersion, vaultTenant string) error {
	return s.tx(ctx, func(tx txn) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO orgs (id, created_at) VALUES (?, ?)`, org, s.now().UnixMilli()); err != nil {
			return fmt.Errorf("seed org %s: %w", org, err)
		}
		return s.switchToCustomer(ctx, tx, org, vaultURL, keyName, keyVersion, vaultTenant)
	})
}

// KeyInUseElsewhere reports another org whose data the same vault key
// protects: a key protects one org's data only. Only orgs whose job passed
// validation (and so the ownership check) count: a submission that is
// pending or failed never makes a key taken, so an org that does not own a
// key cannot block its owner.
func (s *Store) KeyInUseElsewhere(ctx context.Context, org, vaultURL, keyName string) (bool, error) {
	_, taken, err := s.KeyHolderTenant(ctx, org, vaultURL, keyName)
	return taken, err
}

// KeyHolderTenant reports another org whose data the same vault key
// protects (its job passed validation), and the Azure tenant its vault was
// found in then ("" when not recorded).
func (s *Store) KeyHolderTenant(ctx context.Context, org, vaultURL, keyName string) (tenant string, taken bool, err error) {
	// Key Vault names are case-insensitive.
	tenants, err := queryAll(ctx, s.db, func(sc scanner) (t string, err error) {
		err = sc.Scan(&t)
		return t, err
	}, `SELECT vault_tenant FROM orgs WHERE id <> ? AND kek_mode = ? AND LOWER(vault_url) = LOWER(?) AND LOWER(key_name) = LOWER(?) ORDER BY vault_tenant DESC`,
		org, ModeCustomer, vaultURL, keyName)
	if err != nil {
		return "", false, fmt.Errorf("look up the holder of key %s/%s: %w", vaultURL, keyName, err)
	}
	if len(tenants) == 0 {
		return "", false, nil
	}
	return tenants[0], true, nil
}

// ErrModeChanged is returned when a data key was wrapped for the org's old
// key-encryption mode; the caller wraps it again and retries.
var ErrModeChanged = errors.New("the org's key-encryption mode changed; wrap the data key again")

// checkMode refuses system-wrapped keys for an org that uses its customer key.
func checkMode(ctx context.Context, tx txn, org string, keys []DataKey) error {
	// On PostgreSQL the row is share-locked, so the switch to the customer
	// key (which updates it) waits for this transaction, and vice versa;
	// SQLite transactions here are already exclusive.
	q := `SELECT kek_mode FROM orgs WHERE id = ?`
	if tx.d == postgres {
		q += ` FOR SHARE`
	}
	var mode string
	if err := tx.QueryRowContext(ctx, q, org).Scan(&mode); err != nil {
		return err
	}
	for _, k := range keys {
		if mode == ModeCustomer && k.KEK != KEKCustomer {
			return ErrModeChanged
		}
	}
	return nil
}

// CreateSandbox adds a sandbox with the data keys of its stores, atomically.
func (s *Store) CreateSandbox(ctx context.Context, org, name string, keys []DataKey) error {
	return s.tx(ctx, func(tx txn) error {
		now := s.now().UnixMilli()
		if err := checkMode(ctx, tx, org, keys); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO sandboxes (org_id, name, created_at) VALUES (?, ?, ?)`, org, name, now); err != nil {
			if isUnique(err) {
				return fmt.Errorf("sandbox %s: %w", name, ErrDuplicateName)
			}
			return fmt.Errorf("create sandbox %s/%s: %w", org, name, err)
		}
		for _, k := range keys {
			if err := insertDataKey(ctx, tx, k, now); err != nil {
				return err
			}
		}
		return nil
	})
}

// Sandboxes lists an org's sandbox names in order.
func (s *Store) Sandboxes(ctx context.Context, org string) ([]string, error) {
	out, err := queryAll(ctx, s.db, func(sc scanner) (n string, err error) {
		err = sc.Scan(&n)
		return n, err
	},
		`SELECT name FROM sandboxes WHERE org_id = ? ORDER BY name`, org)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes of %s: %w", org, err)
	}
	return out, nil
}

// SandboxExists reports whether an org has the sandbox.
func (s *Store) SandboxExists(ctx context.Context, org, name string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sandboxes WHERE org_id = ? AND name = ?`, org, name).Scan(&n)
	return n > 0, err
}

// OrgsDeletedSince lists orgs deleted after t, with the newest deletion time.
func (s *Store) OrgsDeletedSince(ctx context.Context, t time.Time) ([]string, time.Time, error) {
	type del struct {
		org string
		at  int64
	}
	dels, err := queryAll(ctx, s.db, func(sc scanner) (d del, err error) {
		err = sc.Scan(&d.org, &d.at)
		return d, err
	}, `SELECT org_id, deleted_at FROM org_deletions WHERE deleted_at > ? ORDER BY deleted_at`, ms(t))
	var orgs []string
	last := t
	for _, d := range dels {
		orgs = append(orgs, d.org)
		if at := fromMS(d.at); at.After(last) {
			last = at
		}
	}
	return orgs, last, err
}

// DeleteOrg removes an org and everything the database holds for it: its
// sandboxes and their data keys (which makes every stored ciphertext of the
// org unreadable), configurations, tenant bindings, key health, alerts,
// webhooks and pending deliveries. The audit trail is kept.
func (s *Store) DeleteOrg(ctx context.Context, org string) error {
	return s.tx(ctx, func(tx txn) error {
		// Explicit deletes in dependency order, so the outcome does not hang
		// on foreign-key enforcement being switched on.
		for _, q := range []string{
			`DELETE FROM deliveries WHERE webhook_id IN (SELECT id FROM webhooks WHERE org_id = ?)`,
			`DELETE FROM webhooks WHERE org_id = ?`,
			`DELETE FROM alerts WHERE org_id = ?`,
			`DELETE FROM key_health WHERE org_id = ?`,
			`DELETE FROM key_episode_stores WHERE episode_id IN (SELECT id FROM key_episodes WHERE org_id = ?)`,
			`DELETE FROM key_episodes WHERE org_id = ?`,
			`DELETE FROM configs WHERE org_id = ?`,
			`DELETE FROM org_tenants WHERE org_id = ?`,
			`DELETE FROM data_keys WHERE org_id = ?`,
			`DELETE FROM sandboxes WHERE org_id = ?`,
		} {
			if _, err := tx.ExecContext(ctx, q, org); err != nil {
				return fmt.Errorf("delete org %s: %w", org, err)
			}
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM orgs WHERE id = ?`, org)
		if err != nil {
			return fmt.Errorf("delete org %s: %w", org, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO org_deletions (org_id, deleted_at) VALUES (?, ?)`, org, s.now().UnixMilli())
		return err
	})
}
