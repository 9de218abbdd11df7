package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cmk-project/cmk/internal/cluster"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/testsvc"
)

// The measurements of replicas run 'cmk serve' as processes (internal
// cluster) on one PostgreSQL state database, against the emulator of a
// world started in this process; the in-process service only seeds the
// state and is closed before the replicas start. What is measured of a
// replica is read from its process (/proc) and its /metrics, never from
// this process, which also runs the emulator.

// Replicas says where the replicas' binary and database come from.
type Replicas struct {
	// Bin is a cmk binary to run as 'cmk serve'; empty builds one into the
	// work directory (which needs the go tool and the module's source).
	Bin string
	// Postgres returns the DSN of a new, empty database; nil starts the
	// test PostgreSQL server (internal/testsvc) for the run.
	Postgres func() (string, error)
}

// setup returns the binary and a source of databases; done releases what
// it started.
func (r Replicas) setup(ctx context.Context, dir string) (bin string, newDB func() (string, error), done func(), err error) {
	scope := &testsvc.Scope{}
	done = scope.Close
	newDB = r.Postgres
	if newDB == nil {
		newDB = func() (string, error) { return testsvc.PostgresIn(scope) }
	}
	bin = r.Bin
	if bin == "" {
		if bin, err = cluster.Build(ctx, dir); err != nil {
			done()
			return "", nil, nil, err
		}
	}
	return bin, newDB, done, nil
}

// replicaWorld is a seeded world whose service was closed so that replica
// processes can own its state.
type replicaWorld struct {
	env    *devenv.Env
	dsn    string
	svcDir string // the seeding service's data directory: system key, token key
	dir    string // where the replicas' directories go
	bin    string
}

// start runs n replicas with the serve flags extra added to the common
// ones: each its own data directory, sharing the database, the system key
// and the development token key.
func (w *replicaWorld) start(n int, extra ...string) (*cluster.Cluster, error) {
	emuArgs, emuEnv, err := w.env.ServeFlags(w.dir)
	if err != nil {
		return nil, err
	}
	stamp := time.Now().UnixNano()
	dirs := make([]string, n)
	for i := range n {
		dirs[i] = filepath.Join(w.dir, fmt.Sprintf("replica-%d-%d", stamp, i))
		if err := os.MkdirAll(dirs[i], 0o700); err != nil {
			return nil, err
		}
		if err := copyFile(filepath.Join(w.svcDir, "token-signing.pem"), filepath.Join(dirs[i], "token-signing.pem")); err != nil {
			return nil, fmt.Errorf("give replica %d the development token key: %w", i, err)
		}
	}
	return cluster.StartN(n, w.bin, emuEnv, func(i int) []string {
		args := []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dirs[i], "--database", w.dsn,
			"--system-key", filepath.Join(w.svcDir, "system.key"), "--dev-token-issuer"}
		args = append(args, emuArgs...)
		return append(args, extra...)
	})
}

// stop ends every replica with SIGTERM, so their leases are handed over.
func stopAll(c *cluster.Cluster) error {
	var errs []error
	for _, p := range c.Procs {
		if err := p.Stop(30 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o600)
}

// procUsage is the CPU time (user + system) and resident memory of a
// process, from /proc (Linux only).
func procUsage(pid int) (cpu time.Duration, rss int64, err error) {
	if runtime.GOOS != "linux" {
		return 0, 0, errors.New("measuring a replica's CPU and memory needs Linux's /proc")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces;
	// the fields after it are numbered from 3.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 22 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	field := func(n int) int64 { v, _ := strconv.ParseInt(f[n-3], 10, 64); return v }
	// Clock ticks are 1/100 s on Linux (USER_HZ, the same on every
	// architecture Go supports); rss is in pages.
	ticks := field(14) + field(15)
	return time.Duration(ticks) * 10 * time.Millisecond, field(24) * int64(os.Getpagesize()), nil
}

// scrape reads a Prometheus text exposition into series → value, the
// series written as the exposition writes it (name{labels}).
func scrape(ctx context.Context, client *http.Client, base string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", base, resp.Status)
	}
	return parseExposition(resp.Body)
}

func parseExposition(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// sumOf adds every series of the metric name, whatever its labels.
func sumOf(m map[string]float64, name string) float64 {
	var s float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}

// histogram is the cumulative buckets of one unlabelled histogram.
type histogram struct {
	bounds []float64 // ascending, +Inf last
	counts []float64 // cumulative
	sum    float64
}

func histogramOf(m map[string]float64, name string, bounds []float64) histogram {
	h := histogram{bounds: append(append([]float64(nil), bounds...), inf), sum: m[name+"_sum"]}
	for _, b := range bounds {
		h.counts = append(h.counts, m[fmt.Sprintf(`%s_bucket{le="%s"}`, name, strconv.FormatFloat(b, 'g', -1, 64))])
	}
	h.counts = append(h.counts, m[name+`_bucket{le="+Inf"}`])
	return h
}

var inf = 1e308

func (h histogram) sub(o histogram) histogram {
	d := histogram{bounds: h.bounds, sum: h.sum - o.sum}
	for i := range h.counts {
		d.counts = append(d.counts, h.counts[i]-o.counts[i])
	}
	return d
}

func (h histogram) total() float64 { return h.counts[len(h.counts)-1] }

// quantile is the upper bound of the bucket holding the q-quantile.
func (h histogram) quantile(q float64) float64 {
	n := h.total()
	for i, c := range h.counts {
		if n > 0 && c >= q*n {
			return h.bounds[i]
		}
	}
	return 0
}

// over counts observations above the largest bound ≤ limit (so it counts
// high when limit is not a bound), and returns that bound.
func (h histogram) over(limit float64) (n float64, bound float64) {
	k := -1
	for i, b := range h.bounds {
		if b <= limit {
			k = i
		}
	}
	if k < 0 {
		return h.total(), 0
	}
	return h.total() - h.counts[k], h.bounds[k]
}

// parallel calls fn(i) for every i in [0, count) from workers goroutines
// and returns the first error (the others stop taking work).
func parallel(ctx context.Context, workers, count int, fn func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= count {
					return
				}
				err := ctx.Err()
				if err == nil {
					err = fn(i)
				}
				if err != nil {
					once.Do(func() { first = err })
					next.Store(int64(count))
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}
