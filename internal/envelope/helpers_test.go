package envelope

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// Fixed material shared by the tests. Nothing here is secret.
var (
	testDEK   = bytes.Repeat([]byte{0x42}, KeySize)
	otherDEK  = bytes.Repeat([]byte{0x24}, KeySize)
	testKeyID = "0b7a9a0e-4f57-4c39-9a57-6c1f3b3e2d10"
	testBind  = Binding{Org: "org-1", Sandbox: "sbx-1", Store: "profiles", Object: "obj-1"}
)

// detReader returns a deterministic stream of pseudo-random bytes.
func detReader(seed byte) *rand.ChaCha8 {
	var s [32]byte
	s[0] = seed
	return rand.NewChaCha8(s)
}

func detBytes(seed byte, n int) []byte {
	b := make([]byte, n)
	detReader(seed).Read(b)
	return b
}

// sealStream encrypts pt as a stream with a deterministic salt from seed.
func sealStream(t testing.TB, seed byte, dek []byte, keyID string, b Binding, pt []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := newWriter(detReader(seed), &buf, dek, keyID, b)
	if err != nil {
		t.Fatalf("newWriter: %v", err)
	}
	if _, err := w.Write(pt); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return buf.Bytes()
}

// openStream decrypts a whole stream held in memory.
func openStream(dek []byte, b Binding, ct []byte) ([]byte, error) {
	r, err := NewReader(bytes.NewReader(ct), b, func(string) ([]byte, error) { return dek, nil })
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// isRejection reports whether err is one of the two errors a bad
// ciphertext may produce.
func isRejection(err error) bool {
	return errors.Is(err, ErrAuth) || errors.Is(err, ErrFormat)
}

// saltOf returns a reader that yields the salt (version 1) or the nonce
// (version-2 record) of ciphertext ct, so that sealing again with it must
// reproduce ct exactly.
func saltOf(t testing.TB, ct []byte) io.Reader {
	t.Helper()
	if version, _, idLen, err := parseFixed(ct); err == nil && version == Version2 {
		pre := fixedSize + idLen
		return bytes.NewReader(ct[pre : pre+nonceSize])
	}
	h, err := parseHeader(ct)
	if err != nil {
		t.Fatalf("parseHeader: %v", err)
	}
	return bytes.NewReader(h.salt[:])
}
