package envelope

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"testing"
	"testing/iotest"
	"time"
)

// refOpen is the reference for what a Reader must do with a stream body
// (the bytes after the header) that its source yields and then ends with
// end (io.EOF or an error): open it chunk by chunk, strictly one after the
// other, as format.md describes. It returns the plaintext released and the
// error that stopped it (nil after a verified last chunk).
func refOpen(k *objectKey, body []byte, end error) ([]byte, error) {
	var pt []byte
	var nb [nonceSize]byte
	for i := uint64(0); ; i++ {
		n := min(len(body), sealedChunk)
		last := n < sealedChunk
		switch {
		case last && end != io.EOF:
			return pt, fmt.Errorf("envelope: read chunk %d: %w", i, end)
		case n == 0:
			return pt, fmt.Errorf("%w: stream truncated: chunk %d missing, no last chunk", ErrAuth, i)
		case n < tagSize:
			return pt, fmt.Errorf("%w: chunk %d truncated", ErrAuth, i)
		}
		p, err := k.aead.Open(nil, nonce(&nb, i, last), body[:n], k.aad)
		if err != nil {
			return pt, fmt.Errorf("%w: chunk %d", ErrAuth, i)
		}
		pt = append(pt, p...)
		body = body[n:]
		if last {
			return pt, nil
		}
	}
}

// withProcs runs f with GOMAXPROCS set to each of a few values, which
// decides how many helpers a Reader starts.
func withProcs(t *testing.T, f func(t *testing.T)) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, procs := range []int{1, 2, 3, 8} {
		runtime.GOMAXPROCS(procs)
		t.Run(fmt.Sprintf("procs=%d", procs), f)
	}
}

// readAllWays reads r to its end with one of several access patterns and
// returns what it released and the error it ended with (nil for io.EOF).
func readAllWays(r *Reader, way int) ([]byte, error) {
	switch way {
	case 0: // WriteTo
		var buf bytes.Buffer
		_, err := r.WriteTo(&buf)
		return buf.Bytes(), err
	case 1: // large reads
		b, err := io.ReadAll(r)
		return b, err
	default: // odd-sized small reads
		var out []byte
		p := make([]byte, 7919)
		for {
			n, err := r.Read(p)
			out = append(out, p[:n]...)
			if err == io.EOF {
				return out, nil
			}
			if err != nil {
				return out, err
			}
		}
	}
}

var readWays = []string{"WriteTo", "ReadAll", "Read(7919)"}

// parallelSizes cross the first read, batch boundaries and the read-ahead
// window, in chunks.
var parallelSizes = []int{
	0, 1, firstChunks - 1, firstChunks, firstChunks + 1,
	firstChunks + batchChunks - 1, firstChunks + batchChunks, firstChunks + batchChunks + 1,
	firstChunks + 7*batchChunks, firstChunks + 12*batchChunks + 3,
}

// TestReaderParallelOrder checks that streams of every shape come back
// whole and in order, whatever the parallelism, source and reads.
func TestReaderParallelOrder(t *testing.T) {
	withProcs(t, func(t *testing.T) {
		for _, chunks := range parallelSizes {
			for _, extra := range []int{0, 1, ChunkSize / 2} {
				size := chunks*ChunkSize + extra
				pt := detBytes(byte(size), size)
				ct := sealStream(t, 1, testDEK, testKeyID, testBind, pt)
				srcs := map[string]func() io.Reader{
					"bytes": func() io.Reader { return bytes.NewReader(ct) },
					"half":  func() io.Reader { return iotest.HalfReader(bytes.NewReader(ct)) },
				}
				for sname, src := range srcs {
					for way, wname := range readWays {
						if (way+chunks+extra)%len(readWays) != 0 && chunks > firstChunks+batchChunks+1 {
							continue // large streams: one way each
						}
						r, err := NewReader(src(), testBind, func(string) ([]byte, error) { return testDEK, nil })
						if err != nil {
							t.Fatal(err)
						}
						got, err := readAllWays(r, way)
						if err != nil || !bytes.Equal(got, pt) {
							t.Fatalf("%d bytes, %s source, %s: err %v, %d bytes, equal %v", size, sname, wname, err, len(got), bytes.Equal(got, pt))
						}
						if err := r.Close(); err != nil {
							t.Errorf("Close = %v", err)
						}
					}
				}
			}
		}
	})
}

// TestReaderParallelErrors damages a stream at every chunk and checks that
// the Reader releases exactly the chunks before the damage and reports the
// same error as the sequential reference, whatever the parallelism.
func TestReaderParallelErrors(t *testing.T) {
	const chunks = firstChunks + 2*batchChunks + 1 // plus a short last chunk
	pt := detBytes(11, chunks*ChunkSize+100)
	ct := sealStream(t, 3, testDEK, testKeyID, testBind, pt)
	hs, _ := HeaderSize(testKeyID)
	h, _ := parseHeader(ct)
	k, err := openHeader(testDEK, h, testBind)
	if err != nil {
		t.Fatal(err)
	}
	body := ct[hs:]
	errDisk := errors.New("disk on fire")

	type damaged struct {
		name string
		body []byte
		end  error
	}
	var cases []damaged
	for i := 0; i <= chunks; i++ {
		off := i * sealedChunk
		for _, at := range []int{0, sealedChunk / 2, sealedChunk - 1} {
			if off+at >= len(body) {
				continue
			}
			bad := bytes.Clone(body)
			bad[off+at] ^= 0x80
			cases = append(cases, damaged{fmt.Sprintf("chunk %d byte %d flipped", i, at), bad, io.EOF})
		}
		for _, d := range []int{-tagSize, -1, 0, 1, tagSize - 1, tagSize, tagSize + 1} {
			if n := off + d; n >= 0 && n < len(body) {
				cases = append(cases,
					damaged{fmt.Sprintf("cut at chunk %d%+d", i, d), body[:n], io.EOF},
					damaged{fmt.Sprintf("source fails at chunk %d%+d", i, d), body[:n], errDisk})
			}
		}
	}
	cases = append(cases,
		damaged{"whole, source fails at the end", body, errDisk},
		damaged{"1 byte appended", append(bytes.Clone(body), 0), io.EOF},
		damaged{"a tag appended", append(bytes.Clone(body), make([]byte, tagSize)...), io.EOF},
		damaged{"a chunk appended", append(bytes.Clone(body), body[:sealedChunk]...), io.EOF},
		damaged{"chunks 2 and 3 swapped", bytes.Join([][]byte{body[:2*sealedChunk], body[3*sealedChunk : 4*sealedChunk], body[2*sealedChunk : 3*sealedChunk], body[4*sealedChunk:]}, nil), io.EOF},
	)

	withProcs(t, func(t *testing.T) {
		for i, c := range cases {
			wantPT, wantErr := refOpen(k, c.body, c.end)
			for way, wname := range readWays {
				if way != i%len(readWays) && i%5 != 0 {
					continue // every way for some cases, one for the rest
				}
				src := io.MultiReader(bytes.NewReader(ct[:hs]), bytes.NewReader(c.body), iotest.ErrReader(c.end))
				r, err := NewReader(src, testBind, func(string) ([]byte, error) { return testDEK, nil })
				if err != nil {
					t.Fatal(err)
				}
				got, err := readAllWays(r, way)
				if !bytes.Equal(got, wantPT) {
					t.Errorf("%s, %s: released %d bytes, want %d", c.name, wname, len(got), len(wantPT))
				}
				if fmt.Sprint(err) != fmt.Sprint(wantErr) || errors.Is(err, ErrAuth) != errors.Is(wantErr, ErrAuth) || errors.Is(err, errDisk) != errors.Is(wantErr, errDisk) {
					t.Errorf("%s, %s: error %v, want %v", c.name, wname, err, wantErr)
				}
				if wantErr != nil {
					// The error is sticky and nothing more is released.
					if n, err2 := r.Read(make([]byte, 10)); n != 0 || fmt.Sprint(err2) != fmt.Sprint(wantErr) {
						t.Errorf("%s, %s: Read after the error = %d, %v", c.name, wname, n, err2)
					}
				}
				r.Close()
			}
		}
	})
}

// goroutinesSettle waits for the number of goroutines to fall back to
// want, running the garbage collector if gc is set.
func goroutinesSettle(t *testing.T, want int, gc bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if gc {
			runtime.GC()
		}
		n := runtime.NumGoroutine()
		if n <= want {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want %d:\n%s", n, want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newTestReader(t *testing.T, src io.Reader) *Reader {
	t.Helper()
	r, err := NewReader(src, testBind, func(string) ([]byte, error) { return testDEK, nil })
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReaderClose(t *testing.T) {
	pt := detBytes(4, 40*ChunkSize+5)
	ct := sealStream(t, 1, testDEK, testKeyID, testBind, pt)
	withProcs(t, func(t *testing.T) {
		before := runtime.NumGoroutine()
		for _, after := range []int{0, 1, ChunkSize, 3 * ChunkSize, 10*ChunkSize + 3, len(pt)} {
			r := newTestReader(t, bytes.NewReader(ct))
			got := make([]byte, after)
			if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, pt[:after]) {
				t.Fatalf("ReadFull(%d) = %v, equal %v", after, err, bytes.Equal(got, pt[:after]))
			}
			p := r.pipe
			if err := r.Close(); err != nil {
				t.Errorf("Close after %d bytes = %v", after, err)
			}
			// Close has waited for the helpers.
			if p != nil && p.live.Load() != 0 {
				t.Errorf("Close after %d bytes: %d helpers still running", after, p.live.Load())
			}
			goroutinesSettle(t, before, false)
			if n, err := r.Read(make([]byte, 1)); n != 0 || !errors.Is(err, errReaderClosed) {
				t.Errorf("Read after Close = %d, %v", n, err)
			}
			if n, err := r.WriteTo(io.Discard); n != 0 || !errors.Is(err, errReaderClosed) {
				t.Errorf("WriteTo after Close = %d, %v", n, err)
			}
			if err := r.Close(); err != nil {
				t.Errorf("second Close = %v", err)
			}
		}
	})
}

// TestReaderNoLeak checks that helpers end without Close: when the stream
// is read to its end or to an error, when the source ends or fails while
// nobody reads, and when a Reader is abandoned mid-stream.
func TestReaderNoLeak(t *testing.T) {
	pt := detBytes(5, 60*ChunkSize+5)
	ct := sealStream(t, 1, testDEK, testKeyID, testBind, pt)
	hs, _ := HeaderSize(testKeyID)
	withProcs(t, func(t *testing.T) {
		before := runtime.NumGoroutine()

		r := newTestReader(t, bytes.NewReader(ct))
		if _, err := io.Copy(io.Discard, r); err != nil {
			t.Fatal(err)
		}
		goroutinesSettle(t, before, false)

		bad := bytes.Clone(ct)
		bad[hs+20*sealedChunk] ^= 1
		r = newTestReader(t, bytes.NewReader(bad))
		if _, err := io.Copy(io.Discard, r); !errors.Is(err, ErrAuth) {
			t.Fatalf("Copy = %v, want ErrAuth", err)
		}
		goroutinesSettle(t, before, false)

		// The source ends (here: fails) within the read-ahead window, and
		// the Reader is not read any further nor closed.
		src := io.MultiReader(bytes.NewReader(ct[:hs+5*sealedChunk+7]), iotest.ErrReader(errors.New("gone")))
		r = newTestReader(t, src)
		if _, err := r.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		goroutinesSettle(t, before, false)
		runtime.KeepAlive(r)

		// Abandoned mid-stream, with helpers waiting for buffers.
		func() {
			r := newTestReader(t, bytes.NewReader(ct))
			if _, err := r.Read(make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
		}()
		goroutinesSettle(t, before, true)
	})
}

// TestReaderSmallNoGoroutines checks the fast path: a stream that fits the
// first read starts no goroutine.
func TestReaderSmallNoGoroutines(t *testing.T) {
	for _, size := range []int{0, 1, ChunkSize, (firstChunks-1)*ChunkSize + ChunkSize - 1} {
		pt := detBytes(6, size)
		ct := sealStream(t, 1, testDEK, testKeyID, testBind, pt)
		r := newTestReader(t, bytes.NewReader(ct))
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("%d bytes: %v", size, err)
		}
		if r.pipe != nil {
			t.Errorf("%d bytes: helpers started", size)
		}
	}
}

// TestReaderMemoryBound checks that read-ahead stays within its buffers.
func TestReaderMemoryBound(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(64))
	ct := sealStream(t, 1, testDEK, testKeyID, testBind, detBytes(7, 200*ChunkSize))
	r := newTestReader(t, iotest.HalfReader(bytes.NewReader(ct)))
	if _, err := io.Copy(io.Discard, iotest.OneByteReader(io.LimitReader(r, 10*ChunkSize))); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Fatal(err)
	}
	p := r.pipe
	if p == nil {
		t.Fatal("no helpers started")
	}
	max := maxBatches(maxWorkers)
	if p.allocated > max || cap(p.free) > max {
		t.Errorf("%d buffers allocated, at most %d allowed", p.allocated, max)
	}
	if bytes := (max*batchChunks + firstChunks) * sealedChunk; bytes > 4<<20 {
		t.Errorf("a Reader may hold %d bytes of buffers", bytes)
	}
	r.Close()
}

// TestReaderCloseBlockedSource closes a Reader whose helper is blocked
// reading a source that only returns when it is closed.
func TestReaderCloseBlockedSource(t *testing.T) {
	pt := detBytes(8, 40*ChunkSize)
	ct := sealStream(t, 1, testDEK, testKeyID, testBind, pt)
	hs, _ := HeaderSize(testKeyID)
	before := runtime.NumGoroutine()
	pr, pw := io.Pipe()
	go func() {
		// The first read and batch, and a bit, then stall: a helper
		// waits for the next batch in src.Read.
		pw.Write(ct[:hs+(firstChunks+batchChunks+1)*sealedChunk])
	}()
	r := newTestReader(t, pr)
	got := make([]byte, 3*ChunkSize)
	if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, pt[:len(got)]) {
		t.Fatalf("ReadFull = %v", err)
	}
	closed := make(chan struct{})
	go func() {
		time.Sleep(20 * time.Millisecond)
		pr.CloseWithError(errors.New("closed"))
		close(closed)
	}()
	if err := r.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	<-closed
	goroutinesSettle(t, before, false)
}
