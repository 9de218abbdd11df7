// Package keyring creates, wraps and unwraps the data-encryption keys (DEKs)
// of an org's stores, under whichever key-encryption key (KEK) the org uses:
// the platform's system key before CMK, the customer's Key Vault key after.
//
// Every data key is 32 random bytes (AES-256). A system-wrapped key is bound
// to its identity (org, sandbox, store, id) as associated data. A
// customer-wrapped key is RSA-OAEP-256 ciphertext produced by the customer's
// vault, which never returns the key-encryption key itself.
package keyring

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"

	"github.com/google/uuid"

	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/store"
	"github.com/cmk-project/cmk/internal/systemkey"
)

// DEKSize is the size of a data-encryption key: AES-256.
const DEKSize = 32

// ErrNoCustomerProvider is returned when an org uses its customer key but the
// service has no key provider configured.
var ErrNoCustomerProvider = errors.New("no customer key provider is configured")

// Keyring ties the stored data keys to the key-encryption keys.
type Keyring struct {
	Store    Store
	System   SystemKeys
	Customer kms.Provider // nil when the service has no Key Vault access configured
	Rand     io.Reader    // nil = crypto/rand
}

func (k *Keyring) rand() io.Reader {
	if k.Rand != nil {
		return k.Rand
	}
	return rand.Reader
}

// AAD is the associated data that binds a system-wrapped data key to its
// identity, so it cannot be moved to another record.
func AAD(dk store.DataKey) []byte {
	return []byte("cmk data key v1\x00" + dk.OrgID + "\x00" + dk.Sandbox + "\x00" + dk.Store + "\x00" + dk.ID)
}

// SystemKeys is the system key as the keyring uses it: a set of
// generations (a *systemkey.Key from a file is a set of one; with the
// platform key in a KMS, platformkey.Ring holds several).
type SystemKeys interface {
	// Current is the generation new data keys are wrapped under.
	Current() *systemkey.Key
	// Key returns the generation named id (a data key's KEKRef), or an
	// error when it is not held; it may load generations another replica
	// added.
	Key(ctx context.Context, id string) (*systemkey.Key, error)
}

var _ SystemKeys = (*systemkey.Key)(nil)

// CustomerRef is the key reference of an org that uses its customer key.
func CustomerRef(o store.Org) kms.KeyRef { return kms.KeyRef{VaultURL: o.VaultURL, Name: o.KeyName} }

// CreateSandbox adds a sandbox to an org with a fresh data key for each of
// its stores, wrapped by the org's current key-encryption key.
func (k *Keyring) CreateSandbox(ctx context.Context, orgID, name string) error {
	// Twice at most: if the org switched to its customer key between reading
	// its mode and storing the keys, the store refuses and we wrap again.
	for attempt := 0; ; attempt++ {
		org, err := k.Store.Org(ctx, orgID)
		if err != nil {
			return fmt.Errorf("create sandbox %s: %w", name, err)
		}
		var keys []store.DataKey
		for _, kind := range store.StoreKinds {
			dk, err := k.newDataKey(ctx, org, name, kind)
			if err != nil {
				return fmt.Errorf("create sandbox %s: %w", name, err)
			}
			keys = append(keys, dk)
		}
		err = k.Store.CreateSandbox(ctx, orgID, name, keys)
		if !errors.Is(err, store.ErrModeChanged) || attempt > 0 {
			return err
		}
	}
}

// RotateStoreKey gives a store a new data key (new objects are sealed with
// it; older objects keep opening with theirs) and returns it.
func (k *Keyring) RotateStoreKey(ctx context.Context, orgID, sandbox, kind string) (store.DataKey, error) {
	for attempt := 0; ; attempt++ {
		org, err := k.Store.Org(ctx, orgID)
		if err != nil {
			return store.DataKey{}, err
		}
		dk, err := k.newDataKey(ctx, org, sandbox, kind)
		if err != nil {
			return dk, err
		}
		err = k.Store.AddDataKey(ctx, dk)
		if !errors.Is(err, store.ErrModeChanged) || attempt > 0 {
			return dk, err
		}
	}
}

func (k *Keyring) newDataKey(ctx context.Context, org store.Org, sandbox, kind string) (store.DataKey, error) {
	dek := make([]byte, DEKSize)
	defer clear(dek)
	if _, err := io.ReadFull(k.rand(), dek); err != nil {
		return store.DataKey{}, fmt.Errorf("generate data key: %w", err)
	}
	dk := store.DataKey{ID: uuid.NewString(), OrgID: org.ID, Sandbox: sandbox, Store: kind}
	if org.KEKMode == store.ModeCustomer {
		ref := CustomerRef(org)
		dk, err := k.WrapCustomer(ctx, ref, dk, dek)
		if err != nil {
			return dk, err
		}
		// Key Vault wraps under a disabled key (only unwrap is refused), so
		// a new data key is kept only once its wrapping is proved to open.
		if err := k.ProveCustomer(ctx, ref, dk, dek); err != nil {
			return store.DataKey{}, err
		}
		return dk, nil
	}
	return k.WrapSystem(dk, dek)
}

// ProveCustomer unwraps dk's new customer wrapping and checks, in constant
// time, that it gives back dek: the proof every new wrapping passes before
// it is stored or replaces an older one (data keys made here, the
// enablement job's re-wrap, rotation). A key the vault lets wrap but not
// unwrap (a disabled key does exactly that) fails with the vault's refusal;
// an answer with another key fails as a *kms.Error of KindUnwrapFailed.
func (k *Keyring) ProveCustomer(ctx context.Context, ref kms.KeyRef, dk store.DataKey, dek []byte) error {
	if k.Customer == nil {
		return ErrNoCustomerProvider
	}
	got, err := k.Customer.Unwrap(audit.WithOrg(ctx, dk.OrgID), ref, kms.Wrapped{KeyVersion: dk.KEKVersion, Alg: dk.Alg, Ciphertext: dk.Wrapped})
	defer clear(got)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(got, dek) != 1 {
		return &kms.Error{Kind: kms.KindUnwrapFailed, Op: "unwrap", Key: ref.String(),
			Err: fmt.Errorf("the new wrapping of data key %s did not unwrap to the data key", dk.ID)}
	}
	return nil
}

// WrapSystem returns dk wrapped by the current generation of the system key.
func (k *Keyring) WrapSystem(dk store.DataKey, dek []byte) (store.DataKey, error) {
	return WrapUnder(k.System.Current(), dk, dek)
}

// WrapUnder returns dk wrapped by one generation of the system key: its
// KEKRef names the generation.
func WrapUnder(sys *systemkey.Key, dk store.DataKey, dek []byte) (store.DataKey, error) {
	w, err := sys.Wrap(dek, AAD(dk))
	if err != nil {
		return dk, err
	}
	dk.KEK, dk.KEKRef, dk.KEKVersion, dk.Alg, dk.Wrapped = store.KEKSystem, sys.ID(), "1", systemkey.Alg, w
	return dk, nil
}

// UnwrapUnder opens a system-wrapped dk with the generation sys; the caller
// checks that dk names it.
func UnwrapUnder(sys *systemkey.Key, dk store.DataKey) ([]byte, error) {
	return sys.Unwrap(dk.Wrapped, AAD(dk))
}

// WrapCustomer returns dk wrapped by the newest version of the customer key.
func (k *Keyring) WrapCustomer(ctx context.Context, ref kms.KeyRef, dk store.DataKey, dek []byte) (store.DataKey, error) {
	if k.Customer == nil {
		return dk, ErrNoCustomerProvider
	}
	w, err := k.Customer.Wrap(audit.WithOrg(ctx, dk.OrgID), ref, dek)
	if err != nil {
		return dk, err
	}
	dk.KEK, dk.KEKRef, dk.KEKVersion, dk.Alg, dk.Wrapped = store.KEKCustomer, ref.String(), w.KeyVersion, w.Alg, w.Ciphertext
	return dk, nil
}

// Unwrap recovers the plaintext data key of dk. The caller must clear it
// when done.
func (k *Keyring) Unwrap(ctx context.Context, dk store.DataKey) ([]byte, error) {
	switch dk.KEK {
	case store.KEKSystem:
		sys, err := k.System.Key(ctx, dk.KEKRef)
		if err != nil {
			return nil, fmt.Errorf("data key %s: %w", dk.ID, err)
		}
		return UnwrapUnder(sys, dk)
	case store.KEKCustomer:
		if k.Customer == nil {
			return nil, ErrNoCustomerProvider
		}
		org, err := k.Store.Org(ctx, dk.OrgID)
		if err != nil {
			return nil, err
		}
		ref := CustomerRef(org)
		if ref.String() != dk.KEKRef {
			return nil, fmt.Errorf("data key %s is wrapped by %s, not the org's key %s", dk.ID, dk.KEKRef, ref)
		}
		dek, err := k.Customer.Unwrap(audit.WithOrg(ctx, dk.OrgID), ref, kms.Wrapped{KeyVersion: dk.KEKVersion, Alg: dk.Alg, Ciphertext: dk.Wrapped})
		if err != nil {
			return nil, err
		}
		if len(dek) != DEKSize {
			clear(dek)
			return nil, fmt.Errorf("data key %s unwrapped to %d bytes, want %d", dk.ID, len(dek), DEKSize)
		}
		return dek, nil
	}
	return nil, fmt.Errorf("data key %s has unknown key-encryption kind %q", dk.ID, dk.KEK)
}
