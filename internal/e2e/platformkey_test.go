package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/control"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/platformkey"
	"github.com/cmk-project/cmk/internal/service"
	"github.com/cmk-project/cmk/internal/testsvc"
)

// platformWorld is the Azure emulator with the platform's own vault and key
// (in the platform's home tenant, the app granted the crypto role on it),
// and service configurations over one data directory.
type platformWorld struct {
	t      *testing.T
	ctx    context.Context
	emu    *azemu.Emulator
	dir    string
	secret string
	key    string // the platform key, without version
}

const platformVault = "cmkplatform"

func newPlatformWorld(t *testing.T) *platformWorld {
	t.Helper()
	emu, err := azemu.Start(azemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	w := &platformWorld{t: t, ctx: context.Background(), emu: emu, dir: t.TempDir(), secret: "platform-app-secret"}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(emu.CreateTenant(devenv.HomeTenant))
	must(emu.RegisterApp(azemu.App{HomeTenant: devenv.HomeTenant, ClientID: devenv.ClientID, ClientSecret: w.secret, Name: devenv.AppName, RedirectURI: devenv.AppURI}))
	principal, err := emu.GrantConsent(devenv.HomeTenant, devenv.ClientID)
	must(err)
	must(emu.CreateVault(azemu.Vault{Name: platformVault, TenantID: devenv.HomeTenant, SKU: "premium", SoftDelete: true, PurgeProtection: true, RetentionDays: 90}))
	_, err = emu.CreateKey(platformVault, "system", azemu.KeyOptions{Kty: "RSA", Bits: 3072})
	must(err)
	must(emu.AssignRole(platformVault, principal, devenv.Role))
	w.key = emu.VaultURL(platformVault) + "/keys/system"
	return w
}

func (w *platformWorld) config(platformKey string) service.Config {
	return service.Config{
		Addr: "127.0.0.1:0", DataDir: w.dir, AppName: devenv.AppName, AppURI: devenv.AppURI,
		TenantID: devenv.HomeTenant, ClientID: devenv.ClientID, ClientSecret: w.secret,
		AuthorityHost: w.emu.AuthorityHost(), HTTPClient: w.emu.HTTPClient(), DisableInstanceDiscovery: true,
		ExtraVaultSuffixes: []string{w.emu.VaultSuffix()}, DevTokenIssuer: true, Workers: -1, NoMonitor: true,
		Log:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		PlatformKey: platformKey, PlatformKeyEvery: 50 * time.Millisecond,
	}
}

func (w *platformWorld) start(platformKey string) *service.Service {
	w.t.Helper()
	svc, err := service.New(w.ctx, w.config(platformKey))
	if err != nil {
		w.t.Fatalf("start the service (platform key %q): %v", platformKey, err)
	}
	if err := svc.Start(w.ctx); err != nil {
		svc.Close()
		w.t.Fatal(err)
	}
	return svc
}

// write stores n profile records for org (system-managed) and returns them.
func (w *platformWorld) write(svc *service.Service, org string, n int) map[string]string {
	w.t.Helper()
	if err := svc.Control.EnsureOrg(w.ctx, org); err != nil {
		w.t.Fatal(err)
	}
	out := map[string]string{}
	for i := range n {
		id, doc := fmt.Sprintf("rec-%d", i), fmt.Sprintf(`{"org":%q,"n":%d}`, org, i)
		if err := svc.Profiles.Upsert(w.ctx, org, control.DefaultSandboxes[0], id, []byte(doc)); err != nil {
			w.t.Fatalf("write %s/%s: %v", org, id, err)
		}
		out[org+"/"+id] = doc
	}
	return out
}

// readAll reads every record back, as a fresh replica would (no cache).
func (w *platformWorld) readAll(svc *service.Service, data map[string]string) {
	w.t.Helper()
	svc.Cache.Sweep()
	for key, want := range data {
		var org, id string
		for i := len(key) - 1; i >= 0; i-- {
			if key[i] == '/' {
				org, id = key[:i], key[i+1:]
				break
			}
		}
		got, err := svc.Profiles.Get(w.ctx, org, control.DefaultSandboxes[0], id)
		if err != nil || string(got) != want {
			w.t.Fatalf("read %s = %q, %v; want %q", key, got, err, want)
		}
	}
}

// rewrapped waits until every system-managed data key is under the
// current generation, and returns the status.
func (w *platformWorld) rewrapped(svc *service.Service) platformkey.Status {
	w.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := svc.PlatformKey.Status(w.ctx, svc.Store)
		if err != nil {
			w.t.Fatal(err)
		}
		if st.Pending == 0 && len(st.Unknown) == 0 {
			return st
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("the re-wrap did not finish: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (w *platformWorld) tool() *service.PlatformKeyTool {
	w.t.Helper()
	t, err := service.OpenPlatformKeyTool(w.ctx, w.config(w.key))
	if err != nil {
		w.t.Fatal(err)
	}
	return t
}

// TestPlatformKeyInKeyVault moves a key-file installation to a platform key
// in the (emulated) platform vault, rotates it while the service runs, gives
// the Key Vault key a new version, and restarts: every system-managed
// record reads back at every step, the re-wrap finishes each time, and no
// org can name a key of the platform vault as its own.
func TestPlatformKeyInKeyVault(t *testing.T) {
	w := newPlatformWorld(t)

	// A key-file installation with data.
	svc := w.start("")
	data := w.write(svc, "FILEORG0000000000000@CmkOrg", 5)
	fileKey := svc.PlatformKey.Current().ID()
	svc.Close()

	// Starting with the platform key refuses until the file is imported.
	if _, err := service.New(w.ctx, w.config(w.key)); !errors.Is(err, service.ErrNeedsMigration) {
		t.Fatalf("start with a platform key over file-wrapped data = %v, want ErrNeedsMigration", err)
	}
	tool := w.tool()
	ring, err := tool.Migrate(w.ctx, filepath.Join(w.dir, "system.key"))
	tool.Close()
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if ring.Root().ID() != fileKey || ring.Current().ID() == fileKey {
		t.Fatalf("after migrate: root %s current %s; want root %s and a new current", ring.Root().ID(), ring.Current().ID(), fileKey)
	}
	// From now on the key file alone is refused.
	if _, err := service.New(w.ctx, w.config("")); !errors.Is(err, service.ErrPlatformKeyRequired) {
		t.Fatalf("start with the key file after the migration = %v, want ErrPlatformKeyRequired", err)
	}

	svc = w.start(w.key)
	w.readAll(svc, data)
	st := w.rewrapped(svc)
	if len(st.Generations) != 2 || st.Generations[0].ID != fileKey || st.Generations[0].Retired.IsZero() || st.Generations[0].KMSKey != w.key {
		t.Fatalf("status after the migration's re-wrap = %+v", st)
	}
	w.readAll(svc, data)
	for k, v := range w.write(svc, "KMSORG00000000000000@CmkOrg", 5) {
		data[k] = v
	}
	if rd := svc.Readiness(w.ctx); rd.Status != "ready" {
		t.Fatalf("readiness = %+v", rd)
	}

	// Rotate from another process while the service runs.
	tool = w.tool()
	r2, err := tool.Ring(w.ctx)
	if err != nil {
		t.Fatal(err)
	}
	g, err := r2.Rotate(w.ctx)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for svc.PlatformKey.Current().ID() != g.ID {
		if time.Now().After(deadline) {
			t.Fatal("the service did not take the new generation")
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.rewrapped(svc)
	// Every data key of both orgs is under the new generation now.
	if counts := w.counts(svc); len(counts) != 1 || counts[g.ID] == 0 {
		t.Fatalf("data keys per generation after the rotation: %v, want all under %s", counts, g.ID)
	}
	w.readAll(svc, data)

	// A new version of the Key Vault key: the generations move to it.
	v2, err := w.emu.RotateKey(platformVault, "system")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := r2.RewrapGenerations(w.ctx); err != nil || n != 3 {
		t.Fatalf("RewrapGenerations = %d, %v; want the 3 generations", n, err)
	}
	tool.Close()
	gens, err := svc.Store.PlatformGenerations(w.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gens {
		if g.KMSVersion != v2 {
			t.Fatalf("generation %s under version %s, want %s", g.ID, g.KMSVersion, v2)
		}
	}

	// No org may configure a key of the platform vault.
	org := "KMSORG00000000000000@CmkOrg"
	for _, key := range []string{w.key + "/" + v2, w.emu.VaultURL(platformVault) + "/keys/another/0123456789abcdef0123456789abcdef"} {
		_, err := svc.Control.SubmitConfig(w.ctx, org, control.ConfigInput{Name: "steal", Type: control.ConfigTypeBYOK, OrgID: org, ProviderType: control.ProviderAzure, KeyIdentifier: key})
		if !errors.Is(err, control.ErrKeyInUse) {
			t.Fatalf("SubmitConfig(%s) = %v, want ErrKeyInUse", key, err)
		}
		if _, err := svc.Control.Preflight(w.ctx, org, key); !errors.Is(err, control.ErrKeyInUse) {
			t.Fatalf("Preflight(%s) = %v, want ErrKeyInUse", key, err)
		}
	}
	svc.Close()

	// A restart opens every generation under the new version; all reads back.
	svc = w.start(w.key)
	defer svc.Close()
	w.readAll(svc, data)
	if svc.PlatformKey.Current().ID() != g.ID || svc.PlatformKey.Root().ID() != fileKey {
		t.Fatalf("after restart: current %s root %s", svc.PlatformKey.Current().ID(), svc.PlatformKey.Root().ID())
	}
	if counts := w.counts(svc); len(counts) != 1 || counts[g.ID] == 0 {
		t.Fatalf("data keys per generation after the restart: %v, want all under %s", counts, g.ID)
	}
}

func (w *platformWorld) counts(svc *service.Service) map[string]int {
	w.t.Helper()
	counts, err := svc.Store.CountSystemKeys(w.ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	return counts
}

// TestPlatformKeyReplicas runs two replicas over one PostgreSQL state under
// the platform key: the second opens the root the first made, a data key
// wrapped under a generation one replica just added opens on the other at
// once (it reloads on the unknown generation, not at its next pass), and
// after the background re-wrap both read everything.
func TestPlatformKeyReplicas(t *testing.T) {
	w := newPlatformWorld(t)
	cfg := w.config(w.key)
	cfg.DatabaseDSN, cfg.ProfilesDSN = testsvc.Postgres(t), testsvc.Postgres(t)
	a := w.startWith(cfg)
	defer a.Close()
	cfgB := cfg
	cfgB.DataDir = t.TempDir()
	cfgB.PlatformKeyEvery = time.Hour // b reloads only when it meets a generation it does not hold
	b := w.startWith(cfgB)
	defer b.Close()
	if a.PlatformKey.Root().ID() != b.PlatformKey.Root().ID() {
		t.Fatalf("replicas have roots %s and %s", a.PlatformKey.Root().ID(), b.PlatformKey.Root().ID())
	}
	data := w.write(a, "REPLICAORGA000000000@CmkOrg", 3)
	for k, v := range w.write(b, "REPLICAORGB000000000@CmkOrg", 3) {
		data[k] = v
	}
	g, err := a.PlatformKey.Rotate(w.ctx)
	if err != nil {
		t.Fatal(err)
	}
	fresh := w.write(a, "REPLICAORGC000000000@CmkOrg", 3) // under g, which b has not loaded
	if b.PlatformKey.Current().ID() == g.ID {
		t.Fatal("b took the new generation before meeting it")
	}
	w.readAll(b, fresh)
	for k, v := range fresh {
		data[k] = v
	}
	w.rewrapped(a)
	if counts := w.counts(a); len(counts) != 1 || counts[g.ID] == 0 {
		t.Fatalf("data keys per generation after the re-wrap: %v, want all under %s", counts, g.ID)
	}
	w.readAll(a, data)
	w.readAll(b, data)
}

func (w *platformWorld) startWith(cfg service.Config) *service.Service {
	w.t.Helper()
	svc, err := service.New(w.ctx, cfg)
	if err != nil {
		w.t.Fatalf("start the service: %v", err)
	}
	if err := svc.Start(w.ctx); err != nil {
		svc.Close()
		w.t.Fatal(err)
	}
	return svc
}
