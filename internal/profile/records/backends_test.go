package records_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/profile/records"
	"github.com/cmk-project/cmk/internal/profile/records/recordstest"
	"github.com/cmk-project/cmk/internal/testsvc"
)

func openSQLite(t testing.TB) records.Backend {
	b, err := records.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "profile.db"))
	if err != nil {
		t.Fatalf("OpenSQLite = %v", err)
	}
	return b
}

func openPostgres(t testing.TB) records.Backend {
	b, err := records.OpenPostgres(context.Background(), testsvc.Postgres(t))
	if err != nil {
		t.Fatalf("OpenPostgres = %v", err)
	}
	return b
}

func TestSQLite(t *testing.T) {
	recordstest.Run(t, func(t *testing.T) records.Backend { return openSQLite(t) })
}

func TestPostgres(t *testing.T) {
	recordstest.Run(t, func(t *testing.T) records.Backend { return openPostgres(t) })
}

// TestReopen checks that data survives closing and reopening, and that
// opening an existing database (schema already there) works.
func TestReopen(t *testing.T) {
	ctx := t.Context()
	t.Run("SQLite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "sub", "profile.db")
		testReopen(t, func() records.Backend {
			b, err := records.OpenSQLite(ctx, path)
			if err != nil {
				t.Fatalf("OpenSQLite = %v", err)
			}
			return b
		})
	})
	t.Run("Postgres", func(t *testing.T) {
		dsn := testsvc.Postgres(t)
		testReopen(t, func() records.Backend {
			b, err := records.OpenPostgres(ctx, dsn)
			if err != nil {
				t.Fatalf("OpenPostgres = %v", err)
			}
			return b
		})
	})
}

func testReopen(t *testing.T, open func() records.Backend) {
	// Two backends opening the same empty database at once both succeed.
	var wg sync.WaitGroup
	opened := make([]records.Backend, 4)
	for i := range opened {
		wg.Go(func() { opened[i] = open() })
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if err := opened[0].Upsert(t.Context(), "org", "sb", "id", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	for _, b := range opened {
		if err := b.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	}
	b := open()
	defer b.Close()
	r, err := b.Get(t.Context(), "org", "sb", "id")
	if err != nil || string(r.Value) != "kept" {
		t.Errorf("Get after reopen = %q, %v; want %q, nil", r.Value, err, "kept")
	}
}

// TestPageByteBudget checks that a page of large values stops early rather
// than holding 1,000 of them in memory.
func TestPageByteBudget(t *testing.T) {
	for name, open := range map[string]func(testing.TB) records.Backend{"SQLite": openSQLite, "Postgres": openPostgres} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := open(t)
			defer b.Close()
			v := make([]byte, records.MaxValueBytes)
			for i := range 12 {
				if err := b.Upsert(t.Context(), "org", "sb", fmt.Sprint(i), v); err != nil {
					t.Fatal(err)
				}
			}
			p, err := b.List(t.Context(), "org", "sb", "", records.MaxPageSize, records.MaxPageBytes)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(p.Records); n == 0 || n >= 12 || p.Next == "" {
				t.Errorf("first page of 12 × 4 MiB = %d records, Next %q; want a partial page with a Next cursor", n, p.Next)
			}
		})
	}
}

// TestPostgresFreshDatabases checks the test helper: each call gets its own
// empty database.
func TestPostgresFreshDatabases(t *testing.T) {
	a, b := openPostgres(t), openPostgres(t)
	defer a.Close()
	defer b.Close()
	if err := a.Upsert(t.Context(), "org", "sb", "id", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(t.Context(), "org", "sb", "id"); !errors.Is(err, records.ErrNotFound) {
		t.Errorf("second database sees the first's record: Get = %v, want ErrNotFound", err)
	}
}

// ---- benchmarks ----

const (
	benchValueBytes = 1 << 10
	benchIDs        = 10_000
)

func BenchmarkSQLiteUpsert(b *testing.B)   { benchUpsert(b, openSQLite(b)) }
func BenchmarkSQLiteGet(b *testing.B)      { benchGet(b, openSQLite(b)) }
func BenchmarkPostgresUpsert(b *testing.B) { benchUpsert(b, openPostgres(b)) }
func BenchmarkPostgresGet(b *testing.B)    { benchGet(b, openPostgres(b)) }

// benchUpsert writes 1 KiB values over 10,000 ids from parallel goroutines,
// so the run mixes inserts with overwrites as a live service does.
func benchUpsert(b *testing.B, be records.Backend) {
	defer be.Close()
	value := bytes.Repeat([]byte{0xA5}, benchValueBytes)
	benchOps(b, func(ctx context.Context, r *rand.Rand) error {
		return be.Upsert(ctx, "org", "sb", fmt.Sprintf("rec-%05d", r.IntN(benchIDs)), value)
	})
}

// benchGet reads random records of a sandbox holding 10,000 of 1 KiB.
func benchGet(b *testing.B, be records.Backend) {
	defer be.Close()
	value := bytes.Repeat([]byte{0xA5}, benchValueBytes)
	for i := range benchIDs {
		if err := be.Upsert(b.Context(), "org", "sb", fmt.Sprintf("rec-%05d", i), value); err != nil {
			b.Fatal(err)
		}
	}
	benchOps(b, func(ctx context.Context, r *rand.Rand) error {
		_, err := be.Get(ctx, "org", "sb", fmt.Sprintf("rec-%05d", r.IntN(benchIDs)))
		return err
	})
}

// benchOps runs op from parallel goroutines, timing each call, and reports
// throughput and the 50th and 99th latency percentiles.
func benchOps(b *testing.B, op func(context.Context, *rand.Rand) error) {
	b.SetParallelism(4)
	var mu sync.Mutex
	var all []time.Duration
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
		ctx := b.Context()
		lat := make([]time.Duration, 0, 1024)
		for pb.Next() {
			start := time.Now()
			if err := op(ctx, r); err != nil {
				b.Error(err)
				return
			}
			lat = append(lat, time.Since(start))
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	b.StopTimer()
	if len(all) == 0 {
		return
	}
	slices.Sort(all)
	pct := func(p float64) float64 {
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}
