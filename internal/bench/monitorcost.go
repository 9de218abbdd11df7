package bench

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/monitor"
	"github.com/cmk-project/cmk/internal/store"
)

// MonitorCostConfig sizes the monitoring-cost measurement.
type MonitorCostConfig struct {
	Common
	// Orgs on customer keys, all on the demo key. Default 4.
	Orgs int
	// Interval of the short run the cost is derived from. Default 500 ms.
	Interval time.Duration
	// Duration of the cost run. Default 60 s.
	Duration time.Duration
	// The throttled run: the vault admits ThrottleLimit key operations per
	// ThrottleWindow for ThrottleDuration. Defaults 2 per second, 60 s.
	ThrottleLimit    int
	ThrottleWindow   time.Duration
	ThrottleDuration time.Duration
}

func (c *MonitorCostConfig) defaults() {
	if c.Orgs == 0 {
		c.Orgs = 4
	}
	if c.Interval == 0 {
		c.Interval = 500 * time.Millisecond
	}
	if c.Duration == 0 {
		c.Duration = 60 * time.Second
	}
	if c.ThrottleLimit == 0 {
		c.ThrottleLimit = 2
	}
	if c.ThrottleWindow == 0 {
		c.ThrottleWindow = time.Second
	}
	if c.ThrottleDuration == 0 {
		c.ThrottleDuration = 60 * time.Second
	}
}

// MonitorCostResult is the key-vault cost of monitoring and what a
// throttled vault does to key health.
type MonitorCostResult struct {
	Orgs            int      `json:"orgs"`
	IntervalSeconds float64  `json:"intervalSeconds"`
	Seconds         float64  `json:"seconds"`
	WrapEvery       int      `json:"wrapEvery"`
	Checks          int      `json:"checks"`
	Calls           VaultOps `json:"calls"`
	CallsPerCheck   float64  `json:"callsPerCheck"`
	// PerOrgHour is CallsPerCheck × 3600 s / DefaultInterval: the monitor
	// schedules each org's next check at the interval ±10 %, uniformly, so
	// it checks an org 3600 / interval times an hour on average.
	PerOrgHour             float64 `json:"callsPerOrgPerHour"`
	DefaultIntervalSeconds float64 `json:"defaultIntervalSeconds"`

	Throttled ThrottledRun `json:"throttled"`
}

// ThrottledRun is the monitor against a vault that answers most calls 429.
type ThrottledRun struct {
	Limit         int     `json:"limit"`
	WindowSeconds float64 `json:"windowSeconds"`
	Seconds       float64 `json:"seconds"`
	Checks        int     `json:"checks"`
	Answers429    int     `json:"answers429"`
	KeyOps        int     `json:"keyOps"`
	// Transitions counts, per state, the orgs the key-health gate (sampled
	// every 5 ms; a state lasts at least one check interval) saw enter it.
	Transitions map[string]int `json:"transitions"`
	// StateChanges is the number of state changes the monitor recorded in
	// its per-org memory, over all orgs: a cross-check of Transitions.
	StateChanges int `json:"stateChanges"`
	// Reads of a record of the demo org during the run, and how many were
	// not served.
	Reads        int `json:"reads"`
	RefusedReads int `json:"refusedReads"`
}

// MonitorCost runs the monitor for cfg.Orgs orgs at a short interval with
// the production share of wrap proofs, counts the key-vault calls per
// check, and projects them to an hour at the default interval. Then it
// throttles the vault hard for cfg.ThrottleDuration while the monitor keeps
// checking and data is read, and counts the state changes it causes.
func MonitorCost(ctx context.Context, cfg MonitorCostConfig) (*MonitorCostResult, error) {
	cfg.defaults()
	dir, cleanup, err := cfg.workDir("monitorcost")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	w, err := startWorld(ctx, cfg.Common, filepath.Join(dir, "svc"), devenv.Options{
		Monitor: monitor.Config{Interval: cfg.Interval, WrapEvery: monitor.DefaultWrapEvery, FlapCount: 1 << 20},
	})
	if err != nil {
		return nil, err
	}
	defer w.close()
	orgs := []string{w.env.Org}
	for i := 1; i < cfg.Orgs; i++ {
		orgs = append(orgs, fmt.Sprintf("BENCH%02dORG@CmkOrg", i))
	}
	cfg.progress("monitorcost: enabling CMK for %d orgs", len(orgs))
	for i, org := range orgs {
		kid := ""
		if i > 0 {
			name := fmt.Sprintf("bench-key-%02d", i)
			version, err := w.env.Emu.CreateKey(devenv.Vault, name, azemu.KeyOptions{})
			if err != nil {
				return nil, err
			}
			kid = w.env.Emu.VaultURL(devenv.Vault) + "/keys/" + name + "/" + version
			// The customer's other orgs, bound to its tenant by consent.
			if _, err := w.env.BindOrg(ctx, org); err != nil {
				return nil, err
			}
		}
		if err := w.startEnable(ctx, org, "Bench", kid); err != nil {
			return nil, err
		}
	}
	for _, org := range orgs {
		if err := w.waitEnabled(ctx, org, "Bench", 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
	st := w.env.Svc.Store
	// Wait for every org's first check, which proves wrap (no probe yet).
	for {
		h, err := healthOf(ctx, st, orgs)
		if err != nil {
			return nil, err
		}
		if h.minChecks >= 1 {
			break
		}
		time.Sleep(cfg.Interval / 4)
	}

	cfg.progress("monitorcost: monitoring %d orgs every %s for %s", len(orgs), cfg.Interval, cfg.Duration)
	h0, err := healthOf(ctx, st, orgs)
	if err != nil {
		return nil, err
	}
	ops0 := vaultOps(w.env.Emu)
	start := time.Now()
	if err := sleepCtx(ctx, cfg.Duration); err != nil {
		return nil, err
	}
	h1, err := healthOf(ctx, st, orgs)
	if err != nil {
		return nil, err
	}
	calls := vaultOps(w.env.Emu).sub(ops0)
	res := &MonitorCostResult{Orgs: len(orgs), IntervalSeconds: cfg.Interval.Seconds(), Seconds: time.Since(start).Seconds(),
		WrapEvery: monitor.DefaultWrapEvery, Checks: h1.checks - h0.checks, Calls: calls, DefaultIntervalSeconds: monitor.DefaultInterval.Seconds()}
	if res.Checks > 0 {
		res.CallsPerCheck = float64(calls.Total()) / float64(res.Checks)
	}
	res.PerOrgHour = res.CallsPerCheck * time.Hour.Seconds() / monitor.DefaultInterval.Seconds()

	// The throttled run.
	cfg.progress("monitorcost: vault throttled at %d key ops per %s for %s", cfg.ThrottleLimit, cfg.ThrottleWindow, cfg.ThrottleDuration)
	tr := ThrottledRun{Limit: cfg.ThrottleLimit, WindowSeconds: cfg.ThrottleWindow.Seconds(), Transitions: map[string]int{}}
	h0, err = healthOf(ctx, st, orgs)
	if err != nil {
		return nil, err
	}
	if err := w.env.Svc.Profiles.Upsert(ctx, w.env.Org, "prod", "read-me", []byte(`{"n":1}`)); err != nil {
		return nil, err
	}
	ops0 = vaultOps(w.env.Emu)
	w.env.Emu.SetThrottle(devenv.Vault, cfg.ThrottleLimit, cfg.ThrottleWindow)
	start = time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the gate, as every data request sees it
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		last := map[string]string{}
		for {
			for _, org := range orgs {
				h, ok := w.env.Svc.Gate.State(org)
				if !ok {
					continue
				}
				if prev, seen := last[org]; seen && prev != h.State {
					tr.Transitions[h.State]++
				}
				last[org] = h.State
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	var readErr error
	go func() { // reads of data, which must all be served
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			rq, err := w.request(ctx, http.MethodGet, "/data/profiles/read-me", "", "prod", nil)
			if err != nil {
				readErr = err
				return
			}
			resp, err := w.client.Do(rq)
			if err != nil {
				readErr = err
				return
			}
			resp.Body.Close()
			tr.Reads++
			if resp.StatusCode != http.StatusOK {
				tr.RefusedReads++
			}
		}
	}()
	err = sleepCtx(ctx, cfg.ThrottleDuration)
	close(stop)
	wg.Wait()
	w.env.Emu.SetThrottle(devenv.Vault, 0, 0)
	if err != nil {
		return nil, err
	}
	if readErr != nil {
		return nil, readErr
	}
	h1, err = healthOf(ctx, st, orgs)
	if err != nil {
		return nil, err
	}
	ops := vaultOps(w.env.Emu).sub(ops0)
	tr.Seconds = time.Since(start).Seconds()
	tr.Checks = h1.checks - h0.checks
	tr.Answers429 = ops.Throttled
	tr.KeyOps = ops.Total()
	tr.StateChanges = h1.changes - h0.changes
	res.Throttled = tr
	return res, nil
}

type healthSum struct {
	checks    int // over all orgs
	minChecks int // of the org checked least
	changes   int // state changes within the monitor's flap window
}

// healthOf sums the monitor's per-org memory (stored with the health row):
// checks made and recent state changes.
func healthOf(ctx context.Context, st *store.Store, orgs []string) (healthSum, error) {
	s := healthSum{minChecks: -1}
	for _, org := range orgs {
		h, err := st.Health(ctx, org)
		if err != nil {
			return s, fmt.Errorf("key health of %s: %w", org, err)
		}
		mem := h.Memo
		s.checks += mem.Checks
		if s.minChecks < 0 || mem.Checks < s.minChecks {
			s.minChecks = mem.Checks
		}
		s.changes += len(mem.Changes)
	}
	return s, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func (r *MonitorCostResult) String() string {
	t := newTable(fmt.Sprintf("monitorcost: %d orgs checked every %.2f s for %.0f s (wrap proved every %d checks)",
		r.Orgs, r.IntervalSeconds, r.Seconds, r.WrapEvery))
	t.row("checks", fmt.Sprint(r.Checks))
	t.row("vault calls", r.Calls.String())
	t.row("calls per check", fmt.Sprintf("%.3f", r.CallsPerCheck))
	t.row("per org per hour at the default interval", fmt.Sprintf("%.0f", r.PerOrgHour),
		fmt.Sprintf("= calls/check × 3600 s / %.0f s", r.DefaultIntervalSeconds))
	s := t.String()
	tr := r.Throttled
	verdict := "met (0)"
	if tr.Transitions[keyhealth.Revoked] > 0 || tr.RefusedReads > 0 {
		verdict = "MISSED (0)"
	}
	t = newTable(fmt.Sprintf("monitorcost: vault throttled at %d key ops per %.0f s for %.0f s", tr.Limit, tr.WindowSeconds, tr.Seconds))
	t.row("checks", fmt.Sprint(tr.Checks))
	t.row("429 answers / key ops served", fmt.Sprintf("%d / %d", tr.Answers429, tr.KeyOps))
	t.row("transitions to REVOKED", fmt.Sprint(tr.Transitions[keyhealth.Revoked]), verdict)
	t.row("transitions to COASTING / DEGRADED", fmt.Sprintf("%d / %d", tr.Transitions[keyhealth.Coasting], tr.Transitions[keyhealth.Degraded]))
	t.row("state changes the monitor recorded", fmt.Sprint(tr.StateChanges))
	t.row("data reads not served", fmt.Sprintf("%d of %d", tr.RefusedReads, tr.Reads))
	return s + t.String()
}
