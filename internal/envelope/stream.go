package envelope

import (
	"errors"
	"fmt"
	"io"
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
// encryption overlaps the destination's I/O. The destination is therefore
// written asynchronously between calls, and an error it returns is
// reported by a later Write or by Close (as with bufio.Writer). Do not use
// the destination until Close has returned. The buffers are reused for
// every chunk; nothing is allocated per chunk.
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

	chunk  uint64 // index of the next chunk to seal
	err    error  // sticky
	closed bool
}

const (
	// writeSize is how much sealed output a Writer gathers, at most,
	// before writing it to the destination. Measured on fsync'd 64 MiB
	// file writes, 1 MiB overlaps encryption with I/O markedly better
	// than 256 KiB, at the price of about 2 MiB of buffers per Writer.
	// Buffers start at two chunks and double per write up to this, so
	// short streams stay cheap.
	writeSize = 1 << 20
	// pageSize is the alignment of the writes: output is written in
	// multiples of it, counted from the start of the stream, because
	// writes that end mid-page made fsync'd file writes markedly slower.
	pageSize = 4 << 10
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

// ReadFrom encrypts everything src yields until io.EOF, reading straight
// into the staging area. io.Copy uses it.
func (w *Writer) ReadFrom(src io.Reader) (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	var total int64
	for {
		m, err := io.ReadFull(src, w.stage()[w.n:])
		w.n += m
		total += int64(m)
		if w.n == ChunkSize {
			if err := w.seal(w.stage(), false); err != nil {
				return total, err
			}
		}
		switch err {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return total, nil
		default:
			return total, err
		}
	}
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
	if !last && len(w.buf) > cap(w.buf)-sealedChunk-pageSize {
		return w.flush(false)
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
	w.buf, w.spare = append(w.spare[:0], w.buf[k:]...), w.buf[:0]
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

// Reader decrypts a stream. Create one with NewReader.
//
// A chunk's plaintext is returned only after the whole chunk has been
// verified. For streams longer than a few chunks, a helper goroutine reads
// the next readSize bytes of ciphertext from the source while the caller's
// goroutine decrypts the current ones, so the Reader may read ahead of
// what has been returned; it never reads past the end of the source.
type Reader struct {
	src   io.Reader
	key   *objectKey
	nonce [nonceSize]byte

	// buf[pos:end] is ciphertext read but not yet opened. Reads land at
	// buf[headroom:]; what is left of the previous buffer is copied just
	// in front of them, so a chunk is always contiguous.
	buf      []byte
	pos, end int
	eof      bool  // nothing follows buf[:end] in the source
	srcErr   error // why the source ended, if not io.EOF

	spare   []byte // the other buffer; being filled while pending
	pending bool
	filled  chan readResult

	out   []byte // verified plaintext not yet returned, a slice of buf
	chunk uint64 // index of the next chunk to open
	done  bool   // the last chunk has been verified
	err   error  // sticky
}

type readResult struct {
	n   int
	err error
}

const (
	// headroom is room for the tail of the previous buffer (less than
	// one sealed chunk) in front of newly read ciphertext.
	headroom = ChunkSize + tagSize
	// readSize is how much the read-ahead asks the source for at once.
	readSize = 1 << 20
)

// NewReader reads the header of a stream from src, asks keyFor for the DEK
// it names, checks the key commitment against that DEK and b, and returns
// a Reader for the plaintext.
//
// Errors from keyFor are returned wrapped as they are. Otherwise NewReader
// and the Reader return errors wrapping ErrFormat if src is not a Version1
// stream, ErrAuth if it does not authenticate (including a stream that ends
// before its last chunk or continues after it), or the error of src.
// A Reader returns io.EOF only after the last chunk has been verified.
func NewReader(src io.Reader, b Binding, keyFor func(keyID string) ([]byte, error)) (*Reader, error) {
	hb := make([]byte, MaxHeaderSize)
	if _, err := io.ReadFull(src, hb[:fixedSize]); err != nil {
		return nil, readHeaderErr(err)
	}
	kind, idLen, err := parseFixed(hb)
	if err != nil {
		return nil, err
	}
	if kind != kindStream {
		return nil, fmt.Errorf("%w: ciphertext is a record, not a stream", ErrFormat)
	}
	end := fixedSize + idLen + saltSize + commitSize
	if _, err := io.ReadFull(src, hb[fixedSize:end]); err != nil {
		return nil, readHeaderErr(err)
	}
	h, err := parseHeader(hb[:end])
	if err != nil {
		return nil, err
	}
	dek, err := keyFor(h.keyID)
	if err != nil {
		return nil, fmt.Errorf("envelope: fetch data key %s: %w", h.keyID, err)
	}
	k, err := openHeader(dek, h, b)
	if err != nil {
		return nil, err
	}
	// The first buffer fits one chunk, so short streams cost little; the
	// read-ahead buffers are allocated only once a stream proves longer.
	buf := make([]byte, headroom+ChunkSize+tagSize)
	return &Reader{src: src, key: k, buf: buf, pos: headroom, end: headroom}, nil
}

func readHeaderErr(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: header truncated", ErrFormat)
	}
	return fmt.Errorf("envelope: read header: %w", err)
}

// Read returns verified plaintext.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.out) == 0 {
		if r.done {
			return 0, io.EOF
		}
		if r.err != nil {
			return 0, r.err
		}
		if r.err = r.next(); r.err != nil {
			return 0, r.err
		}
	}
	n := copy(p, r.out)
	r.out = r.out[n:]
	return n, nil
}

// WriteTo writes all remaining plaintext to dst, one verified chunk at a
// time, without copying it through an intermediate buffer. io.Copy uses it.
func (r *Reader) WriteTo(dst io.Writer) (int64, error) {
	var total int64
	for {
		if len(r.out) > 0 {
			n, err := dst.Write(r.out)
			total += int64(n)
			r.out = r.out[n:]
			if err != nil {
				return total, err
			}
		}
		if r.done {
			return total, nil
		}
		if r.err != nil {
			return total, r.err
		}
		if r.err = r.next(); r.err != nil {
			return total, r.err
		}
	}
}

// next verifies and decrypts the next chunk in place. A chunk that fills
// ChunkSize is never the last (the last chunk is always shorter), so the
// length available decides which nonce applies, and no lookahead past the
// chunk is needed.
func (r *Reader) next() error {
	if r.chunk >= MaxChunks {
		return fmt.Errorf("%w: stream exceeds %d chunks", ErrAuth, uint64(MaxChunks))
	}
	for r.end-r.pos < ChunkSize+tagSize && !r.eof {
		r.fill()
	}
	n := min(r.end-r.pos, ChunkSize+tagSize)
	last := n < ChunkSize+tagSize
	switch {
	case n == 0 && r.srcErr != nil, last && r.srcErr != nil:
		return fmt.Errorf("envelope: read chunk %d: %w", r.chunk, r.srcErr)
	case n == 0:
		return fmt.Errorf("%w: stream truncated: chunk %d missing, no last chunk", ErrAuth, r.chunk)
	case n < tagSize:
		return fmt.Errorf("%w: chunk %d truncated", ErrAuth, r.chunk)
	}
	ct := r.buf[r.pos : r.pos+n]
	pt, err := r.key.aead.Open(ct[:0], nonce(&r.nonce, r.chunk, last), ct, r.key.aad)
	if err != nil {
		return fmt.Errorf("%w: chunk %d", ErrAuth, r.chunk)
	}
	r.pos += n
	r.chunk++
	r.out = pt
	r.done = last
	return nil
}

// fill makes the next buffer of ciphertext current, keeping the unread
// tail of the current one in front of it, and starts reading the one
// after it. The first fill reads synchronously into a buffer sized for one
// chunk; only when that does not reach the end does read-ahead begin.
func (r *Reader) fill() {
	var res readResult
	if r.pending {
		res = <-r.filled
		r.pending = false
		tail := r.buf[r.pos:r.end]
		start := headroom - len(tail)
		copy(r.spare[start:], tail)
		r.buf, r.spare = r.spare, r.buf
		r.pos, r.end = start, headroom+res.n
	} else {
		// The first fill: nothing is buffered yet.
		res = readInto(r.src, r.buf[headroom:])
		r.pos, r.end = headroom, headroom+res.n
	}
	switch res.err {
	case nil:
	case io.EOF, io.ErrUnexpectedEOF:
		r.eof = true
	default:
		r.eof, r.srcErr = true, res.err
	}
	if r.eof {
		return
	}
	// Read-ahead buffers double with every fill, up to readSize, so a
	// stream of a few chunks never pays for a megabyte of buffer.
	if want := headroom + min(2*(len(r.buf)-headroom), readSize); len(r.spare) < want {
		r.spare = make([]byte, want)
	}
	if r.filled == nil {
		r.filled = make(chan readResult, 1)
	}
	r.pending = true
	src, dst, filled := r.src, r.spare[headroom:], r.filled
	go func() { filled <- readInto(src, dst) }()
}

func readInto(src io.Reader, p []byte) readResult {
	n, err := io.ReadFull(src, p)
	return readResult{n, err}
}
