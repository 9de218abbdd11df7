package envelope

import (
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// MaxChunks bounds the chunks of one stream (256 TiB of plaintext). Every
// stream has its own derived key, so this is also the number of GCM
// invocations under that key: 2^32 chunks of 2^12 blocks keep the total at
// 2^44 blocks, far inside the bounds where GCM's confidentiality and
// integrity guarantees hold, and chunk indexes far from the 64 bits of the
// nonce counter.
const MaxChunks = 1 << 32

// Writer encrypts a stream. Create one with NewWriter or Sealer.NewWriter.
//
// A Writer seals chunks into a buffer and writes the buffer out in pieces
// of up to writeSize, rounded to whole pages of the output so that a file
// is written in page-aligned extents. While one buffer is being written by a
// helper goroutine, the next is filled and sealed on the caller's, so
// encryption overlaps the destination's I/O. When a Write or ReadFrom has
// several whole chunks at hand, they are sealed in parallel, on up to
// GOMAXPROCS goroutines (at most maxWorkers), all of which have finished
// when the call returns. The destination is therefore written
// asynchronously between calls, and an error it returns is reported by a
// later Write or by Close (as with bufio.Writer). Do not use the
// destination until Close has returned. The buffers are reused for every
// chunk; nothing is allocated per chunk.
type Writer struct {
	dst   io.Writer
	key   *objectKey
	nonce [nonceSize]byte

	// buf holds sealed output not yet handed to dst. The plaintext of the
	// open chunk, n bytes, is staged right after it, at
	// buf[len(buf):len(buf)+n], so that it can be sealed in place.
	buf []byte
	n   int
	// spare is the other buffer. While a write is pending, it is the one
	// being written and must not be touched.
	spare   []byte
	pending bool
	done    chan error // result of the pending write

	// plain receives the plaintext of several chunks at once in ReadFrom,
	// allocated on first use.
	plain []byte

	chunk  uint64 // index of the next chunk to seal
	err    error  // sticky
	closed bool
}

const (
	// writeSize is how much sealed output a Writer gathers, at most,
	// before writing it to the destination. Measured on fsync'd 64 MiB
	// file writes, 1 MiB overlaps encryption with I/O markedly better
	// than 256 KiB; with chunks sealed in parallel, 2 MiB made fsync'd
	// 256 MiB writes a further 10-20% faster than 1 MiB (fewer hand-offs
	// between the sealing goroutines and the writing one), at the price
	// of about 4 MiB of buffers per Writer. Buffers start at two chunks
	// and double per write up to this, so short streams stay cheap.
	writeSize = 2 << 20
	// pageSize is the alignment of the writes: output is written in
	// multiples of it, counted from the start of the stream, because
	// writes that end mid-page made fsync'd file writes markedly slower.
	pageSize = 4 << 10
	// readChunks is how many chunks ReadFrom reads at once, at most (2
	// MiB, as much as a buffer holds): large reads make receiving an
	// upload from a socket cheaper, and large runs seal in parallel with
	// less hand-off. Measured on files, 512 KiB was markedly slower.
	readChunks = 32
	// sealedChunk is the size of a full chunk once sealed.
	sealedChunk = ChunkSize + tagSize
)

var errClosed = errors.New("envelope: write to closed Writer")

// NewWriter returns a Writer that writes a new stream to dst, encrypting
// everything written to it under dek and binding it to b. Close must be
// called to write the last chunk; without it the stream is truncated and
// will not open. Close does not close dst. NewWriter does not count the
// use of dek; see Sealer.
func NewWriter(dst io.Writer, dek []byte, keyID string, b Binding) (*Writer, error) {
	return newWriter(nil, dst, dek, keyID, b)
}

func newWriter(rnd io.Reader, dst io.Writer, dek []byte, keyID string, b Binding) (*Writer, error) {
	h, k, err := newHeader(rnd, kindStream, dek, keyID, b)
	if err != nil {
		return nil, err
	}
	return &Writer{
		dst:  dst,
		key:  k,
		buf:  h.append(make([]byte, 0, 2*sealedChunk+pageSize)),
		done: make(chan error, 1),
	}, nil
}

// Write encrypts p.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	total := 0
	for len(p) > 0 {
		if k := w.run(len(p) / ChunkSize); w.n == 0 && k > 1 {
			// Whole chunks are at hand: seal them straight from p, in
			// parallel.
			w.sealRun(p[:k*ChunkSize], k)
			p = p[k*ChunkSize:]
			total += k * ChunkSize
			if err := w.flushIfDue(); err != nil {
				return total, err
			}
			continue
		}
		if w.n == 0 && len(p) >= ChunkSize {
			// A whole chunk is at hand: seal it straight from p.
			if err := w.seal(p[:ChunkSize], false); err != nil {
				return total, err
			}
			p = p[ChunkSize:]
			total += ChunkSize
			continue
		}
		c := copy(w.stage()[w.n:], p)
		w.n += c
		p = p[c:]
		total += c
		if w.n == ChunkSize {
			if err := w.seal(w.stage(), false); err != nil {
				return total, err
			}
		}
	}
	return total, nil
}

// stage returns the staging area of the open chunk.
func (w *Writer) stage() []byte {
	l := len(w.buf)
	return w.buf[l : l+ChunkSize]
}

// ReadFrom encrypts everything src yields until io.EOF, reading each chunk
// straight into the place in the buffer where it is sealed, in place.
// io.Copy uses it.
func (w *Writer) ReadFrom(src io.Reader) (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	var total int64
	for {
		if k := w.run(math.MaxInt); w.n == 0 && k > 1 {
			// Read up to readChunks whole chunks in one piece and seal
			// them in parallel into the buffer. One large read, rather
			// than one per chunk, matters for sockets: it halves the
			// cost of receiving an upload. What is read of a chunk that
			// is not whole becomes the staged plaintext.
			k = min(k, readChunks)
			if w.plain == nil {
				w.plain = make([]byte, readChunks*ChunkSize)
			}
			m, err := readFull(src, w.plain[:k*ChunkSize])
			total += int64(m)
			full := m / ChunkSize
			w.sealRun(w.plain[:full*ChunkSize], full)
			if err := w.flushIfDue(); err != nil {
				return total, err
			}
			w.n = copy(w.stage(), w.plain[full*ChunkSize:m])
			switch err {
			case nil:
				continue
			case io.EOF:
				return total, nil
			default:
				return total, err
			}
		}
		m, err := readFull(src, w.stage()[w.n:])
		w.n += m
		total += int64(m)
		if w.n == ChunkSize {
			if err := w.seal(w.stage(), false); err != nil {
				return total, err
			}
		}
		switch err {
		case nil:
		case io.EOF:
			return total, nil
		default:
			return total, err
		}
	}
}

// readFull reads from src until p is full or src ends. Unlike io.ReadFull,
// it returns io.EOF whenever src ended cleanly, and passes on every other
// error as it is: a source that reports io.ErrUnexpectedEOF (an HTTP body
// cut short, say) has failed, and must not end the stream as if complete.
func readFull(src io.Reader, p []byte) (int, error) {
	n, idle := 0, 0
	for n < len(p) {
		m, err := src.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
		if m > 0 {
			idle = 0
		} else if idle++; idle >= 100 {
			return n, io.ErrNoProgress
		}
	}
	return n, nil
}

// Close seals the last chunk (shorter than ChunkSize, possibly empty),
// writes all that is left and waits for the writes to finish. It does not
// close the destination. Closing twice is harmless.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	if w.err != nil {
		return w.err
	}
	if err := w.seal(w.stage()[:w.n], true); err != nil {
		return err
	}
	if err := w.flush(true); err != nil {
		return err
	}
	w.closed, w.err = true, errClosed
	return nil
}

// errAborted is what an aborted Writer returns.
var errAborted = errors.New("envelope: write to aborted Writer")

// Abort gives up on the stream: it waits for a write to the destination in
// progress, then fails every later call, without sealing a last chunk. What
// the destination has received is a truncated stream, which no Reader
// accepts. Use it when the plaintext source fails, before discarding the
// destination: once Abort returns, the Writer no longer uses it.
func (w *Writer) Abort() {
	w.wait()
	if w.err == nil {
		w.err = errAborted
	}
}

// run returns how many whole chunks, at most max, to seal at once with
// sealRun: as many as fit before the next flush is due, if there is more
// than one processor to seal them with, or else 0.
func (w *Writer) run(max int) int {
	procs := min(runtime.GOMAXPROCS(0), maxWorkers)
	t := cap(w.buf) - sealedChunk - pageSize - len(w.buf)
	if procs < 2 || max < 2 || t < sealedChunk {
		return 0
	}
	k := min(t/sealedChunk+1, max)
	if w.chunk+uint64(k) > MaxChunks {
		return 0 // let seal report the limit at the right chunk
	}
	return k
}

// sealRun seals k whole chunks, none of them last, appending them to buf,
// on up to maxWorkers goroutines. Chunk j's plaintext is
// src[j*ChunkSize:(j+1)*ChunkSize], or, if src is nil, already in place at
// buf[len(buf)+j*sealedChunk:], where the chunk goes once sealed. The
// caller checks for a flush afterwards.
func (w *Writer) sealRun(src []byte, k int) {
	if k == 0 {
		return
	}
	base, first := len(w.buf), w.chunk
	out := w.buf[:base+k*sealedChunk]
	// Workers take chunks one at a time, so that they share the run
	// evenly even when one of them is slowed down, e.g. by the write of
	// the previous buffer.
	var next atomic.Int64
	seal := func() {
		var nb [nonceSize]byte
		for {
			j := int(next.Add(1) - 1)
			if j >= k {
				return
			}
			off := base + j*sealedChunk
			pt := out[off : off+ChunkSize] // exactly where its output goes
			if src != nil {
				pt = src[j*ChunkSize : (j+1)*ChunkSize]
			}
			w.key.aead.Seal(out[off:off], nonce(&nb, first+uint64(j), false), pt, w.key.aad)
		}
	}
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), maxWorkers, k) - 1 {
		wg.Go(seal)
	}
	seal()
	wg.Wait()
	w.buf = out
	w.chunk += uint64(k)
}

// flushIfDue flushes buf once it has no room left for another chunk.
func (w *Writer) flushIfDue() error {
	if len(w.buf) > cap(w.buf)-sealedChunk-pageSize {
		return w.flush(false)
	}
	return nil
}

// seal encrypts pt, either the staged plaintext or a chunk of the
// caller's, as the next chunk, appending it to buf.
func (w *Writer) seal(pt []byte, last bool) error {
	if w.chunk >= MaxChunks {
		w.err = fmt.Errorf("envelope: stream exceeds %d chunks", uint64(MaxChunks))
		return w.err
	}
	w.buf = w.key.aead.Seal(w.buf, nonce(&w.nonce, w.chunk, last), pt, w.key.aad)
	w.n = 0
	w.chunk++
	// Flush while there is still room to stage and seal one more chunk.
	if !last {
		return w.flushIfDue()
	}
	return nil
}

// flush hands the page-aligned part of buf (all of it if final) to dst:
// asynchronously, swapping buffers, or, if final, synchronously.
func (w *Writer) flush(final bool) error {
	if err := w.wait(); err != nil {
		return err
	}
	k := len(w.buf)
	if !final {
		k -= (k % pageSize)
	}
	out := w.buf[:k]
	if want := min(2*cap(w.buf), writeSize+sealedChunk+pageSize); !final && cap(w.spare) < want {
		w.spare = make([]byte, 0, want)
	}
	// What follows the page-aligned part, and the staged plaintext
	// after it, if any, move to the front of the other buffer.
	rest := w.buf[k : len(w.buf)+w.n]
	w.buf, w.spare = append(w.spare[:0], rest...)[:len(rest)-w.n], w.buf[:0]
	if final {
		if _, err := w.dst.Write(out); err != nil {
			w.err = fmt.Errorf("envelope: write stream: %w", err)
			return w.err
		}
		return nil
	}
	w.pending = true
	go func() {
		_, err := w.dst.Write(out)
		w.done <- err
	}()
	return nil
}

// wait waits for the pending write, if any.
func (w *Writer) wait() error {
	if !w.pending {
		return nil
	}
	w.pending = false
	if err := <-w.done; err != nil {
		w.err = fmt.Errorf("envelope: write stream: %w", err)
		return w.err
	}
	return nil
}
