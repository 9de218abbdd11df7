package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/ratelimit"
	"github.com/cmk-project/cmk/internal/store"
)

// EnableScaleConfig sizes the enablement-at-scale measurement.
type EnableScaleConfig struct {
	Common
	Replicas
	// Sandboxes in all, spread evenly over Orgs orgs (two data keys
	// each). Defaults 3,000 and 30.
	Sandboxes int
	Orgs      int
	// ReplicaCounts are the replica counts each layout runs with. Default
	// 1 then 3.
	ReplicaCounts []int
	// The throttled layout's one vault admits ThrottleLimit key operations
	// per ThrottleWindow. Default 1000 per 10 s, as the enable
	// measurement.
	ThrottleLimit  int
	ThrottleWindow time.Duration
}

func (c *EnableScaleConfig) defaults() {
	if c.Sandboxes == 0 {
		c.Sandboxes = 3000
	}
	if c.Orgs == 0 {
		c.Orgs = 30
	}
	c.Orgs = min(c.Orgs, c.Sandboxes)
	if len(c.ReplicaCounts) == 0 {
		c.ReplicaCounts = []int{1, 3}
	}
	if c.ThrottleLimit == 0 {
		c.ThrottleLimit = 1000
	}
	if c.ThrottleWindow == 0 {
		c.ThrottleWindow = 10 * time.Second
	}
}

// Layouts of the keys.
const (
	LayoutThrottled = "one throttled vault"
	LayoutPerOrg    = "one vault per org"
)

// EnableScaleResult times the enablement of every org at once, per layout
// and replica count.
type EnableScaleResult struct {
	Sandboxes      int              `json:"sandboxes"`
	Orgs           int              `json:"orgs"`
	ThrottleLimit  int              `json:"throttleLimit"`
	ThrottleWindow float64          `json:"throttleWindowSeconds"`
	Runs           []EnableScaleRun `json:"runs"`
}

// EnableScaleRun is one layout with n replicas.
type EnableScaleRun struct {
	Layout      string   `json:"layout"`
	Replicas    int      `json:"replicas"`
	WallSeconds float64  `json:"wallSeconds"` // first submission to the last job COMPLETED
	KeyOps      VaultOps `json:"keyOps"`
	// BoundSeconds and Ratio: the throttled layout's least time for its
	// key operations (see throttleBound), and the wall time over it.
	BoundSeconds float64 `json:"boundSeconds,omitempty"`
	Ratio        float64 `json:"ratio,omitempty"`
	// SpeedUp is the wall time of the same layout's first run over this
	// one's.
	SpeedUp      float64 `json:"speedUp,omitempty"`
	SetupSeconds float64 `json:"setupSeconds"` // orgs, bindings, sandboxes: not timed
}

// EnableScale enables customer keys for cfg.Orgs orgs holding cfg.Sandboxes
// sandboxes in all, every org submitted at once, on replicas run as 'cmk
// serve' processes sharing one PostgreSQL database: with every org's key in
// one throttled vault (the vault is the bound: the time is compared with
// the throttle's), and with a vault per org (nothing throttles: the
// replicas are the bound, and the speed-up of more replicas is reported).
// Each run starts from a new database.
func EnableScale(ctx context.Context, cfg EnableScaleConfig) (*EnableScaleResult, error) {
	cfg.defaults()
	dir, cleanup, err := cfg.workDir("enablescale")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	bin, newDB, release, err := cfg.Replicas.setup(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer release()
	pool := make([]*rsa.PrivateKey, fleetKeyPool)
	if err := parallel(ctx, len(pool), len(pool), func(i int) (err error) {
		pool[i], err = rsa.GenerateKey(rand.Reader, 3072)
		return err
	}); err != nil {
		return nil, err
	}
	res := &EnableScaleResult{Sandboxes: cfg.Sandboxes, Orgs: cfg.Orgs, ThrottleLimit: cfg.ThrottleLimit, ThrottleWindow: cfg.ThrottleWindow.Seconds()}
	for _, layout := range []string{LayoutThrottled, LayoutPerOrg} {
		var first float64
		for k, n := range cfg.ReplicaCounts {
			cfg.progress("enablescale: %d sandboxes in %d orgs, %s, %d replica(s)", cfg.Sandboxes, cfg.Orgs, layout, n)
			run, err := enableScaleRun(ctx, cfg, filepath.Join(dir, fmt.Sprintf("run-%d-%d", len(res.Runs), n)), bin, newDB, pool, layout, n)
			if err != nil {
				return nil, fmt.Errorf("%s, %d replica(s): %w", layout, n, err)
			}
			if k == 0 {
				first = run.WallSeconds
			} else if run.WallSeconds > 0 {
				run.SpeedUp = first / run.WallSeconds
			}
			res.Runs = append(res.Runs, *run)
		}
	}
	return res, nil
}

func enableScaleRun(ctx context.Context, cfg EnableScaleConfig, dir, bin string, newDB func() (string, error), pool []*rsa.PrivateKey, layout string, n int) (*EnableScaleRun, error) {
	dsn, err := newDB()
	if err != nil {
		return nil, err
	}
	setup := time.Now()
	svcDir := filepath.Join(dir, "svc")
	env, err := devenv.Start(ctx, devenv.Options{DataDir: svcDir, DatabaseDSN: dsn, NoMonitor: true, Workers: -1, NoEvents: true, Log: cfg.logger(),
		RateLimits: benchConsentLimits()})
	if err != nil {
		return nil, fmt.Errorf("start local cmk: %w", err)
	}
	defer env.Emu.Close()
	svcOpen := true
	defer func() {
		if svcOpen {
			env.Svc.Close()
		}
	}()
	orgs := make([]string, cfg.Orgs)
	kids := make([]string, cfg.Orgs)
	vaults := map[string]bool{}
	for i := range orgs {
		orgs[i] = fmt.Sprintf("SCALE%03dORG@CmkOrg", i)
		vault := "scale"
		if layout == LayoutPerOrg {
			vault = fmt.Sprintf("scale%03d", i)
		}
		if !vaults[vault] {
			vaults[vault] = true
			if err := env.Emu.CreateVault(azemu.Vault{Name: vault, TenantID: devenv.CustomerTenant, SKU: "standard", SoftDelete: true, PurgeProtection: true, RetentionDays: 90}); err != nil {
				return nil, err
			}
			if err := env.Emu.AssignRole(vault, env.PrincipalID, devenv.Role); err != nil {
				return nil, err
			}
		}
		name := fmt.Sprintf("key-%03d", i)
		version, err := env.Emu.CreateKey(vault, name, azemu.KeyOptions{RSA: pool[i%len(pool)]})
		if err != nil {
			return nil, err
		}
		kids[i] = env.Emu.VaultURL(vault) + "/keys/" + name + "/" + version
		if _, err := env.BindOrg(ctx, orgs[i]); err != nil {
			return nil, fmt.Errorf("bind %s: %w", orgs[i], err)
		}
	}
	// Sandboxes, system-wrapped as before enablement, evenly over the orgs.
	if err := parallel(ctx, 8, cfg.Sandboxes, func(i int) error {
		return env.Svc.Keyring.CreateSandbox(ctx, orgs[i%len(orgs)], fmt.Sprintf("sb%04d", i))
	}); err != nil {
		return nil, err
	}
	svcOpen = false
	if err := env.Svc.Close(); err != nil {
		return nil, err
	}
	st, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	w := &replicaWorld{env: env, dsn: dsn, svcDir: svcDir, dir: dir, bin: bin}
	// The monitor's first check of each org comes at once after its
	// enablement, then not again within the run.
	c, err := w.start(n, "--check-interval", "1h")
	if err != nil {
		return nil, err
	}
	defer c.Close()
	run := &EnableScaleRun{Layout: layout, Replicas: n, SetupSeconds: time.Since(setup).Seconds()}

	ops := func() VaultOps {
		var v VaultOps
		for name, s := range env.Emu.Stats().Vaults {
			if vaults[name] {
				v.Get, v.Wrap, v.Unwrap, v.Throttled = v.Get+s.Get, v.Wrap+s.Wrap, v.Unwrap+s.Unwrap, v.Throttled+s.Throttled
			}
		}
		return v
	}
	if layout == LayoutThrottled {
		env.Emu.SetThrottle("scale", cfg.ThrottleLimit, cfg.ThrottleWindow)
	}
	before := ops()
	client := &http.Client{}
	start := time.Now()
	for i, org := range orgs {
		if err := submitConfig(ctx, client, env, c.Procs[i%len(c.Procs)].URL(), org, kids[i]); err != nil {
			return nil, err
		}
	}
	for _, org := range orgs {
		for {
			cf, err := st.ConfigByName(ctx, org, "Scale")
			if err != nil {
				return nil, err
			}
			if cf.Status == store.StatusFailed {
				return nil, fmt.Errorf("enablement of %s FAILED: %+v", org, cf.Failure)
			}
			if cf.Status == store.StatusCompleted {
				break
			}
			if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
				return nil, err
			}
		}
	}
	run.WallSeconds = time.Since(start).Seconds()
	run.KeyOps = ops().sub(before)
	if layout == LayoutThrottled {
		run.BoundSeconds = throttleBound(run.KeyOps.Total(), cfg.ThrottleLimit, cfg.ThrottleWindow).Seconds()
		if run.BoundSeconds > 0 {
			run.Ratio = run.WallSeconds / run.BoundSeconds
		}
	}
	if err := stopAll(c); err != nil {
		return nil, err
	}
	return run, nil
}

// benchConsentLimits lets every org of a measurement be bound from this
// one address.
func benchConsentLimits() ratelimit.Policy {
	return ratelimit.Policy{ConsentPerClient: ratelimit.Limit{N: 1_000_000, Per: time.Second}}
}

// submitConfig asks the replica at base to move org to the key kid.
func submitConfig(ctx context.Context, client *http.Client, env *devenv.Env, base, org, kid string) error {
	token, err := env.Svc.MintDevToken("bench", org, nil, time.Hour)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(cmkapi.ConfigRequest{Name: "Scale", Type: cmkapi.ConfigTypeBYOK, IMSOrgID: org,
		ConfigData: cmkapi.ConfigData{ProviderType: cmkapi.ProviderAzureKeyVault, KeyVaultKeyIdentifier: kid}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+configPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set(cmkapi.HeaderAPIKey, env.APIKey)
	req.Header.Set(cmkapi.HeaderOrgID, org)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("enable CMK for %s: %w", org, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("enable CMK for %s: POST config = %d %s", org, resp.StatusCode, b)
	}
	return nil
}

func (r *EnableScaleResult) String() string {
	var b strings.Builder
	t := newTable(fmt.Sprintf("enablescale: %d sandboxes (%d data keys) in %d orgs, every org submitted at once, replicas as processes on one PostgreSQL",
		r.Sandboxes, 2*r.Sandboxes, r.Orgs))
	t.row("layout", "replicas", "wall", "key ops (K)", "throttle bound", "wall / bound", "speed-up")
	for _, run := range r.Runs {
		boundCell, ratio, speed := "-", "-", "-"
		if run.Layout == LayoutThrottled {
			boundCell = fmt.Sprintf("%.1f s", run.BoundSeconds)
			ratio = fmt.Sprintf("%.3f", run.Ratio)
		}
		if run.SpeedUp > 0 {
			speed = fmt.Sprintf("%.2f×", run.SpeedUp)
		}
		t.row(run.Layout, fmt.Sprint(run.Replicas), fmt.Sprintf("%.1f s", run.WallSeconds), run.KeyOps.String(), boundCell, ratio, speed)
	}
	b.WriteString(t.String())
	fmt.Fprintf(&b, "  throttle: %d key ops per %.0f s (fixed window); bound = floor((K-1)/L)·W; speed-up = wall of the first replica count / wall\n", r.ThrottleLimit, r.ThrottleWindow)
	return b.String()
}
