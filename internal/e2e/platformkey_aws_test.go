package e2e

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/awsemu"
	"github.com/cmk-project/cmk/internal/control"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/kms/awskms"
	"github.com/cmk-project/cmk/internal/service"
)

// TestPlatformKeyInAWSKMS runs the system key under a platform key in the
// (local) AWS KMS of the platform's own account: a fresh installation makes
// its root generation there, a rotation re-wraps the data keys, a restart
// reads everything back, and no org may name a key of the platform's AWS
// account as its own.
func TestPlatformKeyInAWSKMS(t *testing.T) {
	ctx := context.Background()
	emu := awsemu.New(awsemu.Options{})
	srv, err := emu.Serve("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	if err := emu.CreateAccount(devenv.AWSPlatformAccount); err != nil {
		t.Fatal(err)
	}
	creds, err := emu.CreateUser(devenv.AWSPlatformAccount, devenv.AWSPlatformUser)
	if err != nil {
		t.Fatal(err)
	}
	key, err := emu.CreateKey(devenv.AWSPlatformAccount, awsemu.KeyOptions{Description: "cmk platform key"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := service.Config{
		Addr: "127.0.0.1:0", DataDir: dir, DevTokenIssuer: true, Workers: -1, NoMonitor: true,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		AWS: &service.AWSConfig{Account: devenv.AWSPlatformAccount, Client: awskms.Config{
			Region: emu.Region(), Endpoint: srv.URL,
			Credentials: credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken),
		}},
		PlatformKey: key.ARN, PlatformKeyEvery: 50 * time.Millisecond,
	}
	w := &platformWorld{t: t, ctx: ctx, dir: dir}
	start := func() *service.Service {
		svc, err := service.New(ctx, cfg)
		if err != nil {
			t.Fatalf("start with platform key %s: %v", key.ARN, err)
		}
		if err := svc.Start(ctx); err != nil {
			svc.Close()
			t.Fatal(err)
		}
		return svc
	}

	svc := start()
	root := svc.PlatformKey.Root().ID()
	if gens := svc.PlatformKey.Generations(); len(gens) != 1 || gens[0].KMSKey != svc.PlatformKey.KeyRef().String() {
		t.Fatalf("fresh installation's generations = %+v", gens)
	}
	org := "AWSPLATFORM000000000@CmkOrg"
	data := w.write(svc, org, 4)

	g, err := svc.PlatformKey.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.rewrapped(svc)
	if counts := w.counts(svc); len(counts) != 1 || counts[g.ID] == 0 {
		t.Fatalf("data keys per generation after the rotation: %v, want all under %s", counts, g.ID)
	}
	w.readAll(svc, data)

	// Any key of the platform's account, in any allowed Region, is refused.
	_, err = svc.Control.SubmitConfig(ctx, org, control.ConfigInput{Name: "steal", Type: control.ConfigTypeBYOK, OrgID: org, ProviderType: control.ProviderAWS, KeyIdentifier: key.ARN})
	if !errors.Is(err, control.ErrKeyInUse) {
		t.Fatalf("SubmitConfig(the platform key) = %v, want ErrKeyInUse", err)
	}
	// Nor may an org's validation probe it: no call reaches the key.
	if rep, err := svc.Control.Preflight(audit.WithOrg(ctx, org), org, key.ARN); !errors.Is(err, control.ErrKeyInUse) {
		t.Fatalf("Preflight(the platform key) = %+v, %v, want ErrKeyInUse", rep, err)
	}
	svc.Close()

	svc = start()
	defer svc.Close()
	if svc.PlatformKey.Current().ID() != g.ID || svc.PlatformKey.Root().ID() != root {
		t.Fatalf("after restart: current %s root %s; want %s and %s", svc.PlatformKey.Current().ID(), svc.PlatformKey.Root().ID(), g.ID, root)
	}
	w.readAll(svc, data)
}
