package web_test

// Browser tests: a full local cmk (service, Azure emulator, demo org and key)
// driven through the Encryption page in headless Chromium. The scenarios are
// written in internal/web/browsertest/run.mjs with playwright-core; this file
// prepares the world each one needs, runs it, and fails when it fails.
//
// They need Debian's /usr/bin/chromium and playwright-core in
// <repo>/.tools/browsertest/node_modules; scripts/install-chromium.sh
// installs both. Without them the tests skip, loudly, unless CI is set or
// CMK_REQUIRE_SERVERS=1, when they fail.
//
// Screenshots go to $CMK_ARTIFACTS, or <repo>/artifacts/browser when unset.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/alerts"
	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/monitor"
	"github.com/cmk-project/cmk/internal/ratelimit"
)

const (
	chromiumPath = "/usr/bin/chromium"
	// scenarioTimeout bounds one run of the Node script (browser start
	// included); the scenarios take a few seconds each.
	scenarioTimeout = 60 * time.Second
	// enableVaultDelay is added to every call to the demo vault during the
	// enablement scenario.
	enableVaultDelay = 250 * time.Millisecond
)

func requireServers() bool {
	return os.Getenv("CI") != "" || os.Getenv("CMK_REQUIRE_SERVERS") == "1"
}

// browserTools finds node, Chromium and playwright-core, or skips (fails in
// CI) with how to install them.
func browserTools(t *testing.T, root string) (node, playwright string) {
	t.Helper()
	var missing []string
	node, err := exec.LookPath("node")
	if err != nil {
		missing = append(missing, "node (Node.js 20 or newer)")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		missing = append(missing, chromiumPath+" (Debian package chromium)")
	}
	playwright = filepath.Join(root, ".tools", "browsertest", "node_modules", "playwright-core")
	if _, err := os.Stat(filepath.Join(playwright, "package.json")); err != nil {
		local := filepath.Join(root, "internal", "web", "browsertest", "node_modules", "playwright-core")
		if _, err := os.Stat(filepath.Join(local, "package.json")); err == nil {
			playwright = local
		} else {
			missing = append(missing, "playwright-core in "+filepath.Dir(playwright))
		}
	}
	if len(missing) == 0 {
		return node, playwright
	}
	msg := fmt.Sprintf("browser tests need %s; install them with: bash scripts/install-chromium.sh", strings.Join(missing, ", "))
	if requireServers() {
		t.Fatalf("%s (required because CI or CMK_REQUIRE_SERVERS=1 is set)", msg)
	}
	// Also straight to stderr, so the skip shows without -v.
	fmt.Fprintf(os.Stderr, "\n*** %s SKIPPED: %s ***\n\n", t.Name(), msg)
	t.Skip("SKIPPED: " + msg)
	return "", ""
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("cannot find the repository root from %s: %v", root, err)
	}
	return root
}

func artifactDir(t *testing.T, root string) string {
	t.Helper()
	dir := os.Getenv("CMK_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(root, "artifacts", "browser")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("create artifact dir: %v", err)
	}
	return dir
}

type browser struct {
	node, playwright, script, artifacts string
	base                                map[string]string
}

// run runs one scenario of run.mjs with extra environment and fails t when
// the script exits non-zero.
func (b *browser) run(t *testing.T, scenario string, extra map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.node, b.script, scenario)
	cmd.WaitDelay = 5 * time.Second
	env := append(os.Environ(), "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1", "PLAYWRIGHT_BROWSERS_PATH=0")
	for k, v := range b.base {
		env = append(env, k+"="+v)
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	for _, line := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		if line != "" {
			t.Log(line)
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("scenario %s did not finish within %s", scenario, scenarioTimeout)
	}
	if err != nil {
		t.Fatalf("scenario %s failed after %s: %v (screenshots in %s)", scenario, time.Since(start).Round(time.Millisecond), err, b.artifacts)
	}
}

func TestEncryptionPageInBrowser(t *testing.T) {
	root := repoRoot(t)
	node, playwright := browserTools(t, root)
	artifacts := artifactDir(t, root)
	t.Logf("screenshots: %s", artifacts)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env, err := devenv.Start(ctx, devenv.Options{
		DataDir: t.TempDir(),
		// Enough sandboxes, re-wrapped one vault call at a time, that the
		// page can show the job applying the key (see a_full_enablement).
		Sandboxes:   []string{"prod", "dev", "stage", "qa", "test", "demo"},
		Concurrency: 1,
		// The scenarios run many preflights in a row, as no person does.
		RateLimits: ratelimit.Policy{Preflight: ratelimit.Limit{N: 600, Per: time.Minute, Burst: 100}},
		// Fast checks so revocation and recovery show within a second.
		Monitor: monitor.Config{Interval: 300 * time.Millisecond, Grace: 2 * time.Second, WrapEvery: 1},
		AWS:     true,
	})
	if err != nil {
		t.Fatalf("start local cmk: %v", err)
	}
	defer env.Close()

	b := &browser{
		node: node, playwright: playwright, artifacts: artifacts,
		script: filepath.Join(root, "internal", "web", "browsertest", "run.mjs"),
		base: map[string]string{
			"CMK_URL":         env.Svc.URL(),
			"CMK_ORG":         env.Org,
			"CMK_ARTIFACTS":   artifacts,
			"PLAYWRIGHT_CORE": playwright,
			"CHROMIUM":        chromiumPath,
		},
	}

	// The scenarios share one org and run in order: enabling customer-managed
	// keys cannot be undone, so everything that needs a system-managed org
	// comes first.
	t.Run("d_hidden_without_permission", func(t *testing.T) {
		token, err := env.Svc.MintDevToken("u", env.Org, []string{"data_read"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		b.run(t, "no-permission", map[string]string{"CMK_APIKEY": env.APIKey, "CMK_TOKEN": token})
	})

	t.Run("b_failed_preflight", func(t *testing.T) {
		// A 2048-bit key in the demo vault, and a good key in a vault
		// without purge protection: each fails its own check.
		const small, vault, key = "small-key", "cmknopurge", "nopurge-key"
		smallVersion, err := env.Emu.CreateKey(devenv.Vault, small, azemu.KeyOptions{Kty: "RSA", Bits: 2048})
		if err != nil {
			t.Fatal(err)
		}
		if err := env.Emu.CreateVault(azemu.Vault{Name: vault, TenantID: devenv.CustomerTenant, SKU: "standard", SoftDelete: true, PurgeProtection: false, RetentionDays: 90}); err != nil {
			t.Fatal(err)
		}
		version, err := env.Emu.CreateKey(vault, key, azemu.KeyOptions{Kty: "RSA", Bits: 3072})
		if err != nil {
			t.Fatal(err)
		}
		if err := env.Emu.AssignRole(vault, env.PrincipalID, devenv.Role); err != nil {
			t.Fatal(err)
		}
		b.run(t, "failed-preflight", map[string]string{
			"CMK_SMALL_KEY_ID":   env.Emu.VaultURL(devenv.Vault) + "/keys/" + small + "/" + smallVersion,
			"CMK_NOPURGE_KEY_ID": env.Emu.VaultURL(vault) + "/keys/" + key + "/" + version,
		})
	})

	t.Run("e_webhooks", func(t *testing.T) {
		var mu sync.Mutex
		type got struct {
			body []byte
			sig  string
		}
		var hits []got
		recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			mu.Lock()
			hits = append(hits, got{body, r.Header.Get(alerts.HeaderSignature)})
			mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		}))
		defer recv.Close()
		secretFile := filepath.Join(t.TempDir(), "secret")
		b.run(t, "webhooks", map[string]string{"CMK_HOOK_URL": recv.URL + "/hook", "CMK_SECRET_OUT": secretFile})
		secret, err := os.ReadFile(secretFile)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(hits) != 1 {
			t.Fatalf("receiver got %d requests, want the one test event", len(hits))
		}
		if err := alerts.Verify(string(secret), hits[0].sig, hits[0].body, time.Now(), 5*time.Minute); err != nil {
			t.Errorf("the test event does not verify with the secret the page showed: %v", err)
		}
		var ev cmkapi.Event
		if err := json.Unmarshal(hits[0].body, &ev); err != nil || ev.Type != cmkapi.EventWebhookTest || ev.OrgID != env.Org {
			t.Errorf("receiver got %s (%v), want a webhook.test event of %s", hits[0].body, err, env.Org)
		}
	})

	t.Run("f_aws_enablement", func(t *testing.T) {
		b.run(t, "aws-enable", map[string]string{"CMK_APIKEY": env.APIKey, "CMK_AWS_ORG": env.AWS.Org, "CMK_AWS_TOKEN": env.AWS.Token, "CMK_AWS_KEY_ARN": env.AWS.KeyARN})
	})

	enabled := t.Run("a_full_enablement", func(t *testing.T) {
		// Slow the demo vault down so that re-wrapping takes a few seconds
		// and the page's progress bar is seen moving.
		env.Emu.SetVaultFault(devenv.Vault, 0, enableVaultDelay)
		defer env.Emu.SetVaultFault(devenv.Vault, 0, 0)
		b.run(t, "enable", map[string]string{"CMK_KEY_ID": env.KeyIdentifier, "CMK_KEY_NAME": devenv.KeyName})
	})
	if !enabled {
		t.Fatal("skipping the alert scenario: it needs the org enabled by a_full_enablement")
	}

	t.Run("c_alert_on_disabled_key", func(t *testing.T) {
		no, yes := false, true
		if err := env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &no}); err != nil {
			t.Fatal(err)
		}
		b.run(t, "key-disabled", nil)
		if err := env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &yes}); err != nil {
			t.Fatal(err)
		}
		b.run(t, "key-restored", map[string]string{"CMK_KEY_NAME": devenv.KeyName})
	})

	t.Run("f_history", func(t *testing.T) {
		// A revocation during which the lake and the profile store refuse
		// reads, then the restore and reads served again.
		token, err := env.Svc.MintDevToken("reader", env.Org, nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		read := func(path string) int {
			req, _ := http.NewRequest("GET", env.Svc.URL()+path, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("x-api-key", env.APIKey)
			req.Header.Set("x-gw-ims-org-id", env.Org)
			req.Header.Set("x-sandbox-name", "prod")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			return res.StatusCode
		}
		gate := func(blocked bool) {
			deadline := time.Now().Add(15 * time.Second)
			for (env.Svc.Gate.Allow(env.Org) != nil) != blocked {
				if time.Now().After(deadline) {
					t.Fatalf("the org's data is not %s within 15s", map[bool]string{true: "refused", false: "served"}[blocked])
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		paths := []string{"/data/lake/datasets/ds/files/f1", "/data/profiles/p1"}
		no, yes := false, true
		if err := env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &no}); err != nil {
			t.Fatal(err)
		}
		gate(true)
		for _, p := range paths {
			if code := read(p); code != http.StatusForbidden {
				t.Fatalf("GET %s while revoked = %d, want 403", p, code)
			}
		}
		if err := env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &yes}); err != nil {
			t.Fatal(err)
		}
		gate(false)
		for _, p := range paths {
			if code := read(p); code == http.StatusForbidden {
				t.Fatalf("GET %s after the restore = 403, want it served", p)
			}
		}
		if err := env.Svc.FlushHistory(context.Background()); err != nil {
			t.Fatal(err)
		}
		b.run(t, "history", nil)
	})

	t.Run("g_flapping_then_disabled", func(t *testing.T) {
		// The key is disabled and enabled twice (flapping), then disabled
		// again: the page must name the blocking cause, not only the
		// flapping notification.
		setKey := func(on bool, want string) {
			t.Helper()
			if err := env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &on}); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(15 * time.Second)
			for {
				h, err := env.Svc.Store.Health(context.Background(), env.Org)
				if err == nil && h.State == want {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("health did not reach %s (last %v, %v)", want, h, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		for range 2 {
			setKey(false, "REVOKED")
			setKey(true, "HEALTHY")
		}
		setKey(false, "REVOKED")
		b.run(t, "flapping-then-disabled", nil)
		setKey(true, "HEALTHY")
	})
}
