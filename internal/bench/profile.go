package bench

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/profile"
	"github.com/cmk-project/cmk/internal/profile/records"
)

// ProfileTarget is the least ratio of encrypted to plaintext operations per
// second of the profile store.
const ProfileTarget = 0.90

// ProfileConfig sizes the profile-store measurement.
type ProfileConfig struct {
	Common
	// Records is the number of distinct records written and read. Default 1000.
	Records int
	// RecordSize is the size of each JSON record in bytes. Default 1 KiB.
	RecordSize int
	// Ops is the number of operations of one side in one round. Default 10000.
	Ops int
	// Rounds is the number of interleaved pairs of each comparison. Default 21.
	Rounds int
	// ProfilesDSN, when set, puts the profile store on that PostgreSQL
	// database instead of the embedded SQLite one.
	ProfilesDSN string
}

func (c *ProfileConfig) defaults() {
	if c.Records == 0 {
		c.Records = 1000
	}
	if c.RecordSize == 0 {
		c.RecordSize = 1 << 10
	}
	if c.Ops == 0 {
		c.Ops = 10000
	}
	if c.Rounds == 0 {
		c.Rounds = 21
	}
}

// ProfileRow is one operation, with or without the read cache in front
// of the encrypted store, against the plaintext backend.
type ProfileRow struct {
	Comparison
	Op           string  `json:"op"`
	Cache        bool    `json:"cache"`
	OursLatency  Latency `json:"oursLatency"`
	PlainLatency Latency `json:"plainLatency"`
}

// ProfileResult compares the encrypted profile store with its own backend
// storing the raw JSON.
type ProfileResult struct {
	Backend    string       `json:"backend"` // "sqlite" or "postgres"
	RecordSize int          `json:"recordSize"`
	Records    int          `json:"records"`
	Rows       []ProfileRow `json:"rows"`
}

// Profile measures upserts and gets of JSON records through the service's
// encrypted profile store (after enabling CMK) against the same
// records.Backend storing the checked JSON under another sandbox, one
// operation at a time, in interleaved rounds. The plaintext side has no
// read cache; the encrypted side runs once without and once with its
// read cache (which holds sealed records, so a hit still decrypts).
func Profile(ctx context.Context, cfg ProfileConfig) (*ProfileResult, error) {
	cfg.defaults()
	w, _, done, err := enabledWorld(ctx, cfg.Common, "profile", devenv.Options{NoMonitor: true, ProfilesDSN: cfg.ProfilesDSN})
	if err != nil {
		return nil, err
	}
	defer done()
	svc := w.env.Svc
	backend := svc.Profiles.Backend
	cached := svc.Profiles
	uncached := &profile.Store{Backend: backend, Keys: svc.Keys}
	org := w.env.Org
	const sb, plainSB = "prod", "plain"

	docs := make([][]byte, cfg.Records)
	ids := make([]string, cfg.Records)
	for i := range docs {
		ids[i] = fmt.Sprintf("rec-%06d", i)
		docs[i] = jsonRecord(ids[i], cfg.RecordSize)
	}
	cfg.progress("profile: writing %d records of %s on each side", cfg.Records, humanBytes(int64(cfg.RecordSize)))
	for i := range ids {
		if err := uncached.Upsert(ctx, org, sb, ids[i], docs[i]); err != nil {
			return nil, err
		}
		if err := backend.Upsert(ctx, org, plainSB, ids[i], docs[i]); err != nil {
			return nil, err
		}
	}

	// Both sides of a round get the same sequence of records.
	seq := func(round int) []int {
		r := rand.New(rand.NewPCG(uint64(round), 7))
		s := make([]int, cfg.Ops)
		for i := range s {
			s[i] = r.IntN(cfg.Records)
		}
		return s
	}
	run := func(lat *[]time.Duration, op func(i int) error) func(round int) (float64, error) {
		return func(round int) (float64, error) {
			s := seq(round)
			start := time.Now()
			for _, i := range s {
				t := time.Now()
				if err := op(i); err != nil {
					return 0, err
				}
				*lat = append(*lat, time.Since(t))
			}
			return float64(len(s)) / time.Since(start).Seconds(), nil
		}
	}
	measure := func(name, op string, cache bool, ours, plain func(i int) error) (ProfileRow, error) {
		var lo, lp []time.Duration
		ro, rp := run(&lo, ours), run(&lp, plain)
		// Warm-up round, not counted: fills the read cache and the page cache.
		if _, err := ro(-1); err != nil {
			return ProfileRow{}, err
		}
		if _, err := rp(-1); err != nil {
			return ProfileRow{}, err
		}
		lo, lp = lo[:0], lp[:0]
		o, p, r, err := pairs(cfg.Rounds, ro, rp)
		if err != nil {
			return ProfileRow{}, fmt.Errorf("profile %s: %w", name, err)
		}
		return ProfileRow{Comparison: compare(name, "ops/s", ProfileTarget, o, p, r), Op: op, Cache: cache,
			OursLatency: latencyOf(lo), PlainLatency: latencyOf(lp)}, nil
	}
	upsert := func(s *profile.Store) func(i int) error {
		return func(i int) error { return s.Upsert(ctx, org, sb, ids[i], docs[i]) }
	}
	get := func(s *profile.Store) func(i int) error {
		return func(i int) error { _, err := s.Get(ctx, org, sb, ids[i]); return err }
	}
	// The plaintext side is the store without encryption: it checks the
	// JSON as the encrypted store does, then stores it as it is.
	plainUpsert := func(i int) error {
		doc, err := profile.CheckDoc(docs[i])
		if err != nil {
			return err
		}
		return backend.Upsert(ctx, org, plainSB, ids[i], doc)
	}
	plainGet := func(i int) error { _, err := backend.Get(ctx, org, plainSB, ids[i]); return err }

	res := &ProfileResult{Backend: "sqlite", RecordSize: cfg.RecordSize, Records: cfg.Records}
	if cfg.ProfilesDSN != "" {
		res.Backend = "postgres"
	}
	type measurement struct {
		name, op string
		cache    bool
		ours     func(int) error
		plain    func(int) error
	}
	ms := []measurement{
		{"upsert, no read cache", "upsert", false, upsert(uncached), plainUpsert},
		{"upsert, read cache on", "upsert", true, upsert(cached), plainUpsert},
		{"get, no read cache", "get", false, get(uncached), plainGet},
		{"get, read cache on", "get", true, get(cached), plainGet},
	}
	if cached.Cache == nil {
		// A shared (PostgreSQL) profile store has no read cache.
		ms = []measurement{ms[0], ms[2]}
	}
	for _, m := range ms {
		cfg.progress("profile: %s, %d interleaved rounds of %d ops", m.name, cfg.Rounds, cfg.Ops)
		row, err := measure(m.name, m.op, m.cache, m.ours, m.plain)
		if err != nil {
			return nil, err
		}
		res.Rows = append(res.Rows, row)
	}
	return res, nil
}

// jsonRecord is a JSON object of size bytes, or of its fixed fields alone
// when they are longer.
func jsonRecord(id string, size int) []byte {
	head := fmt.Sprintf(`{"id":%q,"email":"%s@example.com","tier":"gold","notes":"`, id, id)
	tail := `"}`
	pad := max(size-len(head)-len(tail), 0)
	return []byte(head + strings.Repeat("x", pad) + tail)
}

func (r *ProfileResult) String() string {
	t := newTable(fmt.Sprintf("profile: %s JSON records on %s, encrypted store vs the same backend storing plaintext (one op at a time)", humanBytes(int64(r.RecordSize)), r.Backend))
	t.row("", "encrypted ops/s (median [min – max])", "plaintext ops/s", "ratio", "target", "p50 / p99 encrypted", "p50 / p99 plaintext")
	for _, row := range r.Rows {
		c := row.Comparison
		t.row(c.Name, c.Ours.format("%.0f"), c.Baseline.format("%.0f"), c.Ratio.format("%.3f"), c.verdict(),
			fmt.Sprintf("%.0f / %.0f µs", row.OursLatency.P50us, row.OursLatency.P99us),
			fmt.Sprintf("%.0f / %.0f µs", row.PlainLatency.P50us, row.PlainLatency.P99us))
	}
	return t.String()
}

// memRecords is an in-memory records.Backend, for measuring the record
// path of the profile store without a database.
type memRecords struct {
	mu sync.Mutex
	m  map[string][]byte
}

var _ records.Backend = (*memRecords)(nil)

func newMemRecords() *memRecords { return &memRecords{m: map[string][]byte{}} }

func memKey(org, sandbox, id string) string { return org + "\x00" + sandbox + "\x00" + id }

func (b *memRecords) Upsert(_ context.Context, org, sandbox, id string, value []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m[memKey(org, sandbox, id)] = bytes.Clone(value)
	return nil
}

func (b *memRecords) Get(_ context.Context, org, sandbox, id string) (records.Record, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.m[memKey(org, sandbox, id)]
	if !ok {
		return records.Record{}, records.ErrNotFound
	}
	return records.Record{ID: id, Value: bytes.Clone(v)}, nil
}

func (b *memRecords) Delete(_ context.Context, org, sandbox, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, memKey(org, sandbox, id))
	return nil
}

func (b *memRecords) List(context.Context, string, string, string, int, int) (records.Page, error) {
	return records.Page{}, nil
}

func (b *memRecords) Usage(context.Context, string) (records.Usage, error) {
	return records.Usage{}, nil
}

func (b *memRecords) DeleteOrg(context.Context, string) error { return nil }

func (b *memRecords) Close() error { return nil }
