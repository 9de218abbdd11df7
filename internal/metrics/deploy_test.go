package metrics

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
)

// families returns cmk's metrics as the scrape shows them: each name (a
// histogram also as _bucket, _sum and _count) with its label names (le for
// a bucket).
func families(t *testing.T) map[string][]string {
	t.Helper()
	m := New()
	m.ObserveDEKCache(func() int64 { return 0 }, func() int64 { return 0 })
	descRE := regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)
	out := map[string][]string{}
	for _, c := range m.own {
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		_, histogram := c.(*prometheus.HistogramVec)
		if _, ok := c.(prometheus.Histogram); ok {
			histogram = true
		}
		for d := range ch {
			g := descRE.FindStringSubmatch(d.String())
			if g == nil {
				t.Fatalf("cannot read %s", d)
			}
			var labels []string
			if g[2] != "" {
				labels = strings.Split(g[2], ",")
			}
			out[g[1]] = labels
			if histogram {
				out[g[1]+"_bucket"] = append(slices.Clone(labels), "le")
				out[g[1]+"_sum"], out[g[1]+"_count"] = labels, labels
			}
		}
	}
	return out
}

var (
	metricRE   = regexp.MustCompile(`\b(cmk_[a-z0-9_]+)\s*(\{[^}]*\})?`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"`)
	groupingRE = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
)

// checkQuery checks a PromQL expression against the metrics: brackets
// balance, every cmk_ metric exists, every label matched on exists on its
// metric, and every label grouped by exists on some metric of the query.
// (It does not parse PromQL in full.)
func checkQuery(t *testing.T, where, expr string, fams map[string][]string) {
	t.Helper()
	depth := map[rune]int{}
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	for _, r := range expr {
		switch r {
		case '(', '[', '{':
			depth[r]++
		case ')', ']', '}':
			depth[pairs[r]]--
			if depth[pairs[r]] < 0 {
				t.Errorf("%s: unbalanced %q in %s", where, r, expr)
				return
			}
		}
	}
	for r, n := range depth {
		if n != 0 {
			t.Errorf("%s: unclosed %q in %s", where, r, expr)
		}
	}
	used := map[string]bool{}
	found := false
	for _, m := range metricRE.FindAllStringSubmatch(expr, -1) {
		found = true
		labels, ok := fams[m[1]]
		if !ok {
			t.Errorf("%s: metric %s does not exist (query %s)", where, m[1], expr)
			continue
		}
		for _, l := range labels {
			used[l] = true
		}
		for _, lm := range matcherRE.FindAllStringSubmatch(m[2], -1) {
			if !slices.Contains(labels, lm[1]) {
				t.Errorf("%s: %s has no label %q (query %s)", where, m[1], lm[1], expr)
			}
		}
	}
	for _, g := range groupingRE.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" && !used[l] {
				t.Errorf("%s: grouping by %q, which no metric of the query has (query %s)", where, l, expr)
			}
		}
	}
	if !found && !strings.Contains(expr, "up{") {
		t.Errorf("%s: query names no cmk metric: %s", where, expr)
	}
}

func TestPrometheusRules(t *testing.T) {
	fams := families(t)
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "prometheus", "cmk-rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("the rules file does not parse as a Prometheus rule file: %v", err)
	}
	names := map[string]bool{}
	n := 0
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			n++
			where := "rule " + r.Alert
			if r.Alert == "" || names[r.Alert] {
				t.Errorf("%s: alert name empty or repeated", where)
			}
			names[r.Alert] = true
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: needs a severity label and summary and description annotations", where)
			}
			if r.For == "" {
				t.Errorf("%s: no 'for': it would fire on one bad scrape", where)
			}
			checkQuery(t, where, r.Expr, fams)
		}
	}
	if n < 5 {
		t.Errorf("the rules file has %d rules", n)
	}
}

func TestGrafanaDashboard(t *testing.T) {
	fams := families(t)
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "cmk-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("the dashboard lacks a title, uid or panels")
	}
	covered := map[string]bool{}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			checkQuery(t, "panel "+p.Title, q.Expr, fams)
			for _, m := range metricRE.FindAllStringSubmatch(q.Expr, -1) {
				covered[strings.TrimSuffix(m[1], "_bucket")] = true
			}
		}
	}
	// Every metric cmk exports is on the dashboard, so a new one is not
	// forgotten there.
	for name := range fams {
		base := name
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(name, suf); ok && fams[b] != nil || ok && covered[b] {
				base = b
			}
		}
		if !covered[base] && !covered[name] && name != "cmk_dek_cache_loads_total" {
			t.Errorf("metric %s is on no panel of the dashboard", name)
		}
	}
}

// TestCheckQueryCatches makes sure the checks above can fail.
func TestCheckQueryCatches(t *testing.T) {
	fams := families(t)
	for _, bad := range []string{
		`sum(cmk_no_such_metric)`,
		`cmk_orgs_by_key_state{colour="red"}`,
		`sum by (colour) (cmk_orgs_by_key_state)`,
		`sum(rate(cmk_key_checks_total[5m])`,
	} {
		ft := &testing.T{}
		checkQuery(ft, "probe", bad, fams)
		if !ft.Failed() {
			t.Errorf("checkQuery(%q) passed; it should have failed", bad)
		}
	}
}
