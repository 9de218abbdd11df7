package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/devenv"
)

// TestAWSEmulatorCommands drives a running local AWS KMS as the key owner
// through 'cmk aws-emulator', and checks each action on the emulator.
func TestAWSEmulatorCommands(t *testing.T) {
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: t.TempDir(), AWS: true, NoMonitor: true, NoEvents: true})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	a := env.AWS
	t.Setenv(envAWSEmulatorURL, a.Server.URL)
	t.Setenv(envAWSOwnerKeyID, a.Owner.AccessKeyID)
	t.Setenv(envAWSOwnerSecretKey, a.Owner.SecretAccessKey)
	cli := func(args ...string) string {
		t.Helper()
		cmd := newAWSEmulatorCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(args)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := cmd.ExecuteContext(ctx); err != nil {
			t.Fatalf("cmk aws-emulator %v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	state := func() string {
		k, err := a.Emu.Key(a.KeyARN)
		if err != nil {
			t.Fatal(err)
		}
		return k.State
	}
	for _, step := range []struct {
		args []string
		want string
	}{
		{[]string{"key", "disable", a.KeyARN}, "Disabled"},
		{[]string{"key", "enable", a.KeyARN}, "Enabled"},
		{[]string{"key", "schedule-deletion", a.KeyARN, "--days", "7"}, "PendingDeletion"},
		{[]string{"key", "cancel-deletion", a.KeyARN}, "Disabled"},
		{[]string{"key", "enable", a.KeyARN}, "Enabled"},
	} {
		cli(step.args...)
		if got := state(); got != step.want {
			t.Errorf("after %v the key is %s, want %s", step.args, got, step.want)
		}
	}
	before, _ := a.Emu.Key(a.KeyARN)
	cli("key", "rotate", a.KeyARN)
	if after, _ := a.Emu.Key(a.KeyARN); len(after.MaterialIDs) != len(before.MaterialIDs)+1 {
		t.Errorf("rotate: key material %v -> %v, want one more", before.MaterialIDs, after.MaterialIDs)
	}
	if out := cli("policy", "remove-statements", a.KeyARN); !strings.Contains(out, "removed 3 statement(s)") {
		t.Errorf("remove-statements said %q", out)
	}
	if p, _ := a.Emu.KeyPolicy(a.KeyARN); strings.Contains(p, "CmkPlatform") || !strings.Contains(p, devenv.AWSCustomerAccount) {
		t.Errorf("policy after remove-statements = %s", p)
	}
	arn := strings.TrimSpace(cli("key", "create", "--org", "OTHER@CmkOrg"))
	if p, err := a.Emu.KeyPolicy(arn); err != nil || !strings.Contains(p, `"kms:EncryptionContext:cmk:org":"OTHER@CmkOrg"`) {
		t.Errorf("key create --org: key %q policy %s, %v", arn, p, err)
	}
}
