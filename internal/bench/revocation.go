package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/monitor"
	"github.com/cmk-project/cmk/internal/profile"
)

// RevocationConfig sizes the revocation measurement.
type RevocationConfig struct {
	Common
	// Trials of disable then re-enable. Default 50.
	Trials int
	// Interval between key checks. Default 1 s. The target is a p99 of at
	// most twice the interval.
	Interval time.Duration
	// Poll is the pause between two reads of one probe. Default 5 ms.
	Poll time.Duration
	// Seed picks the moments of disabling; 0 = random.
	Seed uint64
	// AWS measures an org whose key is in the local AWS KMS (disabled
	// and enabled there) instead of the Key Vault demo org.
	AWS bool
}

func (c *RevocationConfig) defaults() {
	if c.Trials == 0 {
		c.Trials = 50
	}
	if c.Interval == 0 {
		c.Interval = time.Second
	}
	if c.Poll == 0 {
		c.Poll = 5 * time.Millisecond
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64()
	}
}

// RevocationProbe is what one kind of read saw over all trials. Latencies
// are from the emulator change to the first answer of the new kind, as
// Latency in microseconds.
type RevocationProbe struct {
	Name     string  `json:"name"`
	Refused  Latency `json:"refused"`  // key disabled → first 403 CMK_KEY_REVOKED
	Restored Latency `json:"restored"` // key enabled → first 200 with the right bytes
	// Misses are trials where the change was not seen within 10 intervals.
	RefuseMisses  int `json:"refuseMisses"`
	RestoreMisses int `json:"restoreMisses"`
	// Other counts answers that were neither the old nor the new outcome
	// (for example 503 while the key was being re-checked); OtherSamples
	// holds the first few.
	Other        int      `json:"otherAnswers"`
	OtherSamples []string `json:"otherSamples,omitempty"`
}

// RevocationResult is the time from a key change in the vault to the
// first read that reflects it.
type RevocationResult struct {
	Provider        string            `json:"provider"` // AZURE_KEYVAULT or AWS_KMS
	Trials          int               `json:"trials"`
	IntervalSeconds float64           `json:"intervalSeconds"`
	TargetSeconds   float64           `json:"targetP99Seconds"`
	PollMillis      float64           `json:"pollMillis"`
	Seed            uint64            `json:"seed"`
	Probes          []RevocationProbe `json:"probes"`
	Seconds         float64           `json:"seconds"`
}

// Met reports whether every probe's p99, both ways, is within the target
// and nothing was missed.
func (r *RevocationResult) Met() bool {
	for _, p := range r.Probes {
		if p.RefuseMisses+p.RestoreMisses > 0 || p.Refused.P99us > r.TargetSeconds*1e6 || p.Restored.P99us > r.TargetSeconds*1e6 {
			return false
		}
	}
	return true
}

// Revocation runs the key-health monitor at cfg.Interval (wrap proved at
// every check) and, trial after trial, disables the demo key in the
// emulator at a random moment within the check cycle, times the first
// refused read of each probe over HTTP, re-enables the key and times the
// first successful read. The probes read a lake file, a profile record
// not in the read cache (a new one every read), and a profile record in
// the read cache.
func Revocation(ctx context.Context, cfg RevocationConfig) (*RevocationResult, error) {
	cfg.defaults()
	w, _, done, err := enabledWorld(ctx, cfg.Common, "revocation", devenv.Options{
		// Flapping changes only the alerts; a high count keeps 2×Trials
		// state changes from raising a notification on every one.
		Monitor: monitor.Config{Interval: cfg.Interval, WrapEvery: 1, FlapCount: 1 << 20},
		AWS:     cfg.AWS,
	})
	if err != nil {
		return nil, err
	}
	defer done()
	svc, org := w.env.Svc, w.env.Org
	const sb = "prod"
	no, yes := false, true
	provider := cmkapi.ProviderAzureKeyVault
	setEnabled := func(on bool) error {
		enabled := &no
		if on {
			enabled = &yes
		}
		return w.env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: enabled})
	}
	if cfg.AWS {
		// The same measurement for the org whose key is in AWS KMS.
		a := w.env.AWS
		org, provider = a.Org, cmkapi.ProviderAWSKMS
		if err := w.startEnable(ctx, org, "Bench", a.KeyARN); err != nil {
			return nil, err
		}
		if err := w.waitEnabled(ctx, org, "Bench", 10*time.Millisecond); err != nil {
			return nil, err
		}
		setEnabled = func(on bool) error { return a.Emu.SetKeyEnabled(a.KeyARN, on) }
	}

	// Data to read: a file, a pool of records written around the read
	// cache, and one record read through it.
	if _, err := svc.Lake.Put(ctx, org, sb, "rev", "f", strings.NewReader(strings.Repeat("lake ", 200))); err != nil {
		return nil, err
	}
	pool := cfg.Trials * (int(10*cfg.Interval/cfg.Poll) + 4)
	pool = min(pool, 50_000)
	cfg.progress("revocation: writing %d records", pool)
	direct := &profile.Store{Backend: svc.Profiles.Backend, Keys: svc.Keys}
	for i := range pool {
		if err := direct.Upsert(ctx, org, sb, fmt.Sprintf("u%d", i), []byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
			return nil, err
		}
	}
	if err := svc.Profiles.Upsert(ctx, org, sb, "cached", []byte(`{"cached":true}`)); err != nil {
		return nil, err
	}
	var nextUncached atomic.Int64
	probes := []struct {
		name string
		path func() string
	}{
		{"lake file", func() string { return "/data/lake/datasets/rev/files/f" }},
		{"profile store (uncached)", func() string { return fmt.Sprintf("/data/profiles/u%d", nextUncached.Add(1)%int64(pool)) }},
		{"profile read cache", func() string { return "/data/profiles/cached" }},
	}
	// read answers "ok", "refused" or what else it got.
	read := func(path string) (string, error) {
		rq, err := w.request(ctx, http.MethodGet, path, org, sb, nil)
		if err != nil {
			return "", err
		}
		resp, err := w.client.Do(rq)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", err
		}
		switch resp.StatusCode {
		case http.StatusOK:
			return "ok", nil
		case http.StatusForbidden:
			var e cmkapi.Error
			json.Unmarshal(body, &e)
			if e.ErrorCode == cmkapi.CodeCMKKeyRevoked {
				return "refused", nil
			}
		}
		return fmt.Sprintf("%d %.160s", resp.StatusCode, strings.Join(strings.Fields(string(body)), " ")), nil
	}

	res := &RevocationResult{Provider: provider, Trials: cfg.Trials, IntervalSeconds: cfg.Interval.Seconds(), TargetSeconds: 2 * cfg.Interval.Seconds(),
		PollMillis: float64(cfg.Poll) / float64(time.Millisecond), Seed: cfg.Seed}
	refused := make([][]time.Duration, len(probes))
	restored := make([][]time.Duration, len(probes))
	misses := make([][2]int, len(probes))
	other := make([]int64, len(probes))
	var otherMu sync.Mutex
	otherSamples := make([][]string, len(probes))

	// await polls every probe until it answers want, and returns how long
	// after since each first did (or -1 when it did not in time).
	await := func(since time.Time, want string) ([]time.Duration, error) {
		out := make([]time.Duration, len(probes))
		errs := make([]error, len(probes))
		deadline := since.Add(10 * cfg.Interval)
		var wg sync.WaitGroup
		for i, p := range probes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					got, err := read(p.path())
					if err != nil {
						errs[i] = err
						return
					}
					now := time.Now()
					if got == want {
						out[i] = now.Sub(since)
						return
					}
					if got != "ok" && got != "refused" {
						atomic.AddInt64(&other[i], 1)
						otherMu.Lock()
						if len(otherSamples[i]) < 3 {
							otherSamples[i] = append(otherSamples[i], fmt.Sprintf("waiting for %s: %s", want, got))
						}
						otherMu.Unlock()
					}
					if now.After(deadline) {
						out[i] = -1
						return
					}
					time.Sleep(cfg.Poll)
				}
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return nil, err
			}
		}
		return out, nil
	}

	rng := rand.New(rand.NewPCG(cfg.Seed, 1))
	start := time.Now()
	for trial := range cfg.Trials {
		// Every probe is served (and the cached record is in the cache).
		if _, err := await(time.Now(), "ok"); err != nil {
			return nil, err
		}
		time.Sleep(time.Duration(rng.Int64N(int64(cfg.Interval))))
		t0 := time.Now()
		if err := setEnabled(false); err != nil {
			return nil, err
		}
		got, err := await(t0, "refused")
		if err != nil {
			return nil, err
		}
		for i, d := range got {
			if d < 0 {
				misses[i][0]++
			} else {
				refused[i] = append(refused[i], d)
			}
		}
		// The refusal came right after a check; re-enable at a random
		// moment of the cycle too.
		time.Sleep(time.Duration(rng.Int64N(int64(cfg.Interval))))
		t1 := time.Now()
		if err := setEnabled(true); err != nil {
			return nil, err
		}
		if got, err = await(t1, "ok"); err != nil {
			return nil, err
		}
		for i, d := range got {
			if d < 0 {
				misses[i][1]++
			} else {
				restored[i] = append(restored[i], d)
			}
		}
		if (trial+1)%10 == 0 {
			cfg.progress("revocation: %d of %d trials", trial+1, cfg.Trials)
		}
	}
	res.Seconds = time.Since(start).Seconds()
	for i, p := range probes {
		res.Probes = append(res.Probes, RevocationProbe{Name: p.name, Refused: latencyOf(refused[i]), Restored: latencyOf(restored[i]),
			RefuseMisses: misses[i][0], RestoreMisses: misses[i][1], Other: int(other[i]), OtherSamples: otherSamples[i]})
	}
	return res, nil
}

func (r *RevocationResult) String() string {
	verdict := "met"
	if !r.Met() {
		verdict = "MISSED"
	}
	where := "Key Vault"
	if r.Provider == cmkapi.ProviderAWSKMS {
		where = "AWS KMS"
	}
	t := newTable(fmt.Sprintf("revocation (%s): %d trials, key checked every %.1f s, reads every %.0f ms over HTTP; target p99 ≤ %.1f s: %s",
		where, r.Trials, r.IntervalSeconds, r.PollMillis, r.TargetSeconds, verdict))
	t.row("probe", "disable → refused p50 / p99 / max", "enable → served p50 / p99 / max", "missed", "other answers")
	ms := func(l Latency) string {
		return fmt.Sprintf("%.0f / %.0f / %.0f ms", l.P50us/1e3, l.P99us/1e3, l.Maxus/1e3)
	}
	for _, p := range r.Probes {
		t.row(p.Name, ms(p.Refused), ms(p.Restored), fmt.Sprintf("%d / %d", p.RefuseMisses, p.RestoreMisses), fmt.Sprint(p.Other))
	}
	s := t.String()
	for _, p := range r.Probes {
		for _, o := range p.OtherSamples {
			s += fmt.Sprintf("  other answer, %s: %s\n", p.Name, o)
		}
	}
	return s
}
