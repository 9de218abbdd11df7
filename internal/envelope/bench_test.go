package envelope

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

const benchSize = 64 << 20

var benchData = sync1(func() []byte { return detBytes(42, benchSize) })

// sync1 memoizes f, so the 64 MiB payload is built once and only by the
// benchmarks that use it.
func sync1[T any](f func() T) func() T {
	var v T
	var done bool
	return func() T {
		if !done {
			v, done = f(), true
		}
		return v
	}
}

func BenchmarkSealRecord(b *testing.B) {
	pt := detBytes(1, 1<<10)
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := SealRecord(testDEK, testKeyID, testBind, pt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenRecord(b *testing.B) {
	pt := detBytes(1, 1<<10)
	ct, _ := SealRecord(testDEK, testKeyID, testBind, pt)
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := OpenRecord(testDEK, testBind, ct); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriter(b *testing.B) {
	data := benchData()
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		w, err := NewWriter(io.Discard, testDEK, testKeyID, testBind)
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

func BenchmarkReader(b *testing.B) {
	ct := sealStream(b, 1, testDEK, testKeyID, testBind, benchData())
	keyFor := func(string) ([]byte, error) { return testDEK, nil }
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		r, err := NewReader(bytes.NewReader(ct), testBind, keyFor)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFileWrite compares writing 64 MiB to a file and fsyncing it,
// in plaintext and encrypted: the ratio of the two is the cost of
// encryption on the write path.
func BenchmarkFileWrite(b *testing.B) {
	data := benchData()
	dir := b.TempDir()
	run := func(b *testing.B, write func(f *os.File) error) {
		b.SetBytes(benchSize)
		for b.Loop() {
			f, err := os.Create(filepath.Join(dir, "f"))
			if err != nil {
				b.Fatal(err)
			}
			if err := write(f); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			if err := f.Close(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("plain", func(b *testing.B) {
		run(b, func(f *os.File) error {
			_, err := io.Copy(f, bytes.NewReader(data))
			return err
		})
	})
	b.Run("encrypted", func(b *testing.B) {
		run(b, func(f *os.File) error {
			w, err := NewWriter(f, testDEK, testKeyID, testBind)
			if err != nil {
				return err
			}
			if _, err := io.Copy(w, bytes.NewReader(data)); err != nil {
				return err
			}
			return w.Close()
		})
	})
}

// BenchmarkFileRead compares reading 64 MiB from the page cache, in
// plaintext (64 KiB reads) and encrypted (one chunk per read).
func BenchmarkFileRead(b *testing.B) {
	data := benchData()
	dir := b.TempDir()
	plain, enc := filepath.Join(dir, "plain"), filepath.Join(dir, "enc")
	if err := os.WriteFile(plain, data, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(enc, sealStream(b, 1, testDEK, testKeyID, testBind, data), 0o600); err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, name string, read func(f *os.File) error) {
		b.SetBytes(benchSize)
		for b.Loop() {
			f, err := os.Open(name)
			if err != nil {
				b.Fatal(err)
			}
			if err := read(f); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	}
	b.Run("plain", func(b *testing.B) {
		buf := make([]byte, ChunkSize)
		run(b, plain, func(f *os.File) error {
			_, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
			return err
		})
	})
	b.Run("encrypted", func(b *testing.B) {
		keyFor := func(string) ([]byte, error) { return testDEK, nil }
		run(b, enc, func(f *os.File) error {
			r, err := NewReader(f, testBind, keyFor)
			if err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, r)
			return err
		})
	})
}
