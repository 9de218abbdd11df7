package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"

	"sync"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/monitor"
	"github.com/cmk-project/cmk/internal/testsvc"
)

// outageSecondsEnv lengthens TestDatabaseOutage's outages: CMK_OUTAGE_SECONDS=30
// is the full run of docs/reliability.md.
const outageSecondsEnv = "CMK_OUTAGE_SECONDS"

// outageClients is how many clients write and read during an outage.
const outageClients = 4

// TestDatabaseOutage runs cmk on PostgreSQL (state and profiles) under a
// steady load of lake and profile writes and reads, and takes PostgreSQL
// away twice: pg_ctl stop (fast), then kill -9 of the postmaster, each for
// a few seconds (CMK_OUTAGE_SECONDS). It checks that every answer is a
// success or 503 SERVICE_UNAVAILABLE with Retry-After (never a 500), that
// the org's key state does not change and its data is never refused as
// locked, that every acknowledged write reads back afterwards, and that
// readiness and the monitor's saves come back by themselves.
func TestDatabaseOutage(t *testing.T) {
	outage := 5 * time.Second
	if v := os.Getenv(outageSecondsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 600 {
			t.Fatalf("%s=%q: want whole seconds from 1 to 600", outageSecondsEnv, v)
		}
		outage = time.Duration(n) * time.Second
	}
	pg := testsvc.PostgresCluster(t)
	env, err := devenv.Start(context.Background(), devenv.Options{
		DataDir: t.TempDir(), Poll: 50 * time.Millisecond,
		DatabaseDSN: pg.DSN(t), ProfilesDSN: pg.DSN(t),
		Monitor: monitor.Config{Interval: 250 * time.Millisecond, Grace: 1500 * time.Millisecond, WrapEvery: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	c := adminClient(t, env, env.Org)
	enable(t, env, c)
	s := seed(t, c)
	before := waitHealth(t, c, "HEALTHY", "", 10*time.Second)

	for _, down := range []struct {
		name string
		do   func()
	}{{"stop", pg.Stop}, {"kill", pg.Kill}} {
		l := startLoad(c, outageClients)
		time.Sleep(time.Second)
		l.next()
		down.do()
		wentDown := time.Now()
		// After a kill, a backend may answer a moment longer, until it sees
		// its postmaster gone.
		notReady := false
		for deadline := time.Now().Add(3 * time.Second); !notReady && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			code, _ := get(c, "/readyz")
			notReady = code == 503
		}
		if !notReady {
			t.Errorf("%s: /readyz with the database down did not answer 503 within 3 s", down.name)
		}
		time.Sleep(outage)
		pg.Start()
		up := time.Now()
		l.next()
		var ready, saved time.Duration
		waitFor(t, "readiness after the database returned", 30*time.Second, func() bool {
			code, _ := get(c, "/readyz")
			ready = time.Since(up)
			return code == 200
		})
		waitFor(t, "the monitor to save a check after the database returned", 30*time.Second, func() bool {
			code, body := get(c, "/data/infrastructure/manager/byok/health")
			var h cmkapi.Health
			if code != 200 || decode(body, &h) != nil || h.LastCheck == nil {
				return false
			}
			saved = time.Since(up)
			return h.LastCheck.After(up)
		})
		time.Sleep(time.Second)
		r := l.stop()
		t.Logf("%s for %v: %d requests: %v (before %v, during %v, after %v); %d writes acknowledged; ready %v and monitor saved %v after the database returned",
			down.name, up.Sub(wentDown).Round(time.Millisecond), r.total(), r.statuses, r.phases[0], r.phases[1], r.phases[2], len(r.acked), ready.Round(time.Millisecond), saved.Round(time.Millisecond))
		for _, e := range r.errors {
			t.Errorf("%s: %s", down.name, e)
		}
		if r.statuses[503] == 0 {
			t.Errorf("%s: no request was answered 503 during a %v outage: %v", down.name, outage, r.statuses)
		}
		for path, want := range r.acked {
			if code, got := get(c, path); code != 200 || !bytes.Equal(got, want) {
				t.Errorf("%s: acknowledged write %s reads back %d, %d bytes; want %d identical", down.name, path, code, len(got), len(want))
			}
		}
		h := getHealth(c)
		if h.State != "HEALTHY" || h.Since == nil || before.Since == nil || !h.Since.Equal(*before.Since) {
			t.Errorf("%s: health after the outage = %s/%s since %v, want HEALTHY since %v as before", down.name, h.State, h.Cause, h.Since, before.Since)
		}
	}
	s.access(t, c)
	if n := len(openAlerts(c)); n != 0 {
		t.Errorf("open alerts after the outages = %d, want none", n)
	}
}

// load is a bounded number of clients writing lake files and profile
// records, each reading back what it wrote, until stopped.
type load struct {
	stopc chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	res   loadResult
	phase int // index into loadResult.phases: before, during, after the outage
}

type loadResult struct {
	statuses map[int]int
	phases   [3]map[int]int    // statuses before, during and after the outage
	acked    map[string][]byte // path -> what a 2xx stored
	errors   []string          // answers that are neither success nor a proper 503
}

func (r loadResult) total() int {
	n := 0
	for _, v := range r.statuses {
		n += v
	}
	return n
}

func startLoad(c *client, clients int) *load {
	l := &load{stopc: make(chan struct{}), res: loadResult{statuses: map[int]int{}, acked: map[string][]byte{},
		phases: [3]map[int]int{{}, {}, {}}}}
	for i := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := 0; ; n++ {
				select {
				case <-l.stopc:
					return
				default:
				}
				name := fmt.Sprintf("c%d-%d", i, n)
				file := "/data/lake/datasets/load/files/" + name
				data := pattern(2000+n%7*3000, byte(i*7+n))
				l.note("PUT "+file, data, file, 201)(send(c, "PUT", file, data))
				doc := []byte(fmt.Sprintf(`{"client":%d,"n":%d}`, i, n))
				rec := "/data/profiles/" + name
				l.note("PUT "+rec, doc, rec, 200)(send(c, "PUT", rec, doc))
				l.note("GET "+file, nil, "", 200)(send(c, "GET", file, nil))
				l.note("GET "+rec, nil, "", 200)(send(c, "GET", rec, nil))
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	return l
}

// note records one answer: a write acknowledged with ok, a proper 503, a
// 404 of a read whose write was refused, or an error.
func (l *load) note(what string, wrote []byte, path string, ok int) func(int, http.Header, []byte, error) {
	return func(code int, h http.Header, body []byte, err error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if err != nil {
			l.res.statuses[-1]++
			l.res.errors = append(l.res.errors, fmt.Sprintf("%s: %v", what, err))
			return
		}
		l.res.statuses[code]++
		l.res.phases[l.phase][code]++
		switch {
		case code == ok:
			if wrote != nil {
				l.res.acked[path] = wrote
			}
		case code == 503:
			if errorCode(body) != cmkapi.CodeServiceUnavailable || h.Get("Retry-After") == "" {
				l.res.errors = append(l.res.errors, fmt.Sprintf("%s = 503 %s, Retry-After %q; want %s with Retry-After", what, errorCode(body), h.Get("Retry-After"), cmkapi.CodeServiceUnavailable))
			}
		case code == 404 && wrote == nil && errorCode(body) == cmkapi.CodeNotFound:
			// The write before it was refused.
		default:
			if len(l.res.errors) < 20 {
				l.res.errors = append(l.res.errors, fmt.Sprintf("%s = %d %.300s", what, code, body))
			}
		}
	}
}

// next moves to the next phase: the outage began, or ended.
func (l *load) next() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.phase++
}

func (l *load) stop() loadResult {
	close(l.stopc)
	l.wg.Wait()
	return l.res
}

// send makes one data request in the prod sandbox, without failing the test.
func send(c *client, method, path string, body []byte) (int, http.Header, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("x-api-key", c.key)
	req.Header.Set("x-gw-ims-org-id", c.org)
	req.Header.Set("x-sandbox-name", "prod")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, out, err
}

func get(c *client, path string) (int, []byte) {
	code, _, body, err := send(c, "GET", path, nil)
	if err != nil {
		return 0, nil
	}
	return code, body
}

func decode(b []byte, v any) error {
	return json.Unmarshal(b, v)
}
