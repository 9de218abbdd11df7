package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cmk-project/cmk/internal/cluster"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/ratelimit"
	"github.com/cmk-project/cmk/internal/store"
	"github.com/cmk-project/cmk/internal/testsvc"
)

// FailoverConfig sizes the failover measurement.
type FailoverConfig struct {
	Common
	// Trials, each with an org of its own. Default 10.
	Trials int
	// Lease is the replicas' --lease. Default 5 s.
	Lease time.Duration
	// Replicas is how many 'cmk serve' processes run. Default 3.
	Replicas int
	// Sandboxes per org (two data keys each). Default 100.
	Sandboxes int
	// VaultDelay is added to every vault call so that a job is mid-way when
	// its holder is killed. Default 50 ms.
	VaultDelay time.Duration
	// Binary is the cmk executable to run; empty builds cmd/cmk (which
	// needs the go tool and the module's source).
	Binary string
}

func (c *FailoverConfig) defaults() {
	if c.Trials == 0 {
		c.Trials = 10
	}
	if c.Lease == 0 {
		c.Lease = 5 * time.Second
	}
	if c.Replicas == 0 {
		c.Replicas = 3
	}
	if c.Sandboxes == 0 {
		c.Sandboxes = 100
	}
	if c.VaultDelay == 0 {
		c.VaultDelay = 50 * time.Millisecond
	}
}

// FailoverResult is, for each trial, the time from the SIGKILL of the
// replica holding an enablement job's lease to another replica claiming
// the job and to that replica re-wrapping its next data key ("moving").
type FailoverResult struct {
	Trials       int     `json:"trials"`
	Replicas     int     `json:"replicas"`
	LeaseSeconds float64 `json:"leaseSeconds"`
	Sandboxes    int     `json:"sandboxes"`
	VaultDelayMS float64 `json:"vaultDelayMs"`
	Claimed      Latency `json:"claimed"`
	Moved        Latency `json:"moved"`
	// WithinTwoLeases counts trials whose job moved within two lease
	// periods of the kill; Misses those that did not move within two
	// lease periods and 30 s.
	WithinTwoLeases int     `json:"withinTwoLeases"`
	Misses          int     `json:"misses"`
	Seconds         float64 `json:"seconds"`
	Load            string  `json:"load"` // /proc/loadavg at the start and the end
}

// Failover starts cfg.Replicas 'cmk serve' processes on one PostgreSQL
// state database (testsvc), against the Azure emulator made slow by
// cfg.VaultDelay, and runs the trials: an org's key is enabled, and once
// its job is re-wrapping, the replica holding its lease is killed with
// SIGKILL; the time runs until another replica holds the lease, and until
// the org has more customer-wrapped data keys than at the kill. The
// killed replica is restarted after the job completes.
func Failover(ctx context.Context, cfg FailoverConfig) (*FailoverResult, error) {
	cfg.defaults()
	switch {
	case cfg.Replicas < 2:
		return nil, fmt.Errorf("%d replicas; at least 2 are needed, one to kill and one to take over", cfg.Replicas)
	case cfg.Trials < 1 || cfg.Sandboxes < 4:
		return nil, fmt.Errorf("%d trials of %d sandboxes; at least 1 trial of 4 sandboxes is needed", cfg.Trials, cfg.Sandboxes)
	case cfg.Lease < time.Second || cfg.Lease > 10*time.Minute:
		return nil, fmt.Errorf("lease %s; 'cmk serve' takes a --lease from 1s to 10m", cfg.Lease)
	}
	res := &FailoverResult{Trials: cfg.Trials, Replicas: cfg.Replicas, LeaseSeconds: cfg.Lease.Seconds(), Sandboxes: cfg.Sandboxes,
		VaultDelayMS: float64(cfg.VaultDelay) / float64(time.Millisecond), Load: loadAvg()}
	dir, cleanup, err := cfg.workDir("failover")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	scope := &testsvc.Scope{}
	defer scope.Close()
	dsn, err := testsvc.PostgresIn(scope)
	if err != nil {
		return nil, fmt.Errorf("bench failover: %w", err)
	}

	// The world: an org per trial, bound to the customer tenant with a key
	// of its own; then the in-process service is closed and the replicas
	// own the state.
	cfg.progress("failover: setting up %d orgs of %d sandboxes", cfg.Trials, cfg.Sandboxes)
	var sandboxes []string
	for i := range cfg.Sandboxes {
		sandboxes = append(sandboxes, fmt.Sprintf("sb%04d", i))
	}
	worldDir := filepath.Join(dir, "world")
	lots := ratelimit.Limit{N: 1_000_000, Per: time.Second}
	env, err := devenv.Start(ctx, devenv.Options{DataDir: worldDir, Sandboxes: []string{"prod"}, Workers: -1, NoMonitor: true, NoEvents: true,
		DatabaseDSN: dsn, Log: cfg.logger(), RateLimits: ratelimit.Policy{ConsentPerClient: lots, ConsentPerOrg: lots, ConsentConcurrency: 8}})
	if err != nil {
		return nil, fmt.Errorf("start local cmk: %w", err)
	}
	defer env.Emu.Close()
	orgs := make([]*devenv.Org, cfg.Trials)
	errs := make([]error, cfg.Trials)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i := range orgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			orgs[i], errs[i] = env.AddOrg(ctx, fmt.Sprintf("FAILOVER%03d@CmkOrg", i), fmt.Sprintf("failover-%03d", i), sandboxes)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		env.Svc.Close()
		return nil, err
	}
	if err := env.Svc.Close(); err != nil {
		return nil, err
	}
	st, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer st.Close()

	bin := cfg.Binary
	if bin == "" {
		cfg.progress("failover: building cmd/cmk")
		if bin, err = cluster.Build(ctx, dir); err != nil {
			return nil, err
		}
	}
	emuArgs, emuEnv, err := env.ServeFlags(dir)
	if err != nil {
		return nil, err
	}
	// Each replica has a directory of its own (its local lake and profile
	// store are locked to one process) with the world's token key; they
	// share the system key file and the state database.
	token, err := os.ReadFile(filepath.Join(worldDir, "token-signing.pem"))
	if err != nil {
		return nil, err
	}
	dirs := make([]string, cfg.Replicas)
	for i := range dirs {
		dirs[i] = filepath.Join(dir, fmt.Sprintf("replica-%d", i))
		if err := os.MkdirAll(dirs[i], 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dirs[i], "token-signing.pem"), token, 0o600); err != nil {
			return nil, err
		}
	}
	cl, err := cluster.StartN(cfg.Replicas, bin, append(emuEnv, "CMK_DATABASE_DSN="+dsn), func(i int) []string {
		return append([]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dirs[i], "--dev-token-issuer",
			"--system-key", filepath.Join(worldDir, "system.key"), "--workers", "1", "--vault-concurrency", "2",
			"--check-interval", "1h", "--lease", cfg.Lease.String()}, emuArgs...)
	})
	if err != nil {
		return nil, err
	}
	defer cl.Close()

	start := time.Now()
	var claimed, moved []time.Duration
	poll := 5 * time.Millisecond
	for trial, org := range orgs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		env.Emu.SetVaultFault(devenv.Vault, 0, cfg.VaultDelay)
		if err := enableThrough(ctx, cl.Procs[trial%len(cl.Procs)], env.APIKey, org); err != nil {
			return nil, err
		}
		// Wait for the job to be a few data keys into its re-wrap.
		var holder string
		if err := until(ctx, 60*time.Second, poll, func() (bool, error) {
			cfg, err := st.ConfigByName(ctx, org.ID, "Failover")
			if err != nil {
				return false, err
			}
			if cfg.Status == store.StatusCompleted || cfg.Status == store.StatusFailed {
				return false, fmt.Errorf("the job of %s is %s before it could be interrupted; raise the sandboxes or the vault delay", org.ID, cfg.Status)
			}
			_, done, err := st.CountDataKeys(ctx, org.ID)
			holder = cfg.LeaseOwner
			return err == nil && cfg.Status == store.StatusUpdating && done >= 4 && holder != "", err
		}); err != nil {
			return nil, fmt.Errorf("trial %d: %w", trial+1, err)
		}
		victim := cl.ByOwner(holder)
		if victim == nil {
			return nil, fmt.Errorf("trial %d: no replica runs lease holder %q", trial+1, holder)
		}
		if err := victim.Kill(); err != nil {
			return nil, err
		}
		killed := time.Now()
		_, atKill, err := st.CountDataKeys(ctx, org.ID)
		if err != nil {
			return nil, err
		}
		var dc, dm time.Duration
		err = until(ctx, 2*cfg.Lease+30*time.Second, poll, func() (bool, error) {
			cfg, err := st.ConfigByName(ctx, org.ID, "Failover")
			if err != nil {
				return false, err
			}
			if dc == 0 && cfg.LeaseOwner != "" && cl.ByOwner(cfg.LeaseOwner) != nil {
				dc = time.Since(killed)
			}
			_, done, err := st.CountDataKeys(ctx, org.ID)
			if dc != 0 && done > atKill {
				dm = time.Since(killed)
				return true, nil
			}
			return false, err
		})
		switch {
		case errors.Is(err, errTimedOut):
			res.Misses++
		case err != nil:
			return nil, err
		default:
			claimed, moved = append(claimed, dc), append(moved, dm)
			if dm <= 2*cfg.Lease {
				res.WithinTwoLeases++
			}
		}
		// The rest of the job at full speed, then the killed replica back.
		env.Emu.SetVaultFault(devenv.Vault, 0, 0)
		if err := until(ctx, 120*time.Second, 20*time.Millisecond, func() (bool, error) {
			cfg, err := st.ConfigByName(ctx, org.ID, "Failover")
			return err == nil && cfg.Status == store.StatusCompleted, err
		}); err != nil {
			return nil, fmt.Errorf("trial %d: the job did not complete after the failover: %w", trial+1, err)
		}
		if err := victim.Restart(); err != nil {
			return nil, err
		}
		cfg.progress("failover: %d of %d trials (claimed after %s, moved after %s)", trial+1, cfg.Trials, dc.Round(time.Millisecond), dm.Round(time.Millisecond))
	}
	res.Seconds = time.Since(start).Seconds()
	res.Claimed, res.Moved = latencyOf(claimed), latencyOf(moved)
	res.Load += " → " + loadAvg()
	return res, nil
}

var errTimedOut = errors.New("timed out")

// until polls cond every pause until it is true, fails, or within passes
// (errTimedOut).
func until(ctx context.Context, within, pause time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(within)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return errTimedOut
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
}

// enableThrough enables org's key through replica p.
func enableThrough(ctx context.Context, p *cluster.Proc, apiKey string, org *devenv.Org) error {
	c := &cmkapi.Client{BaseURL: p.URL(), Token: org.Token, OrgID: org.ID, APIKey: apiKey}
	if _, _, err := c.SubmitConfig(ctx, "Failover", org.KeyIdentifier); err != nil {
		return fmt.Errorf("submit the configuration of %s: %w", org.ID, err)
	}
	return nil
}

// loadAvg is the first three fields of /proc/loadavg, or "?".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func (r *FailoverResult) String() string {
	t := newTable(fmt.Sprintf("failover: %d trials, %d replicas, lease %.0f s, %d data keys per job, vault +%.0f ms per call; load %s",
		r.Trials, r.Replicas, r.LeaseSeconds, 2*r.Sandboxes, r.VaultDelayMS, r.Load))
	t.row("SIGKILL of the job's holder →", "p50", "max", "p50 (leases)", "max (leases)")
	lease := r.LeaseSeconds * 1e6
	for _, l := range []struct {
		name string
		v    Latency
	}{{"another replica holds the lease", r.Claimed}, {"the job moves (next data key re-wrapped)", r.Moved}} {
		t.row(l.name, fmt.Sprintf("%.2f s", l.v.P50us/1e6), fmt.Sprintf("%.2f s", l.v.Maxus/1e6), fmt.Sprintf("%.2f", l.v.P50us/lease), fmt.Sprintf("%.2f", l.v.Maxus/lease))
	}
	t.row(fmt.Sprintf("moved within two lease periods: %d of %d; missed: %d", r.WithinTwoLeases, r.Trials, r.Misses), "", "", "", "")
	return t.String()
}
