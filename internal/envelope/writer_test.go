package envelope

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"testing"
	"testing/iotest"
)

// TestWriterParallel checks that sealing chunks in parallel, whatever the
// parallelism and however the plaintext arrives, yields exactly the
// stream that sealing one chunk after the other does.
func TestWriterParallel(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, size := range []int{2 * ChunkSize, 3*ChunkSize + 1, 100*ChunkSize + 12345} {
		pt := detBytes(byte(size), size)
		runtime.GOMAXPROCS(1)
		want := sealStream(t, 1, testDEK, testKeyID, testBind, pt) // one chunk at a time
		errSrc := errors.New("source failed")
		writes := map[string]func(w *Writer) error{
			"one Write": func(w *Writer) error { _, err := w.Write(pt); return err },
			"odd Writes": func(w *Writer) error {
				for p := pt; len(p) > 0; {
					n := min(len(p), 3*ChunkSize+7919)
					if _, err := w.Write(p[:n]); err != nil {
						return err
					}
					p = p[n:]
				}
				return nil
			},
			"ReadFrom": func(w *Writer) error {
				n, err := w.ReadFrom(bytes.NewReader(pt))
				if err == nil && n != int64(len(pt)) {
					err = fmt.Errorf("ReadFrom = %d", n)
				}
				return err
			},
			"ReadFrom half reads": func(w *Writer) error {
				_, err := w.ReadFrom(iotest.HalfReader(bytes.NewReader(pt)))
				return err
			},
			"Write, then ReadFrom a failing source, then Write": func(w *Writer) error {
				cut1, cut2 := 1000, len(pt)/2+5
				if _, err := w.Write(pt[:cut1]); err != nil {
					return err
				}
				src := io.MultiReader(bytes.NewReader(pt[cut1:cut2]), iotest.ErrReader(errSrc))
				n, err := w.ReadFrom(src)
				if !errors.Is(err, errSrc) || n != int64(cut2-cut1) {
					return fmt.Errorf("ReadFrom = %d, %v; want %d, %v", n, err, cut2-cut1, errSrc)
				}
				_, err = w.Write(pt[cut2:])
				return err
			},
		}
		func() {
			for _, procs := range []int{1, 2, 3, 8} {
				runtime.GOMAXPROCS(procs)
				for name, write := range writes {
					var buf bytes.Buffer
					w, _ := newWriter(detReader(1), &buf, testDEK, testKeyID, testBind)
					if err := write(w); err != nil {
						t.Fatalf("%d bytes, procs %d, %s: %v", size, procs, name, err)
					}
					if err := w.Close(); err != nil {
						t.Fatalf("%d bytes, procs %d, %s: Close: %v", size, procs, name, err)
					}
					if !bytes.Equal(buf.Bytes(), want) {
						t.Errorf("%d bytes, procs %d, %s: ciphertext differs from sealing one chunk at a time", size, procs, name)
					}
				}
			}
		}()
	}
}

func TestWriterAbort(t *testing.T) {
	for _, n := range []int{0, 100, 3*ChunkSize + 7, 40 * ChunkSize} {
		var buf bytes.Buffer
		w, err := NewWriter(&buf, testDEK, testKeyID, testBind)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(detBytes(5, n)); err != nil {
			t.Fatal(err)
		}
		w.Abort()
		if _, err := w.Write([]byte("x")); err == nil {
			t.Errorf("Write after Abort succeeded")
		}
		if err := w.Close(); err == nil {
			t.Errorf("Close after Abort succeeded")
		}
		if _, err := openStream(testDEK, testBind, buf.Bytes()); !isRejection(err) {
			t.Errorf("aborted stream of %d bytes opened: %v", n, err)
		}
	}
}

// cutShort yields n bytes, then fails with err, as an HTTP request body
// does (io.ErrUnexpectedEOF) when the client goes away mid-upload.
type cutShort struct {
	r   io.Reader
	err error
}

func (c *cutShort) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF {
		err = c.err
	}
	return n, err
}

// TestWriterSourceCutShort checks that a source failing with any error,
// io.ErrUnexpectedEOF included, fails ReadFrom instead of ending the
// stream, and that the aborted output never opens.
func TestWriterSourceCutShort(t *testing.T) {
	for _, procs := range []int{1, 2} {
		for _, n := range []int{0, 100, ChunkSize, 3*ChunkSize + 7, 20 * ChunkSize} {
			for _, cause := range []error{io.ErrUnexpectedEOF, errors.New("connection reset")} {
				prev := runtime.GOMAXPROCS(procs)
				var buf bytes.Buffer
				w, err := NewWriter(&buf, testDEK, testKeyID, testBind)
				if err != nil {
					t.Fatal(err)
				}
				_, err = io.Copy(w, &cutShort{bytes.NewReader(detBytes(6, n)), cause})
				if !errors.Is(err, cause) {
					t.Errorf("GOMAXPROCS %d, %d bytes then %v: ReadFrom = %v, want that error", procs, n, cause, err)
				}
				w.Abort()
				if err := w.Close(); err == nil {
					t.Errorf("Close after a failed source and Abort succeeded")
				}
				if _, err := openStream(testDEK, testBind, buf.Bytes()); !isRejection(err) {
					t.Errorf("GOMAXPROCS %d: stream cut after %d bytes opened: %v", procs, n, err)
				}
				runtime.GOMAXPROCS(prev)
			}
		}
	}
}
