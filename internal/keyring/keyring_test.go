package keyring

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"path/filepath"
	"testing"

	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/store"
	"github.com/cmk-project/cmk/internal/systemkey"
)

// vault is a customer key that does real AES-GCM and, like Key Vault, lets
// a disabled key wrap but refuses to unwrap with it.
type vault struct {
	aead     cipher.AEAD
	disabled bool
	wraps    int
	// other, when set, is what every unwrap answers: a vault answering for
	// another key than the one asked for.
	other []byte
}

func newVault(t *testing.T) *vault {
	key := make([]byte, 32)
	rand.Read(key)
	b, _ := aes.NewCipher(key)
	g, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return &vault{aead: g}
}

func (v *vault) Describe(context.Context, kms.KeyRef) (kms.KeyInfo, error) {
	return kms.KeyInfo{Version: "v1", Enabled: !v.disabled}, nil
}

func (v *vault) Wrap(_ context.Context, _ kms.KeyRef, dek []byte) (kms.Wrapped, error) {
	v.wraps++
	nonce := make([]byte, v.aead.NonceSize())
	rand.Read(nonce)
	return kms.Wrapped{KeyVersion: "v1", Alg: "test", Ciphertext: v.aead.Seal(nonce, nonce, dek, nil)}, nil
}

func (v *vault) Unwrap(_ context.Context, ref kms.KeyRef, w kms.Wrapped) ([]byte, error) {
	if v.disabled {
		return nil, &kms.Error{Kind: kms.KindKeyDisabled, Op: "unwrap", Key: ref.String(), Status: 403, Code: "Forbidden", InnerCode: "KeyDisabled"}
	}
	if v.other != nil {
		return append([]byte(nil), v.other...), nil
	}
	n := v.aead.NonceSize()
	return v.aead.Open(nil, w.Ciphertext[:n], w.Ciphertext[n:], nil)
}

// TestNewDataKeysAreProved: a sandbox made while the org's key wraps but
// cannot unwrap (disabled in Key Vault) or while the vault answers with
// another key gets no data key at all; with a working key it gets keys that
// open.
func TestNewDataKeysAreProved(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, filepath.Join(dir, "cmk.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sys, err := systemkey.LoadOrCreate(filepath.Join(dir, "system.key"))
	if err != nil {
		t.Fatal(err)
	}
	v := newVault(t)
	k := &Keyring{Store: st, System: sys, Customer: v}
	const org = "ORG@CmkOrg"
	if _, err := st.EnsureOrg(ctx, org); err != nil {
		t.Fatal(err)
	}
	if err := st.SetCustomerKEK(ctx, org, "https://v.vault.azure.net", "k"); err != nil {
		t.Fatal(err)
	}

	v.disabled = true
	err = k.CreateSandbox(ctx, org, "dis")
	if kms.KindOf(err) != kms.KindKeyDisabled {
		t.Errorf("CreateSandbox under a disabled key = %v, want KEY_DISABLED", err)
	}
	if v.wraps == 0 {
		t.Error("the test vault was never asked to wrap; the disabled case proves nothing")
	}
	v.disabled = false

	v.other = make([]byte, DEKSize)
	err = k.CreateSandbox(ctx, org, "other")
	if kms.KindOf(err) != kms.KindUnwrapFailed {
		t.Errorf("CreateSandbox with a vault answering another key = %v, want UNWRAP_FAILED", err)
	}
	v.other = nil

	if keys, err := st.DataKeys(ctx, org); err != nil || len(keys) != 0 {
		t.Errorf("the org has data keys %v (%v) after both refusals, want none", keys, err)
	}

	if err := k.CreateSandbox(ctx, org, "ok"); err != nil {
		t.Fatalf("CreateSandbox with a working key = %v", err)
	}
	keys, err := st.DataKeys(ctx, org)
	if err != nil || len(keys) != len(store.StoreKinds) {
		t.Fatalf("the org has %d data keys (%v), want %d for sandbox ok", len(keys), err, len(store.StoreKinds))
	}
	for _, dk := range keys {
		dek, err := k.Unwrap(ctx, dk)
		if err != nil || len(dek) != DEKSize {
			t.Errorf("data key %s of store %s does not open: %v", dk.ID, dk.Store, err)
		}
	}
}
