// Package systemkey holds the platform's own key-encryption key: the key
// that wraps an org's data keys before the org enables customer-managed keys.
//
// It is a 256-bit AES key in a local file the service creates on first start
// with mode 0600. Data keys are wrapped with AES-256-GCM, and the wrapping is
// bound (as associated data) to the data key's identity, so a wrapped key
// copied onto another record does not open.
//
// The key also yields independent keys for the platform's other secrets at
// rest (DeriveAEAD): HKDF-SHA256 with one label per use, so a ciphertext of
// one use never opens as another's, nor as a wrapped data key.
package systemkey

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Alg names the wrapping algorithm stored with each wrapped data key.
const Alg = "A256GCM"

// ErrUnwrap is returned when a wrapped key does not open under this key.
var ErrUnwrap = errors.New("system key cannot unwrap this data key")

// Key is the system key-encryption key.
type Key struct {
	id   string
	aead cipher.AEAD
	prk  []byte // HKDF pseudorandom key for DeriveAEAD and Derive
	rand io.Reader
}

// deriveSalt is the HKDF salt of DeriveAEAD and Derive. Changing it (or the hash)
// makes everything sealed under a derived key unreadable.
const deriveSalt = "cmk system key derivation v1"

// LoadOrCreate reads the key file at path, creating it (0600, directory 0700)
// when it does not exist. A key file readable by group or others is refused.
func LoadOrCreate(path string) (*Key, error) {
	raw, err := ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		raw = make([]byte, 32)
		defer clear(raw)
		if _, err := io.ReadFull(rand.Reader, raw); err != nil {
			return nil, fmt.Errorf("generate system key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("create system key directory: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("create system key file %s: %w", path, err)
		}
		if _, err := f.Write(raw); err != nil {
			f.Close()
			return nil, fmt.Errorf("write system key file %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, err
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
		return New(raw)
	}
	if err != nil {
		return nil, err
	}
	defer clear(raw)
	return New(raw)
}

// ReadFile reads an existing key file's 32 bytes, refusing a file readable
// by group or others, or of another size. The caller clears what it gets.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read system key file %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("system key file %s has mode %v; it must be readable by its owner only (chmod 600 %s)", path, st.Mode().Perm(), path)
	}
	raw, err := io.ReadAll(io.LimitReader(f, 33))
	if err != nil {
		clear(raw)
		return nil, fmt.Errorf("read system key file %s: %w", path, err)
	}
	if len(raw) != 32 {
		clear(raw)
		return nil, fmt.Errorf("system key file %s holds %d bytes or more; a system key is exactly 32", path, len(raw))
	}
	return raw, nil
}

// New builds a Key from 32 raw bytes. It keeps no reference to raw, which
// the caller should clear; the AES key schedule it builds lives as long as
// the Key (see docs/security.md, "Key material in memory").
func New(raw []byte) (*Key, error) {
	if len(raw) != 32 {
		return nil, fmt.Errorf("system key is %d bytes; exactly 32 are required", len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	prk, err := hkdf.Extract(sha256.New, raw, []byte(deriveSalt))
	if err != nil {
		return nil, fmt.Errorf("system key derivation: %w", err)
	}
	in := append([]byte("cmk system key id\x00"), raw...)
	sum := sha256.Sum256(in)
	clear(in)
	return &Key{id: "system:" + hex.EncodeToString(sum[:8]), aead: aead, prk: prk, rand: rand.Reader}, nil
}

// DeriveAEAD returns AES-256-GCM under a key derived from the system key
// for one use, named by label (HKDF-SHA256: salt deriveSalt, info label).
// Each use must have its own label, and a label must never change: the
// derived key, and everything sealed under it, depends on it. The derived
// key is independent of the key Wrap uses and of every other label's.
func (k *Key) DeriveAEAD(label string) (cipher.AEAD, error) {
	if label == "" {
		return nil, errors.New("system key derivation needs a label naming its use")
	}
	sub, err := hkdf.Expand(sha256.New, k.prk, label, 32)
	if err != nil {
		return nil, fmt.Errorf("derive key %q from the system key: %w", label, err)
	}
	block, err := aes.NewCipher(sub)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Derive returns a 32-byte secret for one purpose (HKDF-SHA256 of the system
// key with purpose as its info), such as the key that signs the state of
// consent links. Each purpose gets an independent secret, the same on every
// replica that shares the system key; none of them reveals the key or
// another purpose's secret.
func (k *Key) Derive(purpose string) []byte {
	out, err := hkdf.Expand(sha256.New, k.prk, purpose, 32)
	if err != nil {
		// Only a length above 255*32 bytes fails.
		panic("systemkey: derive: " + err.Error())
	}
	return out
}

// ID is a public fingerprint of the key, safe to store and log.
func (k *Key) ID() string { return k.id }

// Wrap seals dek, bound to aad (the data key's identity).
func (k *Key) Wrap(dek, aad []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := io.ReadFull(k.rand, nonce); err != nil {
		return nil, fmt.Errorf("system key nonce: %w", err)
	}
	return k.aead.Seal(nonce, nonce, dek, aad), nil
}

// Unwrap opens a key produced by Wrap with the same aad. The caller must
// clear the result when done.
func (k *Key) Unwrap(wrapped, aad []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(wrapped) < n+k.aead.Overhead() {
		return nil, ErrUnwrap
	}
	dek, err := k.aead.Open(nil, wrapped[:n], wrapped[n:], aad)
	if err != nil {
		return nil, ErrUnwrap
	}
	return dek, nil
}

// ErrUnknownKey is returned by Key when no key of the given id is held.
var ErrUnknownKey = errors.New("no system key of this id is held")

// Current returns k: a key from a file is a set of one generation, always
// the current one (the keyring's view of the system key; with a platform
// key in a KMS, internal/platformkey holds several).
func (k *Key) Current() *Key { return k }

// Key returns k when id is its ID, and an error wrapping ErrUnknownKey
// otherwise.
func (k *Key) Key(_ context.Context, id string) (*Key, error) {
	if id != k.id {
		return nil, fmt.Errorf("system key %s is not held (this service holds %s): %w", id, k.id, ErrUnknownKey)
	}
	return k, nil
}
