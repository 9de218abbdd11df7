package store

import (
	"context"
	"fmt"
)

// maxOrgsPerKeyEvent bounds the orgs one key event reaches. A key protects
// one org's data, so more than one is already unusual; a vault's
// access-policy change reaches every org of the vault.
const maxOrgsPerKeyEvent = 100

// OrgsUsingKey lists the orgs whose data the vault's key protects (their
// job passed validation): of every key in the vault when keyName is "".
// Vault and key names are compared case-insensitively, as Key Vault does.
func (s *Store) OrgsUsingKey(ctx context.Context, vaultURL, keyName string) ([]string, error) {
	q := `SELECT id FROM orgs WHERE kek_mode = ? AND LOWER(vault_url) = LOWER(?)`
	args := []any{ModeCustomer, vaultURL}
	if keyName != "" {
		q += ` AND LOWER(key_name) = LOWER(?)`
		args = append(args, keyName)
	}
	q += fmt.Sprintf(` ORDER BY id LIMIT %d`, maxOrgsPerKeyEvent)
	orgs, err := queryAll(ctx, s.db, func(sc scanner) (id string, err error) {
		err = sc.Scan(&id)
		return id, err
	}, q, args...)
	if err != nil {
		return nil, fmt.Errorf("look up the orgs using key %s/%s: %w", vaultURL, keyName, err)
	}
	return orgs, nil
}
