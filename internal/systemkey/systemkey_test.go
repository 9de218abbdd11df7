package systemkey

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "system.key")
	k1, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("key file mode = %v, want %v", got, want)
	}
	k2, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if k1.ID() != k2.ID() {
		t.Errorf("reloaded key id = %s, want %s", k2.ID(), k1.ID())
	}
	w, err := k1.Wrap([]byte("0123456789abcdef0123456789abcdef"), []byte("org/sb/lake/1"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := k2.Unwrap(w, []byte("org/sb/lake/1"))
	if err != nil || !bytes.Equal(got, []byte("0123456789abcdef0123456789abcdef")) {
		t.Errorf("Unwrap = %q, %v; want the wrapped key", got, err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(path); err == nil {
		t.Error("LoadOrCreate accepted a world-readable key file")
	}
}

func TestUnwrapTamper(t *testing.T) {
	k, err := New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	aad := []byte("org/sb/lake/1")
	w, err := k.Wrap(bytes.Repeat([]byte{1}, 32), aad)
	if err != nil {
		t.Fatal(err)
	}
	for i := range w {
		bad := bytes.Clone(w)
		bad[i] ^= 0x01
		if _, err := k.Unwrap(bad, aad); !errors.Is(err, ErrUnwrap) {
			t.Fatalf("Unwrap with byte %d flipped = %v, want ErrUnwrap", i, err)
		}
	}
	if _, err := k.Unwrap(w, []byte("org/sb/profile/1")); !errors.Is(err, ErrUnwrap) {
		t.Errorf("Unwrap under another record's aad = %v, want ErrUnwrap", err)
	}
	if _, err := k.Unwrap(w[:10], aad); !errors.Is(err, ErrUnwrap) {
		t.Errorf("Unwrap of truncated key = %v, want ErrUnwrap", err)
	}
	other, _ := New(bytes.Repeat([]byte{8}, 32))
	if _, err := other.Unwrap(w, aad); !errors.Is(err, ErrUnwrap) {
		t.Errorf("Unwrap under another system key = %v, want ErrUnwrap", err)
	}
}

// TestDeriveAEAD pins the derivation to RFC 5869 HKDF-SHA256, computed here
// with HMAC alone, so a change to the salt or the hash (which would make
// every stored secret unreadable) fails; and checks that labels, and the
// wrapping key, are independent.
func TestDeriveAEAD(t *testing.T) {
	raw := bytes.Repeat([]byte{7}, 32)
	k, err := New(raw)
	if err != nil {
		t.Fatal(err)
	}
	hmacSum := func(key []byte, parts ...[]byte) []byte {
		m := hmac.New(sha256.New, key)
		for _, p := range parts {
			m.Write(p)
		}
		return m.Sum(nil)
	}
	prk := hmacSum([]byte("cmk system key derivation v1"), raw)
	want := hmacSum(prk, []byte("test label"), []byte{1}) // one block is 32 bytes
	block, err := aes.NewCipher(want)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	a, err := k.DeriveAEAD("test label")
	if err != nil {
		t.Fatal(err)
	}
	nonce, pt, aad := make([]byte, 12), []byte("a webhook secret"), []byte("org/hook")
	if got, want := a.Seal(nil, nonce, pt, aad), ref.Seal(nil, nonce, pt, aad); !bytes.Equal(got, want) {
		t.Errorf("DeriveAEAD(test label).Seal = %x, want %x (HKDF-SHA256, salt %q)", got, want, deriveSalt)
	}

	sealed := a.Seal(nil, nonce, pt, aad)
	other, _ := k.DeriveAEAD("other label")
	if _, err := other.Open(nil, nonce, sealed, aad); err == nil {
		t.Error("a ciphertext of one label opened under another label's key")
	}
	if _, err := k.Unwrap(append(bytes.Clone(nonce), sealed...), aad); !errors.Is(err, ErrUnwrap) {
		t.Errorf("Unwrap(derived-key ciphertext) = %v, want ErrUnwrap", err)
	}
	w, _ := k.Wrap(pt, aad)
	if _, err := a.Open(nil, w[:12], w[12:], aad); err == nil {
		t.Error("a wrapped data key opened under a derived key")
	}
	if _, err := k.DeriveAEAD(""); err == nil {
		t.Error("DeriveAEAD(\"\") = nil error, want a refusal")
	}
}

// TestNewKeepsNoCopy checks that a Key keeps working after the caller
// clears the raw bytes it was built from, as callers are told to.
func TestNewKeepsNoCopy(t *testing.T) {
	raw := bytes.Repeat([]byte{7}, 32)
	k, err := New(raw)
	if err != nil {
		t.Fatal(err)
	}
	id := k.ID()
	clear(raw)
	dek := bytes.Repeat([]byte{1}, 32)
	w, err := k.Wrap(dek, []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := k.Unwrap(w, []byte("aad")); err != nil || !bytes.Equal(got, dek) {
		t.Errorf("Unwrap(Wrap(dek)) after clearing raw = %x, %v; want %x", got, err, dek)
	}
	again, _ := New(bytes.Repeat([]byte{7}, 32))
	if k.ID() != id || again.ID() != id {
		t.Errorf("ID after clearing raw = %s, from the same bytes %s; want %s", k.ID(), again.ID(), id)
	}
}

func TestDerive(t *testing.T) {
	k1, _ := New(bytes.Repeat([]byte{7}, 32))
	k1again, _ := New(bytes.Repeat([]byte{7}, 32))
	k2, _ := New(bytes.Repeat([]byte{8}, 32))
	a := k1.Derive("purpose a")
	if len(a) != 32 {
		t.Fatalf("len(Derive) = %d, want 32", len(a))
	}
	if !bytes.Equal(a, k1again.Derive("purpose a")) {
		t.Error("Derive of the same key and purpose differs between two loads of the key")
	}
	if bytes.Equal(a, k1.Derive("purpose b")) {
		t.Error("Derive gives two purposes the same secret")
	}
	if bytes.Equal(a, k2.Derive("purpose a")) {
		t.Error("Derive gives two system keys the same secret")
	}
	if bytes.Equal(a, bytes.Repeat([]byte{7}, 32)) {
		t.Error("Derive returned the system key itself")
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		size int
		mode os.FileMode
		ok   bool
	}{
		{"good", 32, 0o600, true},
		{"short", 31, 0o600, false},
		{"long", 4096, 0o600, false},
		{"group-readable", 32, 0o640, false},
	} {
		path := filepath.Join(dir, c.name)
		if err := os.WriteFile(path, make([]byte, c.size), c.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(path, c.mode)
		raw, err := ReadFile(path)
		if (err == nil) != c.ok || (c.ok && len(raw) != 32) {
			t.Errorf("ReadFile(%s) = %d bytes, %v; want ok %v", c.name, len(raw), err, c.ok)
		}
	}
	if _, err := ReadFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadFile(missing) = %v, want ErrNotExist", err)
	}
}
