package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/monitor"
)

// faultPhase is one way the key path fails while traffic runs.
type faultPhase struct {
	name       string
	set, clear func(emu *azemu.Emulator) error
	// recheck asks for a check once the fault ends, rather than waiting
	// out the monitor's back-off from a throttled vault (up to 16 s).
	recheck bool
}

// keyPathFaults are the transient faults of the key path: none of them says
// anything about the customer's key, so none may revoke.
func keyPathFaults() []faultPhase {
	v := devenv.Vault
	fault := func(status int, delay time.Duration) func(*azemu.Emulator) error {
		return func(e *azemu.Emulator) error { e.SetVaultFault(v, status, delay); return nil }
	}
	return []faultPhase{
		{name: "latency 300ms", set: fault(0, 300*time.Millisecond), clear: fault(0, 0)},
		// Longer than the vault timeout (1 s here): every key call times out.
		{name: "timeouts", set: fault(0, 3*time.Second), clear: fault(0, 0)},
		{name: "503", set: fault(503, 0), clear: fault(0, 0)},
		{name: "500", set: fault(500, 0), clear: fault(0, 0)},
		// As Key Vault throttles: 429 without Retry-After, 2 calls a second.
		{name: "429 bursts", set: func(e *azemu.Emulator) error {
			return e.SetVaultThrottle(v, azemu.Throttle{Limit: 2, Window: time.Second})
		},
			clear: func(e *azemu.Emulator) error { return e.SetVaultThrottle(v, azemu.Throttle{}) }, recheck: true},
		{name: "connection resets", set: func(e *azemu.Emulator) error { e.SetVaultReset(v, true); return nil },
			clear: func(e *azemu.Emulator) error { e.SetVaultReset(v, false); return nil }},
	}
}

// phaseStats is what the data path saw during one phase.
type phaseStats struct {
	mu        sync.Mutex
	latencies []time.Duration
	errors    int
	samples   []string
	states    []string // the gate's states, in the order seen
}

func (p *phaseStats) saw(state string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.states) == 0 || p.states[len(p.states)-1] != state {
		p.states = append(p.states, state)
	}
}

func (p *phaseStats) add(d time.Duration, failure string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latencies = append(p.latencies, d)
	if failure != "" {
		p.errors++
		if len(p.samples) < 5 {
			p.samples = append(p.samples, failure)
		}
	}
}

func (p *phaseStats) percentiles() (n int, p50, p99, maxd time.Duration) {
	p.mu.Lock()
	s := slices.Clone(p.latencies)
	p.mu.Unlock()
	if len(s) == 0 {
		return 0, 0, 0, 0
	}
	slices.Sort(s)
	at := func(q int) time.Duration { return s[max((len(s)*q+99)/100-1, 0)] }
	return len(s), at(50), at(99), s[len(s)-1]
}

// TestKeyFaultsUnderLoad runs lake and profile traffic from a bounded set
// of clients while the org's vault is slow, times out, answers 5xx,
// throttles and resets connections, one fault after the other, and checks
// that the data path kept serving (its data keys are cached), that the org
// never went REVOKED, that its health came back after every fault, and
// that nothing the run started is left running.
//
// CMK_FAULT_PHASE lengthens each fault (default 3s).
func TestKeyFaultsUnderLoad(t *testing.T) {
	// Registered first, so it runs after the service and emulator closed;
	// the goroutines running now (other tests' and the runtime's) are not
	// this test's.
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	faultFor := 3 * time.Second
	if v := os.Getenv("CMK_FAULT_PHASE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("CMK_FAULT_PHASE=%q: want a duration such as 10s", v)
		}
		faultFor = d
	}
	const clients = 8
	env, err := devenv.Start(context.Background(), devenv.Options{
		DataDir: t.TempDir(), Poll: 50 * time.Millisecond, RateLimits: generousLimits,
		// A check every 250 ms; the grace outlasts every fault, as the
		// default grace outlasts a vault outage of minutes.
		Monitor:       monitor.Config{Interval: 250 * time.Millisecond, Grace: faultFor + 10*time.Second, WrapEvery: 1, FlapCount: 1000},
		TokenLifetime: 2 * time.Second, VaultTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	c := adminClient(t, env, env.Org)
	data := seed(t, c)
	enable(t, env, c)
	org := env.Org
	healthy := func(within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			h, err := env.Svc.Store.Health(context.Background(), org)
			if err == nil && h.State == keyhealth.Healthy {
				return time.Since(start)
			}
			if time.Since(start) > within {
				t.Fatalf("health %v (%v), want HEALTHY within %s", h, err, within)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	healthy(10 * time.Second)
	if !data.access(t, c) { // and the data keys are in the cache
		t.Fatal("seeded data not served before the faults")
	}

	// The watcher reads the gate (what the data path asks) every 5 ms.
	ctx, stop := context.WithCancel(context.Background())
	var watch sync.WaitGroup
	var statesMu sync.Mutex
	states := map[string]int{}
	var closedGate atomic.Int64
	var current atomic.Pointer[phaseStats]
	current.Store(&phaseStats{})
	watch.Add(1)
	go func() {
		defer watch.Done()
		last := ""
		for ctx.Err() == nil {
			if h, ok := env.Svc.Gate.State(org); ok {
				current.Load().saw(h.State)
				if h.State != last {
					last = h.State
					statesMu.Lock()
					states[h.State]++
					statesMu.Unlock()
				}
			}
			if env.Svc.Gate.Allow(org) != nil {
				closedGate.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	// The clients: each reads a seeded file and record (checking the
	// bytes), writes a record and now and then a file, in a loop.
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	httpc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range data.files {
			if !yield(n) {
				return
			}
		}
	})
	send := func(method, path string, body []byte) (int, []byte, error) {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Authorization", "Bearer "+c.token)
		req.Header.Set("x-api-key", c.key)
		req.Header.Set("x-gw-ims-org-id", org)
		req.Header.Set("x-sandbox-name", "prod")
		resp, err := httpc.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		return resp.StatusCode, out, err
	}
	var load sync.WaitGroup
	for w := range clients {
		load.Add(1)
		go func() {
			defer load.Done()
			for i := 0; ctx.Err() == nil; i++ {
				var method, path string
				var body, want []byte
				wantCode := http.StatusOK
				switch i % 4 {
				case 0:
					name := names[(w+i)%len(names)]
					method, path, want = "GET", "/data/lake/datasets/ds/files/"+name, data.files[name]
				case 1:
					id := fmt.Sprintf("p%d", (w+i)%len(data.profiles))
					method, path, want = "GET", "/data/profiles/"+id, []byte(data.profiles[id])
				case 2:
					method, path, body = "PUT", fmt.Sprintf("/data/profiles/load-%d-%d", w, i%50), []byte(fmt.Sprintf(`{"w":%d,"i":%d}`, w, i))
				default:
					method, path, body = "PUT", fmt.Sprintf("/data/lake/datasets/load/files/w%d-%d", w, i%20), pattern(4096, byte(i))
					wantCode = http.StatusCreated
				}
				stats := current.Load()
				start := time.Now()
				code, got, err := send(method, path, body)
				took := time.Since(start)
				if ctx.Err() != nil {
					return
				}
				failure := ""
				switch {
				case err != nil:
					failure = fmt.Sprintf("%s %s: %v", method, path, err)
				case code != wantCode:
					failure = fmt.Sprintf("%s %s = %d %.160s", method, path, code, got)
				case want != nil && !bytes.Equal(got, want):
					failure = fmt.Sprintf("%s %s: wrong bytes", method, path)
				}
				stats.add(took, failure)
			}
		}()
	}
	defer func() { stop(); load.Wait(); watch.Wait() }()

	report := func(name string, p *phaseStats) {
		n, p50, p99, maxd := p.percentiles()
		t.Logf("%-25s %5d requests, %d errors; data path p50 %s, p99 %s, max %s; gate %s", name, n, p.errors,
			p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond), maxd.Round(10*time.Microsecond), strings.Join(p.states, " → "))
		if p.errors > 0 {
			t.Errorf("%s: %d data-path errors, want none (the data keys are cached): %q", name, p.errors, p.samples)
		}
		if n == 0 {
			t.Errorf("%s: no request finished", name)
		}
	}
	steady := &phaseStats{}
	current.Store(steady)
	time.Sleep(time.Second)
	report("steady", steady)
	for _, f := range keyPathFaults() {
		during := &phaseStats{}
		current.Store(during)
		if err := f.set(env.Emu); err != nil {
			t.Fatal(err)
		}
		time.Sleep(faultFor)
		if err := f.clear(env.Emu); err != nil {
			t.Fatal(err)
		}
		after := &phaseStats{}
		current.Store(after)
		var back time.Duration
		if f.recheck {
			start := time.Now()
			recheck(c)
			back = time.Since(start) + healthy(15*time.Second)
		} else {
			back = healthy(15 * time.Second)
		}
		time.Sleep(500 * time.Millisecond) // some traffic after the recovery
		report(f.name, during)
		report(f.name+", recovery", after)
		t.Logf("%-25s health HEALTHY %s after the fault ended", f.name, back.Round(time.Millisecond))
	}
	stop()
	load.Wait()
	watch.Wait()

	statesMu.Lock()
	defer statesMu.Unlock()
	t.Logf("states the gate passed through: %v", states)
	if states[keyhealth.Revoked] > 0 || closedGate.Load() > 0 {
		t.Errorf("the org went REVOKED %d times and its gate refused %d times under transient faults; want never", states[keyhealth.Revoked], closedGate.Load())
	}
	if !data.access(t, c) {
		t.Error("seeded data not served after the faults")
	}
	if strings.Contains(fmt.Sprint(openAlerts(c)), "KEY_ACCESS") {
		t.Errorf("a key-access alert is open after the faults: %+v", openAlerts(c))
	}
}
