package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cmk-project/cmk/internal/devenv"
)

// VaultCallsConfig sizes the steady-state key-vault call count.
type VaultCallsConfig struct {
	Common
	// Ops is the number of data operations. Default 100,000.
	Ops int
	// Workers send operations concurrently. Default 4.
	Workers int
	// FileSize is the size of the lake files written and read. Default 4 KiB.
	FileSize int
}

func (c *VaultCallsConfig) defaults() {
	if c.Ops == 0 {
		c.Ops = 100_000
	}
	if c.Workers == 0 {
		c.Workers = 4
	}
	if c.FileSize == 0 {
		c.FileSize = 4 << 10
	}
}

// The mix of data operations, in percent.
var vaultCallsMix = []struct {
	name    string
	percent int
}{
	{"profile get", 40},
	{"profile put", 30},
	{"lake get", 20},
	{"lake put", 10},
}

// VaultCallsResult counts key-vault calls during data operations in
// steady state.
type VaultCallsResult struct {
	Ops          int            `json:"ops"`
	Mix          map[string]int `json:"mix"`
	Seconds      float64        `json:"seconds"`
	OpsPerSecond float64        `json:"opsPerSecond"`
	Calls        VaultOps       `json:"calls"`
	// Per100k is get + wrap + unwrap per 100,000 operations; the target is 0.
	Per100k float64 `json:"callsPer100kOps"`
	// WarmupCalls are the calls of the warm-up (first use of each data key
	// after enablement), not counted above.
	WarmupCalls VaultOps `json:"warmupCalls"`
	// Failures counts operations that got an unexpected answer, by
	// operation, status and error code. They are counted, not fatal, so
	// the call count still covers every operation.
	Failures map[string]int `json:"failures,omitempty"`
}

// VaultCalls enables CMK, warms every data key up with one operation of
// each kind in both sandboxes, then sends cfg.Ops mixed lake and profile
// reads and writes over HTTP and counts the key-vault calls the emulator
// served meanwhile. The monitor is off, so only the data path can call.
func VaultCalls(ctx context.Context, cfg VaultCallsConfig) (*VaultCallsResult, error) {
	cfg.defaults()
	w, _, done, err := enabledWorld(ctx, cfg.Common, "vaultcalls", devenv.Options{NoMonitor: true})
	if err != nil {
		return nil, err
	}
	defer done()
	sandboxes := []string{"prod", "dev"}
	file := bytes.Repeat([]byte("L"), cfg.FileSize)
	const ids, files = 500, 50

	op := func(kind string, sb string, n int) error {
		var method, path string
		var body io.Reader
		want := http.StatusOK
		switch kind {
		case "profile get":
			method, path = http.MethodGet, fmt.Sprintf("/data/profiles/p%d", n%ids)
		case "profile put":
			method, path = http.MethodPut, fmt.Sprintf("/data/profiles/p%d", n%ids)
			body = bytes.NewReader(jsonRecord(fmt.Sprintf("p%d", n%ids), 1<<10))
		case "lake get":
			method, path = http.MethodGet, fmt.Sprintf("/data/lake/datasets/mix/files/f%d", n%files)
		case "lake put":
			method, path = http.MethodPut, fmt.Sprintf("/data/lake/datasets/mix/files/f%d", n%files)
			body, want = bytes.NewReader(file), http.StatusCreated
		}
		rq, err := w.request(ctx, method, path, "", sb, body)
		if err != nil {
			return err
		}
		_, err = send(w.client, rq, want, true)
		return err
	}
	var failMu sync.Mutex
	failures := map[string]int{}

	cfg.progress("vaultcalls: writing and reading every record and file once (warm-up)")
	before := vaultOps(w.env.Emu)
	for _, sb := range sandboxes {
		for i := range ids {
			if err := op("profile put", sb, i); err != nil {
				return nil, err
			}
		}
		for i := range files {
			if err := op("lake put", sb, i); err != nil {
				return nil, err
			}
		}
		if err := op("profile get", sb, 0); err != nil {
			return nil, err
		}
		if err := op("lake get", sb, 0); err != nil {
			return nil, err
		}
	}
	warm := vaultOps(w.env.Emu)
	res := &VaultCallsResult{Ops: cfg.Ops, Mix: map[string]int{}, WarmupCalls: warm.sub(before)}
	for _, m := range vaultCallsMix {
		res.Mix[m.name] = m.percent
	}

	cfg.progress("vaultcalls: %d mixed data operations over HTTP, %d workers", cfg.Ops, cfg.Workers)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Workers)
	start := time.Now()
	for wk := range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(wk), 11))
			for {
				n := int(next.Add(1))
				if n > cfg.Ops {
					return
				}
				roll, kind := r.IntN(100), ""
				for _, m := range vaultCallsMix {
					if roll < m.percent {
						kind = m.name
						break
					}
					roll -= m.percent
				}
				err := op(kind, sandboxes[n%2], r.IntN(1<<20))
				var ue *unexpectedAnswer
				switch {
				case errors.As(err, &ue):
					failMu.Lock()
					failures[fmt.Sprintf("%s: %d %s", kind, ue.status, ue.code)]++
					failMu.Unlock()
				case err != nil:
					errs <- fmt.Errorf("%s: %w", kind, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	res.Seconds = elapsed.Seconds()
	res.OpsPerSecond = float64(cfg.Ops) / res.Seconds
	res.Calls = vaultOps(w.env.Emu).sub(warm)
	res.Per100k = float64(res.Calls.Total()) * 100_000 / float64(cfg.Ops)
	if len(failures) > 0 {
		res.Failures = failures
	}
	return res, nil
}

func (r *VaultCallsResult) String() string {
	t := newTable(fmt.Sprintf("vaultcalls: key-vault calls during %d data operations over HTTP in steady state (monitor off)", r.Ops))
	mix := ""
	for _, m := range vaultCallsMix {
		mix += fmt.Sprintf("%s %d%%, ", m.name, r.Mix[m.name])
	}
	t.row("mix", mix[:len(mix)-2])
	t.row("rate", fmt.Sprintf("%.0f ops/s over %.1f s", r.OpsPerSecond, r.Seconds))
	t.row("vault calls", r.Calls.String())
	verdict := "met (0)"
	if r.Per100k > 0 {
		verdict = "MISSED (0)"
	}
	t.row("per 100,000 ops", fmt.Sprintf("%.1f", r.Per100k), verdict)
	t.row("warm-up calls (not counted)", r.WarmupCalls.String())
	keys := slices.Sorted(maps.Keys(r.Failures))
	for _, k := range keys {
		t.row("unexpected answers", fmt.Sprintf("%d × %s", r.Failures[k], k))
	}
	return t.String()
}
