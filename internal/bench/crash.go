package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/cluster"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/lake/blob"
	"github.com/cmk-project/cmk/internal/ratelimit"
	"github.com/cmk-project/cmk/internal/store"
	"github.com/cmk-project/cmk/internal/testsvc"
)

// Crash backends.
const (
	CrashSQLite   = "sqlite"   // state and profiles in SQLite, the lake in local files
	CrashPostgres = "postgres" // state and profiles in PostgreSQL, the lake in Azure Blob (Azurite)
)

// CrashConfig sizes the crash-consistency harness.
type CrashConfig struct {
	Common
	// Trials is how many times the process is killed. Default 100.
	Trials int
	// Seed makes the run reproducible: trial i runs with seed Seed+i, which
	// picks its workload, its kill time and the moments the enablement job
	// and the rotation start. 0 = random.
	Seed uint64
	// Backend is CrashSQLite (default) or CrashPostgres.
	Backend string
	// Bin is the cmk binary run as 'cmk serve'; empty builds one (only
	// from within the module).
	Bin string
	// DatabaseDSN, ProfilesDSN and Lake are the PostgreSQL databases and
	// the Azure Blob account of CrashPostgres; empty ones are started here
	// (testsvc), and stopped at the end.
	DatabaseDSN, ProfilesDSN string
	Lake                     *blob.AzureConfig
	// Window is the longest time from the start of a trial's workload to
	// the kill. Default 1.5 s.
	Window time.Duration
	// VaultDelay slows every Key Vault call during the workload, so that
	// kills land inside the enablement job and the rotation. Default 15 ms.
	VaultDelay time.Duration
	// Lease is the serve process's --lease: how soon a killed process's
	// job, check and rotation are taken over. Default 2 s.
	Lease time.Duration
	// JobBound is how long after the restart every job must have ended.
	// Default 60 s.
	JobBound time.Duration
	// AfterKill, when set, is called between each kill and the restart
	// with the process's --data-dir: tests of the harness itself damage
	// the state there and expect the trial to fail.
	AfterKill func(dataDir string) error
}

func (c *CrashConfig) defaults() {
	if c.Trials == 0 {
		c.Trials = 100
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64() >> 1
	}
	if c.Backend == "" {
		c.Backend = CrashSQLite
	}
	if c.Window == 0 {
		c.Window = 1500 * time.Millisecond
	}
	if c.VaultDelay == 0 {
		c.VaultDelay = 15 * time.Millisecond
	}
	if c.Lease == 0 {
		c.Lease = 2 * time.Second
	}
	if c.JobBound == 0 {
		c.JobBound = 60 * time.Second
	}
}

// CrashTrial is one kill and what was found after it.
type CrashTrial struct {
	Trial int    `json:"trial"`
	Seed  uint64 `json:"seed"`
	// KillMs is when the process was killed, from the start of the
	// workload; AtKill says what the jobs were doing then.
	KillMs float64 `json:"killMs"`
	AtKill string  `json:"atKill"`
	// InJob: the enablement job had not ended; MidRewrap: it had re-wrapped
	// some of the org's data keys and not all; InRotation: the demo key's
	// rotation was under way.
	InJob      bool `json:"inJob"`
	MidRewrap  bool `json:"midRewrap"`
	InRotation bool `json:"inRotation"`
	// Acked writes got a 2xx; Unanswered ones were cut off by the kill
	// (either the old or the new content is then correct).
	Acked      int `json:"acked"`
	Unanswered int `json:"unanswered"`
	// RestartMs is from the kill to the new process listening; RecoverMs
	// from then until every job had ended.
	RestartMs float64 `json:"restartMs"`
	RecoverMs float64 `json:"recoverMs"`
	// JobMs and RotationMs are from the new process listening to the
	// enablement job's end and to the rotation's (0: nothing to wait for).
	JobMs      float64 `json:"jobMs"`
	RotationMs float64 `json:"rotationMs"`
	// Problems are the broken guarantees; none in a passing trial.
	Problems []string `json:"problems,omitempty"`
}

// CrashResult is the run of the harness.
type CrashResult struct {
	Backend     string       `json:"backend"`
	Trials      int          `json:"trials"`
	Seed        uint64       `json:"seed"`
	Failed      int          `json:"failed"`
	Acked       int          `json:"acked"`
	Unanswered  int          `json:"unanswered"`
	InJob       int          `json:"killedInEnablement"` // kills while the enablement job ran
	MidRewrap   int          `json:"killedMidRewrap"`    // of which, with its re-wrap part-way
	InRotation  int          `json:"killedInRotation"`   // kills while a rotation was under way
	ObjectsRead int          `json:"objectsRead"`        // objects read back and compared, over all trials
	KeysChecked int          `json:"dataKeysUnwrapped"`  // data keys unwrapped, over all trials
	Restart     Latency      `json:"restart"`
	Recover     Latency      `json:"recover"`
	Job         Latency      `json:"job"`      // listening → the enablement job COMPLETED
	Rotation    Latency      `json:"rotation"` // listening → the rotation finished
	Seconds     float64      `json:"seconds"`
	Runs        []CrashTrial `json:"runs"`
}

// ErrCrashInconsistent is returned when a trial broke a guarantee.
var ErrCrashInconsistent = errors.New("crash consistency broken")

// Crash runs 'cmk serve' as a process on one world (the Azure emulator, an
// org on its customer key, an org per trial to enable), and trial after
// trial drives concurrent lake uploads and profile writes, an enablement
// job and a key rotation, SIGKILLs the process at a seeded random moment,
// restarts it and checks: every write answered 2xx reads back byte for
// byte, a write cut off reads as before or after but never partial, the
// listings show exactly those objects, every data key of the orgs involved
// unwraps, the job and the rotation finish within JobBound, and the key's
// health is not lost. A broken guarantee is a problem of the trial; the
// run goes on, and Crash then returns ErrCrashInconsistent with the result.
func Crash(ctx context.Context, cfg CrashConfig) (*CrashResult, error) {
	cfg.defaults()
	if cfg.Backend != CrashSQLite && cfg.Backend != CrashPostgres {
		return nil, fmt.Errorf("crash: backend %q: want %s or %s", cfg.Backend, CrashSQLite, CrashPostgres)
	}
	h, err := newCrashHarness(ctx, &cfg)
	if h != nil {
		defer h.close()
	}
	if err != nil {
		return nil, err
	}
	res := &CrashResult{Backend: cfg.Backend, Trials: cfg.Trials, Seed: cfg.Seed}
	start := time.Now()
	var restarts, recovers, jobs, rotations []time.Duration
	for i := range cfg.Trials {
		tr, err := h.trial(ctx, i, cfg.Seed+uint64(i))
		if err != nil {
			return nil, fmt.Errorf("crash trial %d (seed %d): %w\nprocess log:\n%s", i, cfg.Seed+uint64(i), err, h.proc.Tail(30))
		}
		res.Runs = append(res.Runs, *tr)
		res.Acked += tr.Acked
		res.Unanswered += tr.Unanswered
		if tr.InJob {
			res.InJob++
		}
		if tr.MidRewrap {
			res.MidRewrap++
		}
		if tr.InRotation {
			res.InRotation++
		}
		if len(tr.Problems) > 0 {
			res.Failed++
		}
		restarts = append(restarts, time.Duration(tr.RestartMs*float64(time.Millisecond)))
		recovers = append(recovers, time.Duration(tr.RecoverMs*float64(time.Millisecond)))
		if tr.JobMs > 0 {
			jobs = append(jobs, time.Duration(tr.JobMs*float64(time.Millisecond)))
		}
		if tr.RotationMs > 0 {
			rotations = append(rotations, time.Duration(tr.RotationMs*float64(time.Millisecond)))
		}
		verdict := "ok"
		if len(tr.Problems) > 0 {
			verdict = "FAILED: " + strings.Join(tr.Problems, "; ")
		}
		cfg.progress("crash %s trial %d/%d seed %d: killed at %.0f ms (%s); %d writes acknowledged, %d unanswered; restarted in %.2f s, jobs done %.2f s later: %s",
			cfg.Backend, i+1, cfg.Trials, tr.Seed, tr.KillMs, tr.AtKill, tr.Acked, tr.Unanswered, tr.RestartMs/1e3, tr.RecoverMs/1e3, verdict)
	}
	// At the end, every org of the run once more: nothing an earlier
	// trial left may have been lost by a later one.
	final := &CrashTrial{Trial: cfg.Trials}
	for _, o := range h.orgs[:min(len(h.orgs), cfg.Trials+1)] {
		h.verifyData(ctx, final, o)
		h.verifyKeys(ctx, final, o.id, "")
	}
	if len(final.Problems) > 0 {
		res.Failed++
		res.Runs = append(res.Runs, *final)
	}
	res.ObjectsRead, res.KeysChecked = h.objectsRead, h.keysChecked
	res.Seconds = time.Since(start).Seconds()
	res.Restart, res.Recover = latencyOf(restarts), latencyOf(recovers)
	res.Job, res.Rotation = latencyOf(jobs), latencyOf(rotations)
	if res.Failed > 0 {
		var lines []string
		for _, r := range res.Runs {
			if len(r.Problems) > 0 {
				lines = append(lines, fmt.Sprintf("trial %d (seed %d, killed at %.0f ms): %s", r.Trial, r.Seed, r.KillMs, strings.Join(r.Problems, "; ")))
			}
		}
		return res, fmt.Errorf("%w in %d of %d trials (%s backend, seed %d):\n%s", ErrCrashInconsistent, res.Failed, cfg.Trials, cfg.Backend, cfg.Seed, strings.Join(lines, "\n"))
	}
	return res, nil
}

func (r *CrashResult) String() string {
	t := newTable(fmt.Sprintf("crash consistency (%s): %d SIGKILLs of 'cmk serve', seed %d (trial i: seed %d+i)", r.Backend, r.Trials, r.Seed, r.Seed))
	t.row("trials failed", fmt.Sprint(r.Failed))
	t.row("kills during the enablement job (re-wrap part-way) / a rotation", fmt.Sprintf("%d (%d) / %d", r.InJob, r.MidRewrap, r.InRotation))
	t.row("writes acknowledged / cut off by the kill", fmt.Sprintf("%d / %d", r.Acked, r.Unanswered))
	t.row("objects read back and compared", fmt.Sprint(r.ObjectsRead))
	t.row("data keys unwrapped", fmt.Sprint(r.KeysChecked))
	ms := func(us float64) string { return fmt.Sprintf("%.0f ms", us/1e3) }
	t.row("kill → listening again", "p50 "+ms(r.Restart.P50us), "p99 "+ms(r.Restart.P99us), "max "+ms(r.Restart.Maxus))
	t.row("listening → every job ended", "p50 "+ms(r.Recover.P50us), "p99 "+ms(r.Recover.P99us), "max "+ms(r.Recover.Maxus))
	t.row(fmt.Sprintf("  → the enablement job COMPLETED (%d)", r.Job.N), "p50 "+ms(r.Job.P50us), "p99 "+ms(r.Job.P99us), "max "+ms(r.Job.Maxus))
	t.row(fmt.Sprintf("  → the rotation finished (%d)", r.Rotation.N), "p50 "+ms(r.Rotation.P50us), "p99 "+ms(r.Rotation.P99us), "max "+ms(r.Rotation.Maxus))
	for _, run := range r.Runs {
		if len(run.Problems) > 0 {
			t.row(fmt.Sprintf("FAILED trial %d seed %d", run.Trial, run.Seed), strings.Join(run.Problems, "; "))
		}
	}
	return t.String()
}

// crashOrg is an org of the harness with its token.
type crashOrg struct {
	id, token string
	key       string // the trial's key identifier (empty for the demo org)
}

// crashHarness is the world the trials run in.
type crashHarness struct {
	cfg     *CrashConfig
	data    string // the process's --data-dir
	env     *devenv.Env
	proc    *cluster.Proc
	st      *store.Store
	kr      *keyring.Keyring
	client  *http.Client
	orgs    []crashOrg // [0] is the demo org, [i+1] trial i's
	keys    chan string
	ledger  *crashLedger
	version string // the demo key's newest version
	cleanup []func()

	objectsRead, keysChecked int
}

func (h *crashHarness) close() {
	for i := len(h.cleanup) - 1; i >= 0; i-- {
		h.cleanup[i]()
	}
}

func newCrashHarness(ctx context.Context, cfg *CrashConfig) (*crashHarness, error) {
	h := &crashHarness{cfg: cfg, ledger: &crashLedger{m: map[crashObj]*crashEntry{}}}
	dir, cleanup, err := cfg.workDir("crash")
	if err != nil {
		return nil, err
	}
	h.cleanup = append(h.cleanup, cleanup)
	bin := cfg.Bin
	if bin == "" {
		cfg.progress("crash: building cmk")
		if bin, err = cluster.Build(ctx, dir); err != nil {
			return h, err
		}
	}
	data := filepath.Join(dir, "svc")
	h.data = data
	// The demo org, on its customer key, has 20 sandboxes: 40 data keys
	// for each rotation to re-wrap.
	sandboxes := []string{"prod", "dev"}
	for i := range 18 {
		sandboxes = append(sandboxes, fmt.Sprintf("s%d", i))
	}
	o := devenv.Options{DataDir: data, Sandboxes: sandboxes, NoMonitor: true, NoEvents: true, Log: cfg.logger()}
	// Every org of the run is bound from this one address.
	o.RateLimits.ConsentPerClient = ratelimit.Limit{N: 1_000_000, Per: time.Second}
	var serveArgs, serveEnv []string
	if cfg.Backend == CrashPostgres {
		scope := &testsvc.Scope{}
		h.cleanup = append(h.cleanup, scope.Close)
		for _, dsn := range []*string{&cfg.DatabaseDSN, &cfg.ProfilesDSN} {
			if *dsn == "" {
				if *dsn, err = testsvc.PostgresIn(scope); err != nil {
					return h, err
				}
			}
		}
		if cfg.Lake == nil {
			az, err := testsvc.AzuriteIn(scope)
			if err != nil {
				return h, err
			}
			cfg.Lake = &blob.AzureConfig{ServiceURL: az.ServiceURL, AccountName: az.AccountName, AccountKey: az.AccountKey, Container: "crash"}
		}
		o.DatabaseDSN, o.ProfilesDSN, o.LakeAzure = cfg.DatabaseDSN, cfg.ProfilesDSN, cfg.Lake
		serveArgs = []string{"--database", cfg.DatabaseDSN, "--profiles-postgres", cfg.ProfilesDSN,
			"--lake-azure-url", cfg.Lake.ServiceURL, "--lake-azure-account", cfg.Lake.AccountName, "--lake-azure-container", cfg.Lake.Container}
		serveEnv = []string{"CMK_LAKE_AZURE_ACCOUNT_KEY=" + cfg.Lake.AccountKey}
	}

	// The in-process service sets the world up and is closed; the
	// processes own the state from then on.
	cfg.progress("crash: setting up the world (%d orgs)", cfg.Trials+1)
	env, err := devenv.Start(ctx, o)
	if err != nil {
		return h, fmt.Errorf("start local cmk: %w", err)
	}
	h.env = env
	h.cleanup = append(h.cleanup, func() { env.Emu.Close() })
	h.version = env.KeyIdentifier[strings.LastIndexByte(env.KeyIdentifier, '/')+1:]
	w := &world{env: env, client: &http.Client{}}
	if err := w.enable(ctx, ""); err != nil {
		env.Svc.Close()
		return h, err
	}
	h.orgs = append(h.orgs, crashOrg{id: env.Org, token: env.Token})
	for i := range cfg.Trials {
		org := fmt.Sprintf("CRASH%04dORG@CmkOrg", i)
		if _, err := env.Svc.Store.EnsureOrg(ctx, org); err != nil {
			env.Svc.Close()
			return h, err
		}
		// Eight sandboxes, sixteen data keys: a job long enough to be
		// killed in the middle.
		for s := range 8 {
			sb := "prod"
			if s > 0 {
				sb = fmt.Sprintf("s%d", s)
			}
			if err := env.Svc.Keyring.CreateSandbox(ctx, org, sb); err != nil && !errors.Is(err, store.ErrDuplicateName) {
				env.Svc.Close()
				return h, err
			}
		}
		if _, err := env.BindOrg(ctx, org); err != nil {
			env.Svc.Close()
			return h, fmt.Errorf("bind %s: %w", org, err)
		}
		tok, err := env.Svc.MintDevToken("crash", org, nil, 72*time.Hour)
		if err != nil {
			env.Svc.Close()
			return h, err
		}
		h.orgs = append(h.orgs, crashOrg{id: org, token: tok})
	}
	sys, provider := env.Svc.Keyring.System, env.Svc.Provider
	if err := env.Svc.Close(); err != nil {
		return h, err
	}
	// A key per trial org (a key protects one org only), made ahead of
	// the trials: RSA key generation takes a while.
	h.keys = make(chan string, cfg.Trials)
	kctx, kcancel := context.WithCancel(ctx)
	h.cleanup = append(h.cleanup, kcancel)
	go func() {
		defer close(h.keys)
		for i := range cfg.Trials {
			if kctx.Err() != nil {
				return
			}
			name := fmt.Sprintf("crash-key-%04d", i)
			version, err := env.Emu.CreateKey(devenv.Vault, name, azemu.KeyOptions{Kty: "RSA", Bits: 3072})
			if err != nil {
				return
			}
			h.keys <- env.Emu.VaultURL(devenv.Vault) + "/keys/" + name + "/" + version
		}
	}()

	if cfg.Backend == CrashPostgres {
		h.st, err = store.OpenPostgres(ctx, cfg.DatabaseDSN)
	} else {
		h.st, err = store.Open(ctx, filepath.Join(data, "cmk.db"))
	}
	if err != nil {
		return h, err
	}
	h.cleanup = append(h.cleanup, func() { h.st.Close() })
	h.kr = &keyring.Keyring{Store: h.st, System: sys, Customer: provider}

	emuArgs, emuEnv, err := env.ServeFlags(dir)
	if err != nil {
		return h, err
	}
	args := append([]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", data, "--dev-token-issuer"}, emuArgs...)
	args = append(args, "--workers", "2", "--vault-concurrency", "2", "--check-interval", "1s", "--lease", cfg.Lease.String(), "--shutdown-timeout", "5s")
	args = append(args, serveArgs...)
	h.proc, err = cluster.Start("cmk-serve", bin, append(emuEnv, serveEnv...), args...)
	if err != nil {
		return h, err
	}
	h.cleanup = append(h.cleanup, func() { h.proc.Kill() })
	tr := &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}
	h.client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	h.cleanup = append(h.cleanup, tr.CloseIdleConnections)
	return h, nil
}

// crashObj names a lake file or a profile record.
type crashObj struct {
	org, sandbox string
	lake         bool
	name         string
}

// crashVersion is a content of an object: absent, or its size and hash.
type crashVersion struct {
	present bool
	size    int64
	sum     [sha256.Size]byte
}

func (v crashVersion) String() string {
	if !v.present {
		return "absent"
	}
	return fmt.Sprintf("%d bytes %x", v.size, v.sum[:4])
}

type crashEntry struct {
	acked crashVersion   // the last write answered 2xx (absent at first)
	maybe []crashVersion // writes since then cut off by the kill
}

type crashLedger struct {
	mu sync.Mutex
	m  map[crashObj]*crashEntry
}

func (l *crashLedger) entry(o crashObj) *crashEntry {
	e := l.m[o]
	if e == nil {
		e = &crashEntry{}
		l.m[o] = e
	}
	return e
}

// trial runs one kill and its checks.
func (h *crashHarness) trial(ctx context.Context, i int, seed uint64) (*CrashTrial, error) {
	cfg := h.cfg
	tr := &CrashTrial{Trial: i, Seed: seed}
	rng := rand.New(rand.NewPCG(seed, 0xc4a5))
	org := &h.orgs[i+1]
	select {
	case key, ok := <-h.keys:
		if !ok {
			return nil, errors.New("no key for the trial's org: key generation failed")
		}
		org.key = key
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	window := cfg.Window
	killAt := time.Duration(50e6 + rng.Int64N(int64(window)-50e6))
	configAt := time.Duration(rng.Int64N(int64(window) * 3 / 10))
	rotate := rng.IntN(10) < 7
	// cmk is told of the new version early, so that kills land in the
	// re-wrap.
	rotateAt := time.Duration(rng.Int64N(int64(window) / 10))
	configName := fmt.Sprintf("Crash%04d", i)
	var rotated string
	if rotate {
		// The vault makes the new version before the workload starts:
		// generating an RSA key takes seconds on a loaded machine, which
		// would otherwise push the rotation past most kills. The monitor's
		// own check may find it before the workload does.
		v, err := h.env.Emu.RotateKey(devenv.Vault, devenv.KeyName)
		if err != nil {
			return nil, fmt.Errorf("rotate the demo key: %w", err)
		}
		rotated = v
	}

	wctx, stop := context.WithCancel(ctx)
	defer stop()
	h.env.Emu.SetVaultFault(devenv.Vault, 0, cfg.VaultDelay)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var configSent, configAcked bool
	var problems []string
	addProblem := func(format string, args ...any) {
		mu.Lock()
		problems = append(problems, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	counts := make([][2]int, 6)
	clients := []struct {
		org  *crashOrg
		lake bool
	}{{&h.orgs[0], true}, {&h.orgs[0], true}, {&h.orgs[0], false}, {&h.orgs[0], false}, {org, true}, {org, false}}
	for c, cl := range clients {
		crng := rand.New(rand.NewPCG(seed, uint64(c+1)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			acked, cut := h.write(wctx, cl.org, cl.lake, c, crng, addProblem)
			counts[c] = [2]int{acked, cut}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if sleepCtx(wctx, configAt) != nil {
			return
		}
		mu.Lock()
		configSent = true
		mu.Unlock()
		code, _, err := h.do(wctx, org, "POST", configPath, "", configBody(org.id, configName, org.key))
		if err == nil {
			mu.Lock()
			configAcked = code == http.StatusCreated
			mu.Unlock()
			if code != http.StatusCreated {
				addProblem("POST config answered %d", code)
			}
		}
	}()
	if rotate {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if sleepCtx(wctx, rotateAt) != nil {
				return
			}
			// Key Vault's event would make cmk check the key at once; the
			// process is not subscribed, so the harness asks, as an
			// administrator can. A refusal (the re-check's rate limit) or
			// no answer (the kill) leaves it to the next scheduled check.
			h.do(wctx, &h.orgs[0], "POST", cmkapi.RecheckKey.Path, "", nil)
		}()
	}

	start := time.Now()
	if sleepCtx(ctx, killAt) != nil {
		return nil, ctx.Err()
	}
	if err := h.proc.Kill(); err != nil {
		return nil, err
	}
	killed := time.Now()
	tr.KillMs = float64(killed.Sub(start)) / float64(time.Millisecond)
	stop()
	wg.Wait()
	h.env.Emu.SetVaultFault(devenv.Vault, 0, 0)
	h.atKill(ctx, tr, org.id, configName)
	for _, c := range counts {
		tr.Acked += c[0]
		tr.Unanswered += c[1]
	}

	if cfg.AfterKill != nil {
		if err := cfg.AfterKill(h.data); err != nil {
			return nil, err
		}
	}
	if err := h.proc.Restart(); err != nil {
		return nil, err
	}
	listening := time.Now()
	tr.RestartMs = float64(listening.Sub(killed)) / float64(time.Millisecond)
	if rotated != "" {
		h.version = rotated
	}
	mu.Lock()
	sent, acked := configSent, configAcked
	mu.Unlock()

	// Every job ends: the enablement job (if its submission reached the
	// store) and the rotation to the demo key's newest version.
	deadline := listening.Add(cfg.JobBound)
	job, err := h.waitJob(ctx, tr, org, configName, sent, acked, deadline)
	if err != nil {
		return nil, err
	}
	if job {
		tr.JobMs = float64(time.Since(listening)) / float64(time.Millisecond)
	}
	if err := h.waitRotation(ctx, tr, deadline); err != nil {
		return nil, err
	}
	if rotated != "" {
		tr.RotationMs = float64(time.Since(listening)) / float64(time.Millisecond)
	}
	tr.RecoverMs = float64(time.Since(listening)) / float64(time.Millisecond)

	tr.Problems = append(tr.Problems, problems...)
	h.verifyData(ctx, tr, h.orgs[0])
	h.verifyData(ctx, tr, *org)
	h.verifyKeys(ctx, tr, h.orgs[0].id, h.version)
	want := ""
	if job {
		want = "customer"
	}
	h.verifyKeys(ctx, tr, org.id, want)
	h.verifyHealth(ctx, tr, h.orgs[0])
	if job {
		h.verifyHealth(ctx, tr, *org)
	}
	return tr, nil
}

// atKill notes, from the store, what the jobs were doing when the process
// died.
func (h *crashHarness) atKill(ctx context.Context, tr *CrashTrial, org, config string) {
	var parts []string
	cfg, err := h.st.ConfigByName(ctx, org, config)
	switch {
	case errors.Is(err, store.ErrNotFound):
		parts = append(parts, "job not submitted")
	case err != nil:
		parts = append(parts, "job unknown: "+err.Error())
	default:
		// The job's progress is saved a page at a time; the keys say more.
		keys, _ := h.st.DataKeys(ctx, org)
		done := 0
		for _, dk := range keys {
			if dk.KEK == store.KEKCustomer {
				done++
			}
		}
		parts = append(parts, fmt.Sprintf("job %s, %d/%d data keys re-wrapped", cfg.Status, done, len(keys)))
		tr.InJob = cfg.Status != store.StatusCompleted && cfg.Status != store.StatusFailed
		tr.MidRewrap = tr.InJob && done > 0 && done < len(keys)
	}
	hl, err := h.st.Health(ctx, h.orgs[0].id)
	switch {
	case err != nil:
		parts = append(parts, "health unknown: "+err.Error())
	case hl.RotateTo != "":
		parts = append(parts, "rotating to "+hl.RotateTo)
		tr.InRotation = true
	default:
		parts = append(parts, "no rotation")
	}
	tr.AtKill = strings.Join(parts, ", ")
}

// waitJob waits for the trial's enablement job to end; it reports whether
// the org is now on its customer key.
func (h *crashHarness) waitJob(ctx context.Context, tr *CrashTrial, org *crashOrg, name string, sent, acked bool, deadline time.Time) (bool, error) {
	for {
		var c cmkapi.Config
		code, body, err := h.do(ctx, org, "GET", configPath+"/"+name+"?configType=BYOK_CONFIG", "", nil)
		if err != nil {
			return false, err
		}
		switch {
		case code == http.StatusNotFound && !acked:
			// Never sent, or cut off before it was stored: nothing to finish.
			return false, nil
		case code == http.StatusNotFound:
			tr.Problems = append(tr.Problems, fmt.Sprintf("config %s was acknowledged (201) but is gone after the restart", name))
			return false, nil
		case code != http.StatusOK:
			return false, fmt.Errorf("GET config %s = %d %s", name, code, brief(body))
		}
		if err := json.Unmarshal(body, &c); err != nil {
			return false, err
		}
		switch c.Status {
		case cmkapi.StatusCompleted:
			return true, nil
		case cmkapi.StatusFailed:
			tr.Problems = append(tr.Problems, fmt.Sprintf("enablement job %s FAILED: %+v", name, c.Failure))
			return false, nil
		}
		if time.Now().After(deadline) {
			tr.Problems = append(tr.Problems, fmt.Sprintf("enablement job %s is %s (%d/%d) %s after the restart, want COMPLETED", name, c.Status, c.Progress.DataKeysRewrapped, c.Progress.DataKeysTotal, h.cfg.JobBound))
			return false, nil
		}
		if sleepCtx(ctx, 50*time.Millisecond) != nil {
			return false, ctx.Err()
		}
	}
}

// waitRotation waits until the demo org's health names the key's newest
// version and no rotation is under way.
func (h *crashHarness) waitRotation(ctx context.Context, tr *CrashTrial, deadline time.Time) error {
	for {
		var hl cmkapi.Health
		code, body, err := h.do(ctx, &h.orgs[0], "GET", cmkapi.GetKeyHealth.Path, "", nil)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("GET health = %d %s", code, brief(body))
		}
		if err := json.Unmarshal(body, &hl); err != nil {
			return err
		}
		if hl.KeyVersion == h.version && hl.Rotation == nil {
			return nil
		}
		if time.Now().After(deadline) {
			tr.Problems = append(tr.Problems, fmt.Sprintf("the rotation to %s has not finished %s after the restart (health names %s, rotation %+v)", h.version, h.cfg.JobBound, hl.KeyVersion, hl.Rotation))
			return nil
		}
		if sleepCtx(ctx, 50*time.Millisecond) != nil {
			return ctx.Err()
		}
	}
}

// write writes to one org's prod sandbox until ctx ends or the process
// dies: lake files of sizes from empty to many chunks, or profile records
// put, replaced and deleted. Each client has its own objects, so each
// object's writes are in order. It returns the writes acknowledged and
// those cut off.
func (h *crashHarness) write(ctx context.Context, org *crashOrg, lake bool, c int, rng *rand.Rand, problem func(string, ...any)) (acked, cut int) {
	sizes := []int{0, 1, 1000, 64 << 10, 64<<10 + 1, 200_000, 700_000}
	if org != &h.orgs[0] {
		sizes = []int{0, 10, 70_000} // kept small: every trial's org is read again at the end
	}
	for n := 0; ctx.Err() == nil; n++ {
		obj := crashObj{org: org.id, sandbox: "prod", lake: lake, name: fmt.Sprintf("c%d-%d", c, rng.IntN(6))}
		var v crashVersion
		var method, path string
		var body []byte
		del := rng.IntN(4) == 0
		switch {
		case lake && del:
			method, path = "DELETE", "/data/lake/datasets/crash/files/"+obj.name
		case lake:
			body = make([]byte, sizes[rng.IntN(len(sizes))])
			fillBytes(rng, body)
			method, path = "PUT", "/data/lake/datasets/crash/files/"+obj.name
		case del:
			method, path = "DELETE", "/data/profiles/"+obj.name
		default:
			pad := strings.Repeat(string(rune('a'+rng.IntN(26))), rng.IntN(4000))
			body = fmt.Appendf(nil, `{"client":%d,"op":%d,"org":%q,"pad":%q}`, c, n, org.id, pad)
			method, path = "PUT", "/data/profiles/"+obj.name
		}
		if !del {
			v = crashVersion{present: true, size: int64(len(body)), sum: sha256.Sum256(body)}
		}
		code, answer, err := h.do(ctx, org, method, path, "prod", body)
		h.ledger.mu.Lock()
		e := h.ledger.entry(obj)
		switch {
		case err != nil:
			// No answer: the process died (or the trial ended) under it.
			e.maybe = append(e.maybe, v)
			cut++
		case code/100 == 2 || (del && code == http.StatusNotFound):
			e.acked, e.maybe = v, nil
			acked++
		default:
			// Refused: nothing should have been written, but the ledger
			// takes no one's word for it.
			e.maybe = append(e.maybe, v)
			problem("%s %s answered %d: %s", method, path, code, brief(answer))
		}
		h.ledger.mu.Unlock()
		if err != nil {
			return acked, cut
		}
	}
	return acked, cut
}

// verifyData reads every object of org the ledger knows, checks it is the
// last acknowledged content or one cut off after it (and adopts what it
// finds), and checks the listings name exactly the objects present.
func (h *crashHarness) verifyData(ctx context.Context, tr *CrashTrial, org crashOrg) {
	h.ledger.mu.Lock()
	defer h.ledger.mu.Unlock()
	for obj, e := range h.ledger.m {
		if obj.org != org.id {
			continue
		}
		path := "/data/profiles/" + obj.name
		if obj.lake {
			path = "/data/lake/datasets/crash/files/" + obj.name
		}
		code, body, err := h.do(ctx, &org, "GET", path, obj.sandbox, nil)
		if err != nil {
			tr.Problems = append(tr.Problems, fmt.Sprintf("read %s: %v", path, err))
			continue
		}
		h.objectsRead++
		var got crashVersion
		switch code {
		case http.StatusOK:
			got = crashVersion{present: true, size: int64(len(body)), sum: sha256.Sum256(body)}
		case http.StatusNotFound:
		default:
			tr.Problems = append(tr.Problems, fmt.Sprintf("%s of %s: GET answered %d: %s", path, org.id, code, brief(body)))
			continue
		}
		if got != e.acked && !containsVersion(e.maybe, got) {
			tr.Problems = append(tr.Problems, fmt.Sprintf("%s of %s reads as %s, want the acknowledged %s or one of %v", path, org.id, got, e.acked, e.maybe))
		}
		e.acked, e.maybe = got, nil
	}
	// The listings: no object the ledger does not hold, none it holds
	// missing, each of its size.
	want := map[crashObj]int64{}
	for obj, e := range h.ledger.m {
		if obj.org == org.id && e.acked.present {
			want[obj] = e.acked.size
		}
	}
	var files cmkapi.LakeFileList
	code, body, err := h.do(ctx, &org, "GET", "/data/lake/datasets/crash/files", "prod", nil)
	if err != nil || code != http.StatusOK || json.Unmarshal(body, &files) != nil {
		tr.Problems = append(tr.Problems, fmt.Sprintf("list the lake of %s: %d %v %s", org.id, code, err, brief(body)))
		return
	}
	seen := map[crashObj]bool{}
	for _, f := range files.Files {
		obj := crashObj{org: org.id, sandbox: "prod", lake: true, name: f.Name}
		size, ok := want[obj]
		switch {
		case !ok:
			tr.Problems = append(tr.Problems, fmt.Sprintf("the lake of %s lists %s (%d bytes), which no write left there", org.id, f.Name, f.Size))
		case size != f.Size:
			tr.Problems = append(tr.Problems, fmt.Sprintf("the lake of %s lists %s at %d bytes, want %d", org.id, f.Name, f.Size, size))
		}
		seen[obj] = true
	}
	cursor := ""
	for {
		q := "/data/profiles?limit=100"
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		var page cmkapi.ProfileList
		code, body, err := h.do(ctx, &org, "GET", q, "prod", nil)
		if err != nil || code != http.StatusOK || json.Unmarshal(body, &page) != nil {
			tr.Problems = append(tr.Problems, fmt.Sprintf("list the profiles of %s: %d %v %s", org.id, code, err, brief(body)))
			return
		}
		for _, r := range page.Records {
			obj := crashObj{org: org.id, sandbox: "prod", name: r.ID}
			e := h.ledger.m[obj]
			got := crashVersion{present: true, size: int64(len(r.Record)), sum: sha256.Sum256(r.Record)}
			if e == nil || e.acked != got {
				tr.Problems = append(tr.Problems, fmt.Sprintf("the profiles of %s list %s as %s, which no write left there", org.id, r.ID, got))
			}
			seen[obj] = true
		}
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	for obj := range want {
		if !seen[obj] {
			tr.Problems = append(tr.Problems, fmt.Sprintf("%s of %s reads but is not listed", obj.name, org.id))
		}
	}
}

func containsVersion(vs []crashVersion, v crashVersion) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

// verifyKeys unwraps every data key of org. kek "customer" also requires
// every key to be under the customer key; a version, every customer-wrapped
// key to be at it.
func (h *crashHarness) verifyKeys(ctx context.Context, tr *CrashTrial, org, want string) {
	keys, err := h.st.DataKeys(ctx, org)
	if err != nil {
		tr.Problems = append(tr.Problems, fmt.Sprintf("data keys of %s: %v", org, err))
		return
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, dk := range keys {
		switch {
		case want == "customer" && dk.KEK != store.KEKCustomer:
			tr.Problems = append(tr.Problems, fmt.Sprintf("data key %s of %s is under %s after its enablement COMPLETED", dk.ID, org, dk.KEK))
		case want != "" && want != "customer" && dk.KEK == store.KEKCustomer && dk.KEKVersion != want:
			tr.Problems = append(tr.Problems, fmt.Sprintf("data key %s of %s is at version %s after the rotation to %s finished", dk.ID, org, dk.KEKVersion, want))
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			dek, err := h.kr.Unwrap(ctx, dk)
			mu.Lock()
			defer mu.Unlock()
			h.keysChecked++
			if err != nil {
				tr.Problems = append(tr.Problems, fmt.Sprintf("data key %s of %s (%s) does not unwrap: %v", dk.ID, org, dk.KEK, err))
				return
			}
			clear(dek)
		}()
	}
	wg.Wait()
}

// verifyHealth requires the org's key to be HEALTHY and its data served.
func (h *crashHarness) verifyHealth(ctx context.Context, tr *CrashTrial, org crashOrg) {
	var hl cmkapi.Health
	code, body, err := h.do(ctx, &org, "GET", cmkapi.GetKeyHealth.Path, "", nil)
	if err != nil || code != http.StatusOK || json.Unmarshal(body, &hl) != nil {
		tr.Problems = append(tr.Problems, fmt.Sprintf("health of %s: %d %v %s", org.id, code, err, brief(body)))
		return
	}
	if hl.State != keyhealth.Healthy || hl.DataBlocked {
		tr.Problems = append(tr.Problems, fmt.Sprintf("health of %s is %s (data blocked %v: %s), want HEALTHY", org.id, hl.State, hl.DataBlocked, hl.Message))
	}
}

// do makes one API request to the process as org's administrator; err is
// set only when no answer arrived.
func (h *crashHarness) do(ctx context.Context, org *crashOrg, method, path, sandbox string, body any) (int, []byte, error) {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.proc.URL()+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+org.token)
	req.Header.Set(cmkapi.HeaderAPIKey, h.env.APIKey)
	req.Header.Set(cmkapi.HeaderOrgID, org.id)
	if sandbox != "" {
		req.Header.Set(cmkapi.HeaderSandbox, sandbox)
	}
	if strings.HasPrefix(path, "/data/lake/") {
		req.Header.Set("Content-Type", "application/octet-stream")
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err // an answer cut off is no answer
	}
	return resp.StatusCode, raw, nil
}

func configBody(org, name, kid string) cmkapi.ConfigRequest {
	return cmkapi.ConfigRequest{Name: name, Type: cmkapi.ConfigTypeBYOK, IMSOrgID: org,
		ConfigData: cmkapi.ConfigData{ProviderType: cmkapi.ProviderAzureKeyVault, KeyVaultKeyIdentifier: kid}}
}

// fillBytes fills b from rng, so a trial's contents follow from its seed.
func fillBytes(rng *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

// brief is an answer's body on one line, cut short, for a problem's text.
func brief(b []byte) string {
	var out bytes.Buffer
	if json.Compact(&out, b) != nil {
		out.Reset()
		out.Write(b)
	}
	r := []rune(strings.Join(strings.Fields(out.String()), " "))
	if len(r) > 240 {
		return string(r[:240]) + "…"
	}
	return string(r)
}
