package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/monitor"
)

// TestDeleteRevokedOrg: while an org is revoked its data is refused, but
// deleting the org is still allowed; afterwards nothing of it remains.
func TestDeleteRevokedOrg(t *testing.T) {
	ctx := context.Background()
	env := fastEnv(t, monitor.Config{FlapCount: 1000})
	c := adminClient(t, env, env.Org)
	data := seed(t, c)
	enable(t, env, c)
	no := false
	env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &no})
	waitHealth(t, c, "REVOKED", "KEY_DISABLED", 5*time.Second)
	if data.access(t, c) {
		t.Fatal("data served while revoked")
	}
	if code, body := c.do("DELETE", "/data/infrastructure/manager/org", nil); code != 400 || body["errorCode"] != "CONFIRMATION_REQUIRED" {
		t.Errorf("delete without confirm = %d %v", code, body)
	}
	if code, body := c.do("DELETE", "/data/infrastructure/manager/org?confirm="+env.Org, nil); code != 200 {
		t.Fatalf("delete = %d %v", code, body)
	}
	if keys, _ := env.Svc.Store.DataKeys(ctx, env.Org); len(keys) != 0 {
		t.Errorf("%d data keys survive the org", len(keys))
	}
	if objs, _ := env.Svc.Lake.Backend.List(ctx, env.Org+"/"); len(objs) != 0 {
		t.Errorf("%d lake objects survive the org", len(objs))
	}
	if _, err := env.Svc.Profiles.Backend.Get(ctx, env.Org, "prod", "p1"); err == nil {
		t.Error("a profile record survives the org")
	}
	// The key is free again, and the org id starts over empty on system keys.
	if h := getHealth(c); h.State != "SYSTEM_MANAGED" {
		t.Errorf("health after deletion = %s, want SYSTEM_MANAGED", h.State)
	}
	if code, body := c.raw("PUT", "/data/profiles/fresh", "prod", strings.NewReader(`{"n":1}`)); code != 200 {
		t.Errorf("write to the org created again = %d %s", code, body)
	}
	if code, body := c.raw("PUT", "/data/lake/datasets/ds/files/fresh", "prod", strings.NewReader("x")); code != 201 {
		t.Errorf("lake write to the org created again = %d %s", code, body)
	}
}
