package store

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/testsvc"
)

// BenchmarkStateSize reports the bytes of state database (tables and their
// indexes) one org, one sandbox and one audit entry take, on each backend,
// for sizing (docs/operations.md, "Sizing"). Run it once:
//
//	go test -run '^$' -bench BenchmarkStateSize -benchtime 1x ./internal/store/
//
// An org is its row, its customer-key configuration and its key-health row
// (with the wrapped probe); a sandbox is its row and its two data keys (lake
// and profile), wrapped under an RSA-3072 vault key (384 bytes each); an
// audit entry is one key call of the monitor's checks (describe or unwrap,
// no request id, no detail), which is what most entries are: every key call
// is audited.
func BenchmarkStateSize(b *testing.B) {
	const orgs, sandboxes, audits = 500, 2000, 10000
	opens := []struct {
		name string
		open func(b *testing.B) *Store
		size func(ctx context.Context, s *Store) (int64, error)
	}{
		{"sqlite", func(b *testing.B) *Store {
			s, err := Open(context.Background(), filepath.Join(b.TempDir(), "cmk.db"))
			if err != nil {
				b.Fatal(err)
			}
			return s
		}, sqliteSize},
		{"postgres", func(b *testing.B) *Store {
			s, err := OpenPostgres(context.Background(), testsvc.Postgres(b))
			if err != nil {
				b.Fatal(err)
			}
			return s
		}, postgresSize},
	}
	for _, o := range opens {
		b.Run(o.name, func(b *testing.B) {
			ctx := context.Background()
			for round := 0; b.Loop(); round++ {
				s := o.open(b)
				measure := func(what string, n int, add func(i int) error) {
					before, err := o.size(ctx, s)
					if err != nil {
						b.Fatal(err)
					}
					for i := range n {
						if err := add(i); err != nil {
							b.Fatalf("%s %d: %v", what, i, err)
						}
					}
					after, err := o.size(ctx, s)
					if err != nil {
						b.Fatal(err)
					}
					b.ReportMetric(float64(after-before)/float64(n), "B/"+what)
				}
				org := func(i int) string { return fmt.Sprintf("org-%d-%s", round, uuid.NewString()[:8]+fmt.Sprint(i)) }
				ids := make([]string, orgs)
				vault := "https://contoso-keys-0001.vault.azure.net/"
				version := strings.Repeat("a1b2c3d4", 4)
				now := time.Now()
				measure("org", orgs, func(i int) error {
					ids[i] = org(i)
					if _, err := s.EnsureOrg(ctx, ids[i]); err != nil {
						return err
					}
					c := &Config{ID: uuid.NewString(), OrgID: ids[i], Name: "Config1", Type: "BYOK_CONFIG", ProviderType: "AZURE_KEYVAULT",
						KeyIdentifier: vault + "keys/cmk-key/" + version, VaultURL: vault, KeyName: "cmk-key"}
					if err := s.CreateConfig(ctx, c); err != nil {
						return err
					}
					_, err := s.db.ExecContext(ctx, `INSERT INTO key_health (org_id, state, key_version, since, last_ok, next_check, probe, probe_version, updated_at, changed_at, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)`,
						ids[i], keyhealth.Healthy, version, ms(now), ms(now), ms(now), make([]byte, 384), version, ms(now), ms(now))
					return err
				})
				measure("sandbox", sandboxes, func(i int) error {
					o, name := ids[i%orgs], fmt.Sprintf("sandbox-%04d", i)
					var keys []DataKey
					for _, kind := range []string{"lake", "profile"} {
						keys = append(keys, DataKey{ID: uuid.NewString(), OrgID: o, Sandbox: name, Store: kind, KEK: KEKCustomer,
							KEKRef: vault + "keys/cmk-key", KEKVersion: version, Alg: "RSA-OAEP-256", Wrapped: make([]byte, 384)})
					}
					return s.CreateSandbox(ctx, o, name, keys)
				})
				measure("audit", audits, func(i int) error {
					op := []string{"describe", "unwrap"}[i%2]
					return s.AddAudit(ctx, AuditEntry{ID: uuid.NewString(), OrgID: ids[i%orgs], Op: op, KeyRef: vault + "keys/cmk-key",
						KeyVersion: version, Outcome: "ok"})
				})
				s.Close()
			}
		})
	}
}

// sqliteSize is the database's pages in use (the WAL included).
func sqliteSize(ctx context.Context, s *Store) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT (SELECT page_count FROM pragma_page_count()) * (SELECT page_size FROM pragma_page_size()) - (SELECT freelist_count FROM pragma_freelist_count()) * (SELECT page_size FROM pragma_page_size())`).Scan(&n)
	return n, err
}

// postgresSize is the size of the schema's tables with their indexes and
// TOAST.
func postgresSize(ctx context.Context, s *Store) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'`).Scan(&n)
	return n, err
}
