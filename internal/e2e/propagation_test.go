package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/devenv"
)

// TestValidationWaitsForRole: a configuration submitted before the app holds
// its role stays RUNNING, and the API says what it waits for; once the role
// is assigned, the job goes on and completes.
func TestValidationWaitsForRole(t *testing.T) {
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: t.TempDir(), Poll: 50 * time.Millisecond, RateLimits: generousLimits,
		PropagationWait: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	const org, vault = "ORGWAIT@CmkOrg", "kv-wait"
	if _, err := env.BindOrg(context.Background(), org); err != nil {
		t.Fatal(err)
	}
	if err := env.Emu.CreateVault(azemu.Vault{Name: vault, TenantID: devenv.CustomerTenant, SKU: "standard", SoftDelete: true, PurgeProtection: true, RetentionDays: 90}); err != nil {
		t.Fatal(err)
	}
	v, err := env.Emu.CreateKey(vault, "k", azemu.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := adminClient(t, env, org)
	if code, body := c.do("POST", configPath, configBody(org, "C", env.Emu.VaultURL(vault)+"/keys/k/"+v)); code != 201 {
		t.Fatalf("POST config = %d %v", code, body)
	}

	deadline := time.Now().Add(30 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatal("the job never said it waits for the role assignment")
		}
		code, st := c.do("GET", configPath+"/C?configType=BYOK_CONFIG", nil)
		if code != 200 {
			t.Fatalf("status = %d %v", code, st)
		}
		if s := st["status"]; s != "NEW" && s != "RUNNING" {
			t.Fatalf("status = %v, want NEW or RUNNING while the role is missing", st)
		}
		if le, ok := st["lastError"].(map[string]any); ok && st["status"] == "RUNNING" {
			msg, _ := le["message"].(string)
			if le["code"] != "IDENTITY_UNAUTHORIZED" || !strings.Contains(msg, "Waiting for the role assignment to take effect: Azure can take up to 2 minutes") {
				t.Fatalf("lastError = %v, want IDENTITY_UNAUTHORIZED saying it waits for the role assignment", le)
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	if err := env.Emu.AssignRole(vault, env.PrincipalID, devenv.Role); err != nil {
		t.Fatal(err)
	}
	if st := waitDone(t, c, "C"); st["status"] != "COMPLETED" {
		t.Fatalf("status after the role was assigned = %v, want COMPLETED", st)
	}
}
