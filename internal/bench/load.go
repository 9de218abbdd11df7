package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/monitor"
)

// LoadConfig sizes the load measurement.
type LoadConfig struct {
	Common
	// Clients sending requests at once, each one after the other with no
	// pause. Default 200.
	Clients int
	// Duration of the traffic. Default 60 s. The run goes on past it only
	// while the revoked org has not yet recovered, at most 10 check
	// intervals.
	Duration time.Duration
	// Orgs on customer keys, each with a key of its own. At least 3 (one
	// rotates, one is revoked, the others are unaffected); default 5.
	Orgs int
	// Interval between key checks. Default 1 s.
	Interval time.Duration
	// Seed picks each client's mix of requests; 0 = random.
	Seed uint64
}

func (c *LoadConfig) defaults() {
	if c.Clients == 0 {
		c.Clients = 200
	}
	if c.Duration == 0 {
		c.Duration = 60 * time.Second
	}
	if c.Orgs == 0 {
		c.Orgs = 5
	}
	if c.Interval == 0 {
		c.Interval = time.Second
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64()
	}
}

// LoadOrgs is what the clients of one kind of org saw.
type LoadOrgs struct {
	Orgs     int     `json:"orgs"`
	Requests int     `json:"requests"`
	Served   int     `json:"served"`
	Refused  int     `json:"refused"` // 403 CMK_KEY_*: the org's data is locked
	Errors   int     `json:"errors"`  // anything else: another status, wrong bytes, a failed connection
	Latency  Latency `json:"latency"`
	// ErrorSamples are the first few errors.
	ErrorSamples []string `json:"errorSamples,omitempty"`
}

// ErrorRate is Errors over Requests.
func (o LoadOrgs) ErrorRate() float64 {
	if o.Requests == 0 {
		return 0
	}
	return float64(o.Errors) / float64(o.Requests)
}

// LoadResult is mixed lake and profile traffic from many clients over
// several orgs while one org's key rotates and another's is revoked and
// comes back.
type LoadResult struct {
	Clients         int     `json:"clients"`
	Orgs            int     `json:"orgs"`
	Seconds         float64 `json:"seconds"`
	IntervalSeconds float64 `json:"intervalSeconds"`
	Seed            uint64  `json:"seed"`

	Unaffected LoadOrgs `json:"unaffected"`
	Rotating   LoadOrgs `json:"rotating"`
	Revoked    LoadOrgs `json:"revoked"`

	// RotationPickup is from the new key version in the vault to the
	// org's health naming it; RotationDone to the re-wrap of every data
	// key to it. Revocation is from the key disabled in the vault to the
	// org's gate closed, FirstRefusal to the first refused request;
	// Recovery from the key enabled to the gate open, FirstServed to the
	// first request of the org served again. -1 = not seen.
	RotationPickupSeconds float64 `json:"rotationPickupSeconds"`
	RotationDoneSeconds   float64 `json:"rotationDoneSeconds"`
	RevocationSeconds     float64 `json:"revocationSeconds"`
	FirstRefusalSeconds   float64 `json:"firstRefusalSeconds"`
	RecoverySeconds       float64 `json:"recoverySeconds"`
	FirstServedSeconds    float64 `json:"firstServedSeconds"`

	// PeakRSSBytes is the largest resident set sampled (every 100 ms)
	// during the traffic, of the whole process: clients, service and
	// emulator. PeakHeapBytes is the largest heap in use.
	PeakRSSBytes  uint64 `json:"peakRSSBytes"`
	PeakHeapBytes uint64 `json:"peakHeapBytes"`
}

// Met reports whether every request of the unaffected orgs was served.
func (r *LoadResult) Met() bool {
	return r.Unaffected.Requests > 0 && r.Unaffected.Errors+r.Unaffected.Refused == 0
}

// loadData is what a client reads back and checks, per org.
type loadData struct {
	files    map[string][]byte
	names    []string
	profiles []string // ids; the record is loadRecord(id)
}

func loadRecord(id string) []byte { return []byte(`{"id":"` + id + `","kind":"load"}`) }

// clientRecord is what one client saw.
type clientRecord struct {
	class     int // 0 unaffected, 1 rotating, 2 revoked
	latencies []time.Duration
	served    int
	refused   int
	errors    []string // the first few
	nerrors   int
}

// Load starts the service with cfg.Orgs orgs on customer keys and seeds
// each with lake files and profile records; then cfg.Clients clients, spread
// evenly over the orgs, read and write them over HTTP for cfg.Duration. At
// 15 % of the run the second org's key gets a new version (cmk re-wraps its
// data keys); at 35 % the third org's key is disabled, and at 65 % enabled
// again. The other orgs are the unaffected ones: every one of their
// requests must be served.
func Load(ctx context.Context, cfg LoadConfig) (*LoadResult, error) {
	cfg.defaults()
	if cfg.Orgs < 3 {
		return nil, fmt.Errorf("load: %d orgs; at least 3 are needed (one rotates, one is revoked, one is unaffected)", cfg.Orgs)
	}
	if cfg.Clients < cfg.Orgs {
		return nil, fmt.Errorf("load: %d clients for %d orgs; give every org at least one client", cfg.Clients, cfg.Orgs)
	}
	dir, cleanup, err := cfg.workDir("load")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	w, err := startWorld(ctx, cfg.Common, filepath.Join(dir, "svc"), devenv.Options{
		Monitor: monitor.Config{Interval: cfg.Interval, WrapEvery: 1, FlapCount: 1 << 20},
	})
	if err != nil {
		return nil, err
	}
	defer w.close()
	env := w.env
	const sb = "prod"
	orgs := []string{env.Org}
	keys := []string{devenv.KeyName}
	for i := 1; i < cfg.Orgs; i++ {
		orgs = append(orgs, fmt.Sprintf("LOAD%02dORG@CmkOrg", i))
		keys = append(keys, fmt.Sprintf("load-key-%02d", i))
	}
	cfg.progress("load: enabling CMK for %d orgs", len(orgs))
	for i, org := range orgs {
		kid := ""
		if i > 0 {
			version, err := env.Emu.CreateKey(devenv.Vault, keys[i], azemu.KeyOptions{})
			if err != nil {
				return nil, err
			}
			kid = env.Emu.VaultURL(devenv.Vault) + "/keys/" + keys[i] + "/" + version
			if _, err := env.BindOrg(ctx, org); err != nil {
				return nil, err
			}
		}
		if err := w.startEnable(ctx, org, "Load", kid); err != nil {
			return nil, err
		}
	}
	for _, org := range orgs {
		if err := w.waitEnabled(ctx, org, "Load", 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
	rotating, revoked := 1, 2
	class := func(i int) int {
		switch i {
		case rotating:
			return 1
		case revoked:
			return 2
		}
		return 0
	}

	// Seed every org, in process: files of 1 KiB and 64 KiB, 50 records.
	data := make([]loadData, len(orgs))
	tokens := make([]string, len(orgs))
	for i, org := range orgs {
		d := loadData{files: map[string][]byte{}}
		for j, size := range []int{1 << 10, 64 << 10} {
			name := fmt.Sprintf("f%d", j)
			body, _ := io.ReadAll(io.LimitReader(newFill(byte(10*i+j)), int64(size)))
			if _, err := env.Svc.Lake.Put(ctx, org, sb, "load", name, bytes.NewReader(body)); err != nil {
				return nil, fmt.Errorf("seed %s: %w", org, err)
			}
			d.files[name], d.names = body, append(d.names, name)
		}
		for j := range 50 {
			id := fmt.Sprintf("r%d", j)
			if err := env.Svc.Profiles.Upsert(ctx, org, sb, id, loadRecord(id)); err != nil {
				return nil, fmt.Errorf("seed %s: %w", org, err)
			}
			d.profiles = append(d.profiles, id)
		}
		data[i] = d
		if tokens[i], err = env.Svc.MintDevToken("load", org, nil, 24*time.Hour); err != nil {
			return nil, err
		}
	}

	tr := &http.Transport{MaxIdleConnsPerHost: cfg.Clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	httpc := &http.Client{Transport: tr, Timeout: time.Minute}
	base := env.Svc.URL()

	res := &LoadResult{Clients: cfg.Clients, Orgs: len(orgs), IntervalSeconds: cfg.Interval.Seconds(), Seed: cfg.Seed,
		RotationPickupSeconds: -1, RotationDoneSeconds: -1, RevocationSeconds: -1, FirstRefusalSeconds: -1, RecoverySeconds: -1, FirstServedSeconds: -1}
	// The moments the revoked org's key was disabled and enabled, and the
	// first refused and served requests after them (Unix nanoseconds).
	var disabledAt, enabledAt, firstRefused, firstServed atomic.Int64
	markFirst := func(first *atomic.Int64, after *atomic.Int64, now time.Time) {
		if a := after.Load(); a != 0 && now.UnixNano() > a && first.Load() == 0 {
			first.CompareAndSwap(0, now.UnixNano())
		}
	}

	traffic, stopTraffic := context.WithCancel(ctx)
	defer stopTraffic()
	records := make([]*clientRecord, cfg.Clients)
	var clients sync.WaitGroup
	for n := range cfg.Clients {
		oi := n % len(orgs)
		rec := &clientRecord{class: class(oi)}
		records[n] = rec
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(n)))
		clients.Add(1)
		go func() {
			defer clients.Done()
			d := data[oi]
			for i := 0; ; i++ {
				var method, path string
				var body, want []byte
				wantCode := http.StatusOK
				switch p := rng.IntN(100); {
				case p < 50: // a record, often from the read cache
					id := d.profiles[rng.IntN(len(d.profiles))]
					method, path, want = http.MethodGet, "/data/profiles/"+id, loadRecord(id)
				case p < 75:
					name := d.names[rng.IntN(len(d.names))]
					method, path, want = http.MethodGet, "/data/lake/datasets/load/files/"+name, d.files[name]
				case p < 90:
					method, path = http.MethodPut, fmt.Sprintf("/data/profiles/c%d-%d", n, i%16)
					body = []byte(fmt.Sprintf(`{"client":%d,"i":%d}`, n, i))
				default:
					method, path = http.MethodPut, fmt.Sprintf("/data/lake/datasets/clients/files/c%d-%d", n, i%4)
					body, _ = io.ReadAll(io.LimitReader(newFill(byte(i)), 4<<10))
					wantCode = http.StatusCreated
				}
				var rd io.Reader
				if body != nil {
					rd = bytes.NewReader(body)
				}
				req, err := http.NewRequestWithContext(traffic, method, base+path, rd)
				if err != nil {
					rec.fail(err.Error())
					return
				}
				req.Header.Set("Authorization", "Bearer "+tokens[oi])
				req.Header.Set("x-api-key", env.APIKey)
				req.Header.Set("x-gw-ims-org-id", orgs[oi])
				req.Header.Set("x-sandbox-name", sb)
				start := time.Now()
				resp, err := httpc.Do(req)
				var got []byte
				if err == nil {
					got, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				now := time.Now()
				if traffic.Err() != nil {
					return // the run ended; this request does not count
				}
				rec.latencies = append(rec.latencies, now.Sub(start))
				switch {
				case err != nil:
					rec.fail(fmt.Sprintf("%s %s: %v", method, path, err))
				case resp.StatusCode == http.StatusForbidden && strings.HasPrefix(errorCodeOf(got), "CMK_KEY_"):
					rec.refused++
					if rec.class == 2 {
						markFirst(&firstRefused, &disabledAt, now)
					}
				case resp.StatusCode != wantCode:
					rec.fail(fmt.Sprintf("%s %s = %d %.160s", method, path, resp.StatusCode, got))
				case want != nil && !bytes.Equal(got, want):
					rec.fail(fmt.Sprintf("%s %s: wrong bytes (%d, want %d)", method, path, len(got), len(want)))
				default:
					rec.served++
					if rec.class == 2 {
						markFirst(&firstServed, &enabledAt, now)
					}
				}
			}
		}()
	}

	// Memory, sampled every 100 ms.
	var peakRSS, peakHeap atomic.Uint64
	sampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if v := heapInUse(samples); v > peakHeap.Load() {
				peakHeap.Store(v)
			}
			if v := residentBytes(); v > peakRSS.Load() {
				peakRSS.Store(v)
			}
			select {
			case <-sampling:
				return
			case <-t.C:
			}
		}
	}()

	// The events, at their moments of the run.
	cfg.progress("load: %d clients over %d orgs for %s", cfg.Clients, len(orgs), cfg.Duration)
	start := time.Now()
	at := func(frac float64) error {
		return sleepCtx(ctx, time.Until(start.Add(time.Duration(frac*float64(cfg.Duration)))))
	}
	gateOpen := func(org string) bool { return env.Svc.Gate.Allow(org) == nil }
	wait := 10*cfg.Interval + 5*time.Second
	// until polls cond every 2 ms and returns how long after since it held
	// (-1 when not within wait).
	until := func(since time.Time, cond func() (bool, error)) (float64, error) {
		for {
			ok, err := cond()
			if err != nil {
				return -1, err
			}
			if ok {
				return time.Since(since).Seconds(), nil
			}
			if time.Since(since) > wait {
				return -1, nil
			}
			if err := sleepCtx(ctx, 2*time.Millisecond); err != nil {
				return -1, err
			}
		}
	}
	var rotation sync.WaitGroup
	var rotationErr error
	events := func() error {
		if err := at(0.15); err != nil {
			return err
		}
		version, err := env.Emu.RotateKey(devenv.Vault, keys[rotating])
		if err != nil {
			return err
		}
		rotated := time.Now()
		cfg.progress("load: %s's key rotated to version %s", orgs[rotating], version)
		rotation.Add(1)
		go func() {
			defer rotation.Done()
			picked := false
			res.RotationDoneSeconds, rotationErr = until(rotated, func() (bool, error) {
				h, err := env.Svc.Store.Health(ctx, orgs[rotating])
				if err != nil {
					return false, err
				}
				if !picked && (h.RotateTo == version || h.KeyVersion == version) {
					picked, res.RotationPickupSeconds = true, time.Since(rotated).Seconds()
				}
				return h.KeyVersion == version && h.RotateTo == "", nil
			})
		}()

		if err := at(0.35); err != nil {
			return err
		}
		no, yes := false, true
		if err := env.Emu.UpdateKey(devenv.Vault, keys[revoked], azemu.KeyUpdate{Enabled: &no}); err != nil {
			return err
		}
		disabled := time.Now()
		disabledAt.Store(disabled.UnixNano())
		cfg.progress("load: %s's key disabled", orgs[revoked])
		if res.RevocationSeconds, err = until(disabled, func() (bool, error) { return !gateOpen(orgs[revoked]), nil }); err != nil {
			return err
		}

		if err := at(0.65); err != nil {
			return err
		}
		if err := env.Emu.UpdateKey(devenv.Vault, keys[revoked], azemu.KeyUpdate{Enabled: &yes}); err != nil {
			return err
		}
		enabled := time.Now()
		enabledAt.Store(enabled.UnixNano())
		cfg.progress("load: %s's key enabled again", orgs[revoked])
		if res.RecoverySeconds, err = until(enabled, func() (bool, error) { return gateOpen(orgs[revoked]), nil }); err != nil {
			return err
		}
		// A few requests of the org served again before the traffic ends.
		_, err = until(enabled, func() (bool, error) { return firstServed.Load() != 0, nil })
		return err
	}
	eventErr := events()
	if eventErr == nil {
		eventErr = at(1)
	}
	rotation.Wait()
	stopTraffic()
	clients.Wait()
	res.Seconds = time.Since(start).Seconds()
	close(sampling)
	sampler.Wait()
	if eventErr != nil {
		return nil, eventErr
	}
	if rotationErr != nil {
		return nil, rotationErr
	}
	res.PeakRSSBytes, res.PeakHeapBytes = peakRSS.Load(), peakHeap.Load()
	since := func(first, after *atomic.Int64) float64 {
		if first.Load() == 0 {
			return -1
		}
		return time.Duration(first.Load() - after.Load()).Seconds()
	}
	res.FirstRefusalSeconds, res.FirstServedSeconds = since(&firstRefused, &disabledAt), since(&firstServed, &enabledAt)

	var lat [3][]time.Duration
	for _, rec := range records {
		o := [3]*LoadOrgs{&res.Unaffected, &res.Rotating, &res.Revoked}[rec.class]
		o.Requests += len(rec.latencies)
		o.Served += rec.served
		o.Refused += rec.refused
		o.Errors += rec.nerrors
		for _, e := range rec.errors {
			if len(o.ErrorSamples) < 5 {
				o.ErrorSamples = append(o.ErrorSamples, e)
			}
		}
		lat[rec.class] = append(lat[rec.class], rec.latencies...)
	}
	res.Unaffected.Orgs, res.Rotating.Orgs, res.Revoked.Orgs = len(orgs)-2, 1, 1
	res.Unaffected.Latency, res.Rotating.Latency, res.Revoked.Latency = latencyOf(lat[0]), latencyOf(lat[1]), latencyOf(lat[2])
	return res, nil
}

func (c *clientRecord) fail(msg string) {
	c.nerrors++
	if len(c.errors) < 2 {
		c.errors = append(c.errors, msg)
	}
}

func errorCodeOf(body []byte) string {
	var e cmkapi.Error
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	return e.ErrorCode
}

// residentBytes is the process's resident set (VmRSS in /proc/self/status),
// or 0 where there is none to read.
func residentBytes() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// ErrLoadMissed is returned (wrapped) by the command when an unaffected
// org's request was not served.
var ErrLoadMissed = errors.New("requests of unaffected orgs were not served")

func (r *LoadResult) String() string {
	verdict := "met"
	if !r.Met() {
		verdict = "MISSED"
	}
	t := newTable(fmt.Sprintf("load: %d clients over %d orgs for %.0f s, key checked every %.1f s, seed %d; unaffected orgs served every request: %s",
		r.Clients, r.Orgs, r.Seconds, r.IntervalSeconds, r.Seed, verdict))
	t.row("orgs", "requests", "req/s", "served", "refused", "errors (rate)", "p50 / p99 / max")
	ms := func(l Latency) string {
		return fmt.Sprintf("%.1f / %.1f / %.0f ms", l.P50us/1e3, l.P99us/1e3, l.Maxus/1e3)
	}
	for _, o := range []struct {
		name string
		o    LoadOrgs
	}{{"unaffected", r.Unaffected}, {"key rotated", r.Rotating}, {"key revoked, then back", r.Revoked}} {
		t.row(fmt.Sprintf("%s (%d)", o.name, o.o.Orgs), fmt.Sprint(o.o.Requests), fmt.Sprintf("%.0f", float64(o.o.Requests)/r.Seconds),
			fmt.Sprint(o.o.Served), fmt.Sprint(o.o.Refused), fmt.Sprintf("%d (%.4f %%)", o.o.Errors, 100*o.o.ErrorRate()), ms(o.o.Latency))
	}
	s := func(v float64) string {
		if v < 0 {
			return "not seen"
		}
		return fmt.Sprintf("%.0f ms", v*1e3)
	}
	e := newTable("during the run:")
	e.row("rotation: new key version → picked up / every data key re-wrapped", s(r.RotationPickupSeconds)+" / "+s(r.RotationDoneSeconds))
	e.row("revocation: key disabled → gate closed / first request refused", s(r.RevocationSeconds)+" / "+s(r.FirstRefusalSeconds))
	e.row("recovery: key enabled → gate open / first request served", s(r.RecoverySeconds)+" / "+s(r.FirstServedSeconds))
	e.row("peak RSS / peak heap in use (the whole process)", humanBytes(int64(r.PeakRSSBytes))+" / "+humanBytes(int64(r.PeakHeapBytes)))
	out := t.String() + e.String()
	for _, o := range []struct {
		name string
		o    LoadOrgs
	}{{"unaffected", r.Unaffected}, {"key rotated", r.Rotating}, {"key revoked", r.Revoked}} {
		for _, e := range o.o.ErrorSamples {
			out += fmt.Sprintf("  error, %s: %s\n", o.name, e)
		}
	}
	return out
}
