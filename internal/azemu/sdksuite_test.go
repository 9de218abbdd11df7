package azemu

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// The Azure SDK for Go's own azkeys tests, run live against the emulator:
// the module's test files are copied from the module cache into a temporary
// directory (nothing of the SDK is kept in this repository), a harness file
// of ours is added, the tests are built there (`go test -c`; their
// dependencies come from the Go module proxy) and run as `go test -json`
// would (go tool test2json) with the environment the SDK's live mode reads. Every request of the SDK goes through a CONNECT
// proxy served by this test, which lets through only the emulator's host
// names (login.microsoftonline.com, vault and Managed HSM hosts) and sends
// them to the emulator's listener; anything else is refused, so the suite can
// never reach real Azure.
//
// Run it alone with
//
//	go test -count=1 -run TestAzkeysLiveSuite -v ./internal/azemu/
//
// CMK_AZKEYS_KEY_STATE_DELAY (a Go duration, default 0) sets
// Options.KeyStateDelay for the run, so the SDK's tests meet deletes and
// recovers that settle later, as in Azure. Their poll loops sleep ten
// seconds per retry, so a delay adds about ten seconds per delete.

const azkeysModule = "github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

// azkeysAttestationTests need an attestation service (Microsoft Azure
// Attestation) the emulator does not provide: TestReleaseKey creates an
// exportable key with a release policy naming an attestation authority,
// fetches a token from that authority's /generate-test-token and asks Key
// Vault to release the key against it. The emulator stores release
// policies but cannot evaluate attestation tokens, and the proxy refuses the
// attestation host.
var azkeysAttestationTests = map[string]bool{
	"TestReleaseKey": true, "TestReleaseKey/KV": true, "TestReleaseKey/MHSM": true,
}

// harnessFile is added to the copied package. The test binary runs with
// HTTPS_PROXY set to the emulator's proxy and SSL_CERT_FILE to the
// emulator's CA, which every HTTP client of the binary honours: the SDK's
// recording transport (a clone of http.DefaultTransport) and azcore's
// default client, used by azidentity. The harness's init checks that both
// point where they should and pins http.DefaultTransport to the proxy, so
// the suite refuses to run rather than reach real Azure.
const harnessFile = `package azkeys_test

import (
	"net/http"
	"net/url"
	"os"
)

func init() {
	proxy, ca := os.Getenv("CMK_AZEMU_PROXY"), os.Getenv("CMK_AZEMU_CA_FILE")
	if proxy == "" || ca == "" || os.Getenv("HTTPS_PROXY") != proxy || os.Getenv("SSL_CERT_FILE") != ca || os.Getenv("NO_PROXY") != "" {
		panic("cmk harness: HTTPS_PROXY and SSL_CERT_FILE must name the emulator's proxy and CA; refusing to run against real Azure")
	}
	u, err := url.Parse(proxy)
	if err != nil {
		panic(err)
	}
	http.DefaultTransport.(*http.Transport).Proxy = http.ProxyURL(u)
}
`

func TestAzkeysLiveSuite(t *testing.T) {
	if testing.Short() {
		t.Skip("the azkeys live suite takes about a minute; skipped with -short")
	}
	required := os.Getenv("CMK_REQUIRE_SERVERS") == "1"
	cannot := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if required {
			t.Fatalf("azkeys live suite cannot run (required because CMK_REQUIRE_SERVERS=1): %s", msg)
		}
		t.Skipf("SKIPPED LOUDLY: azkeys live suite cannot run: %s (set CMK_REQUIRE_SERVERS=1 to make this a failure)", msg)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		cannot("no go command on PATH: %v", err)
	}
	delay := time.Duration(0)
	if s := os.Getenv("CMK_AZKEYS_KEY_STATE_DELAY"); s != "" {
		if delay, err = time.ParseDuration(s); err != nil || delay < 0 || delay > time.Minute {
			t.Fatalf("CMK_AZKEYS_KEY_STATE_DELAY=%q: want a Go duration between 0 and 1m, e.g. 2s", s)
		}
	}

	src, err := azkeysModuleDir(goBin)
	if err != nil {
		cannot("locate %s: %v", azkeysModule, err)
	}
	work := filepath.Join(t.TempDir(), "azkeys")
	if err := copyTree(src, work); err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
	if err := os.WriteFile(filepath.Join(work, "zz_cmk_emulator_harness_test.go"), []byte(harnessFile), 0o644); err != nil {
		t.Fatal(err)
	}

	e, err := Start(Options{KeyStateDelay: delay})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	const (
		tenant   = "44444444-4444-4444-8444-444444444444"
		clientID = "55555555-5555-4555-8555-555555555555"
		secret   = "azkeys-suite-secret"
	)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.CreateTenant(tenant))
	must(e.RegisterApp(App{HomeTenant: tenant, ClientID: clientID, ClientSecret: secret, Name: "azkeys suite"}))
	oid, ok := e.ServicePrincipal(tenant, clientID)
	if !ok {
		t.Fatal("no service principal for the suite's app")
	}
	must(e.CreateVault(Vault{Name: "azkeyssuite", TenantID: tenant, SKU: "premium", SoftDelete: true}))
	must(e.AssignRole("azkeyssuite", oid, RoleCryptoOfficer))
	must(e.CreateManagedHSM(ManagedHSM{Name: "azkeyssuitehsm", TenantID: tenant}))
	must(e.AssignHSMRole("azkeyssuitehsm", oid, RoleHSMCryptoUser, "/"))
	must(e.AssignHSMRole("azkeyssuitehsm", oid, RoleHSMCryptoOfficer, "/"))

	caFile := filepath.Join(t.TempDir(), "azemu-ca.pem")
	must(os.WriteFile(caFile, e.CAPEM(), 0o644))
	proxy := startEmulatorProxy(t, e)

	// Build first, with this process's environment (the go command may
	// need the module proxy for the SDK's test dependencies), then run the
	// binary with the emulator's proxy and CA.
	start := time.Now()
	bin := filepath.Join(t.TempDir(), "azkeys.test")
	build := exec.Command(goBin, "test", "-c", "-o", bin, ".")
	build.Dir = work
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	if out, err := build.CombinedOutput(); err != nil {
		cannot("build the SDK's tests (their dependencies come from the Go module proxy): %v\n%s", err, tail(string(out), 30))
	}
	built := time.Since(start).Round(time.Second)

	env := []string{"AZURE_RECORD_MODE=live",
		"HTTPS_PROXY=" + proxy, "HTTP_PROXY=" + proxy, "NO_PROXY=", "SSL_CERT_FILE=" + caFile, "SSL_CERT_DIR=",
		"AZURE_KEYVAULT_URL=" + e.VaultURL("azkeyssuite") + "/",
		"AZURE_MANAGEDHSM_URL=" + e.HSMURL("azkeyssuitehsm") + "/",
		"AZURE_SERVICE_DIRECTORY=CMKEMU", "CMKEMU_TENANT_ID=" + tenant, "CMKEMU_CLIENT_ID=" + clientID,
		"CMKEMU_CLIENT_SECRET=" + secret, "AZURE_AUTHORITY_HOST=" + e.AuthorityHost(),
		"CMK_AZEMU_PROXY=" + proxy, "CMK_AZEMU_CA_FILE=" + caFile}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "AZURE"), strings.HasPrefix(k, "SYSTEM_ACCESSTOKEN"),
			strings.EqualFold(k, "HTTPS_PROXY"), strings.EqualFold(k, "HTTP_PROXY"), strings.EqualFold(k, "NO_PROXY"),
			strings.EqualFold(k, "ALL_PROXY"), k == "SSL_CERT_FILE", k == "SSL_CERT_DIR":
			continue
		}
		env = append(env, kv)
	}

	cmd := exec.Command(goBin, "tool", "test2json", "-t", bin, "-test.v=test2json", "-test.count=1", "-test.timeout=8m")
	cmd.Dir, cmd.Env = work, env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	must(err)
	if err := cmd.Start(); err != nil {
		cannot("start go test: %v", err)
	}
	res := parseTestEvents(stdout)
	waitErr := cmd.Wait()
	elapsed := time.Since(start).Round(time.Second)

	if res.passed == 0 && len(res.failed) == 0 {
		// Nothing ran: typically the SDK's test dependencies could not be
		// fetched from the module proxy.
		cannot("the SDK's tests did not run (%v):\n%s\n%s", waitErr, tail(stderr.String(), 40), tail(res.output.String(), 40))
	}
	var unexpected, attestation []string
	for _, name := range res.failed {
		if azkeysAttestationTests[name] {
			attestation = append(attestation, name)
			if !strings.Contains(res.logs[name], "generate-test-token") && !strings.Contains(res.logs[name], "Release") {
				t.Errorf("%s failed before reaching the attestation service:\n%s", name, tail(res.logs[name], 30))
			}
			continue
		}
		unexpected = append(unexpected, name)
	}
	t.Logf("azkeys %s live suite: %d passed, %d skipped by the SDK itself, %d failed as expected (attestation: %s), %d failed unexpectedly; %s in all, %s of it building (key state delay %s)",
		src[strings.LastIndex(src, "@")+1:], res.passed, len(res.skipped), len(attestation), strings.Join(attestation, ", "), len(unexpected), elapsed, built, delay)
	if len(res.skipped) > 0 {
		t.Logf("skipped by the SDK: %s", strings.Join(res.skipped, ", "))
	}
	if len(unexpected) > 0 {
		for _, name := range unexpected {
			t.Errorf("%s failed:\n%s", name, tail(res.logs[name], 30))
		}
	}
	if len(attestation) == 0 && waitErr != nil && len(unexpected) == 0 {
		t.Errorf("go test failed without a failing test: %v\n%s", waitErr, tail(stderr.String(), 40))
	}
}

// azkeysModuleDir finds the azkeys module of this repository's go.mod in
// the module cache, downloading it when it is not there yet.
func azkeysModuleDir(goBin string) (string, error) {
	var m struct{ Dir, Version string }
	out, err := exec.Command(goBin, "list", "-m", "-json", azkeysModule).Output()
	if err != nil {
		return "", fmt.Errorf("go list -m %s: %w", azkeysModule, err)
	}
	if err := json.Unmarshal(out, &m); err != nil {
		return "", err
	}
	if m.Dir == "" {
		out, err := exec.Command(goBin, "mod", "download", "-json", azkeysModule+"@"+m.Version).Output()
		if err != nil {
			return "", fmt.Errorf("go mod download %s@%s: %w", azkeysModule, m.Version, err)
		}
		if err := json.Unmarshal(out, &m); err != nil {
			return "", err
		}
	}
	if _, err := os.Stat(filepath.Join(m.Dir, "client_test.go")); err != nil {
		return "", fmt.Errorf("%s has no client_test.go: %w", m.Dir, err)
	}
	return m.Dir, nil
}

// copyTree copies regular files (the module cache's are read-only) into a
// writable tree.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}

type suiteResult struct {
	passed  int
	skipped []string
	failed  []string
	logs    map[string]string
	output  strings.Builder
}

// parseTestEvents reads `go test -json` events (test2json) and counts the
// leaf tests: a parent counts only when it has no subtests.
func parseTestEvents(r io.Reader) *suiteResult {
	res := &suiteResult{logs: map[string]string{}}
	type state struct {
		action string
		log    strings.Builder
	}
	tests := map[string]*state{}
	parents := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev struct {
			Action, Test, Output string
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			res.output.WriteString(sc.Text() + "\n")
			continue
		}
		if ev.Test == "" {
			res.output.WriteString(ev.Output)
			continue
		}
		st := tests[ev.Test]
		if st == nil {
			st = &state{}
			tests[ev.Test] = st
		}
		if i := strings.LastIndex(ev.Test, "/"); i > 0 {
			parents[ev.Test[:i]] = true
		}
		switch ev.Action {
		case "output":
			st.log.WriteString(ev.Output)
		case "pass", "fail", "skip":
			st.action = ev.Action
		}
	}
	names := make([]string, 0, len(tests))
	for n := range tests {
		names = append(names, n)
	}
	sort.Strings(names)
	childFailed := map[string]bool{}
	for _, n := range names {
		if tests[n].action != "pass" && tests[n].action != "skip" {
			for p := n; strings.Contains(p, "/"); {
				p = p[:strings.LastIndex(p, "/")]
				childFailed[p] = true
			}
		}
	}
	for _, n := range names {
		st := tests[n]
		res.logs[n] = st.log.String()
		// A parent counts only when it failed by itself: a failing
		// subtest is reported as such, and a passing parent is the sum
		// of its subtests.
		if parents[n] && (st.action != "fail" || childFailed[n]) {
			continue
		}
		switch st.action {
		case "pass":
			res.passed++
		case "skip":
			res.skipped = append(res.skipped, n)
		case "fail":
			res.failed = append(res.failed, n)
		default:
			res.failed = append(res.failed, n+" (did not finish)")
		}
	}
	return res
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// startEmulatorProxy serves an HTTP CONNECT proxy on loopback that tunnels
// connections for the emulator's host names to its listener and refuses
// every other host. It returns the proxy URL.
func startEmulatorProxy(t *testing.T, e *Emulator) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	allowed := func(host string) bool {
		host = strings.ToLower(strings.TrimSuffix(host, "."))
		if host == "login.microsoftonline.com" {
			return true
		}
		_, vault := vaultFromHost(host, e.VaultSuffix())
		_, hsm := vaultFromHost(host, e.HSMSuffix())
		return vault || hsm
	}
	var wg sync.WaitGroup
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, port, err := net.SplitHostPort(r.Host)
		if r.Method != http.MethodConnect || err != nil || port != "443" || !allowed(host) {
			http.Error(w, "the emulator proxy tunnels only to the emulator's own host names on port 443", http.StatusForbidden)
			return
		}
		up, err := net.DialTimeout("tcp", e.host, 10*time.Second)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			up.Close()
			http.Error(w, "no hijacking", http.StatusInternalServerError)
			return
		}
		down, buf, err := hj.Hijack()
		if err != nil {
			up.Close()
			return
		}
		_, _ = down.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
		deadline := time.Now().Add(10 * time.Minute) // bounds every tunnel
		_ = up.SetDeadline(deadline)
		_ = down.SetDeadline(deadline)
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, _ = io.Copy(up, buf)
			_ = up.(*net.TCPConn).CloseWrite()
		}()
		go func() {
			defer wg.Done()
			_, _ = io.Copy(down, up)
			_ = down.Close()
			_ = up.Close()
		}()
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		wg.Wait()
	})
	return "http://" + ln.Addr().String()
}

func TestParseTestEvents(t *testing.T) {
	events := strings.Join([]string{
		`{"Action":"run","Test":"TestA"}`,
		`{"Action":"run","Test":"TestA/x"}`,
		`{"Action":"output","Test":"TestA/x","Output":"boom\n"}`,
		`{"Action":"fail","Test":"TestA/x"}`,
		`{"Action":"run","Test":"TestA/y"}`,
		`{"Action":"pass","Test":"TestA/y"}`,
		`{"Action":"fail","Test":"TestA"}`,
		`{"Action":"run","Test":"TestB"}`,
		`{"Action":"run","Test":"TestB/z"}`,
		`{"Action":"skip","Test":"TestB/z"}`,
		`{"Action":"pass","Test":"TestB"}`,
		`{"Action":"run","Test":"TestC"}`,
		`{"Action":"run","Test":"TestC/w"}`,
		`{"Action":"pass","Test":"TestC/w"}`,
		`{"Action":"fail","Test":"TestC"}`,
		`{"Action":"run","Test":"TestD"}`,
		`{"Action":"pass","Test":"TestE"}`,
		`not json`,
	}, "\n")
	res := parseTestEvents(strings.NewReader(events))
	if res.passed != 3 {
		t.Errorf("passed = %d, want 3 (TestA/y, TestC/w, TestE)", res.passed)
	}
	if got, want := strings.Join(res.skipped, ","), "TestB/z"; got != want {
		t.Errorf("skipped = %s, want %s", got, want)
	}
	if got, want := strings.Join(res.failed, ","), "TestA/x,TestC,TestD (did not finish)"; got != want {
		t.Errorf("failed = %s, want %s", got, want)
	}
	if !strings.Contains(res.logs["TestA/x"], "boom") {
		t.Errorf("log of TestA/x = %q, want its output", res.logs["TestA/x"])
	}
}
