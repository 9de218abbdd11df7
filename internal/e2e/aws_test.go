package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/kms/awskms"
	"github.com/cmk-project/cmk/internal/monitor"
	"github.com/cmk-project/cmk/internal/store"
)

// awsEnv is a local cmk with the local AWS KMS and its demo org. With a
// monitor config, checks run as in fastEnv.
func awsEnv(t *testing.T, mc *monitor.Config) *devenv.Env {
	t.Helper()
	o := devenv.Options{DataDir: t.TempDir(), Poll: 50 * time.Millisecond, RateLimits: generousLimits, AWS: true, NoEvents: true}
	if mc != nil {
		if mc.Interval == 0 {
			mc.Interval = 250 * time.Millisecond
		}
		if mc.Grace == 0 {
			mc.Grace = 1500 * time.Millisecond
		}
		if mc.WrapEvery == 0 {
			mc.WrapEvery = 1
		}
		o.Monitor, o.TokenLifetime, o.VaultTimeout, o.WebhookBackoff = *mc, 2*time.Second, time.Second, 50*time.Millisecond
	}
	env, err := devenv.Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	return env
}

func awsConfigBody(org, name, arn string) map[string]any {
	return map[string]any{"name": name, "type": "BYOK_CONFIG", "imsOrgId": org,
		"configData": map[string]any{"providerType": "AWS_KMS", "keyArn": arn}}
}

// awsPolicy reads the org's key-policy statements from the API.
func awsPolicy(t *testing.T, c *client) cmkapi.AWSKeyPolicy {
	t.Helper()
	code, body := c.do("GET", "/data/infrastructure/manager/byok/aws-key-policy", nil)
	if code != 200 {
		t.Fatalf("GET aws-key-policy = %d %v", code, body)
	}
	raw, _ := json.Marshal(body)
	var p cmkapi.AWSKeyPolicy
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAWSEnableEndToEnd enables the AWS demo org over HTTP with the key
// the emulator holds (its policy made of the statements the API gave the
// org) and opens every data key through the emulator.
func TestAWSEnableEndToEnd(t *testing.T) {
	env := awsEnv(t, nil)
	a := env.AWS
	c := adminClient(t, env, a.Org)
	ctx := context.Background()

	p := awsPolicy(t, c)
	if p.PlatformAccount != devenv.AWSPlatformAccount || p.EncryptionContext[awskms.ContextOrg] != a.Org || len(p.Statements) != 3 {
		t.Fatalf("aws-key-policy = %+v", p)
	}
	for _, s := range p.Statements {
		cond := s.Condition["StringEquals"]
		if cond["aws:PrincipalAccount"] != devenv.AWSPlatformAccount {
			t.Errorf("statement %s is not conditioned on aws:PrincipalAccount: %v", s.Sid, s.Condition)
		}
		describe := len(s.Action) == 1 && s.Action[0] == "kms:DescribeKey"
		if org, bound := cond["kms:EncryptionContext:cmk:org"]; describe == bound || bound && org != a.Org {
			t.Errorf("statement %s (%v): org condition = %v, want it on every statement but DescribeKey's", s.Sid, s.Action, cond)
		}
	}

	if code, rep := c.do("POST", "/data/infrastructure/manager/byok/preflight", map[string]string{"keyArn": a.KeyARN}); code != 200 || rep["passed"] != true {
		t.Fatalf("preflight = %d %v", code, rep)
	}
	code, job := c.do("POST", configPath, awsConfigBody(a.Org, "Aws1", a.KeyARN))
	if code != 201 {
		t.Fatalf("POST config = %d %v, want 201", code, job)
	}
	data := job["config"].(map[string]any)["configData"].(map[string]any)
	if data["providerType"] != "AWS_KMS" || data["keyArn"] != a.KeyARN {
		t.Errorf("configData = %v", data)
	}
	st := waitDone(t, c, "Aws1")
	if st["status"] != "COMPLETED" {
		t.Fatalf("final status = %v", st)
	}
	checks, _ := json.Marshal(st["checks"])
	for _, name := range []string{"aws_key_arn", "aws_key_policy_describe", "aws_key_not_pending_deletion", "aws_key_spec_and_usage", "aws_key_policy_org_context", "aws_encryption_context_round_trip"} {
		if !strings.Contains(string(checks), `"check":"`+name+`","status":"PASSED"`) {
			t.Errorf("checks lack a passed %s: %s", name, checks)
		}
	}
	if strings.Contains(string(checks), `"FAILED"`) || strings.Contains(string(checks), `"SKIPPED"`) {
		t.Errorf("checks = %s, want all PASSED", checks)
	}

	keys, err := env.Svc.Store.DataKeys(ctx, a.Org)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 4 {
		t.Fatalf("data keys = %d, want 4 (2 sandboxes x 2 stores)", len(keys))
	}
	before := a.Emu.Requests()
	for _, dk := range keys {
		if dk.KEK != store.KEKCustomer {
			t.Errorf("data key %s/%s kek = %s, want customer", dk.Sandbox, dk.Store, dk.KEK)
		}
		dek, err := env.Svc.Keyring.Unwrap(ctx, dk)
		if err != nil || len(dek) != 32 {
			t.Errorf("unwrap %s through AWS KMS = %d bytes, %v", dk.ID, len(dek), err)
		}
		if _, err := env.Svc.Keyring.System.Current().Unwrap(dk.Wrapped, keyring.AAD(dk)); err == nil {
			t.Errorf("system key still unwraps data key %s", dk.ID)
		}
	}
	if n := a.Emu.Requests() - before; n < len(keys) {
		t.Errorf("the emulator served %d requests, want >= %d decrypts", n, len(keys))
	}
	h := getHealth(c)
	if h.State != "HEALTHY" {
		t.Errorf("health = %+v", h)
	}
	// The Azure demo org is untouched by all this.
	if o, err := env.Svc.Store.Org(ctx, env.Org); err != nil || o.KEKMode == store.ModeCustomer {
		t.Errorf("Azure demo org = %+v, %v", o, err)
	}
}

// TestAWSConfusedDeputy: an org that submits another org's key ARN is
// refused by AWS itself (the key policy binds the platform's use to the
// owner org's encryption context): its job FAILS at the org-context check,
// the owner's data keys are untouched, and the owner enables normally.
func TestAWSConfusedDeputy(t *testing.T) {
	env := awsEnv(t, nil)
	a := env.AWS
	ctx := context.Background()
	const intruder = "INTRUDER@CmkOrg"
	b := adminClient(t, env, intruder)
	if code, body := b.do("GET", "/data/foundation/sandbox-management/sandboxes", nil); code != 200 {
		t.Fatalf("list sandboxes of %s = %d %v", intruder, code, body)
	}
	ownerKeys, _ := env.Svc.Store.DataKeys(ctx, a.Org)

	code, rep := b.do("POST", "/data/infrastructure/manager/byok/preflight", map[string]string{"keyArn": a.KeyARN})
	if code != 200 || rep["passed"] != false {
		t.Fatalf("intruder's preflight = %d %v, want a failed report", code, rep)
	}
	if code, body := b.do("POST", configPath, awsConfigBody(intruder, "Steal", a.KeyARN)); code != 201 {
		t.Fatalf("POST config = %d %v", code, body)
	}
	st := assertFailed(t, b, "Steal", "aws_key_policy_org_context", "IDENTITY_UNAUTHORIZED")
	if f, _ := json.Marshal(st["failure"]); !strings.Contains(string(f), "aws-key-policy") {
		t.Errorf("failure steps do not point at the org's statements: %s", f)
	}
	if o, _ := env.Svc.Store.Org(ctx, intruder); o.KEKMode == store.ModeCustomer {
		t.Error("the intruder org switched to the key")
	}
	after, _ := env.Svc.Store.DataKeys(ctx, a.Org)
	if len(after) != len(ownerKeys) {
		t.Fatalf("owner's data keys: %d before, %d after", len(ownerKeys), len(after))
	}
	for i := range after {
		if string(after[i].Wrapped) != string(ownerKeys[i].Wrapped) || after[i].KEK != ownerKeys[i].KEK {
			t.Errorf("owner's data key %s changed", after[i].ID)
		}
	}

	owner := adminClient(t, env, a.Org)
	if code, body := owner.do("POST", configPath, awsConfigBody(a.Org, "Mine", a.KeyARN)); code != 201 {
		t.Fatalf("owner POST config = %d %v", code, body)
	}
	if st := waitDone(t, owner, "Mine"); st["status"] != "COMPLETED" {
		t.Fatalf("owner's enablement = %v", st)
	}
}

// awsOwnerOnly is the key policy with the platform's statements removed.
func awsOwnerOnly(t *testing.T) string {
	t.Helper()
	p, err := devenv.KeyPolicy(devenv.AWSCustomerAccount, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAWSFaultMatrix breaks the AWS demo org's key in each way a customer
// (or AWS) can, checks health state, cause, alert and whether data is
// blocked, then fixes it and checks recovery, as TestFaultMatrix does for
// Key Vault.
func TestAWSFaultMatrix(t *testing.T) {
	env := awsEnv(t, &monitor.Config{FlapCount: 1000})
	a := env.AWS
	c := adminClient(t, env, a.Org)
	data := seed(t, c)
	if code, body := c.do("POST", configPath, awsConfigBody(a.Org, "Enable", a.KeyARN)); code != 201 {
		t.Fatalf("POST config = %d %v", code, body)
	}
	if st := waitDone(t, c, "Enable"); st["status"] != "COMPLETED" {
		t.Fatalf("enablement = %v", st)
	}
	waitHealth(t, c, "HEALTHY", "", 5*time.Second)
	emu, arn := a.Emu, a.KeyARN
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Another org's statements: the key policy is fine for someone, but
	// this org's encryption context no longer matches any statement.
	otherOrgs, err := env.Svc.Control.AWSKeyPolicy("SOMEONE-ELSE@CmkOrg")
	must(err)
	wrongContext, err := devenv.KeyPolicy(devenv.AWSCustomerAccount, otherOrgs.Statements)
	must(err)

	rows := []struct {
		name           string
		breakIt, fixIt func()
		state, cause   string
		alertKind      string
		blocked        bool
		stayHealthyFor time.Duration
	}{
		{name: "key disabled", breakIt: func() { must(emu.SetKeyEnabled(arn, false)) }, fixIt: func() { must(emu.SetKeyEnabled(arn, true)) },
			state: "REVOKED", cause: "KEY_DISABLED", alertKind: "KEY_ACCESS_DISABLED", blocked: true},
		{name: "key pending deletion, deletion cancelled", breakIt: func() {
			_, err := emu.ScheduleKeyDeletion(arn, 7)
			must(err)
		}, fixIt: func() { must(emu.CancelKeyDeletion(arn)); must(emu.SetKeyEnabled(arn, true)) },
			state: "REVOKED", cause: "KEY_NOT_FOUND", alertKind: "KEY_ACCESS_FAILURE", blocked: true},
		{name: "policy statements removed", breakIt: func() { must(emu.PutKeyPolicy(arn, awsOwnerOnly(t))) }, fixIt: func() { must(emu.PutKeyPolicy(arn, a.Policy)) },
			state: "REVOKED", cause: "IDENTITY_UNAUTHORIZED", alertKind: "KEY_ACCESS_FAILURE", blocked: true},
		{name: "policy binds another org's encryption context", breakIt: func() { must(emu.PutKeyPolicy(arn, wrongContext)) }, fixIt: func() { must(emu.PutKeyPolicy(arn, a.Policy)) },
			state: "REVOKED", cause: "IDENTITY_UNAUTHORIZED", alertKind: "KEY_ACCESS_FAILURE", blocked: true},
		{name: "AWS KMS answers 503", breakIt: func() { emu.SetFault(503, 0) }, fixIt: func() { emu.SetFault(0, 0) },
			state: "COASTING", cause: "TRANSIENT", alertKind: "ALERT_NOTIFICATION", blocked: false},
		{name: "network: AWS KMS does not answer in time", breakIt: func() { emu.SetFault(0, 3*time.Second) }, fixIt: func() { emu.SetFault(0, 0) },
			state: "COASTING", cause: "TRANSIENT", alertKind: "ALERT_NOTIFICATION", blocked: false},
		{name: "throttled", breakIt: func() { emu.SetRateLimit(devenv.AWSPlatformAccount, 1, 10*time.Second) },
			fixIt: func() { emu.SetRateLimit(devenv.AWSPlatformAccount, 0, 0); recheck(c) }, state: "HEALTHY", stayHealthyFor: 2 * time.Second},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			fixed := false
			defer func() {
				if !fixed {
					row.fixIt()
				}
			}()
			row.breakIt()
			if row.stayHealthyFor > 0 {
				for end := time.Now().Add(row.stayHealthyFor); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
					if h := getHealth(c); h.State != "HEALTHY" {
						t.Fatalf("health became %s/%s under %s; throttling must never revoke", h.State, h.Cause, row.name)
					}
				}
				if len(openAlerts(c)) != 0 {
					t.Errorf("alerts opened under %s: %v", row.name, openAlerts(c))
				}
			} else {
				h := waitHealth(t, c, row.state, row.cause, 8*time.Second)
				if h.DataBlocked != row.blocked {
					t.Errorf("dataBlocked = %v, want %v", h.DataBlocked, row.blocked)
				}
				if served := data.access(t, c); served == row.blocked {
					t.Errorf("data served = %v, want %v", served, !row.blocked)
				}
				found := false
				for deadline := time.Now().Add(3 * time.Second); !found && time.Now().Before(deadline); time.Sleep(25 * time.Millisecond) {
					for _, al := range openAlerts(c) {
						if al.Kind == row.alertKind && al.Cause == row.cause {
							found = true
							if len(al.Steps) < 2 || al.Title == "" {
								t.Errorf("alert %s lacks title or steps: %+v", al.Kind, al)
							}
						}
					}
				}
				if !found {
					t.Errorf("no open %s alert with cause %s; open: %+v", row.alertKind, row.cause, openAlerts(c))
				}
			}
			row.fixIt()
			fixed = true
			waitHealth(t, c, "HEALTHY", "", 8*time.Second)
			open := openAlerts(c)
			for deadline := time.Now().Add(3 * time.Second); len(open) != 0 && time.Now().Before(deadline); open = openAlerts(c) {
				time.Sleep(25 * time.Millisecond)
			}
			if len(open) != 0 {
				t.Errorf("alerts still open after recovery: %+v", open)
			}
			if !data.access(t, c) {
				t.Error("data not served after recovery")
			}
		})
	}
}

// TestAWSRotation: AWS rotates the key material behind the same ARN; the
// org stays HEALTHY, no data key is re-wrapped, everything written before
// reads back, and the health shows the key's new material after a
// re-check.
func TestAWSRotation(t *testing.T) {
	env := awsEnv(t, &monitor.Config{})
	a := env.AWS
	c := adminClient(t, env, a.Org)
	ctx := context.Background()
	data := seed(t, c)
	if code, body := c.do("POST", configPath, awsConfigBody(a.Org, "Enable", a.KeyARN)); code != 201 {
		t.Fatalf("POST config = %d %v", code, body)
	}
	if st := waitDone(t, c, "Enable"); st["status"] != "COMPLETED" {
		t.Fatalf("enablement = %v", st)
	}
	h := waitHealth(t, c, "HEALTHY", "", 5*time.Second)
	if h.AWS == nil || h.AWS.KeyArn != a.KeyARN || h.AWS.KeyState != "Enabled" || h.AWS.Rotation == "" || h.KeyVaultURI != "" {
		t.Fatalf("health of an AWS key = %+v (aws %+v)", h, h.AWS)
	}
	material := h.AWS.KeyMaterialID
	before, _ := env.Svc.Store.DataKeys(ctx, a.Org)

	if err := a.Emu.RotateKey(a.KeyARN); err != nil {
		t.Fatal(err)
	}
	recheck(c)
	h = waitHealth(t, c, "HEALTHY", "", 5*time.Second)
	if h.Rotation != nil {
		t.Errorf("a re-wrap started after an AWS rotation: %+v", h.Rotation)
	}
	if material == "" || h.AWS.KeyMaterialID == material {
		t.Errorf("key material after rotation = %s, want a new one", h.AWS.KeyMaterialID)
	}
	after, _ := env.Svc.Store.DataKeys(ctx, a.Org)
	if len(after) != len(before) {
		t.Fatalf("data keys: %d before, %d after", len(before), len(after))
	}
	for i := range after {
		if string(after[i].Wrapped) != string(before[i].Wrapped) {
			t.Errorf("data key %s was re-wrapped after an AWS rotation", after[i].ID)
		}
		// Wrapped under the old material, still opened by AWS KMS.
		env.Svc.Cache.WipeOrg(a.Org)
		if dek, err := env.Svc.Keyring.Unwrap(ctx, after[i]); err != nil || len(dek) != 32 {
			t.Errorf("data key %s after rotation: %d bytes, %v", after[i].ID, len(dek), err)
		}
	}
	if !data.access(t, c) {
		t.Error("data not served after rotation")
	}
}

// TestAWSPolicyMustBindTheOrg: a key whose policy grants the platform's
// account without the org's encryption-context condition would serve any
// org that learns its ARN; its owner's enablement fails at
// aws_key_policy_binds_org, and passes once the org's statements are in.
func TestAWSPolicyMustBindTheOrg(t *testing.T) {
	env := awsEnv(t, nil)
	a := env.AWS
	owner := adminClient(t, env, a.Org)
	open := []cmkapi.AWSPolicyStatement{{Sid: "PlatformUsesTheKey", Effect: "Allow",
		Principal: map[string]string{"AWS": "arn:aws:iam::" + devenv.AWSPlatformAccount + ":root"},
		Action:    []string{"kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"}, Resource: "*"}}
	loose, err := devenv.KeyPolicy(devenv.AWSCustomerAccount, open)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Emu.PutKeyPolicy(a.KeyARN, loose); err != nil {
		t.Fatal(err)
	}
	if code, body := owner.do("POST", configPath, awsConfigBody(a.Org, "Loose", a.KeyARN)); code != 201 {
		t.Fatalf("POST config = %d %v", code, body)
	}
	assertFailed(t, owner, "Loose", "aws_key_policy_binds_org", "KEY_POLICY_NOT_ORG_BOUND")

	if err := a.Emu.PutKeyPolicy(a.KeyARN, a.Policy); err != nil {
		t.Fatal(err)
	}
	if code, body := owner.do("POST", configPath, awsConfigBody(a.Org, "Bound", a.KeyARN)); code != 201 {
		t.Fatalf("POST config = %d %v", code, body)
	}
	if st := waitDone(t, owner, "Bound"); st["status"] != "COMPLETED" {
		t.Fatalf("enablement with the org's own statements = %v", st)
	}
}
