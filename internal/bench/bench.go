// Package bench measures cmk against its performance and key-health
// targets. Each measurement is one function that starts what it needs (the
// Azure emulator and the whole service, in process, through devenv), runs,
// and returns a result that renders as a table (String) and as JSON. The
// Go benchmarks of this package and `cmk bench` call the same functions,
// the former with small sizes.
//
// # Method
//
// This code runs on small, shared machines, so a throughput figure on its
// own says little. Every comparison here runs the two sides in alternating
// order, pair after pair, and reports the median and the range of the
// per-pair ratios: noise that hits one pair hits both of its sides.
// Latencies are reported as percentiles of every sample.
//
// Counts of key-vault calls come from the emulator's own counters
// (get + wrapKey + unwrapKey served), so they include every caller, not only
// the code under test; measurements that count calls switch the key-health
// monitor off unless it is what they measure.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/ratelimit"
)

// Common holds what every measurement takes.
type Common struct {
	// Dir is where the measurement keeps its files (service state, test
	// files). Empty means a new temporary directory, removed at the end.
	Dir string
	// Progress, when set, receives one line per step of a long run.
	Progress io.Writer
	// Log receives the service's logs; nil discards them.
	Log *slog.Logger
}

func (c Common) progress(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, format+"\n", args...)
	}
}

// workDir returns the directory to work in and a function that removes it
// when it was made here.
func (c Common) workDir(name string) (string, func(), error) {
	if c.Dir != "" {
		dir, err := os.MkdirTemp(c.Dir, name+"-")
		if err != nil {
			return "", nil, fmt.Errorf("bench %s: %w", name, err)
		}
		return dir, func() { os.RemoveAll(dir) }, nil
	}
	dir, err := os.MkdirTemp("", "cmk-bench-"+name+"-")
	if err != nil {
		return "", nil, fmt.Errorf("bench %s: %w", name, err)
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}

func (c Common) logger() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// world is a running local cmk with an HTTP client for its API.
type world struct {
	env    *devenv.Env
	client *http.Client
	close  func()
}

// startWorld starts the emulator and the service in a directory of its
// own under dir.
func startWorld(ctx context.Context, c Common, dir string, o devenv.Options) (*world, error) {
	o.DataDir = dir
	if o.RateLimits.ConsentPerClient.N == 0 {
		// Every org of a benchmark is bound from this one address.
		o.RateLimits.ConsentPerClient = ratelimit.Limit{N: 1_000_000, Per: time.Second}
	}
	if o.Log == nil {
		o.Log = c.logger()
	}
	env, err := devenv.Start(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("start local cmk: %w", err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	w := &world{env: env, client: &http.Client{Transport: tr}}
	w.close = func() { tr.CloseIdleConnections(); env.Close() }
	return w, nil
}

// enabledWorld makes the work directory of the measurement name and starts
// a world in it with CMK enabled (see startEnabledWorld). done stops the
// world and removes the directory.
func enabledWorld(ctx context.Context, c Common, name string, o devenv.Options) (w *world, dir string, done func(), err error) {
	dir, cleanup, err := c.workDir(name)
	if err != nil {
		return nil, "", nil, err
	}
	w, err = startEnabledWorld(ctx, c, filepath.Join(dir, "svc"), o)
	if err != nil {
		cleanup()
		return nil, "", nil, err
	}
	return w, dir, func() { w.close(); cleanup() }, nil
}

// startEnabledWorld starts a world and enables CMK for the demo org with
// the demo key, as most measurements need.
func startEnabledWorld(ctx context.Context, c Common, dir string, o devenv.Options) (*world, error) {
	w, err := startWorld(ctx, c, dir, o)
	if err != nil {
		return nil, err
	}
	if err := w.enable(ctx, ""); err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

// request builds an authenticated API request for org (the demo org when
// empty) and sandbox (none when empty).
func (w *world) request(ctx context.Context, method, path, org, sandbox string, body io.Reader) (*http.Request, error) {
	token := w.env.Token
	if org == "" {
		org = w.env.Org
	} else if org != w.env.Org {
		var err error
		if token, err = w.env.Svc.MintDevToken("bench", org, nil, 24*time.Hour); err != nil {
			return nil, err
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, w.env.Svc.URL()+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("x-api-key", w.env.APIKey)
	req.Header.Set("x-gw-ims-org-id", org)
	if sandbox != "" {
		req.Header.Set("x-sandbox-name", sandbox)
	}
	return req, nil
}

// call sends a JSON request and decodes a JSON answer into out (if not nil).
func (w *world) call(ctx context.Context, method, path, org string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(raw)
	}
	req, err := w.request(ctx, method, path, org, "", body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: answer is not JSON: %.200s", method, path, raw)
		}
	}
	return resp.StatusCode, nil
}

// configPath is the path of the config routes.
var configPath = cmkapi.CreateConfig.Path

// startEnable asks the service to move org (the demo org when empty) to
// the key kid (the demo key when empty), under config name, without waiting.
// A key protects one org only, so every other org needs a key of its own.
func (w *world) startEnable(ctx context.Context, org, name, kid string) error {
	if org == "" {
		org = w.env.Org
	}
	if kid == "" {
		kid = w.env.KeyIdentifier
	}
	data := cmkapi.ConfigData{ProviderType: cmkapi.ProviderAzureKeyVault, KeyVaultKeyIdentifier: kid}
	if strings.HasPrefix(kid, "arn:") {
		data = cmkapi.ConfigData{ProviderType: cmkapi.ProviderAWSKMS, KeyArn: kid}
	}
	body := cmkapi.ConfigRequest{Name: name, Type: cmkapi.ConfigTypeBYOK, IMSOrgID: org, ConfigData: data}
	var answer map[string]any
	code, err := w.call(ctx, http.MethodPost, configPath, org, body, &answer)
	if err != nil {
		return fmt.Errorf("enable CMK for %s: %w", org, err)
	}
	if code != http.StatusCreated {
		return fmt.Errorf("enable CMK for %s: POST config = %d %v", org, code, answer)
	}
	return nil
}

// waitEnabled polls the job of config name until it ends, and fails unless
// it COMPLETED.
func (w *world) waitEnabled(ctx context.Context, org, name string, poll time.Duration) error {
	for {
		var st cmkapi.Config
		code, err := w.call(ctx, http.MethodGet, configPath+"/"+name+"?configType=BYOK_CONFIG", org, nil, &st)
		if err != nil {
			return fmt.Errorf("status of config %s: %w", name, err)
		}
		if code != http.StatusOK {
			return fmt.Errorf("status of config %s = %d", name, code)
		}
		switch st.Status {
		case cmkapi.StatusCompleted:
			return nil
		case cmkapi.StatusFailed:
			return fmt.Errorf("enablement of %s FAILED: %+v", name, st.Failure)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}

// enable moves org to the customer key and waits for the job.
func (w *world) enable(ctx context.Context, org string) error {
	if err := w.startEnable(ctx, org, "Bench", ""); err != nil {
		return err
	}
	return w.waitEnabled(ctx, org, "Bench", 10*time.Millisecond)
}

// VaultOps counts key operations a vault served.
type VaultOps struct {
	Get       int `json:"get"`
	Wrap      int `json:"wrap"`
	Unwrap    int `json:"unwrap"`
	Throttled int `json:"throttled"` // 429 answers, not operations
}

// Total is get + wrap + unwrap.
func (v VaultOps) Total() int { return v.Get + v.Wrap + v.Unwrap }

func vaultOps(emu *azemu.Emulator) VaultOps {
	s := emu.Stats().Vaults[devenv.Vault]
	return VaultOps{Get: s.Get, Wrap: s.Wrap, Unwrap: s.Unwrap, Throttled: s.Throttled}
}

func (v VaultOps) sub(before VaultOps) VaultOps {
	return VaultOps{Get: v.Get - before.Get, Wrap: v.Wrap - before.Wrap, Unwrap: v.Unwrap - before.Unwrap, Throttled: v.Throttled - before.Throttled}
}

func (v VaultOps) String() string {
	return fmt.Sprintf("%d (get %d, wrap %d, unwrap %d)", v.Total(), v.Get, v.Wrap, v.Unwrap)
}

// Spread summarizes repeated measurements of one quantity.
type Spread struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	// Samples are the values in the order they were measured.
	Samples []float64 `json:"samples,omitempty"`
}

func spreadOf(xs []float64) Spread {
	if len(xs) == 0 {
		return Spread{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Spread{N: len(s), Median: med, Min: s[0], Max: s[len(s)-1], Samples: slices.Clone(xs)}
}

// format renders the spread with a printf verb for each number.
func (s Spread) format(verb string) string {
	if s.N == 0 {
		return "-"
	}
	if s.N == 1 {
		return fmt.Sprintf(verb, s.Median)
	}
	return fmt.Sprintf(verb+" ["+verb+" – "+verb+"]", s.Median, s.Min, s.Max)
}

// Comparison is an encrypted (or our) path measured against a baseline in
// interleaved pairs. Rates are in Unit; Ratio is ours over the baseline,
// pair by pair.
type Comparison struct {
	Name     string  `json:"name"`
	Unit     string  `json:"unit"`
	Ours     Spread  `json:"ours"`
	Baseline Spread  `json:"baseline"`
	Ratio    Spread  `json:"ratio"`
	Target   float64 `json:"targetRatio,omitempty"` // minimum median ratio; 0 = none
}

// Met reports whether the median ratio reaches the target (true when
// there is no target).
func (c Comparison) Met() bool { return c.Target == 0 || c.Ratio.Median >= c.Target }

func (c Comparison) verdict() string {
	if c.Target == 0 {
		return ""
	}
	if c.Met() {
		return fmt.Sprintf("met (≥ %.2f)", c.Target)
	}
	return fmt.Sprintf("MISSED (≥ %.2f)", c.Target)
}

// pairs runs ours(i) and base(i) for i in [0, n), alternating which goes
// first, and returns the rates each produced (higher is better).
func pairs(n int, ours, base func(i int) (float64, error)) (o, b, ratio []float64, err error) {
	for i := range n {
		var ro, rb float64
		if i%2 == 0 {
			if ro, err = ours(i); err == nil {
				rb, err = base(i)
			}
		} else {
			if rb, err = base(i); err == nil {
				ro, err = ours(i)
			}
		}
		if err != nil {
			return nil, nil, nil, err
		}
		o, b, ratio = append(o, ro), append(b, rb), append(ratio, ro/rb)
	}
	return o, b, ratio, nil
}

func compare(name, unit string, target float64, o, b, ratio []float64) Comparison {
	return Comparison{Name: name, Unit: unit, Ours: spreadOf(o), Baseline: spreadOf(b), Ratio: spreadOf(ratio), Target: target}
}

// Latency holds percentiles of a set of durations, in microseconds.
type Latency struct {
	N     int     `json:"n"`
	P50us float64 `json:"p50us"`
	P99us float64 `json:"p99us"`
	Maxus float64 `json:"maxus"`
}

func latencyOf(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return Latency{N: len(s), P50us: us(percentile(s, 50)), P99us: us(percentile(s, 99)), Maxus: us(s[len(s)-1])}
}

// percentile is the nearest-rank percentile of sorted samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[max(rank-1, 0)]
}

// table writes aligned columns.
type table struct {
	b  strings.Builder
	tw *tabwriter.Writer
}

func newTable(title string) *table {
	t := &table{}
	t.b.WriteString(title + "\n")
	t.tw = tabwriter.NewWriter(&t.b, 2, 0, 2, ' ', 0)
	return t
}

func (t *table) row(cells ...string) { fmt.Fprintln(t.tw, "  "+strings.Join(cells, "\t")) }

func (t *table) String() string {
	t.tw.Flush()
	return t.b.String()
}

func (c Comparison) rows(t *table) {
	t.row(c.Name, c.Ours.format("%.1f")+" "+c.Unit, c.Baseline.format("%.1f")+" "+c.Unit, c.Ratio.format("%.3f"), c.verdict())
}

func comparisonTable(title, oursName, baseName string, cs ...Comparison) *table {
	t := newTable(title)
	t.row("", oursName+" (median [min – max])", baseName, "ratio", "target")
	for _, c := range cs {
		c.rows(t)
	}
	return t
}

// MiB is a mebibyte, for sizes in configurations.
const MiB = 1 << 20

func mbps(n int64, d time.Duration) float64 { return float64(n) / MiB / d.Seconds() }

// fillReader is a fast endless stream of pseudo-random bytes, so test
// files are incompressible without paying for a CSPRNG.
type fillReader struct{ r *rand.ChaCha8 }

func newFill(seed byte) *fillReader {
	var s [32]byte
	s[0] = seed
	return &fillReader{r: rand.NewChaCha8(s)}
}

func (f *fillReader) Read(p []byte) (int, error) { return f.r.Read(p) }

// writeFile writes size pseudo-random bytes to path.
func writeFile(path string, size int64, seed byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, io.LimitReader(newFill(seed), size)); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// readAll reads a file once so it sits in the page cache.
func readAll(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%.0f MiB", float64(n)/MiB)
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
