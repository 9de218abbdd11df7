package awsemu_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/cmk-project/cmk/internal/awsemu"
)

func TestServeTLS(t *testing.T) {
	emu := awsemu.New(awsemu.Options{})
	if err := emu.CreateAccount(acctA); err != nil {
		t.Fatal(err)
	}
	alice, err := emu.CreateUser(acctA, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := emu.Serve("0.0.0.0:0", false); err == nil {
		t.Fatal("Serve on 0.0.0.0 succeeded; the emulator must listen on loopback only")
	}
	srv, err := emu.Serve("127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if !strings.HasPrefix(srv.URL, "https://127.0.0.1:") {
		t.Fatalf("URL = %s", srv.URL)
	}
	c := kms.New(kms.Options{
		Region: awsemu.DefaultRegion, BaseEndpoint: aws.String(srv.URL), HTTPClient: srv.HTTPClient(), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(alice.AccessKeyID, alice.SecretAccessKey, ""),
	})
	cx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	k, err := c.CreateKey(cx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatalf("CreateKey over TLS: %v", err)
	}
	// A client that does not trust the emulator's authority is refused.
	untrusting := kms.New(kms.Options{
		Region: awsemu.DefaultRegion, BaseEndpoint: aws.String(srv.URL), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(alice.AccessKeyID, alice.SecretAccessKey, ""),
	})
	if _, err := untrusting.ListKeys(cx, &kms.ListKeysInput{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("ListKeys without trusting the CA: %v, want a certificate error", err)
	}

	// awscli over TLS with AWS_CA_BUNDLE.
	bin, err := exec.LookPath("aws")
	if err != nil {
		missing(t, "awscli (the aws command)")
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, srv.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(cx, bin, "kms", "describe-key", "--key-id", *k.KeyMetadata.Arn, "--endpoint-url", srv.URL, "--output", "json")
	cmd.Env = append(clientEnv(t, alice), "AWS_CA_BUNDLE="+ca)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), *k.KeyMetadata.KeyId) {
		t.Fatalf("aws kms describe-key over TLS: %v\n%s", err, out)
	}
}
