package e2e

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/lake/blob"
	"github.com/cmk-project/cmk/internal/monitor"
	"github.com/cmk-project/cmk/internal/service"
	"github.com/cmk-project/cmk/internal/testsvc"
)

// TestReplicasShareTheWork runs two cmk replicas on one PostgreSQL state
// database, one PostgreSQL profile store and one Azure Blob data lake: data
// written through one is read through the other, a job submitted to one is
// finished by whichever claims it, and a revocation seen by either replica's
// monitor locks the org on both.
func TestReplicasShareTheWork(t *testing.T) {
	az := testsvc.Azurite(t)
	ctx := context.Background()
	lakeCfg := &blob.AzureConfig{ServiceURL: az.ServiceURL, AccountName: az.AccountName, AccountKey: az.AccountKey, Container: "lake"}
	mc := monitor.Config{Interval: 300 * time.Millisecond, WrapEvery: 1}
	a, err := devenv.Start(ctx, devenv.Options{
		DataDir: t.TempDir(), Poll: 50 * time.Millisecond, Monitor: mc,
		DatabaseDSN: testsvc.Postgres(t), ProfilesDSN: testsvc.Postgres(t), LakeAzure: lakeCfg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	cfg := a.Svc.Config()
	cfg.Addr, cfg.DataDir = "127.0.0.1:0", t.TempDir()
	cfg.SystemKeyFile = filepath.Join(a.Svc.Config().DataDir, "system.key")
	cfg.TokenKeyFile = filepath.Join(a.Svc.Config().DataDir, "token-signing.pem")
	b, err := service.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })

	ca := adminClient(t, a, a.Org)
	cb := &client{t: t, base: b.URL(), token: ca.token, key: ca.key, org: ca.org}
	file := pattern(300_000, 5)
	if code, body := ca.raw("PUT", "/data/lake/datasets/d/files/f.bin", "prod", bytes.NewReader(file)); code != 201 {
		t.Fatalf("PUT via A = %d %s", code, body)
	}
	if code, body := cb.raw("PUT", "/data/profiles/r1", "prod", strings.NewReader(`{"via":"B"}`)); code != 200 {
		t.Fatalf("PUT via B = %d %s", code, body)
	}
	readAll := func(c *client) bool {
		c1, got := c.raw("GET", "/data/lake/datasets/d/files/f.bin", "prod", nil)
		c2, rec := c.raw("GET", "/data/profiles/r1", "prod", nil)
		return c1 == 200 && bytes.Equal(got, file) && c2 == 200 && string(rec) == `{"via":"B"}`
	}
	if !readAll(ca) || !readAll(cb) {
		t.Fatal("data written through one replica is not readable through the other")
	}

	if code, body := cb.do("POST", configPath, configBody(cb.org, "ViaB", a.KeyIdentifier)); code != 201 {
		t.Fatalf("POST config via B = %d %v", code, body)
	}
	if st := waitDone(t, ca, "ViaB"); st["status"] != "COMPLETED" {
		t.Fatalf("job = %v", st)
	}

	no, yes := false, true
	a.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &no})
	for _, c := range []*client{ca, cb} {
		waitFor(t, "both replicas refuse", 5*time.Second, func() bool {
			code, body := c.raw("GET", "/data/profiles/r1", "prod", nil)
			return code == 403 && errorCode(body) == "CMK_KEY_REVOKED"
		})
	}
	a.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &yes})
	for _, c := range []*client{ca, cb} {
		waitFor(t, "both replicas serve again", 5*time.Second, func() bool { return readAll(c) })
	}

	// Revoked again, the org is deleted through A; B forgets it too, and the
	// org id starts over on both.
	a.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &no})
	waitFor(t, "B refuses", 5*time.Second, func() bool { code, _ := cb.raw("GET", "/data/profiles/r1", "prod", nil); return code == 403 })
	if code, body := ca.do("DELETE", "/data/infrastructure/manager/org?confirm="+ca.org, nil); code != 200 {
		t.Fatalf("delete org via A = %d %v", code, body)
	}
	for _, c := range []*client{cb, ca} {
		waitFor(t, "writes to the org created again", 5*time.Second, func() bool {
			code, _ := c.raw("PUT", "/data/profiles/again", "prod", strings.NewReader(`{"n":2}`))
			return code == 200
		})
	}
}
