package awskms_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/cmk-project/cmk/internal/awsemu"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/kms/awskms"
)

const (
	customer = "111122223333" // owns the key
	platform = "444455556666" // runs cmk
	region   = awsemu.DefaultRegion
)

// customerPolicy is what a customer pastes: the owner keeps full control;
// the platform's account may describe the key, and use it only with the
// org's encryption context.
func customerPolicy(org string) string {
	return fmt.Sprintf(`{"Version":"2012-10-17","Statement":[
	 {"Sid":"owner","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::%[1]s:root"},"Action":"kms:*","Resource":"*"},
	 {"Sid":"cmk-describe","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::%[2]s:root"},"Action":"kms:DescribeKey","Resource":"*",
	  "Condition":{"StringEquals":{"aws:PrincipalAccount":"%[2]s"}}},
	 {"Sid":"cmk-use","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::%[2]s:root"},
	  "Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:CreateGrant"],"Resource":"*",
	  "Condition":{"StringEquals":{"aws:PrincipalAccount":"%[2]s","kms:EncryptionContext:cmk:org":"%[3]s"}}}]}`, customer, platform, org)
}

type env struct {
	emu    *awsemu.Emulator
	srv    *httptest.Server
	client *awskms.Client
	creds  awsemu.Credentials
	key    awsemu.KeyInfo
	ref    kms.KeyRef
	orgA   *awskms.Provider
	orgB   *awskms.Provider
}

func newEnv(t *testing.T) *env {
	t.Helper()
	emu := awsemu.New(awsemu.Options{})
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	for _, a := range []string{customer, platform} {
		if err := emu.CreateAccount(a); err != nil {
			t.Fatal(err)
		}
	}
	role, err := emu.CreateRole(platform, "cmk")
	if err != nil {
		t.Fatal(err)
	}
	creds, err := emu.AssumeRole(role, "cmk-service", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := emu.CreateKey(customer, awsemu.KeyOptions{Policy: customerPolicy("org-a")})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{emu: emu, srv: srv, creds: creds, key: key}
	e.client = e.newClient(t, creds)
	a, err := awskms.ParseARN(key.ARN, []string{region})
	if err != nil {
		t.Fatal(err)
	}
	e.ref = a.Ref()
	if e.orgA, err = e.client.ForOrg("org-a"); err != nil {
		t.Fatal(err)
	}
	if e.orgB, err = e.client.ForOrg("org-b"); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) newClient(t *testing.T, c awsemu.Credentials) *awskms.Client {
	t.Helper()
	cl, err := awskms.New(context.Background(), awskms.Config{
		Region: region, Endpoint: e.srv.URL, Timeout: 5 * time.Second,
		Credentials: credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken),
	})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func cx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func wantKind(t *testing.T, what string, err error, want kms.Kind) *kms.Error {
	t.Helper()
	var ke *kms.Error
	if !errors.As(err, &ke) || ke.Kind != want {
		t.Fatalf("%s: error = %v, want kind %s", what, err, want)
	}
	return ke
}

func TestWrapUnwrap(t *testing.T) {
	e := newEnv(t)
	dek := bytes.Repeat([]byte{7}, 32)
	w, err := e.orgA.Wrap(cx(t), e.ref, dek)
	if err != nil {
		t.Fatal(err)
	}
	if w.Alg != awskms.AlgSymmetricDefault || w.KeyVersion != "" || bytes.Contains(w.Ciphertext, dek) {
		t.Fatalf("Wrap = alg %q version %q", w.Alg, w.KeyVersion)
	}
	got, err := e.orgA.Unwrap(cx(t), e.ref, w)
	if err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("Unwrap = %x, %v, want %x", got, err, dek)
	}

	// Scope is bound: the same scope opens, another does not.
	sc := awskms.WithScope(cx(t), "prod", "lake")
	ws, err := e.orgA.Wrap(sc, e.ref, dek)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.orgA.Unwrap(sc, e.ref, ws); err != nil {
		t.Fatalf("Unwrap with the same scope: %v", err)
	}
	_, err = e.orgA.Unwrap(awskms.WithScope(cx(t), "prod", "profile"), e.ref, ws)
	wantKind(t, "Unwrap with another store", err, kms.KindUnwrapFailed)

	// Tampered ciphertext.
	bad := w
	bad.Ciphertext = bytes.Clone(w.Ciphertext)
	bad.Ciphertext[len(bad.Ciphertext)-1] ^= 1
	_, err = e.orgA.Unwrap(cx(t), e.ref, bad)
	wantKind(t, "Unwrap of a tampered ciphertext", err, kms.KindUnwrapFailed)

	// A ciphertext of another key the platform may also use.
	other, err := e.emu.CreateKey(customer, awsemu.KeyOptions{Policy: customerPolicy("org-a")})
	if err != nil {
		t.Fatal(err)
	}
	oa, _ := awskms.ParseARN(other.ARN, []string{region})
	_, err = e.orgA.Unwrap(cx(t), oa.Ref(), w)
	wantKind(t, "Unwrap naming another key", err, kms.KindUnwrapFailed)

	// By alias ARN.
	if err := e.emu.CreateAlias("alias/cmk", e.key.ARN); err != nil {
		t.Fatal(err)
	}
	alias, err := awskms.ParseARN(fmt.Sprintf("arn:aws:kms:%s:%s:alias/cmk", region, customer), []string{region})
	if err != nil {
		t.Fatal(err)
	}
	wa, err := e.orgA.Wrap(cx(t), alias.Ref(), dek)
	if err != nil {
		t.Fatalf("Wrap by alias: %v", err)
	}
	if got, err := e.orgA.Unwrap(cx(t), e.ref, wa); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("Unwrap by key ARN of a wrap by alias: %v", err)
	}

	_, err = e.orgA.Wrap(cx(t), e.ref, nil)
	wantKind(t, "Wrap of nothing", err, kms.KindInvalidRequest)
	_, err = e.orgA.Unwrap(cx(t), e.ref, kms.Wrapped{Alg: "RSA-OAEP-256", Ciphertext: w.Ciphertext})
	wantKind(t, "Unwrap of an RSA-wrapped key", err, kms.KindInvalidRequest)
}

// TestConfusedDeputy: the platform's credentials are the same for every
// org; the encryption context condition keeps org B off org A's key even
// with its ARN.
func TestConfusedDeputy(t *testing.T) {
	e := newEnv(t)
	dek := bytes.Repeat([]byte{1}, 32)
	_, err := e.orgB.Wrap(cx(t), e.ref, dek)
	ke := wantKind(t, "org B wraps with org A's key", err, kms.KindIdentityUnauthorized)
	if ke.Code != "AccessDeniedException" || ke.Op != "wrap" {
		t.Errorf("error code %q op %q, want AccessDeniedException on wrap", ke.Code, ke.Op)
	}
	w, err := e.orgA.Wrap(cx(t), e.ref, dek)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.orgB.Unwrap(cx(t), e.ref, w)
	wantKind(t, "org B unwraps org A's data key", err, kms.KindIdentityUnauthorized)
	// Describe carries no context: both may read the key's state.
	if _, err := e.orgB.Describe(cx(t), e.ref); err != nil {
		t.Fatalf("org B describes the key: %v", err)
	}
}

func TestDescribe(t *testing.T) {
	e := newEnv(t)
	info, err := e.orgA.Describe(cx(t), e.ref)
	if err != nil {
		t.Fatal(err)
	}
	if info.KID != e.key.ARN || info.Version != "" || info.KeyType != "SYMMETRIC_DEFAULT" || !info.Enabled ||
		!info.HasOp("encrypt") || !info.HasOp("decrypt") || info.Bits != 0 {
		t.Fatalf("Describe = %+v", info)
	}
	d, err := e.orgA.Details(cx(t), e.ref)
	if err != nil {
		t.Fatal(err)
	}
	if d.KeyState != "Enabled" || d.KeyUsage != "ENCRYPT_DECRYPT" || d.MultiRegion || d.CurrentKeyMaterialID != e.key.MaterialIDs[0] {
		t.Fatalf("Details = %+v", d)
	}
	// From the platform's account, rotations are not readable (as in AWS).
	if d.LastRotation != nil {
		t.Fatalf("LastRotation across accounts = %v, want nil", d.LastRotation)
	}
	// The owner's own view has the rotation.
	owner, err := e.emu.CreateUser(customer, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.emu.RotateKey(e.key.ARN); err != nil {
		t.Fatal(err)
	}
	op, _ := e.newClient(t, owner).ForOrg("org-a")
	d, err = op.Details(cx(t), e.ref)
	if err != nil || d.LastRotation == nil || time.Since(*d.LastRotation) > time.Minute {
		t.Fatalf("owner's Details = %+v, %v, want a recent LastRotation", d, err)
	}
	rotated, _ := e.emu.Key(e.key.ARN)
	if d.CurrentKeyMaterialID != rotated.MaterialIDs[1] {
		t.Fatalf("CurrentKeyMaterialID = %s, want %s", d.CurrentKeyMaterialID, rotated.MaterialIDs[1])
	}
}

func TestRotationKeepsOldWrapsOpening(t *testing.T) {
	e := newEnv(t)
	dek := []byte("0123456789abcdef0123456789abcdef")
	w, err := e.orgA.Wrap(cx(t), e.ref, dek)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := e.orgA.Describe(cx(t), e.ref)
	if err := e.emu.RotateKey(e.key.ARN); err != nil {
		t.Fatal(err)
	}
	after, _ := e.orgA.Describe(cx(t), e.ref)
	if after.KID != before.KID || after.Version != before.Version {
		t.Fatalf("after rotation: KID %s version %q, before %s %q", after.KID, after.Version, before.KID, before.Version)
	}
	if got, err := e.orgA.Unwrap(cx(t), e.ref, w); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("Unwrap of a wrap from before the rotation: %v", err)
	}
}

func TestRevocations(t *testing.T) {
	e := newEnv(t)
	dek := bytes.Repeat([]byte{2}, 32)
	w, err := e.orgA.Wrap(cx(t), e.ref, dek)
	if err != nil {
		t.Fatal(err)
	}

	// Disabled.
	if err := e.emu.SetKeyEnabled(e.key.ARN, false); err != nil {
		t.Fatal(err)
	}
	info, err := e.orgA.Describe(cx(t), e.ref)
	if err != nil || info.Enabled {
		t.Fatalf("Describe of a disabled key = %+v, %v", info, err)
	}
	_, err = e.orgA.Wrap(cx(t), e.ref, dek)
	wantKind(t, "Wrap with a disabled key", err, kms.KindKeyDisabled)
	_, err = e.orgA.Unwrap(cx(t), e.ref, w)
	wantKind(t, "Unwrap with a disabled key", err, kms.KindKeyDisabled)
	if err := e.emu.SetKeyEnabled(e.key.ARN, true); err != nil {
		t.Fatal(err)
	}

	// The platform's statements removed.
	if err := e.emu.PutKeyPolicy(e.key.ARN, fmt.Sprintf(`{"Statement":[{"Effect":"Allow","Principal":{"AWS":"%s"},"Action":"kms:*","Resource":"*"}]}`, customer)); err != nil {
		t.Fatal(err)
	}
	_, err = e.orgA.Unwrap(cx(t), e.ref, w)
	wantKind(t, "Unwrap after the statements are removed", err, kms.KindIdentityUnauthorized)
	_, err = e.orgA.Describe(cx(t), e.ref)
	wantKind(t, "Describe after the statements are removed", err, kms.KindIdentityUnauthorized)
	if err := e.emu.PutKeyPolicy(e.key.ARN, customerPolicy("org-a")); err != nil {
		t.Fatal(err)
	}

	// Pending deletion: the owner schedules it.
	owner, err := e.emu.CreateUser(customer, "admin")
	if err != nil {
		t.Fatal(err)
	}
	scheduleDeletion(t, e, owner)
	ke := wantKind(t, "Describe of a key pending deletion", func() error { _, err := e.orgA.Describe(cx(t), e.ref); return err }(), kms.KindKeyNotFound)
	if !strings.Contains(ke.Error(), "CancelKeyDeletion") {
		t.Errorf("the error %q does not say how to restore the key", ke.Error())
	}
	_, err = e.orgA.Wrap(cx(t), e.ref, dek)
	wantKind(t, "Wrap with a key pending deletion", err, kms.KindKeyNotFound)
	_, err = e.orgA.Unwrap(cx(t), e.ref, w)
	wantKind(t, "Unwrap with a key pending deletion", err, kms.KindKeyNotFound)

	// A key that does not exist.
	gone, _ := awskms.ParseARN("arn:aws:kms:"+region+":"+customer+":key/00000000-0000-4000-8000-000000000000", []string{region})
	_, err = e.orgA.Describe(cx(t), gone.Ref())
	wantKind(t, "Describe of a missing key", err, kms.KindKeyNotFound)
}

// scheduleDeletion schedules the key's deletion as its owner would, with
// the SDK through the provider's client configuration.
func scheduleDeletion(t *testing.T, e *env, owner awsemu.Credentials) {
	t.Helper()
	c := ownerKMS(e, owner)
	if err := c(cx(t), e.key.ARN); err != nil {
		t.Fatal(err)
	}
}

func TestFailuresAreClassified(t *testing.T) {
	e := newEnv(t)
	dek := bytes.Repeat([]byte{3}, 32)

	e.emu.SetThrottled(true)
	n := e.emu.Requests()
	_, err := e.orgA.Wrap(cx(t), e.ref, dek)
	wantKind(t, "throttled Wrap", err, kms.KindThrottled)
	if got := e.emu.Requests() - n; got != 1 {
		t.Errorf("a throttled call was sent %d times, want once (no retry)", got)
	}
	e.emu.SetThrottled(false)

	e.emu.SetFault(http.StatusInternalServerError, 0)
	n = e.emu.Requests()
	_, err = e.orgA.Wrap(cx(t), e.ref, dek)
	wantKind(t, "Wrap answered 500", err, kms.KindTransient)
	if got := e.emu.Requests() - n; got != 3 {
		t.Errorf("a 500 was tried %d times, want 3", got)
	}
	e.emu.SetFault(0, 0)

	e.emu.SetRateLimit(platform, 1, time.Hour)
	if _, err := e.orgA.Describe(cx(t), e.ref); err != nil {
		t.Fatal(err)
	}
	_, err = e.orgA.Describe(cx(t), e.ref)
	wantKind(t, "Describe over the account's rate", err, kms.KindThrottled)
	e.emu.SetRateLimit(platform, 0, 0)

	// The platform's own credentials wrong: not the customer's doing.
	wrong := e.creds
	wrong.SecretAccessKey = strings.Repeat("x", 40)
	pw, _ := e.newClient(t, wrong).ForOrg("org-a")
	_, err = pw.Wrap(cx(t), e.ref, dek)
	ke := wantKind(t, "Wrap with a wrong secret", err, kms.KindTokenAcquisitionFailed)
	if ke.Op != "token" || ke.Code != "InvalidSignatureException" {
		t.Errorf("op %q code %q, want token/InvalidSignatureException", ke.Op, ke.Code)
	}
	e.emu.DeleteAccessKey(e.creds.AccessKeyID)
	_, err = e.orgA.Describe(cx(t), e.ref)
	wantKind(t, "Describe with a deleted access key", err, kms.KindTokenAcquisitionFailed)

	// Malformed or disallowed references never reach the endpoint.
	n = e.emu.Requests()
	for _, ref := range []kms.KeyRef{
		{VaultURL: "https://vault.vault.azure.net", Name: "key"},
		{VaultURL: "arn:aws:kms:eu-west-1:" + customer, Name: "key/" + e.key.KeyID},
		{VaultURL: "arn:aws:kms:" + region + ":" + customer, Name: "key/not-a-key"},
	} {
		_, err := e.orgA.Describe(cx(t), ref)
		wantKind(t, "Describe("+ref.VaultURL+"/"+ref.Name+")", err, kms.KindMalformedKeyURI)
	}
	if got := e.emu.Requests() - n; got != 0 {
		t.Errorf("malformed references sent %d requests", got)
	}

	// No answer at all.
	e.srv.Close()
	_, err = e.orgA.Describe(cx(t), e.ref)
	wantKind(t, "Describe with the endpoint down", err, kms.KindTransient)
}

func TestSlowEndpointIsTransient(t *testing.T) {
	e := newEnv(t)
	e.emu.SetFault(0, 3*time.Second)
	defer e.emu.SetFault(0, 0)
	c, err := awskms.New(context.Background(), awskms.Config{
		Region: region, Endpoint: e.srv.URL, Timeout: 200 * time.Millisecond,
		Credentials: credentials.NewStaticCredentialsProvider(e.creds.AccessKeyID, e.creds.SecretAccessKey, e.creds.SessionToken),
	})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := c.ForOrg("org-a")
	start := time.Now()
	_, err = p.Describe(context.Background(), e.ref)
	wantKind(t, "Describe past the timeout", err, kms.KindTransient)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Describe took %v; the 200ms timeout did not bound it", d)
	}
}

// TestAnswerMustNameTheKey: an endpoint answering about another key is
// refused, whatever it returns.
func TestAnswerMustNameTheKey(t *testing.T) {
	other := "arn:aws:kms:" + region + ":999988887777:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		switch r.Header.Get("X-Amz-Target") {
		case "TrentService.Encrypt":
			fmt.Fprintf(w, `{"CiphertextBlob":"AAAA","KeyId":%q,"EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}`, other)
		case "TrentService.Decrypt":
			fmt.Fprintf(w, `{"Plaintext":"AAAA","KeyId":%q,"EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}`, other)
		case "TrentService.DescribeKey":
			fmt.Fprintf(w, `{"KeyMetadata":{"Arn":%q,"KeyId":"1234abcd-12ab-34cd-56ef-1234567890ab","KeyState":"Enabled","Enabled":true}}`, other)
		}
	}))
	defer srv.Close()
	c, err := awskms.New(context.Background(), awskms.Config{Region: region, Endpoint: srv.URL,
		Credentials: credentials.NewStaticCredentialsProvider("AKIAEXAMPLE", "secret", "")})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := c.ForOrg("org-a")
	mine, _ := awskms.ParseARN("arn:aws:kms:"+region+":"+customer+":key/1234abcd-12ab-34cd-56ef-1234567890ab", []string{region})
	alias, _ := awskms.ParseARN("arn:aws:kms:"+region+":"+customer+":alias/cmk", []string{region})
	for _, ref := range []kms.KeyRef{mine.Ref(), alias.Ref()} {
		_, err = p.Describe(cx(t), ref)
		wantKind(t, "Describe answered about another key", err, kms.KindInvalidRequest)
		_, err = p.Wrap(cx(t), ref, []byte("k"))
		wantKind(t, "Wrap answered by another key", err, kms.KindInvalidRequest)
		_, err = p.Unwrap(cx(t), ref, kms.Wrapped{Alg: awskms.AlgSymmetricDefault, Ciphertext: []byte("x")})
		wantKind(t, "Unwrap answered by another key", err, kms.KindInvalidRequest)
	}
}

func TestDefaultCredentialChain(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	t.Setenv("AWS_ACCESS_KEY_ID", e.creds.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", e.creds.SecretAccessKey)
	t.Setenv("AWS_SESSION_TOKEN", e.creds.SessionToken)
	t.Setenv("AWS_CONFIG_FILE", dir+"/config")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", dir+"/credentials")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	c, err := awskms.New(context.Background(), awskms.Config{Region: region, Endpoint: e.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := c.ForOrg("org-a")
	if _, err := p.Describe(cx(t), e.ref); err != nil {
		t.Fatalf("Describe with credentials from the environment: %v", err)
	}
}

func TestConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  awskms.Config
		want string
	}{
		{"no region", awskms.Config{}, "no Region"},
		{"region not allowed", awskms.Config{Region: "eu-west-1", Regions: []string{"us-east-1"}}, "not among"},
		{"plain http to a remote host", awskms.Config{Region: "eu-west-1", Endpoint: "http://kms.example.com"}, "not loopback"},
		{"not a URL", awskms.Config{Region: "eu-west-1", Endpoint: "kms.example.com"}, "want https"},
	} {
		_, err := awskms.New(context.Background(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New error = %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	c, err := awskms.New(context.Background(), awskms.Config{Region: "eu-west-1", Endpoint: "http://127.0.0.1:1",
		Credentials: credentials.NewStaticCredentialsProvider("a", "b", "")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ForOrg(""); err == nil {
		t.Error("ForOrg(\"\") succeeded; a provider must be bound to an org")
	}
}

func TestConcurrentUse(t *testing.T) {
	e := newEnv(t)
	const workers, rounds = 8, 5
	errs := make(chan error, workers)
	for i := range workers {
		go func() {
			ctx := awskms.WithScope(context.Background(), "s", fmt.Sprint(i))
			for range rounds {
				dek := bytes.Repeat([]byte{byte(i)}, 32)
				w, err := e.orgA.Wrap(ctx, e.ref, dek)
				if err != nil {
					errs <- err
					return
				}
				got, err := e.orgA.Unwrap(ctx, e.ref, w)
				if err != nil || !bytes.Equal(got, dek) {
					errs <- fmt.Errorf("worker %d: unwrap = %x, %v", i, got, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("workers did not finish in 30s")
		}
	}
}
