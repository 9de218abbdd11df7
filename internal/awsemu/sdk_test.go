package awsemu_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/cmk-project/cmk/internal/awsemu"
)

const (
	acctA = "111122223333"
	acctB = "444455556666"
)

// clock is a settable clock for the emulator.
// clock is the real time moved forward by what tests Add: it keeps running,
// because the clients sign with the real time, and a test that takes
// minutes on a loaded machine must not see its signatures expire.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return time.Now().Add(c.offset) }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

type world struct {
	emu   *awsemu.Emulator
	url   string
	clock *clock
	alice awsemu.Credentials // user in account A
	bob   awsemu.Credentials // user in account B
}

func newWorld(t *testing.T) *world {
	t.Helper()
	// The SDK signs with the real time; the emulator's clock follows it,
	// and tests move it forward only where the signature skew is the point.
	clk := &clock{}
	emu := awsemu.New(awsemu.Options{Now: clk.Now})
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	w := &world{emu: emu, url: srv.URL, clock: clk}
	for _, a := range []string{acctA, acctB} {
		if err := emu.CreateAccount(a); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if w.alice, err = emu.CreateUser(acctA, "alice"); err != nil {
		t.Fatal(err)
	}
	if w.bob, err = emu.CreateUser(acctB, "bob"); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) client(c awsemu.Credentials) *kms.Client {
	return kms.New(kms.Options{
		Region:           awsemu.DefaultRegion,
		BaseEndpoint:     aws.String(w.url),
		Credentials:      credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken),
		RetryMaxAttempts: 1,
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func wantAPIError[T error](t *testing.T, what string, err error) T {
	t.Helper()
	var target T
	if !errors.As(err, &target) {
		t.Fatalf("%s: error = %v (%T), want %T", what, err, err, target)
	}
	return target
}

// wantCode checks the error code of an error the SDK has no type for
// (AccessDeniedException, ThrottlingException, ValidationException, …).
func wantCode(t *testing.T, what string, err error, code string) smithy.APIError {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != code {
		t.Fatalf("%s: error = %v, want API error %s", what, err, code)
	}
	return ae
}

func TestKeyLifecycleWithSDK(t *testing.T) {
	w := newWorld(t)
	c := w.client(w.alice)
	cx := ctx(t)

	ck, err := c.CreateKey(cx, &kms.CreateKeyInput{Description: aws.String("customer key")})
	if err != nil {
		t.Fatal(err)
	}
	md := ck.KeyMetadata
	wantARN := fmt.Sprintf("arn:aws:kms:%s:%s:key/%s", awsemu.DefaultRegion, acctA, *md.KeyId)
	if *md.Arn != wantARN || !md.Enabled || md.KeyState != types.KeyStateEnabled || md.KeySpec != types.KeySpecSymmetricDefault ||
		md.KeyUsage != types.KeyUsageTypeEncryptDecrypt || *md.AWSAccountId != acctA || aws.ToBool(md.MultiRegion) {
		t.Fatalf("CreateKey metadata = %+v", md)
	}
	if md.CreationDate == nil || md.CreationDate.IsZero() || md.CurrentKeyMaterialId == nil || len(*md.CurrentKeyMaterialId) != 64 {
		t.Fatalf("CreateKey metadata dates/material = %v %v", md.CreationDate, md.CurrentKeyMaterialId)
	}
	keyARN := *md.Arn

	// Alias, then use the key by alias.
	if _, err := c.CreateAlias(cx, &kms.CreateAliasInput{AliasName: aws.String("alias/cmk"), TargetKeyId: md.KeyId}); err != nil {
		t.Fatal(err)
	}
	la, err := c.ListAliases(cx, &kms.ListAliasesInput{})
	if err != nil || len(la.Aliases) != 1 || *la.Aliases[0].AliasName != "alias/cmk" || *la.Aliases[0].TargetKeyId != *md.KeyId {
		t.Fatalf("ListAliases = %+v, %v", la, err)
	}
	_, err = c.CreateAlias(cx, &kms.CreateAliasInput{AliasName: aws.String("alias/cmk"), TargetKeyId: md.KeyId})
	wantAPIError[*types.AlreadyExistsException](t, "CreateAlias twice", err)
	lk, err := c.ListKeys(cx, &kms.ListKeysInput{})
	if err != nil || len(lk.Keys) != 1 || *lk.Keys[0].KeyArn != keyARN {
		t.Fatalf("ListKeys = %+v, %v", lk, err)
	}

	ec := map[string]string{"cmk:org": "org-a", "cmk:store": "lake"}
	enc, err := c.Encrypt(cx, &kms.EncryptInput{KeyId: aws.String("alias/cmk"), Plaintext: []byte("data key"), EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	if *enc.KeyId != keyARN || enc.EncryptionAlgorithm != types.EncryptionAlgorithmSpecSymmetricDefault {
		t.Fatalf("Encrypt KeyId = %s, want %s", *enc.KeyId, keyARN)
	}
	// Decrypt without a KeyId: the blob names its key.
	dec, err := c.Decrypt(cx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec})
	if err != nil || string(dec.Plaintext) != "data key" || *dec.KeyId != keyARN {
		t.Fatalf("Decrypt = %+v, %v", dec, err)
	}
	// The context is bound: a changed or missing context does not open.
	_, err = c.Decrypt(cx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: map[string]string{"cmk:org": "org-b", "cmk:store": "lake"}})
	wantAPIError[*types.InvalidCiphertextException](t, "Decrypt with another context", err)
	_, err = c.Decrypt(cx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	wantAPIError[*types.InvalidCiphertextException](t, "Decrypt without context", err)
	// Every byte of the blob is protected.
	for i := range enc.CiphertextBlob {
		blob := bytes.Clone(enc.CiphertextBlob)
		blob[i] ^= 0x01
		if _, err := c.Decrypt(cx, &kms.DecryptInput{KeyId: aws.String(keyARN), CiphertextBlob: blob, EncryptionContext: ec}); err == nil {
			t.Fatalf("Decrypt of a blob with byte %d flipped succeeded", i)
		}
	}
	_, err = c.Decrypt(cx, &kms.DecryptInput{KeyId: aws.String(keyARN), CiphertextBlob: enc.CiphertextBlob[:40], EncryptionContext: ec})
	wantAPIError[*types.InvalidCiphertextException](t, "Decrypt of a truncated blob", err)

	// Another key named in Decrypt: IncorrectKeyException.
	other, err := c.CreateKey(cx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Decrypt(cx, &kms.DecryptInput{KeyId: other.KeyMetadata.Arn, CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec})
	wantAPIError[*types.IncorrectKeyException](t, "Decrypt naming another key", err)

	// GenerateDataKey and ReEncrypt.
	gdk, err := c.GenerateDataKey(cx, &kms.GenerateDataKeyInput{KeyId: aws.String(keyARN), KeySpec: types.DataKeySpecAes256, EncryptionContext: ec})
	if err != nil || len(gdk.Plaintext) != 32 {
		t.Fatalf("GenerateDataKey = %v", err)
	}
	back, err := c.Decrypt(cx, &kms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob, EncryptionContext: ec})
	if err != nil || !bytes.Equal(back.Plaintext, gdk.Plaintext) {
		t.Fatalf("Decrypt of a generated data key = %v", err)
	}
	re, err := c.ReEncrypt(cx, &kms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ec,
		DestinationKeyId: other.KeyMetadata.KeyId, DestinationEncryptionContext: map[string]string{"x": "y"}})
	if err != nil || *re.SourceKeyId != keyARN || *re.KeyId != *other.KeyMetadata.Arn {
		t.Fatalf("ReEncrypt = %+v, %v", re, err)
	}
	back, err = c.Decrypt(cx, &kms.DecryptInput{CiphertextBlob: re.CiphertextBlob, EncryptionContext: map[string]string{"x": "y"}})
	if err != nil || string(back.Plaintext) != "data key" {
		t.Fatalf("Decrypt after ReEncrypt = %v", err)
	}

	// Disable: DisabledException on use; DescribeKey still answers.
	if _, err := c.DisableKey(cx, &kms.DisableKeyInput{KeyId: aws.String(keyARN)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Encrypt(cx, &kms.EncryptInput{KeyId: aws.String(keyARN), Plaintext: []byte("x")})
	wantAPIError[*types.DisabledException](t, "Encrypt with a disabled key", err)
	_, err = c.Decrypt(cx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec})
	wantAPIError[*types.DisabledException](t, "Decrypt with a disabled key", err)
	d, err := c.DescribeKey(cx, &kms.DescribeKeyInput{KeyId: aws.String(keyARN)})
	if err != nil || d.KeyMetadata.Enabled || d.KeyMetadata.KeyState != types.KeyStateDisabled {
		t.Fatalf("DescribeKey of a disabled key = %+v, %v", d, err)
	}
	if _, err := c.EnableKey(cx, &kms.EnableKeyInput{KeyId: aws.String(keyARN)}); err != nil {
		t.Fatal(err)
	}

	_, err = c.DescribeKey(cx, &kms.DescribeKeyInput{KeyId: aws.String("alias/nope")})
	wantAPIError[*types.NotFoundException](t, "DescribeKey of an unknown alias", err)

	// Deletion: 7 to 30 days; pending deletion refuses use; cancel leaves it disabled.
	_, err = c.ScheduleKeyDeletion(cx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(keyARN), PendingWindowInDays: aws.Int32(6)})
	wantCode(t, "ScheduleKeyDeletion(6 days)", err, "ValidationException")
	sd, err := c.ScheduleKeyDeletion(cx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(keyARN), PendingWindowInDays: aws.Int32(7)})
	if err != nil || sd.KeyState != types.KeyStatePendingDeletion || aws.ToInt32(sd.PendingWindowInDays) != 7 {
		t.Fatalf("ScheduleKeyDeletion = %+v, %v", sd, err)
	}
	if got, want := sd.DeletionDate.Sub(w.clock.Now()), 7*24*time.Hour; got < want-time.Second || got > want+time.Second {
		t.Fatalf("DeletionDate is %v away, want %v", got, want)
	}
	_, err = c.Encrypt(cx, &kms.EncryptInput{KeyId: aws.String(keyARN), Plaintext: []byte("x")})
	wantAPIError[*types.KMSInvalidStateException](t, "Encrypt with a key pending deletion", err)
	_, err = c.EnableKey(cx, &kms.EnableKeyInput{KeyId: aws.String(keyARN)})
	wantAPIError[*types.KMSInvalidStateException](t, "EnableKey pending deletion", err)
	if _, err := c.CancelKeyDeletion(cx, &kms.CancelKeyDeletionInput{KeyId: aws.String(keyARN)}); err != nil {
		t.Fatal(err)
	}
	d, _ = c.DescribeKey(cx, &kms.DescribeKeyInput{KeyId: aws.String(keyARN)})
	if d.KeyMetadata.KeyState != types.KeyStateDisabled {
		t.Fatalf("KeyState after CancelKeyDeletion = %s, want Disabled", d.KeyMetadata.KeyState)
	}

	// The deletion date passing deletes the key (other's deletion, on the emulator clock).
	if _, err := c.ScheduleKeyDeletion(cx, &kms.ScheduleKeyDeletionInput{KeyId: other.KeyMetadata.Arn, PendingWindowInDays: aws.Int32(7)}); err != nil {
		t.Fatal(err)
	}
	w.clock.Add(7*24*time.Hour + time.Minute)
	if _, err := w.emu.Key(*other.KeyMetadata.Arn); err == nil {
		t.Fatal("the key still exists after its deletion date")
	}
	_, err = c.DescribeKey(context.Background(), &kms.DescribeKeyInput{KeyId: other.KeyMetadata.Arn})
	// The SDK signs with the real clock, now a week behind the emulator's.
	wantCode(t, "DescribeKey with a week-old signature", err, "InvalidSignatureException")
}

func TestRotationWithSDK(t *testing.T) {
	w := newWorld(t)
	c := w.client(w.alice)
	cx := ctx(t)
	k, err := c.CreateKey(cx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	arn := k.KeyMetadata.Arn
	ec := map[string]string{"org": "a"}
	old, err := c.Encrypt(cx, &kms.EncryptInput{KeyId: arn, Plaintext: []byte("before"), EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.GetKeyRotationStatus(cx, &kms.GetKeyRotationStatusInput{KeyId: arn})
	if err != nil || st.KeyRotationEnabled {
		t.Fatalf("GetKeyRotationStatus = %+v, %v", st, err)
	}
	_, err = c.EnableKeyRotation(cx, &kms.EnableKeyRotationInput{KeyId: arn, RotationPeriodInDays: aws.Int32(89)})
	wantCode(t, "EnableKeyRotation(89 days)", err, "ValidationException")
	if _, err := c.EnableKeyRotation(cx, &kms.EnableKeyRotationInput{KeyId: arn, RotationPeriodInDays: aws.Int32(90)}); err != nil {
		t.Fatal(err)
	}
	st, err = c.GetKeyRotationStatus(cx, &kms.GetKeyRotationStatusInput{KeyId: arn})
	if err != nil || !st.KeyRotationEnabled || aws.ToInt32(st.RotationPeriodInDays) != 90 || st.NextRotationDate == nil {
		t.Fatalf("GetKeyRotationStatus after enabling = %+v, %v", st, err)
	}
	if _, err := c.RotateKeyOnDemand(cx, &kms.RotateKeyOnDemandInput{KeyId: arn}); err != nil {
		t.Fatal(err)
	}
	rot, err := c.ListKeyRotations(cx, &kms.ListKeyRotationsInput{KeyId: arn})
	if err != nil || len(rot.Rotations) != 1 || rot.Rotations[0].RotationType != types.RotationTypeOnDemand ||
		rot.Rotations[0].KeyMaterialState != types.KeyMaterialStateCurrent {
		t.Fatalf("ListKeyRotations = %+v, %v", rot, err)
	}
	d, _ := c.DescribeKey(cx, &kms.DescribeKeyInput{KeyId: arn})
	if *d.KeyMetadata.Arn != *arn || *d.KeyMetadata.CurrentKeyMaterialId != *rot.Rotations[0].KeyMaterialId {
		t.Fatalf("after rotation: ARN %s, current material %s, want %s", *d.KeyMetadata.Arn, *d.KeyMetadata.CurrentKeyMaterialId, *rot.Rotations[0].KeyMaterialId)
	}
	// Old blobs still open, under the old material.
	dec, err := c.Decrypt(cx, &kms.DecryptInput{CiphertextBlob: old.CiphertextBlob, EncryptionContext: ec})
	if err != nil || string(dec.Plaintext) != "before" || *dec.KeyMaterialId == *rot.Rotations[0].KeyMaterialId {
		t.Fatalf("Decrypt of a blob from before rotation = %+v, %v", dec, err)
	}
	fresh, _ := c.Encrypt(cx, &kms.EncryptInput{KeyId: arn, Plaintext: []byte("after"), EncryptionContext: ec})
	dec, err = c.Decrypt(cx, &kms.DecryptInput{CiphertextBlob: fresh.CiphertextBlob, EncryptionContext: ec})
	if err != nil || *dec.KeyMaterialId != *rot.Rotations[0].KeyMaterialId {
		t.Fatalf("Decrypt of a new blob = %+v, %v", dec, err)
	}
	if _, err := c.DisableKeyRotation(cx, &kms.DisableKeyRotationInput{KeyId: arn}); err != nil {
		t.Fatal(err)
	}
	all, err := c.ListKeyRotations(cx, &kms.ListKeyRotationsInput{KeyId: arn, IncludeKeyMaterial: types.IncludeKeyMaterialAllKeyMaterial, Limit: aws.Int32(1)})
	if err != nil || len(all.Rotations) != 1 || !all.Truncated || all.NextMarker == nil {
		t.Fatalf("ListKeyRotations page 1 = %+v, %v", all, err)
	}
	all2, err := c.ListKeyRotations(cx, &kms.ListKeyRotationsInput{KeyId: arn, IncludeKeyMaterial: types.IncludeKeyMaterialAllKeyMaterial, Marker: all.NextMarker})
	if err != nil || len(all2.Rotations) != 1 || all2.Truncated {
		t.Fatalf("ListKeyRotations page 2 = %+v, %v", all2, err)
	}
}

func TestAutomaticRotationFollowsTheClock(t *testing.T) {
	w := newWorld(t)
	info, err := w.emu.CreateKey(acctA, awsemu.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := w.client(w.alice)
	if _, err := c.EnableKeyRotation(ctx(t), &kms.EnableKeyRotationInput{KeyId: aws.String(info.ARN), RotationPeriodInDays: aws.Int32(90)}); err != nil {
		t.Fatal(err)
	}
	w.clock.Add(89 * 24 * time.Hour)
	if got, _ := w.emu.Key(info.ARN); len(got.MaterialIDs) != 1 {
		t.Fatalf("after 89 days: %d materials, want 1", len(got.MaterialIDs))
	}
	w.clock.Add(2 * 24 * time.Hour)
	if got, _ := w.emu.Key(info.ARN); len(got.MaterialIDs) != 2 || got.ARN != info.ARN {
		t.Fatalf("after 91 days: %d materials (ARN %s), want 2 and the same ARN", len(got.MaterialIDs), got.ARN)
	}
}

func TestKeyPolicyWithSDK(t *testing.T) {
	w := newWorld(t)
	cx := ctx(t)
	alice, bob := w.client(w.alice), w.client(w.bob)
	k, err := alice.CreateKey(cx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	arn := *k.KeyMetadata.Arn
	gp, err := alice.GetKeyPolicy(cx, &kms.GetKeyPolicyInput{KeyId: aws.String(arn), PolicyName: aws.String("default")})
	if err != nil || !strings.Contains(*gp.Policy, "arn:aws:iam::"+acctA+":root") {
		t.Fatalf("GetKeyPolicy = %v, %v", gp, err)
	}
	// Bob (account B) is not in the default policy.
	_, err = bob.Encrypt(cx, &kms.EncryptInput{KeyId: aws.String(arn), Plaintext: []byte("x")})
	ade := wantCode(t, "cross-account Encrypt without a policy", err, "AccessDeniedException")
	for _, s := range []string{w.bob.Caller, "kms:Encrypt", arn, "no resource-based policy allows"} {
		if !strings.Contains(ade.ErrorMessage(), s) {
			t.Errorf("AccessDenied message %q does not name %q", ade.ErrorMessage(), s)
		}
	}
	// Bob cannot name the key by id: ids are his own account's.
	_, err = bob.Encrypt(cx, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("x")})
	wantAPIError[*types.NotFoundException](t, "cross-account Encrypt by key id", err)

	pol := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[
	 {"Sid":"owner","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::%[1]s:root"},"Action":"kms:*","Resource":"*"},
	 {"Sid":"platform","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::%[2]s:root"},
	  "Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey"],"Resource":"*",
	  "Condition":{"StringEquals":{"aws:PrincipalAccount":"%[2]s","kms:EncryptionContext:cmk:org":"org-a"}}},
	 {"Sid":"describe","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::%[2]s:root"},"Action":"kms:DescribeKey","Resource":"*"}]}`, acctA, acctB)
	if _, err := alice.PutKeyPolicy(cx, &kms.PutKeyPolicyInput{KeyId: aws.String(arn), Policy: aws.String(pol)}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.DescribeKey(cx, &kms.DescribeKeyInput{KeyId: aws.String(arn)}); err != nil {
		t.Fatalf("cross-account DescribeKey: %v", err)
	}
	enc, err := bob.Encrypt(cx, &kms.EncryptInput{KeyId: aws.String(arn), Plaintext: []byte("x"), EncryptionContext: map[string]string{"cmk:org": "org-a"}})
	if err != nil {
		t.Fatalf("cross-account Encrypt with org-a's context: %v", err)
	}
	if _, err := bob.Decrypt(cx, &kms.DecryptInput{KeyId: aws.String(arn), CiphertextBlob: enc.CiphertextBlob, EncryptionContext: map[string]string{"cmk:org": "org-a"}}); err != nil {
		t.Fatalf("cross-account Decrypt: %v", err)
	}
	_, err = bob.Encrypt(cx, &kms.EncryptInput{KeyId: aws.String(arn), Plaintext: []byte("x"), EncryptionContext: map[string]string{"cmk:org": "org-b"}})
	wantCode(t, "Encrypt with another org's context", err, "AccessDeniedException")
	// Management stays the owner's: Bob cannot disable or re-policy it.
	_, err = bob.DisableKey(cx, &kms.DisableKeyInput{KeyId: aws.String(arn)})
	wantAPIError[*types.NotFoundException](t, "cross-account DisableKey", err)

	// Lockout check: a policy that would lock Alice out is refused.
	_, err = alice.PutKeyPolicy(cx, &kms.PutKeyPolicyInput{KeyId: aws.String(arn), Policy: aws.String(fmt.Sprintf(
		`{"Statement":[{"Effect":"Allow","Principal":{"AWS":"%s"},"Action":"kms:Decrypt","Resource":"*"}]}`, acctA))})
	wantAPIError[*types.MalformedPolicyDocumentException](t, "PutKeyPolicy that locks the owner out", err)
	_, err = alice.PutKeyPolicy(cx, &kms.PutKeyPolicyInput{KeyId: aws.String(arn), Policy: aws.String(`{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"DateGreaterThan":{"aws:CurrentTime":"2020-01-01T00:00:00Z"}}}]}`)})
	wantAPIError[*types.MalformedPolicyDocumentException](t, "PutKeyPolicy with an unsupported operator", err)

	// An explicit deny wins; the message says so.
	if err := w.emu.PutKeyPolicy(arn, fmt.Sprintf(`{"Statement":[
	 {"Effect":"Allow","Principal":{"AWS":"%[1]s"},"Action":"kms:*","Resource":"*"},
	 {"Effect":"Deny","Principal":{"AWS":"%[2]s"},"Action":"kms:Encrypt","Resource":"*"}]}`, acctA, w.alice.Principal)); err != nil {
		t.Fatal(err)
	}
	_, err = alice.Encrypt(cx, &kms.EncryptInput{KeyId: aws.String(arn), Plaintext: []byte("x")})
	ade = wantCode(t, "Encrypt under an explicit deny", err, "AccessDeniedException")
	if !strings.Contains(ade.ErrorMessage(), "explicit deny") {
		t.Errorf("AccessDenied message %q does not say explicit deny", ade.ErrorMessage())
	}
}

func TestRoleSessionsWithSDK(t *testing.T) {
	w := newWorld(t)
	cx := ctx(t)
	role, err := w.emu.CreateRole(acctB, "cmk-platform")
	if err != nil {
		t.Fatal(err)
	}
	sess, err := w.emu.AssumeRole(role, "s1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	info, err := w.emu.CreateKey(acctA, awsemu.KeyOptions{Policy: fmt.Sprintf(`{"Statement":[
	 {"Effect":"Allow","Principal":{"AWS":"%s"},"Action":"kms:*","Resource":"*"},
	 {"Effect":"Allow","Principal":{"AWS":"%s"},"Action":"kms:DescribeKey","Resource":"*"}]}`, acctA, role)})
	if err != nil {
		t.Fatal(err)
	}
	c := w.client(sess)
	if _, err := c.DescribeKey(cx, &kms.DescribeKeyInput{KeyId: aws.String(info.ARN)}); err != nil {
		t.Fatalf("DescribeKey as the role session: %v", err)
	}
	_, err = c.Encrypt(cx, &kms.EncryptInput{KeyId: aws.String(info.ARN), Plaintext: []byte("x")})
	ade := wantCode(t, "Encrypt as the role session", err, "AccessDeniedException")
	if !strings.Contains(ade.ErrorMessage(), "assumed-role/cmk-platform/s1") {
		t.Errorf("message %q does not name the session", ade.ErrorMessage())
	}
	// Without the session token, or with another, the key is not recognised.
	noTok := sess
	noTok.SessionToken = ""
	_, err = w.client(noTok).DescribeKey(cx, &kms.DescribeKeyInput{KeyId: aws.String(info.ARN)})
	wantCode(t, "request without the session token", err, "UnrecognizedClientException")
	badTok := sess
	badTok.SessionToken = "AAAA" + sess.SessionToken[4:]
	_, err = w.client(badTok).DescribeKey(cx, &kms.DescribeKeyInput{KeyId: aws.String(info.ARN)})
	wantCode(t, "request with a wrong session token", err, "UnrecognizedClientException")
}

func TestSwitchesWithSDK(t *testing.T) {
	w := newWorld(t)
	cx := ctx(t)
	c := w.client(w.alice)
	info, err := w.emu.CreateKey(acctA, awsemu.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	describe := func() error {
		_, err := c.DescribeKey(cx, &kms.DescribeKeyInput{KeyId: aws.String(info.ARN)})
		return err
	}
	w.emu.SetThrottled(true)
	wantCode(t, "throttled", describe(), "ThrottlingException")
	w.emu.SetThrottled(false)

	w.emu.SetFault(500, 0)
	wantAPIError[*types.KMSInternalException](t, "fault 500", describe())
	w.emu.SetFault(503, 0)
	var re interface{ HTTPStatusCode() int }
	if err := describe(); !errors.As(err, &re) || re.HTTPStatusCode() != 503 {
		t.Fatalf("fault 503: %v", err)
	}
	w.emu.SetFault(0, 0)

	w.emu.SetRateLimit(acctA, 2, time.Minute)
	if err := describe(); err != nil {
		t.Fatal(err)
	}
	if err := describe(); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "third request in the minute", describe(), "ThrottlingException")
	// Another account is not limited.
	if _, err := w.client(w.bob).ListKeys(cx, &kms.ListKeysInput{}); err != nil {
		t.Fatalf("account B under account A's limit: %v", err)
	}
	w.clock.Add(time.Minute)
	if err := describe(); err != nil {
		t.Fatalf("after the window: %v", err)
	}
	w.emu.SetRateLimit(acctA, 0, 0)

	// Latency: the client's deadline cuts it short.
	w.emu.SetFault(0, 2*time.Second)
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = c.DescribeKey(short, &kms.DescribeKeyInput{KeyId: aws.String(info.ARN)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow answer under a 100ms deadline: %v", err)
	}
	w.emu.SetFault(0, 0)
}

func TestValidationWithSDK(t *testing.T) {
	w := newWorld(t)
	cx := ctx(t)
	c := w.client(w.alice)
	info, _ := w.emu.CreateKey(acctA, awsemu.KeyOptions{})
	_, err := c.Encrypt(cx, &kms.EncryptInput{KeyId: aws.String(info.ARN), Plaintext: make([]byte, 4097)})
	wantCode(t, "Encrypt of 4097 bytes", err, "ValidationException")
	_, err = c.CreateKey(cx, &kms.CreateKeyInput{KeySpec: types.KeySpecRsa2048})
	wantAPIError[*types.UnsupportedOperationException](t, "CreateKey RSA", err)
	_, err = c.Encrypt(cx, &kms.EncryptInput{KeyId: aws.String(info.ARN), Plaintext: []byte("x"), EncryptionAlgorithm: types.EncryptionAlgorithmSpecRsaesOaepSha256})
	wantAPIError[*types.InvalidKeyUsageException](t, "Encrypt with RSA OAEP", err)
	_, err = c.DescribeKey(cx, &kms.DescribeKeyInput{KeyId: aws.String("arn:aws:kms:eu-west-1:" + acctA + ":key/" + info.KeyID)})
	wantAPIError[*types.NotFoundException](t, "DescribeKey in another Region", err)
	_, err = c.GetKeyPolicy(cx, &kms.GetKeyPolicyInput{KeyId: aws.String(info.ARN), PolicyName: aws.String("other")})
	wantCode(t, "GetKeyPolicy(other)", err, "ValidationException")
	for i := 0; i < 25; i++ {
		if _, err := c.RotateKeyOnDemand(cx, &kms.RotateKeyOnDemandInput{KeyId: aws.String(info.ARN)}); err != nil {
			t.Fatalf("rotation %d: %v", i+1, err)
		}
	}
	_, err = c.RotateKeyOnDemand(cx, &kms.RotateKeyOnDemandInput{KeyId: aws.String(info.ARN)})
	wantAPIError[*types.LimitExceededException](t, "26th on-demand rotation", err)
}
