package envelope

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/iotest"
)

var sizeClasses = []int{0, 1, ChunkSize - 1, ChunkSize, ChunkSize + 1, 3 * ChunkSize}

func TestStreamRoundTrip(t *testing.T) {
	for _, size := range sizeClasses {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			pt := detBytes(byte(size), size)
			ct := sealStream(t, 1, testDEK, testKeyID, testBind, pt)
			want, err := CiphertextSize(testKeyID, int64(size))
			if err != nil || int64(len(ct)) != want {
				t.Errorf("CiphertextSize(%d) = %d, %v, want %d (the actual size)", size, want, err, len(ct))
			}
			if id, err := KeyID(ct); err != nil || id != testKeyID {
				t.Errorf("KeyID() = %q, %v, want %q, nil", id, err, testKeyID)
			}
			got, err := openStream(testDEK, testBind, ct)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if !bytes.Equal(got, pt) {
				t.Fatal("round trip changed the plaintext")
			}
			// Any way of writing yields the same bytes.
			writes := map[string]func(w *Writer) error{
				"1-byte writes": func(w *Writer) error {
					_, err := io.Copy(w, iotest.OneByteReader(bytes.NewReader(pt)))
					return err
				},
				"ReadFrom": func(w *Writer) error {
					_, err := w.ReadFrom(bytes.NewReader(pt))
					return err
				},
				"odd writes": func(w *Writer) error {
					for p := pt; len(p) > 0; {
						n := min(len(p), 7919)
						if _, err := w.Write(p[:n]); err != nil {
							return err
						}
						p = p[n:]
					}
					return nil
				},
			}
			if size > 2*ChunkSize {
				delete(writes, "1-byte writes") // slow and adds nothing
			}
			for name, write := range writes {
				var buf bytes.Buffer
				w, _ := newWriter(detReader(1), &buf, testDEK, testKeyID, testBind)
				if err := write(w); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if err := w.Close(); err != nil {
					t.Fatalf("%s: Close: %v", name, err)
				}
				if !bytes.Equal(buf.Bytes(), ct) {
					t.Errorf("%s: ciphertext differs from a single Write's", name)
				}
			}
			// Any way of reading yields the same plaintext.
			r, _ := NewReader(iotest.HalfReader(bytes.NewReader(ct)), testBind, func(string) ([]byte, error) { return testDEK, nil })
			if got, err := io.ReadAll(iotest.OneByteReader(r)); err != nil || !bytes.Equal(got, pt) {
				t.Errorf("1-byte reads from a half reader: err %v, equal %v", err, bytes.Equal(got, pt))
			}
			r, _ = NewReader(bytes.NewReader(ct), testBind, func(string) ([]byte, error) { return testDEK, nil })
			if err := iotest.TestReader(r, pt); err != nil {
				t.Errorf("iotest.TestReader: %v", err)
			}
		})
	}
}

// TestStreamLarge pipes 100 MiB through a Writer and a Reader without
// holding it in memory, comparing hashes.
func TestStreamLarge(t *testing.T) {
	const size = 100 << 20
	pr, pw := io.Pipe()
	srcHash := sha256.New()
	written := make(chan error, 1)
	go func() {
		w, err := NewWriter(pw, testDEK, testKeyID, testBind)
		if err == nil {
			_, err = io.Copy(w, io.TeeReader(io.LimitReader(detReader(9), size), srcHash))
		}
		if err == nil {
			err = w.Close()
		}
		pw.CloseWithError(err)
		written <- err
	}()
	counted := &countingReader{r: pr}
	r, err := NewReader(counted, testBind, func(string) ([]byte, error) { return testDEK, nil })
	if err != nil {
		t.Fatal(err)
	}
	dstHash := sha256.New()
	n, err := io.Copy(dstHash, r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-written; err != nil {
		t.Fatalf("write: %v", err)
	}
	if n != size {
		t.Errorf("read %d bytes, want %d", n, size)
	}
	if !bytes.Equal(srcHash.Sum(nil), dstHash.Sum(nil)) {
		t.Error("plaintext hash changed in the round trip")
	}
	if want, _ := CiphertextSize(testKeyID, size); counted.n != want {
		t.Errorf("ciphertext is %d bytes, CiphertextSize says %d", counted.n, want)
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// chunks splits a stream into its header and its chunks.
func chunks(t *testing.T, ct []byte) (hdr []byte, cs [][]byte) {
	t.Helper()
	hs, _ := HeaderSize(testKeyID)
	hdr, body := ct[:hs], ct[hs:]
	for len(body) > ChunkSize+tagSize {
		cs = append(cs, body[:ChunkSize+tagSize])
		body = body[ChunkSize+tagSize:]
	}
	return hdr, append(cs, body)
}

func join(hdr []byte, cs ...[]byte) []byte {
	return bytes.Join(append([][]byte{hdr}, cs...), nil)
}

func TestStreamTamper(t *testing.T) {
	for _, size := range sizeClasses {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			ct := sealStream(t, 2, testDEK, testKeyID, testBind, detBytes(3, size))
			hs, _ := HeaderSize(testKeyID)
			reject := func(what string, bad []byte) {
				t.Helper()
				if _, err := openStream(testDEK, testBind, bad); !isRejection(err) {
					t.Fatalf("open(%s) = %v, want ErrAuth or ErrFormat", what, err)
				}
			}
			// Every header byte; every body byte of small streams, and
			// the bytes around every chunk boundary plus a sample of the
			// rest for large ones.
			step := 1
			if size > 1024 {
				step = 61
			}
			for i := range ct {
				near := i < hs || (i-hs)%(ChunkSize+tagSize) < 24 || (i-hs)%(ChunkSize+tagSize) > ChunkSize-8 || len(ct)-i <= 24
				if !near && (i-hs)%step != 0 {
					continue
				}
				bad := bytes.Clone(ct)
				bad[i] ^= 0x01
				reject(fmt.Sprintf("byte %d flipped", i), bad)
			}
			// Truncation at every length for small streams, around every
			// chunk boundary and mid-chunk for large ones.
			for n := 0; n < len(ct); n++ {
				off := (n - hs) % (ChunkSize + tagSize)
				if size > 1024 && n > hs && off > 2 && off < ChunkSize+tagSize-2 && off != ChunkSize/2 {
					continue
				}
				reject(fmt.Sprintf("truncated to %d", n), ct[:n])
			}
			reject("1 byte appended", append(bytes.Clone(ct), 0))
			reject("a tag appended", append(bytes.Clone(ct), make([]byte, tagSize)...))
			reject("its last chunk appended again", append(bytes.Clone(ct), ct[len(ct)-(size%ChunkSize+tagSize):]...))
		})
	}
}

func TestStreamChunkSurgery(t *testing.T) {
	size := 3*ChunkSize + 100 // chunks 0, 1, 2 full, chunk 3 last
	ct := sealStream(t, 4, testDEK, testKeyID, testBind, detBytes(5, size))
	other := sealStream(t, 6, testDEK, testKeyID, testBind, detBytes(5, size)) // same key, binding and plaintext
	hdr, cs := chunks(t, ct)
	_, ocs := chunks(t, other)
	if len(cs) != 4 {
		t.Fatalf("%d chunks, want 4", len(cs))
	}
	cases := map[string][]byte{
		"drop chunk 0":          join(hdr, cs[1], cs[2], cs[3]),
		"drop chunk 1":          join(hdr, cs[0], cs[2], cs[3]),
		"drop last chunk":       join(hdr, cs[0], cs[1], cs[2]),
		"duplicate chunk 0":     join(hdr, cs[0], cs[0], cs[1], cs[2], cs[3]),
		"duplicate chunk 2":     join(hdr, cs[0], cs[1], cs[2], cs[2], cs[3]),
		"duplicate last chunk":  join(hdr, cs[0], cs[1], cs[2], cs[3], cs[3]),
		"swap chunks 0 and 1":   join(hdr, cs[1], cs[0], cs[2], cs[3]),
		"swap chunks 1 and 2":   join(hdr, cs[0], cs[2], cs[1], cs[3]),
		"splice chunk 0":        join(hdr, ocs[0], cs[1], cs[2], cs[3]),
		"splice chunk 2":        join(hdr, cs[0], cs[1], ocs[2], cs[3]),
		"splice last chunk":     join(hdr, cs[0], cs[1], cs[2], ocs[3]),
		"other file's header":   join(other[:len(hdr)], cs...),
		"header only":           hdr,
		"last chunk first":      join(hdr, cs[3]),
		"chunk 1 as last chunk": join(hdr, cs[0], cs[1][:100+tagSize]),
	}
	for name, bad := range cases {
		if _, err := openStream(testDEK, testBind, bad); !errors.Is(err, ErrAuth) {
			t.Errorf("open(%s) = %v, want ErrAuth", name, err)
		}
	}
	// Sanity: the pieces reassemble.
	if _, err := openStream(testDEK, testBind, join(hdr, cs...)); err != nil {
		t.Errorf("open(reassembled) = %v, want nil", err)
	}
}

func TestStreamBindingAndKey(t *testing.T) {
	ct := sealStream(t, 7, testDEK, testKeyID, testBind, detBytes(8, ChunkSize+1))
	for name, b := range changedBindings() {
		if _, err := openStream(testDEK, b, ct); !errors.Is(err, ErrAuth) {
			t.Errorf("open(binding with %s changed) = %v, want ErrAuth", name, err)
		}
	}
	if _, err := openStream(otherDEK, testBind, ct); !errors.Is(err, ErrAuth) {
		t.Errorf("open(other key) = %v, want ErrAuth", err)
	}
	hdr, cs := chunks(t, ct)
	h, _ := parseHeader(hdr)
	h.keyID = "another-key"
	if _, err := openStream(testDEK, testBind, join(h.append(nil), cs...)); !errors.Is(err, ErrAuth) {
		t.Errorf("open(key id rewritten) = %v, want ErrAuth", err)
	}
}

func TestReaderKeyFor(t *testing.T) {
	ct := sealStream(t, 1, testDEK, testKeyID, testBind, []byte("x"))
	var asked string
	errNoKey := errors.New("no such key")
	_, err := NewReader(bytes.NewReader(ct), testBind, func(id string) ([]byte, error) {
		asked = id
		return nil, errNoKey
	})
	if asked != testKeyID || !errors.Is(err, errNoKey) || isRejection(err) {
		t.Errorf("NewReader asked for %q and returned %v, want %q and errNoKey", asked, err, testKeyID)
	}
}

func TestReaderSourceError(t *testing.T) {
	ct := sealStream(t, 1, testDEK, testKeyID, testBind, detBytes(1, 2*ChunkSize))
	errDisk := errors.New("disk on fire")
	src := io.MultiReader(bytes.NewReader(ct[:len(ct)/2]), iotest.ErrReader(errDisk))
	r, err := NewReader(src, testBind, func(string) ([]byte, error) { return testDEK, nil })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(r); !errors.Is(err, errDisk) {
		t.Errorf("ReadAll(failing source) = %v, want errDisk", err)
	}
}

func TestReaderReleasesOnlyVerifiedChunks(t *testing.T) {
	pt := detBytes(1, 2*ChunkSize+10)
	ct := sealStream(t, 1, testDEK, testKeyID, testBind, pt)
	hs, _ := HeaderSize(testKeyID)
	ct[hs+ChunkSize+tagSize+5] ^= 1 // inside chunk 1
	r, _ := NewReader(bytes.NewReader(ct), testBind, func(string) ([]byte, error) { return testDEK, nil })
	got, err := io.ReadAll(r)
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("ReadAll = %v, want ErrAuth", err)
	}
	if !bytes.Equal(got, pt[:ChunkSize]) {
		t.Errorf("released %d bytes before the error, want exactly chunk 0 (%d)", len(got), ChunkSize)
	}
	// The error is sticky.
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, ErrAuth) {
		t.Errorf("Read after failure = %v, want ErrAuth", err)
	}
}

func TestWriterAfterClose(t *testing.T) {
	w, _ := NewWriter(&bytes.Buffer{}, testDEK, testKeyID, testBind)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Error("Write after Close = nil, want an error")
	}
}

type failingWriter struct{ after int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.after--; f.after < 0 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

func TestWriterDestinationError(t *testing.T) {
	for _, after := range []int{0, 1, 2} {
		w, err := NewWriter(&failingWriter{after: after}, testDEK, testKeyID, testBind)
		if err != nil {
			t.Fatal(err)
		}
		_, werr := w.Write(make([]byte, 4*writeSize))
		if cerr := w.Close(); cerr == nil {
			t.Errorf("Close(destination failing after %d writes) = nil error (Write: %v)", after, werr)
		}
		if _, err := w.Write([]byte("x")); err == nil {
			t.Errorf("Write after a failed write = nil error")
		}
	}
}
