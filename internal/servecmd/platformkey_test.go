package servecmd

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/platformkey"
	"github.com/cmk-project/cmk/internal/service"
)

// TestPlatformKeyCommands runs status, migrate and rotate as an operator
// would, against the Azure emulator's platform vault and a data directory
// a key-file service left behind.
func TestPlatformKeyCommands(t *testing.T) {
	const (
		tenant = "11111111-1111-4111-8111-111111111111"
		client = "33333333-3333-4333-8333-333333333333"
		secret = "platform-app-secret"
	)
	ctx := context.Background()
	emu, err := azemu.Start(azemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(emu.CreateTenant(tenant))
	must(emu.RegisterApp(azemu.App{HomeTenant: tenant, ClientID: client, ClientSecret: secret, Name: "cmk", RedirectURI: "https://cmk.localhost/app"}))
	principal, err := emu.GrantConsent(tenant, client)
	must(err)
	must(emu.CreateVault(azemu.Vault{Name: "cmkplatform", TenantID: tenant, SoftDelete: true, PurgeProtection: true, RetentionDays: 90}))
	_, err = emu.CreateKey("cmkplatform", "system", azemu.KeyOptions{Kty: "RSA", Bits: 3072})
	must(err)
	must(emu.AssignRole("cmkplatform", principal, "Key Vault Crypto Service Encryption User"))
	key := emu.VaultURL("cmkplatform") + "/keys/system"
	useEmu := func(_ *cobra.Command, cfg *service.Config) error {
		cfg.TenantID, cfg.ClientID, cfg.ClientSecret = tenant, client, secret
		cfg.AuthorityHost, cfg.HTTPClient, cfg.DisableInstanceDiscovery = emu.AuthorityHost(), emu.HTTPClient(), true
		cfg.ExtraVaultSuffixes = []string{emu.VaultSuffix()}
		return nil
	}

	// A key-file installation with one org's data keys.
	dir := t.TempDir()
	svc, err := service.New(ctx, service.Config{DataDir: dir, DevTokenIssuer: true, Workers: -1, NoMonitor: true, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	must(err)
	must(svc.Control.EnsureOrg(ctx, "ORG0000000000000000@CmkOrg"))
	counts, err := svc.Store.CountSystemKeys(ctx)
	must(err)
	fileGen := svc.PlatformKey.Current().ID()
	dataKeys := counts[fileGen]
	svc.Close()
	if dataKeys == 0 {
		t.Fatal("the org has no data keys")
	}

	run := func(args ...string) (string, error) {
		t.Helper()
		cmd := PlatformKeyCommand("cmkd", func(path string, run RunFunc) *cobra.Command { return NewWith(path, run, useEmu) })
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(io.Discard)
		cmd.SetArgs(append(args, "--data-dir", dir))
		err := cmd.ExecuteContext(ctx)
		return out.String(), err
	}
	out, err := run("status")
	must(err)
	if !strings.Contains(out, "system key file:") || !strings.Contains(out, fileGen) {
		t.Fatalf("status of a key-file installation:\n%s", out)
	}
	if _, err := run("rotate"); !strings.Contains(HintOf(err), "--platform-key") {
		t.Fatalf("rotate without a platform key = %v (hint %q)", err, HintOf(err))
	}
	if _, err := run("status", "--platform-key", key); !strings.Contains(HintOf(err), "migrate --from-file") {
		t.Fatalf("status with a platform key before the migration = %v (hint %q)", err, HintOf(err))
	}

	out, err = run("migrate", "--from-file", filepath.Join(dir, "system.key"), "--platform-key", key)
	must(err)
	if !strings.Contains(out, fileGen+" (root)") {
		t.Fatalf("migrate said:\n%s", out)
	}
	st := status(t, run, key)
	if len(st.Generations) != 2 || st.Generations[0].ID != fileGen || !st.Generations[0].Root || !st.Generations[1].Current || st.Pending != dataKeys {
		t.Fatalf("status after migrate = %+v, want the file's generation as root, a new current and %d data keys to re-wrap", st, dataKeys)
	}

	out, err = run("rotate", "--platform-key", key)
	must(err)
	if !strings.Contains(out, "is current") {
		t.Fatalf("rotate said:\n%s", out)
	}
	if st := status(t, run, key); len(st.Generations) != 3 || !st.Generations[2].Current || st.Pending != dataKeys {
		t.Fatalf("status after rotate = %+v", st)
	}
}

func status(t *testing.T, run func(...string) (string, error), key string) platformkey.Status {
	t.Helper()
	out, err := run("status", "--json", "--platform-key", key)
	if err != nil {
		t.Fatal(err)
	}
	var st platformkey.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, out)
	}
	return st
}
