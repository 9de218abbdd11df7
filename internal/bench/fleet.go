package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/cluster"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/kms/azurekv"
	"github.com/cmk-project/cmk/internal/metrics"
	"github.com/cmk-project/cmk/internal/store"
)

// FleetConfig sizes the fleet measurement.
type FleetConfig struct {
	Common
	Replicas
	// Orgs on customer keys. Default 10,000.
	Orgs int
	// Vaults the orgs' keys are spread over (one key per org). Default 100.
	Vaults int
	// ReplicaCounts are the runs, in order, on the same orgs: each run
	// starts that many replicas. Default 1 then 3.
	ReplicaCounts []int
	// Interval between two checks of an org. Default 30 s.
	Interval time.Duration
	// Duration of each run's measured window, after its warm-up. Default
	// three intervals.
	Duration time.Duration
	// CheckConcurrency is each replica's --check-concurrency; 0 leaves
	// the replicas' default.
	CheckConcurrency int
	// WarmOrgs are the orgs whose data keys are loaded (one profile record
	// and one lake file written in their sandbox) to measure the memory a
	// warm org costs a replica; the first run's replica takes them after
	// its window. Default 2,000 (a per-org figure needs no more, and each
	// costs two requests and two unwraps); negative none.
	WarmOrgs int
	// KeyBits of the orgs' RSA keys. Default 2048: what a replica does per
	// check does not depend on it, but the emulator, in this process on the
	// same machine, spends about three times the CPU on an RSA-3072 unwrap
	// and would be the bound long before the replicas are.
	KeyBits int
}

func (c *FleetConfig) defaults() {
	if c.Orgs == 0 {
		c.Orgs = 10_000
	}
	if c.Vaults == 0 {
		c.Vaults = 100
	}
	c.Vaults = min(c.Vaults, c.Orgs)
	if len(c.ReplicaCounts) == 0 {
		c.ReplicaCounts = []int{1, 3}
	}
	if c.Interval == 0 {
		c.Interval = 30 * time.Second
	}
	if c.Duration == 0 {
		c.Duration = 3 * c.Interval
	}
	if c.WarmOrgs == 0 {
		c.WarmOrgs = 2000
	}
	if c.KeyBits == 0 {
		c.KeyBits = 2048
	}
	c.WarmOrgs = min(c.WarmOrgs, c.Orgs)
}

// Targets of the fleet measurement.
const (
	// FleetLateShare is how late, as a share of the interval, a check may
	// start after its scheduled time and still count as on schedule (the
	// schedule itself is the interval ± 10 %).
	FleetLateShare = 0.10
	// FleetMaxCores and FleetMaxRSS bound one replica carrying every org.
	FleetMaxCores = 1.0
	FleetMaxRSS   = 1 << 30
	// FleetShareSlack is how far (relative) each of n replicas' share of
	// the checks may be from 1/n.
	FleetShareSlack = 0.10
)

// FleetResult is the fleet measurement: one run per replica count, and the
// memory of warm orgs.
type FleetResult struct {
	Orgs             int          `json:"orgs"`
	Vaults           int          `json:"vaults"`
	IntervalSeconds  float64      `json:"intervalSeconds"`
	CheckConcurrency int          `json:"checkConcurrency,omitempty"` // 0: the replicas' default
	KeyBits          int          `json:"keyBits"`
	SetupSeconds     float64      `json:"setupSeconds"` // seeding the orgs, not measured
	Runs             []FleetRun   `json:"runs"`
	Memory           *FleetMemory `json:"memory,omitempty"`
}

// FleetRun is one window with n replicas.
type FleetRun struct {
	Replicas      int     `json:"replicas"`
	WarmupSeconds float64 `json:"warmupSeconds"`
	Seconds       float64 `json:"seconds"`
	Checks        int     `json:"checks"`
	// PerReplica are the figures of each replica's process.
	PerReplica []ReplicaFigures `json:"perReplica"`
	// VaultCalls are the key operations the fleet's vaults served in the
	// window; PerOrgHour is that per org, projected to an hour.
	VaultCalls VaultOps `json:"vaultCalls"`
	PerOrgHour float64  `json:"vaultCallsPerOrgPerHour"`
	// PerOrgHourAtSchedule is the calls per check made in the window times
	// the checks an hour the schedule asks of an org (3600 s / interval).
	// A wrap is proved every tenth check of an org, so a window shorter
	// than ten intervals may hold few of them: the monitorcost
	// measurement counts them over many checks.
	PerOrgHourAtSchedule float64 `json:"vaultCallsPerOrgPerHourAtSchedule"`
	// LateLimitSeconds is the lateness counted as late (the largest
	// histogram bound ≤ FleetLateShare × interval); Late the checks that
	// started later than that after their schedule, over every replica.
	LateLimitSeconds float64 `json:"lateLimitSeconds"`
	Late             int     `json:"late"`
	// MaxSinceCheck is the longest time since an org's last check seen
	// by sampling every org's health every few seconds in the window.
	MaxSinceCheck float64 `json:"maxSecondsSinceCheck"`
	// OrgsBehind had fewer checks in the window than an org checked at
	// least every interval + 10 % must have (floor(window / 1.1·interval)).
	OrgsBehind int `json:"orgsBehind"`
	// ScheduleRate is the checks per second the schedule asks of the
	// fleet (orgs / interval); CPUPerCheck the replicas' CPU seconds per
	// check made; ProjectedCores their product: the cores the replicas
	// together would use keeping every org on schedule, whether or not
	// this machine's emulator let them.
	ScheduleRate   float64 `json:"scheduleChecksPerSecond"`
	CPUPerCheck    float64 `json:"cpuSecondsPerCheck"`
	ProjectedCores float64 `json:"projectedCores"`
}

// ReplicaFigures are one replica's process and metrics over a window.
type ReplicaFigures struct {
	CPUSeconds float64 `json:"cpuSeconds"`
	Cores      float64 `json:"cores"` // CPU seconds per second of the window
	PeakRSS    int64   `json:"peakRSSBytes"`
	MeanRSS    int64   `json:"meanRSSBytes"`
	Checks     int     `json:"checks"`
	Share      float64 `json:"share"`
	// Lateness of the checks it started, as histogram bucket bounds.
	LatenessP50  float64 `json:"latenessP50Seconds"`
	LatenessP99  float64 `json:"latenessP99Seconds"`
	LatenessMax  float64 `json:"latenessMaxSeconds"`
	LatenessMean float64 `json:"latenessMeanSeconds"`
	Late         int     `json:"late"`
	// CheckP50 and CheckP99 are the checks' durations, as histogram bucket
	// bounds.
	CheckP50 float64 `json:"checkP50Seconds"`
	CheckP99 float64 `json:"checkP99Seconds"`
}

// FleetMemory is what warm data keys cost one replica.
type FleetMemory struct {
	Orgs     int   `json:"orgs"`
	DataKeys int   `json:"dataKeys"`
	RSS      int64 `json:"rssBeforeBytes"`
	RSSAfter int64 `json:"rssAfterBytes"`
	// Heap is the least heap in use seen in a few samples (close to the
	// live heap after a collection), before and after.
	Heap       int64   `json:"heapBeforeBytes"`
	HeapAfter  int64   `json:"heapAfterBytes"`
	RSSPerOrg  float64 `json:"rssPerOrgBytes"`
	HeapPerOrg float64 `json:"heapPerOrgBytes"`
	Seconds    float64 `json:"seconds"`
}

// fleetKeyPool is how many RSA keys are made: every org has its own key
// (its own name and version in its own vault), imported from this pool,
// because making 10,000 RSA-3072 keys would take most of an hour.
const fleetKeyPool = 4

// fleetSandbox is each fleet org's one sandbox (two data keys).
const fleetSandbox = "prod"

// Fleet seeds cfg.Orgs orgs on customer keys spread over cfg.Vaults
// emulator vaults, directly in a PostgreSQL state database, then for each
// replica count runs that many 'cmk serve' processes checking every org
// every cfg.Interval: after a warm-up (every org checked once, then one
// interval) it measures each replica's CPU and memory from /proc, its
// checks and their lateness from its /metrics, and the vault calls the
// emulator served, over cfg.Duration. After the first run's window its
// replica loads the data keys of cfg.WarmOrgs orgs, and the memory that
// costs is measured.
func Fleet(ctx context.Context, cfg FleetConfig) (*FleetResult, error) {
	cfg.defaults()
	dir, cleanup, err := cfg.workDir("fleet")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	bin, newDB, release, err := cfg.Replicas.setup(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer release()
	dsn, err := newDB()
	if err != nil {
		return nil, err
	}
	setup := time.Now()
	w, orgs, err := seedFleet(ctx, cfg, dir, dsn, bin)
	if err != nil {
		return nil, err
	}
	defer w.env.Emu.Close()
	st, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	res := &FleetResult{Orgs: cfg.Orgs, Vaults: cfg.Vaults, IntervalSeconds: cfg.Interval.Seconds(), CheckConcurrency: cfg.CheckConcurrency, KeyBits: cfg.KeyBits,
		SetupSeconds: time.Since(setup).Seconds()}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for i, n := range cfg.ReplicaCounts {
		cfg.progress("fleet: %d orgs, %d replica(s), checks every %s", cfg.Orgs, n, cfg.Interval)
		args := []string{"--check-interval", cfg.Interval.String(), "--workers", "1"}
		if cfg.CheckConcurrency > 0 {
			args = append(args, "--check-concurrency", fmt.Sprint(cfg.CheckConcurrency))
		}
		c, err := w.start(n, args...)
		if err != nil {
			return nil, err
		}
		run, err := fleetRun(ctx, cfg, w, st, c, client)
		if err == nil && i == 0 && cfg.WarmOrgs > 0 {
			res.Memory, err = fleetMemory(ctx, cfg, w, c.Procs[0], orgs[:cfg.WarmOrgs], client)
		}
		if serr := stopAll(c); err == nil && serr != nil {
			err = serr
		}
		if err != nil {
			c.Close()
			return nil, err
		}
		res.Runs = append(res.Runs, *run)
	}
	return res, nil
}

// seedFleet starts the world on dsn, creates the vaults, a key per org and
// the orgs with their sandbox, and closes the service (the emulator stays).
func seedFleet(ctx context.Context, cfg FleetConfig, dir, dsn, bin string) (*replicaWorld, []string, error) {
	svcDir := filepath.Join(dir, "svc")
	env, err := devenv.Start(ctx, devenv.Options{DataDir: svcDir, DatabaseDSN: dsn, NoMonitor: true, Workers: -1, NoEvents: true, Log: cfg.logger()})
	if err != nil {
		return nil, nil, fmt.Errorf("start local cmk: %w", err)
	}
	fail := func(err error) (*replicaWorld, []string, error) { env.Close(); return nil, nil, err }
	cfg.progress("fleet: making %d RSA-%d keys to import under %d names in %d vaults", fleetKeyPool, cfg.KeyBits, cfg.Orgs, cfg.Vaults)
	pool := make([]*rsa.PrivateKey, fleetKeyPool)
	if err := parallel(ctx, len(pool), len(pool), func(i int) (err error) {
		pool[i], err = rsa.GenerateKey(rand.Reader, cfg.KeyBits)
		return err
	}); err != nil {
		return fail(err)
	}
	vaults := make([]string, cfg.Vaults)
	for i := range vaults {
		vaults[i] = fmt.Sprintf("fleet%03d", i)
		if err := env.Emu.CreateVault(azemu.Vault{Name: vaults[i], TenantID: devenv.CustomerTenant, SKU: "standard", SoftDelete: true, PurgeProtection: true, RetentionDays: 90}); err != nil {
			return fail(err)
		}
		if err := env.Emu.AssignRole(vaults[i], env.PrincipalID, devenv.Role); err != nil {
			return fail(err)
		}
	}
	orgs := make([]string, cfg.Orgs)
	for i := range orgs {
		orgs[i] = fmt.Sprintf("FLEET%05dORG@CmkOrg", i)
	}
	cfg.progress("fleet: seeding %d orgs", cfg.Orgs)
	st := env.Svc.Store
	var done atomic.Int64
	if err := parallel(ctx, 8, len(orgs), func(i int) error {
		if err := seedOrg(ctx, env, st, orgs[i], vaults[i%len(vaults)], pool[i%len(pool)]); err != nil {
			return err
		}
		if n := done.Add(1); n%1000 == 0 {
			cfg.progress("fleet: %d orgs seeded", n)
		}
		return nil
	}); err != nil {
		return fail(err)
	}
	// The replicas own the state from here.
	if err := env.Svc.Close(); err != nil {
		return fail(err)
	}
	return &replicaWorld{env: env, dsn: dsn, svcDir: svcDir, dir: dir, bin: bin}, orgs, nil
}

// seedOrg gives org a key of its own in vault (material from the pool) and
// creates it on that key with one sandbox whose two data keys are wrapped
// under it, as a completed enablement leaves an org. The wrapping is done
// here with the key's public half, exactly as the vault's wrapKey
// (RSA-OAEP-256) does it; the vault unwraps it like its own.
func seedOrg(ctx context.Context, env *devenv.Env, st *store.Store, org, vault string, material *rsa.PrivateKey) error {
	name := "key-" + strings.ToLower(strings.TrimSuffix(org, "@CmkOrg"))
	version, err := env.Emu.CreateKey(vault, name, azemu.KeyOptions{RSA: material})
	if err != nil {
		return fmt.Errorf("key of %s: %w", org, err)
	}
	vaultURL := env.Emu.VaultURL(vault)
	if err := st.SeedCustomerOrg(ctx, org, vaultURL, name, version, devenv.CustomerTenant); err != nil {
		return err
	}
	ref := vaultURL + "/keys/" + name
	var keys []store.DataKey
	for _, kind := range store.StoreKinds {
		dek := make([]byte, 32)
		rand.Read(dek)
		wrapped, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &material.PublicKey, dek, nil)
		clear(dek)
		if err != nil {
			return err
		}
		keys = append(keys, store.DataKey{ID: fmt.Sprintf("%s-%s-%s", org, fleetSandbox, kind), OrgID: org, Sandbox: fleetSandbox, Store: kind,
			KEK: store.KEKCustomer, KEKRef: ref, KEKVersion: version, Alg: azurekv.AlgRSAOAEP256, Wrapped: wrapped})
	}
	return st.CreateSandbox(ctx, org, fleetSandbox, keys)
}

// fleetOps sums the key operations of the fleet's vaults.
func fleetOps(emu *azemu.Emulator) VaultOps {
	var v VaultOps
	for name, s := range emu.Stats().Vaults {
		if strings.HasPrefix(name, "fleet") {
			v.Get, v.Wrap, v.Unwrap, v.Throttled = v.Get+s.Get, v.Wrap+s.Wrap, v.Unwrap+s.Unwrap, v.Throttled+s.Throttled
		}
	}
	return v
}

// replicaSample is what is read of a replica at the start and the end of a
// window.
type replicaSample struct {
	cpu      time.Duration
	checks   float64
	lateness histogram
	duration histogram
}

func sampleReplica(ctx context.Context, client *http.Client, p *cluster.Proc) (replicaSample, error) {
	cpu, _, err := procUsage(p.PID())
	if err != nil {
		return replicaSample{}, err
	}
	m, err := scrape(ctx, client, p.URL())
	if err != nil {
		return replicaSample{}, err
	}
	return replicaSample{cpu: cpu, checks: sumOf(m, "cmk_key_checks_total"),
		lateness: histogramOf(m, "cmk_check_lateness_seconds", metrics.LatenessBuckets),
		duration: histogramOf(m, "cmk_key_check_seconds", prometheus.DefBuckets)}, nil
}

// fleetRun waits for the warm-up and measures one window.
func fleetRun(ctx context.Context, cfg FleetConfig, w *replicaWorld, st *store.Store, c *cluster.Cluster, client *http.Client) (*FleetRun, error) {
	run := &FleetRun{Replicas: len(c.Procs)}
	start := time.Now()
	// Warm-up: every org checked once by these replicas, then one interval
	// for the schedule to settle.
	var first map[string]int
	for {
		hs, err := st.AllHealth(ctx)
		if err != nil {
			return nil, err
		}
		if first == nil {
			first = map[string]int{}
			for _, h := range hs {
				first[h.OrgID] = h.Memo.Checks
			}
		}
		behind := 0
		for _, h := range hs {
			if h.Memo.Checks <= first[h.OrgID] {
				behind++
			}
		}
		if behind == 0 {
			break
		}
		if err := sleepCtx(ctx, 2*time.Second); err != nil {
			return nil, err
		}
		if time.Since(start) > 10*cfg.Interval+5*time.Minute {
			return nil, fmt.Errorf("after %s, %d of %d orgs are not yet checked once", time.Since(start).Round(time.Second), behind, len(hs))
		}
	}
	cfg.progress("fleet: every org checked once after %s; settling for one interval", time.Since(start).Round(time.Second))
	if err := sleepCtx(ctx, cfg.Interval); err != nil {
		return nil, err
	}
	run.WarmupSeconds = time.Since(start).Seconds()

	// The window.
	checks0, err := checksByOrg(ctx, st)
	if err != nil {
		return nil, err
	}
	before := make([]replicaSample, len(c.Procs))
	for i, p := range c.Procs {
		if before[i], err = sampleReplica(ctx, client, p); err != nil {
			return nil, err
		}
	}
	ops0 := fleetOps(w.env.Emu)
	t0 := time.Now()
	cfg.progress("fleet: measuring for %s", cfg.Duration)
	rss := make([][]int64, len(c.Procs))
	var maxSince time.Duration
	lastHealth := time.Time{}
	for time.Since(t0) < cfg.Duration {
		for i, p := range c.Procs {
			_, r, err := procUsage(p.PID())
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p.Name, err)
			}
			rss[i] = append(rss[i], r)
		}
		if time.Since(lastHealth) >= 5*time.Second {
			lastHealth = time.Now()
			hs, err := st.AllHealth(ctx)
			if err != nil {
				return nil, err
			}
			for _, h := range hs {
				maxSince = max(maxSince, lastHealth.Sub(h.LastCheck))
			}
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			return nil, err
		}
	}
	elapsed := time.Since(t0)
	run.Seconds = elapsed.Seconds()
	run.VaultCalls = fleetOps(w.env.Emu).sub(ops0)
	run.PerOrgHour = float64(run.VaultCalls.Total()) / float64(cfg.Orgs) / elapsed.Hours()
	run.MaxSinceCheck = maxSince.Seconds()
	checks1, err := checksByOrg(ctx, st)
	if err != nil {
		return nil, err
	}
	need := int(elapsed / (cfg.Interval + cfg.Interval/10))
	for org, n := range checks1 {
		if n-checks0[org] < need {
			run.OrgsBehind++
		}
	}
	lateLimit := FleetLateShare * cfg.Interval.Seconds()
	for i, p := range c.Procs {
		after, err := sampleReplica(ctx, client, p)
		if err != nil {
			return nil, err
		}
		_, peak := slices.Min(rss[i]), slices.Max(rss[i])
		var sum int64
		for _, r := range rss[i] {
			sum += r
		}
		lat := after.lateness.sub(before[i].lateness)
		late, bound := lat.over(lateLimit)
		f := ReplicaFigures{CPUSeconds: (after.cpu - before[i].cpu).Seconds(), PeakRSS: peak, MeanRSS: sum / int64(len(rss[i])),
			Checks: int(after.checks - before[i].checks), LatenessP50: lat.quantile(0.5), LatenessP99: lat.quantile(0.99), LatenessMax: lat.quantile(1), Late: int(late)}
		f.Cores = f.CPUSeconds / elapsed.Seconds()
		if n := lat.total(); n > 0 {
			f.LatenessMean = lat.sum / n
		}
		dur := after.duration.sub(before[i].duration)
		f.CheckP50, f.CheckP99 = dur.quantile(0.5), dur.quantile(0.99)
		run.LateLimitSeconds = bound
		run.Late += f.Late
		run.Checks += f.Checks
		run.PerReplica = append(run.PerReplica, f)
	}
	var cpu float64
	for i := range run.PerReplica {
		cpu += run.PerReplica[i].CPUSeconds
		if run.Checks > 0 {
			run.PerReplica[i].Share = float64(run.PerReplica[i].Checks) / float64(run.Checks)
		}
	}
	run.ScheduleRate = float64(cfg.Orgs) / cfg.Interval.Seconds()
	if run.Checks > 0 {
		run.PerOrgHourAtSchedule = float64(run.VaultCalls.Total()) / float64(run.Checks) * time.Hour.Seconds() / cfg.Interval.Seconds()
		run.CPUPerCheck = cpu / float64(run.Checks)
		run.ProjectedCores = run.CPUPerCheck * run.ScheduleRate
	}
	return run, nil
}

func checksByOrg(ctx context.Context, st *store.Store) (map[string]int, error) {
	hs, err := st.AllHealth(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int, len(hs))
	for _, h := range hs {
		out[h.OrgID] = h.Memo.Checks
	}
	return out, nil
}

// fleetMemory loads the data keys of orgs into replica p (a profile record
// and a lake file written in each org's sandbox) and measures its memory
// before and after.
func fleetMemory(ctx context.Context, cfg FleetConfig, w *replicaWorld, p *cluster.Proc, orgs []string, client *http.Client) (*FleetMemory, error) {
	mem := &FleetMemory{Orgs: len(orgs), DataKeys: len(orgs) * len(store.StoreKinds)}
	var err error
	if mem.RSS, mem.Heap, err = settledMemory(ctx, client, p); err != nil {
		return nil, err
	}
	cfg.progress("fleet: loading the data keys of %d orgs into %s", len(orgs), p.Name)
	start := time.Now()
	if err := parallel(ctx, 8, len(orgs), func(i int) error { return warmOrg(ctx, client, w.env, p.URL(), orgs[i]) }); err != nil {
		return nil, err
	}
	mem.Seconds = time.Since(start).Seconds()
	if mem.RSSAfter, mem.HeapAfter, err = settledMemory(ctx, client, p); err != nil {
		return nil, err
	}
	mem.RSSPerOrg = float64(mem.RSSAfter-mem.RSS) / float64(len(orgs))
	mem.HeapPerOrg = float64(mem.HeapAfter-mem.Heap) / float64(len(orgs))
	return mem, nil
}

// settledMemory samples a replica three times a second apart and returns
// the last RSS and the least heap in use.
func settledMemory(ctx context.Context, client *http.Client, p *cluster.Proc) (rss, heap int64, err error) {
	heap = -1
	for range 3 {
		if err := sleepCtx(ctx, time.Second); err != nil {
			return 0, 0, err
		}
		m, err := scrape(ctx, client, p.URL())
		if err != nil {
			return 0, 0, err
		}
		if h := int64(m["go_memstats_heap_inuse_bytes"]); heap < 0 || h < heap {
			heap = h
		}
		if _, rss, err = procUsage(p.PID()); err != nil {
			return 0, 0, err
		}
	}
	return rss, heap, nil
}

// warmOrg writes a profile record and a lake file in org's sandbox, which
// loads (unwraps) both its data keys.
func warmOrg(ctx context.Context, client *http.Client, env *devenv.Env, base, org string) error {
	token, err := env.Svc.MintDevToken("bench", org, nil, time.Hour)
	if err != nil {
		return err
	}
	for _, put := range []struct {
		path string
		body []byte
		want int
	}{
		{"/data/profiles/warm", jsonRecord("warm", 256), http.StatusOK},
		{"/data/lake/datasets/warm/files/f", bytes.Repeat([]byte("w"), 1024), http.StatusCreated},
	} {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+put.path, bytes.NewReader(put.body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set(cmkapi.HeaderAPIKey, env.APIKey)
		req.Header.Set(cmkapi.HeaderOrgID, org)
		req.Header.Set(cmkapi.HeaderSandbox, fleetSandbox)
		if _, err := send(client, req, put.want, false); err != nil {
			return fmt.Errorf("warm %s: %w", org, err)
		}
	}
	return nil
}

func (r *FleetResult) String() string {
	var b strings.Builder
	for _, run := range r.Runs {
		conc := "default"
		if r.CheckConcurrency > 0 {
			conc = fmt.Sprint(r.CheckConcurrency)
		}
		t := newTable(fmt.Sprintf("fleet: %d orgs in %d vaults (RSA-%d), checks every %.0f s (check concurrency %s), %d replica(s), measured %.0f s after %.0f s of warm-up",
			r.Orgs, r.Vaults, r.KeyBits, r.IntervalSeconds, conc, run.Replicas, run.Seconds, run.WarmupSeconds))
		t.row("replica", "CPU (cores)", "peak / mean RSS", "checks (share)", "check p50 / p99", "lateness mean, p50 / p99 / max", "late")
		for i, f := range run.PerReplica {
			t.row(fmt.Sprint(i), fmt.Sprintf("%.3f", f.Cores), humanBytes(f.PeakRSS)+" / "+humanBytes(f.MeanRSS),
				fmt.Sprintf("%d (%.1f%%)", f.Checks, 100*f.Share), fmt.Sprintf("≤ %s / ≤ %s", bound(f.CheckP50), bound(f.CheckP99)),
				fmt.Sprintf("%.2f s, ≤ %s / ≤ %s / ≤ %s", f.LatenessMean, bound(f.LatenessP50), bound(f.LatenessP99), bound(f.LatenessMax)), fmt.Sprint(f.Late))
		}
		b.WriteString(t.String())
		t = newTable("")
		t.row("checks in the window", fmt.Sprint(run.Checks), fmt.Sprintf("%.1f per second; the schedule asks %.1f", float64(run.Checks)/run.Seconds, run.ScheduleRate))
		t.row("replica CPU per check", fmt.Sprintf("%.2f ms", 1000*run.CPUPerCheck),
			fmt.Sprintf("× %.1f checks/s = %.3f cores to keep every org on schedule", run.ScheduleRate, run.ProjectedCores))
		t.row("checks started > "+bound(run.LateLimitSeconds)+" after schedule", fmt.Sprint(run.Late), verdict(run.Late == 0, "0"))
		t.row("orgs checked less often than every interval + 10 %", fmt.Sprint(run.OrgsBehind), verdict(run.OrgsBehind == 0, "0"))
		t.row("longest time since an org's last check (sampled)", fmt.Sprintf("%.1f s", run.MaxSinceCheck), fmt.Sprintf("interval + 10 %% = %.1f s", 1.1*r.IntervalSeconds))
		t.row("vault calls", run.VaultCalls.String())
		t.row("vault calls per org per hour", fmt.Sprintf("%.0f as checked; %.0f at the schedule", run.PerOrgHour, run.PerOrgHourAtSchedule), "(calls per check × 3600 s / interval)")
		if run.Replicas == 1 {
			f := run.PerReplica[0]
			t.row("one replica: CPU", fmt.Sprintf("%.3f cores", f.Cores), verdict(f.Cores < FleetMaxCores, "< 1 core"))
			t.row("one replica: peak RSS", humanBytes(f.PeakRSS), verdict(f.PeakRSS < FleetMaxRSS, "< 1 GiB"))
		} else {
			lo, hi := 1.0, 0.0
			for _, f := range run.PerReplica {
				lo, hi = min(lo, f.Share), max(hi, f.Share)
			}
			want := 1 / float64(run.Replicas)
			ok := lo >= want*(1-FleetShareSlack) && hi <= want*(1+FleetShareSlack)
			t.row("share of the checks per replica", fmt.Sprintf("%.1f%% – %.1f%%", 100*lo, 100*hi),
				verdict(ok, fmt.Sprintf("%.1f%% ± 10 %%", 100*want)))
		}
		b.WriteString(strings.TrimPrefix(t.String(), "\n"))
	}
	if m := r.Memory; m != nil {
		t := newTable(fmt.Sprintf("fleet: memory of one replica with the data keys of %d orgs loaded (%d keys, %.0f s to load)", m.Orgs, m.DataKeys, m.Seconds))
		t.row("RSS before / after", humanBytes(m.RSS)+" / "+humanBytes(m.RSSAfter), fmt.Sprintf("%.0f bytes per org", m.RSSPerOrg))
		t.row("heap in use before / after", humanBytes(m.Heap)+" / "+humanBytes(m.HeapAfter), fmt.Sprintf("%.0f bytes per org", m.HeapPerOrg))
		b.WriteString(t.String())
	}
	fmt.Fprintf(&b, "  (seeding the orgs took %.0f s, not measured)\n", r.SetupSeconds)
	return b.String()
}

// bound prints a histogram bucket bound.
func bound(v float64) string {
	if v >= inf {
		return "+Inf"
	}
	return fmt.Sprintf("%g s", v)
}

func verdict(ok bool, target string) string {
	if ok {
		return "met (" + target + ")"
	}
	return "MISSED (" + target + ")"
}
