package e2e

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/monitor"
)

// scrape reads /metrics into name{labels} -> value.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// TestOperatorMetrics: after an org enables CMK and reads its data, the
// metrics an operator's rules and dashboard use carry what happened: key
// service latency per provider, the data-key cache's hits and lookups, the
// job gauges back at zero once the job is done.
func TestOperatorMetrics(t *testing.T) {
	env := fastEnv(t, monitor.Config{FlapCount: 1000})
	c := adminClient(t, env, env.Org)
	data := seed(t, c)
	enable(t, env, c)
	waitHealth(t, c, "HEALTHY", "", 5*time.Second)
	for range 3 {
		if !data.access(t, c) {
			t.Fatal("data not served")
		}
	}
	var m map[string]float64
	deadline := time.Now().Add(10 * time.Second)
	for {
		m = scrape(t, env.Svc.URL())
		if m[`cmk_enablement_data_keys{kind="total"}`] == 0 && m[`cmk_enablement_jobs{status="UPDATE_EXISTING_RESOURCES"}`] == 0 &&
			m[`cmk_vault_call_seconds_count{op="unwrap",provider="azure_key_vault"}`] > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, name := range []string{
		`cmk_vault_call_seconds_count{op="describe",provider="azure_key_vault"}`,
		`cmk_vault_call_seconds_count{op="wrap",provider="azure_key_vault"}`,
		`cmk_vault_call_seconds_count{op="unwrap",provider="azure_key_vault"}`,
		`cmk_dek_cache_hits_total`,
		`cmk_dek_cache_lookups_total`,
	} {
		if m[name] <= 0 {
			t.Errorf("%s = %v, want > 0", name, m[name])
		}
	}
	if h, l := m["cmk_dek_cache_hits_total"], m["cmk_dek_cache_lookups_total"]; h > l {
		t.Errorf("cache hits %v > lookups %v", h, l)
	}
	for _, name := range []string{`cmk_enablement_jobs{status="RUNNING"}`, `cmk_enablement_jobs{status="UPDATE_EXISTING_RESOURCES"}`, `cmk_enablement_oldest_job_seconds`} {
		if v, ok := m[name]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v), want 0 once the job is done", name, v, ok)
		}
	}
}
