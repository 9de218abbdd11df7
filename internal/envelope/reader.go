package envelope

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
)

// Reader decrypts a stream. Create one with NewReader, and Close it when
// done with it.
//
// A chunk's plaintext is returned only after the whole chunk has been
// verified, and chunks are returned strictly in order; an error (ErrAuth,
// ErrFormat, the source's) is returned after the plaintext of every chunk
// before it and never before.
//
// The first Read or WriteTo reads up to two chunks on the caller's
// goroutine: a stream that ends there (under 128 KiB of plaintext) is
// opened without starting any goroutine. A longer stream is read by helper
// goroutines, GOMAXPROCS-1 of them (at least 1, at most maxWorkers-1),
// which take turns reading the next batch of batchChunks chunks (512 KiB)
// from the source, in order, and open (verify and decrypt in place)
// batches when they cannot read one; the caller's goroutine, rather than
// wait for the batch it needs, opens the earliest batch nobody has
// started on, but never reads from the source itself. Batches are thus
// opened in parallel, and returned in order. The Reader reads ahead of
// what it has returned, with at most maxBatches buffers (2 MiB with two
// workers, 3 MiB at most), but never past the end of the source. WriteTo
// hands the destination each chunk's plaintext straight from the buffer
// it was decrypted in.
//
// The helpers stop by themselves when they have read the source to its
// end or to an error (they read ahead only as far as their buffers go),
// when the Reader returns io.EOF or an error, and when Close is called.
// Callers should Close a Reader they do not read to the end; one that is
// abandoned mid-stream without Close stops its helpers once it is
// garbage-collected.
//
// A Reader is not safe for concurrent use.
type Reader struct {
	src io.Reader
	key *objectKey

	cur  *batch    // the batch whose chunks are being returned
	j    int       // index in cur of the next chunk to return
	out  []byte    // verified plaintext not yet returned, a slice of cur.buf
	pipe *pipeline // nil until the stream proves longer than the first batch

	done   bool  // the last chunk has been verified
	err    error // sticky
	closed bool
}

const (
	// firstChunks is the size of the first read, in sealed chunks, made
	// on the caller's goroutine. Streams that fit start no goroutine.
	firstChunks = 2
	// batchChunks is the size of every later read, in sealed chunks: a
	// batch is read, then decrypted in place, by one worker, while
	// another reads or decrypts the next. 512 KiB keeps a batch in the
	// worker's L2 cache between the read and the decryption, and makes
	// reads large enough that system calls and hand-offs cost little;
	// on page-cache reads it measured a little faster than 256 KiB and
	// markedly faster than 128 KiB.
	batchChunks = 8
	// maxWorkers bounds the workers of one Reader, its goroutine included.
	maxWorkers = 4
)

// maxBatches is how many batch buffers a Reader with w workers (helpers
// and the Reader's own goroutine) may have: one being returned, one being
// read or decrypted by every worker, and one read ahead. More measured no
// faster.
func maxBatches(w int) int { return w + 2 }

var errReaderClosed = errors.New("envelope: read from closed Reader")

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
	_, kind, idLen, err := parseFixed(hb)
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
	return &Reader{src: src, key: k}, nil
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
		if err := r.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.out)
	r.out = r.out[n:]
	return n, nil
}

// WriteTo writes all remaining plaintext to dst, one verified chunk (64 KiB)
// per Write, straight from the buffer it was decrypted in. io.Copy uses it.
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
			if len(r.out) > 0 {
				return total, io.ErrShortWrite
			}
		}
		switch err := r.next(); err {
		case nil:
		case io.EOF:
			return total, nil
		default:
			return total, err
		}
	}
}

// Close stops the Reader's helper goroutines and waits for them to end,
// which includes waiting for a read from the source already in progress to
// return. It does not close the source; once Close has returned, the
// Reader no longer uses it. If the source may block indefinitely, close
// the source first (which makes a pending read return) or concurrently.
// Read and WriteTo fail after Close. Closing twice is harmless.
func (r *Reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	if r.pipe != nil {
		r.pipe.shutdown()
		r.pipe.wg.Wait()
		r.pipe = nil
	}
	r.cur, r.out = nil, nil
	return nil
}

// next makes r.out the plaintext of the next verified chunk, or returns
// io.EOF after the last one, or the error that ended the stream.
func (r *Reader) next() error {
	switch {
	case r.closed:
		return errReaderClosed
	case r.done:
		return io.EOF
	case r.err != nil:
		return r.err
	}
	for {
		if b := r.cur; b != nil {
			if r.j < b.ok {
				off := r.j * sealedChunk
				r.out = b.buf[off : off+min(b.n-off, sealedChunk)-tagSize]
				r.j++
				if r.j == b.ok && b.last {
					r.done = true
					r.stop()
				}
				return nil
			}
			if b.err != nil {
				r.err = b.err
				r.stop()
				return r.err
			}
		}
		if err := r.advance(); err != nil {
			r.err = err
			r.stop()
			return err
		}
	}
}

// advance makes the next batch current. The first is read and opened
// right here; if it does not reach the end of the stream, the helpers are
// started to read and open the rest.
func (r *Reader) advance() error {
	old := r.cur
	r.cur, r.j, r.out = nil, 0, nil
	if old == nil {
		b := &batch{buf: make([]byte, firstChunks*sealedChunk)}
		b.read(r.src)
		r.key.open(b)
		if b.end == nil && b.err == nil {
			r.pipe = startPipeline(r, uint64(firstChunks))
		}
		r.cur = b
		return nil
	}
	if r.pipe == nil {
		// Unreachable: a batch that does not end the stream started the
		// helpers.
		return fmt.Errorf("envelope: internal error: no batch after chunk %d", old.first+uint64(old.ok))
	}
	if old.ready != nil {
		r.pipe.free <- old // never blocks: free has room for every buffer
	}
	p := r.pipe
	want := <-p.order
	for {
		select {
		case <-want.ready:
			r.cur = want
			return nil
		case b := <-p.toOpen:
			// Rather than wait for a helper to open the batch, open
			// the earliest one that nobody has started on: often this
			// one.
			p.open(b)
		}
	}
}

// stop lets the helpers go once the stream has ended or failed.
func (r *Reader) stop() {
	if r.pipe != nil {
		r.pipe.shutdown()
	}
}

// A batch is consecutive sealed chunks read from the source at once and
// opened in place.
type batch struct {
	buf   []byte
	n     int    // bytes of ciphertext in buf
	first uint64 // index of the chunk at buf[0]
	// end is why the read stopped before filling buf: io.EOF at the end
	// of the source, or the source's error. If it is nil, buf is full and
	// the stream goes on after it.
	end error

	// Set by open.
	ok   int   // how many chunks, from the first, verified
	last bool  // chunk ok-1 is the last of the stream
	err  error // why chunk ok could not be returned, if it could not

	ready chan struct{} // signalled once the batch is opened; nil for the first batch
}

// read fills b.buf from src, as far as src goes.
func (b *batch) read(src io.Reader) {
	n, err := readFull(src, b.buf)
	b.n = n
	switch err {
	case nil:
		b.end = nil
	case io.EOF:
		b.end = io.EOF
	default:
		b.end = err
	}
}

// open verifies and decrypts the chunks of b in place, in order, until the
// end of the batch or the first that fails. A chunk that fills
// sealedChunk is never the last (the last chunk is always shorter), so
// the length available decides which nonce applies: the stream ends with
// the first shorter chunk, which must come right before the end of the
// source.
func (k *objectKey) open(b *batch) {
	var nb [nonceSize]byte
	b.ok, b.last, b.err = 0, false, nil
	for off := 0; ; off += sealedChunk {
		i := b.first + uint64(b.ok)
		rem := b.n - off
		if rem < sealedChunk && b.end == nil {
			return // a full batch; the next one goes on from chunk i
		}
		if i >= MaxChunks {
			b.err = fmt.Errorf("%w: stream exceeds %d chunks", ErrAuth, uint64(MaxChunks))
			return
		}
		last := rem < sealedChunk
		switch {
		case last && b.end != io.EOF:
			b.err = fmt.Errorf("envelope: read chunk %d: %w", i, b.end)
			return
		case rem == 0:
			b.err = fmt.Errorf("%w: stream truncated: chunk %d missing, no last chunk", ErrAuth, i)
			return
		case rem < tagSize:
			b.err = fmt.Errorf("%w: chunk %d truncated", ErrAuth, i)
			return
		}
		ct := b.buf[off : off+min(rem, sealedChunk)]
		if _, err := k.aead.Open(ct[:0], nonce(&nb, i, last), ct, k.aad); err != nil {
			b.err = fmt.Errorf("%w: chunk %d", ErrAuth, i)
			return
		}
		b.ok++
		if last {
			b.last = true
			return
		}
	}
}

// pipeline is the helpers of a Reader and what they share. It holds no
// reference to the Reader, so that an abandoned Reader can be collected
// and its cleanup can stop the helpers.
type pipeline struct {
	src io.Reader
	key *objectKey

	order  chan *batch   // batches in stream order, as they are read
	toOpen chan *batch   // the same, for whoever opens them first
	free   chan *batch   // buffers the Reader is done with
	stop   chan struct{} // closed to make the helpers return
	endc   chan struct{} // closed once the source has ended or failed
	once   sync.Once
	wg     sync.WaitGroup

	failed atomic.Bool  // a batch failed to open: read no further
	live   atomic.Int32 // helpers running, for tests

	mu        sync.Mutex // held while reading the source; guards:
	chunk     uint64     // index of the next chunk to read
	allocated int        // buffers allocated so far
	ended     bool       // the source has ended or failed
}

func startPipeline(r *Reader, chunk uint64) *pipeline {
	// The Reader opens batches too when it would otherwise wait, so it
	// counts as one of the workers.
	workers := min(runtime.GOMAXPROCS(0), maxWorkers)
	helpers := max(workers-1, 1)
	p := &pipeline{
		src:    r.src,
		key:    r.key,
		order:  make(chan *batch, maxBatches(workers)),
		toOpen: make(chan *batch, maxBatches(workers)),
		free:   make(chan *batch, maxBatches(workers)),
		stop:   make(chan struct{}),
		endc:   make(chan struct{}),
		chunk:  chunk,
	}
	p.wg.Add(helpers)
	for range helpers {
		go p.work()
	}
	runtime.AddCleanup(r, (*pipeline).shutdown, p)
	return p
}

func (p *pipeline) shutdown() { p.once.Do(func() { close(p.stop) }) }

func (p *pipeline) stopped() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

// work reads batches and opens them until there is nothing left to read
// or open, or the pipeline is shut down. Reading comes first, so that the
// read-ahead keeps going while the Reader's goroutine opens batches;
// a helper opens a batch when it cannot read one: when every buffer is
// in use, or another helper is reading.
func (p *pipeline) work() {
	p.live.Add(1)
	defer p.wg.Done()
	defer p.live.Add(-1)
	for !p.stopped() {
		switch p.read(nil) {
		case readOK:
			continue
		case readEnd:
			for !p.stopped() {
				select {
				case b := <-p.toOpen:
					p.open(b)
				default:
					return
				}
			}
			return
		}
		select {
		case b := <-p.toOpen:
			p.open(b)
		case b := <-p.free:
			p.read(b)
		case <-p.endc:
			// Another helper read the end: open what is left, then go.
		case <-p.stop:
			return
		}
	}
}

// open opens b and signals that it is ready.
func (p *pipeline) open(b *batch) {
	p.key.open(b)
	if b.err != nil {
		p.failed.Store(true)
	}
	b.ready <- struct{}{} // never blocks: the Reader takes one per batch
}

// Results of pipeline.read.
const (
	readOK   = iota // a batch was read and queued
	readBusy        // nothing was read: no buffer free, or another helper reading
	readEnd         // nothing is left to read
)

// read reads the next batch and queues it for the Reader and for opening.
// It reads into b, waiting for its turn, or if b is nil into a free or
// new buffer, if it can have one and its turn without waiting. Helpers
// take turns: reading and queueing under p.mu keeps batches in stream
// order.
func (p *pipeline) read(b *batch) int {
	if b != nil {
		p.mu.Lock()
	} else if !p.mu.TryLock() {
		return readBusy
	}
	defer p.mu.Unlock()
	if p.ended || p.failed.Load() || p.stopped() {
		if b != nil {
			p.free <- b
		}
		return readEnd
	}
	if b == nil {
		select {
		case b = <-p.free:
		default:
			if p.allocated == cap(p.free) {
				return readBusy
			}
			p.allocated++
			b = &batch{buf: make([]byte, batchChunks*sealedChunk), ready: make(chan struct{}, 1)}
		}
	}
	b.read(p.src)
	b.first = p.chunk
	p.chunk += uint64(b.n / sealedChunk)
	if b.end != nil {
		p.ended = true
		close(p.endc)
	}
	// Neither blocks: each has room for every buffer.
	p.order <- b
	p.toOpen <- b
	return readOK
}
