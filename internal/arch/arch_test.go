package arch

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/cmk-project/cmk/"

// layers orders every package of the module, lowest first. A package may
// import only packages of lower layers; two packages of one layer never
// import each other. docs/architecture.md explains each layer.
var layers = [][]string{
	// Contracts, formats and primitives: they import nothing of cmk but kms.
	{"internal/cmkapi", "internal/kms", "internal/envelope", "internal/systemkey", "internal/metrics", "internal/auth",
		"internal/lake/blob", "internal/web", "internal/azemu", "internal/awsemu", "internal/testsvc", "internal/cluster", "internal/consent", "internal/privfile", "internal/config", "internal/outage"},
	// Values and small mechanisms built on those.
	{"internal/keyid", "internal/dekcache", "internal/keyhealth", "internal/guidance", "internal/ratelimit", "internal/usage",
		"internal/profile/records", "internal/lake/blob/blobtest"},
	// The key provider and the validation checks.
	{"internal/preflight", "internal/kms/azurekv", "internal/kms/awskms", "internal/profile/records/recordstest"},
	// Durable state.
	{"internal/store"},
	// Key operations recorded, data keys made and wrapped.
	{"internal/audit"},
	{"internal/keyring"},
	// The data path's key resolver; alerts; the platform key.
	{"internal/orgkeys", "internal/alerts", "internal/platformkey"},
	// The stores of data, the enablement job, the monitor.
	{"internal/lake", "internal/profile", "internal/enablement", "internal/monitor"},
	// The control plane's operations.
	{"internal/control"},
	// HTTP.
	{"internal/api"},
	// The composition root.
	{"internal/service"},
	// What runs a service: the serve command, the local development world.
	{"internal/servecmd", "internal/devenv"},
	// Measurements and end-to-end tests.
	{"internal/bench", "internal/e2e", "internal/arch"},
	// Binaries.
	{"cmd/cmk", "cmd/cmkd"},
}

// devOnly are development tools: the emulator, the test servers, the local
// world and the benchmarks. Only these may import them, and the production
// server (cmd/cmkd) must not link them (cmd/cmkd's own test checks its
// whole dependency list).
var devOnly = map[string]bool{"internal/azemu": true, "internal/awsemu": true, "internal/testsvc": true, "internal/cluster": true, "internal/devenv": true, "internal/bench": true}
var devUsers = map[string]bool{"cmd/cmk": true, "internal/devenv": true, "internal/bench": true, "internal/e2e": true}

// noHTTP are packages that hold product rules and must not speak HTTP.
var noHTTP = []string{"internal/control", "internal/enablement", "internal/monitor", "internal/store", "internal/keyhealth", "internal/orgkeys"}

type pkg struct {
	path    string
	imports []string // of the module, without the module prefix
	std     []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}|{{join .Imports \" \"}}", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkg
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, imps, _ := strings.Cut(line, "|")
		p := pkg{path: strings.TrimPrefix(path, module)}
		for _, imp := range strings.Fields(imps) {
			if rest, ok := strings.CutPrefix(imp, module); ok {
				p.imports = append(p.imports, rest)
			} else {
				p.std = append(p.std, imp)
			}
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 20 {
		t.Fatalf("go list found %d packages; expected the whole module", len(pkgs))
	}
	return pkgs
}

func layerOf(t *testing.T) map[string]int {
	m := map[string]int{}
	for i, l := range layers {
		for _, p := range l {
			if j, dup := m[p]; dup {
				t.Errorf("layers lists %s twice (layers %d and %d)", p, j, i)
			}
			m[p] = i
		}
	}
	return m
}

func TestImportsGoDown(t *testing.T) {
	layer := layerOf(t)
	seen := map[string]bool{}
	for _, p := range listPackages(t) {
		seen[p.path] = true
		lp, ok := layer[p.path]
		if !ok {
			t.Errorf("package %s has no layer: add it to layers in internal/arch and to docs/architecture.md", p.path)
			continue
		}
		for _, imp := range p.imports {
			li, ok := layer[imp]
			if ok && li >= lp {
				t.Errorf("%s (layer %d) imports %s (layer %d): imports must go to lower layers", p.path, lp, imp, li)
			}
		}
	}
	for p := range layer {
		if !seen[p] {
			t.Errorf("layers lists %s, which is not a package of the module", p)
		}
	}
}

func TestDevelopmentToolsStayOut(t *testing.T) {
	for _, p := range listPackages(t) {
		for _, imp := range p.imports {
			if devOnly[imp] && !devUsers[p.path] {
				t.Errorf("%s imports the development tool %s; only %v may", p.path, imp, keys(devUsers))
			}
		}
	}
}

func TestRulesSpeakNoHTTP(t *testing.T) {
	rules := map[string]bool{}
	for _, p := range noHTTP {
		rules[p] = true
	}
	for _, p := range listPackages(t) {
		if !rules[p.path] {
			continue
		}
		for _, imp := range p.std {
			if imp == "net/http" || strings.HasPrefix(imp, "net/http/") {
				t.Errorf("%s imports %s: product rules are HTTP-free; the api package does HTTP", p.path, imp)
			}
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
