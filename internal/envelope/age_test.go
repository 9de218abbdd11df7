package envelope

// The age comparison lives in its own file so that only the tests of this
// package import filippo.io/age.

import (
	"bytes"
	"io"
	"testing"

	"filippo.io/age"
)

// BenchmarkAgeEncrypt encrypts the same 64 MiB as BenchmarkWriter with age
// to one X25519 recipient, for a side-by-side figure. age also seals 64 KiB
// chunks with a per-file key, using ChaCha20-Poly1305.
func BenchmarkAgeEncrypt(b *testing.B) {
	data := benchData()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		w, err := age.Encrypt(io.Discard, id.Recipient())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAgeDecrypt is the counterpart of BenchmarkReader.
func BenchmarkAgeDecrypt(b *testing.B) {
	data := benchData()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		b.Fatal(err)
	}
	var ct bytes.Buffer
	w, err := age.Encrypt(&ct, id.Recipient())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		r, err := age.Decrypt(bytes.NewReader(ct.Bytes()), id)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
}
