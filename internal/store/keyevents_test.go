package store

import (
	"context"
	"slices"
	"strings"
	"testing"
)

func TestOrgsUsingKey(t *testing.T) { each(t, testOrgsUsingKey) }

func testOrgsUsingKey(t *testing.T, s *Store) {
	ctx := context.Background()
	for org, key := range map[string][2]string{
		"a": {"https://v1.vault.azure.net", "k1"},
		"b": {"https://v1.vault.azure.net", "k2"},
		"c": {"https://v2.vault.azure.net", "k1"},
	} {
		if _, err := s.EnsureOrg(ctx, org); err != nil {
			t.Fatal(err)
		}
		if err := s.SetCustomerKEK(ctx, org, key[0], key[1]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.EnsureOrg(ctx, "system"); err != nil { // still on the system key
		t.Fatal(err)
	}
	for _, c := range []struct {
		vault, key string
		want       []string
	}{
		{"https://V1.vault.azure.net", "K1", []string{"a"}},
		{"https://v1.vault.azure.net", "", []string{"a", "b"}},
		{"https://v2.vault.azure.net", "k1", []string{"c"}},
		{"https://v3.vault.azure.net", "k1", nil},
	} {
		got, err := s.OrgsUsingKey(ctx, c.vault, c.key)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("OrgsUsingKey(%s, %q) = %v, %v; want %v", c.vault, c.key, got, err, c.want)
		}
	}
	if s.db.d != sqlite {
		return // PostgreSQL plans a small table as a scan whatever the index
	}
	rows, err := s.db.QueryContext(ctx, `EXPLAIN QUERY PLAN SELECT id FROM orgs WHERE kek_mode = ? AND LOWER(vault_url) = LOWER(?) AND LOWER(key_name) = LOWER(?)`, ModeCustomer, "x", "y")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if p := strings.Join(plan, "; "); !strings.Contains(p, "orgs_vault_key_lower") {
		t.Errorf("the key lookup of an event scans the orgs: plan %q, want it to use orgs_vault_key_lower", p)
	}
}
