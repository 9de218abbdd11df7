package service

import (
	"bytes"
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/awsemu"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/kms/awskms"
)

const customerAcct, platformAcct = "111122223333", "444455556666"

// azureOnly records that a call reached the Azure provider.
type azureOnly struct{ calls int }

func (a *azureOnly) Describe(context.Context, kms.KeyRef) (kms.KeyInfo, error) {
	a.calls++
	return kms.KeyInfo{}, nil
}
func (a *azureOnly) Wrap(context.Context, kms.KeyRef, []byte) (kms.Wrapped, error) {
	a.calls++
	return kms.Wrapped{}, nil
}
func (a *azureOnly) Unwrap(context.Context, kms.KeyRef, kms.Wrapped) ([]byte, error) {
	a.calls++
	return nil, nil
}

// TestRouter: a Key Vault key goes to the Azure provider; an AWS key goes
// to AWS KMS bound to the org of the call, so one org's wrapping does not
// open for another, and a call without an org never leaves.
func TestRouter(t *testing.T) {
	emu := awsemu.New(awsemu.Options{})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	for _, a := range []string{customerAcct, platformAcct} {
		if err := emu.CreateAccount(a); err != nil {
			t.Fatal(err)
		}
	}
	creds, err := emu.CreateUser(platformAcct, "cmk")
	if err != nil {
		t.Fatal(err)
	}
	// A policy letting the platform use the key for both orgs: only the
	// encryption context keeps their wrappings apart.
	policy := `{"Version":"2012-10-17","Statement":[
	 {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::` + customerAcct + `:root"},"Action":"kms:*","Resource":"*"},
	 {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::` + platformAcct + `:root"},"Action":["kms:DescribeKey","kms:Encrypt","kms:Decrypt"],"Resource":"*"}]}`
	key, err := emu.CreateKey(customerAcct, awsemu.KeyOptions{Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := awskms.New(context.Background(), awskms.Config{Region: awsemu.DefaultRegion, Endpoint: srv.URL, Timeout: 5 * time.Second,
		Credentials: credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	arn, err := awskms.ParseARN(key.ARN, []string{awsemu.DefaultRegion})
	if err != nil {
		t.Fatal(err)
	}
	ref := arn.Ref()
	az := &azureOnly{}
	r := &router{azure: az, aws: cl}
	ctx := context.Background()
	orgA, orgB := audit.WithOrg(ctx, "org-a"), audit.WithOrg(ctx, "org-b")

	if _, err := r.Wrap(orgA, kms.KeyRef{VaultURL: "https://v.vault.azure.net", Name: "k"}, []byte("x")); err != nil || az.calls != 1 {
		t.Fatalf("a Key Vault key: err %v, Azure calls %d, want 1", err, az.calls)
	}
	before := emu.Requests()
	if _, err := r.Wrap(ctx, ref, bytes.Repeat([]byte{1}, 32)); kms.KindOf(err) != kms.KindInvalidRequest || emu.Requests() != before {
		t.Fatalf("wrap without an org = %v (%d requests made), want INVALID_REQUEST and none", err, emu.Requests()-before)
	}
	info, err := r.Describe(orgA, ref)
	if err != nil || !info.HasOp("wrapKey") || !info.HasOp("unwrapKey") || !info.Enabled {
		t.Fatalf("describe = %+v, %v; want an enabled key reported with wrapKey and unwrapKey", info, err)
	}
	dek := bytes.Repeat([]byte{7}, 32)
	w, err := r.Wrap(orgA, ref, dek)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := r.Unwrap(orgA, ref, w); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("org A unwraps its own data key: %x, %v", got, err)
	}
	// The monitor's stored probe names Key Vault's algorithm; it still opens.
	w.Alg = "RSA-OAEP-256"
	if _, err := r.Unwrap(orgA, ref, w); err != nil {
		t.Errorf("unwrap of a probe naming RSA-OAEP-256: %v", err)
	}
	if _, err := r.Unwrap(orgB, ref, w); kms.KindOf(err) != kms.KindUnwrapFailed {
		t.Errorf("org B unwrapping org A's data key = %v, want UNWRAP_FAILED", err)
	}
	if az.calls != 1 {
		t.Errorf("AWS calls reached the Azure provider (%d calls)", az.calls)
	}
}
