package store

import (
	"context"
	"fmt"
	"io/fs"
	"sync"
	"testing"

	"github.com/cmk-project/cmk/internal/testsvc"
)

// TestConcurrentOpenPostgres: replicas starting together against a new
// database each run the migrations under the advisory lock, one after the
// other: every Open succeeds and every migration is applied once.
func TestConcurrentOpenPostgres(t *testing.T) {
	dsn := testsvc.Postgres(t)
	ctx := context.Background()
	const replicas = 6
	var wg sync.WaitGroup
	errs := make([]error, replicas)
	stores := make([]*Store, replicas)
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = OpenPostgres(ctx, dsn)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("OpenPostgres #%d: %v", i, err)
			continue
		}
		defer stores[i].Close()
	}
	if t.Failed() {
		return
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	var applied, distinct int
	if err := stores[0].db.QueryRowContext(ctx, `SELECT COUNT(*), COUNT(DISTINCT version) FROM schema_migrations`).Scan(&applied, &distinct); err != nil {
		t.Fatal(err)
	}
	if applied != len(names) || distinct != len(names) {
		t.Errorf("schema_migrations has %d rows (%d versions), want %d: one per migration", applied, distinct, len(names))
	}
	// Every replica sees the schema.
	for i, s := range stores {
		if _, err := s.EnsureOrg(ctx, fmt.Sprintf("o%d", i)); err != nil {
			t.Errorf("replica %d: EnsureOrg: %v", i, err)
		}
	}
}
