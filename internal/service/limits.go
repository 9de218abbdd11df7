package service

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// Defaults of the connection limits (Config.ReadHeaderTimeout and the rest).
// The minimum transfer rate they set, 1 KiB per 10 s (about 100 bytes a
// second), is far below any real client, even on a poor mobile link, so
// only a connection that is being held rather than used ever meets it; a
// whole-request timeout is not used because a large lake upload or download
// may rightly take many minutes.
const (
	// DefaultReadHeaderTimeout is how long a client has to send a request's
	// line and headers.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultIdleTimeout is how long a keep-alive connection is kept open
	// with no request on it. Long enough for a client's next call to reuse
	// it, short enough that idle connections do not pile up.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultBodyReadTimeout is how long the service waits for each
	// MinTransferBytes of a request body.
	DefaultBodyReadTimeout = 10 * time.Second
	// DefaultWriteTimeout is how long the service waits for a client to
	// take each MinTransferBytes of an answer.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultMinTransferBytes is the amount a client must send or take
	// within each BodyReadTimeout or WriteTimeout.
	DefaultMinTransferBytes = 1 << 10
)

// bufferedMax is what the server may still hold unsent when a handler
// returns or flushes: its two 4 KiB write buffers.
const bufferedMax = 8 << 10

// SlowBodyError is the error a handler's read of a request body returns
// when the client sent it slower than the minimum rate. It wraps the
// connection's deadline error, so errors.Is(err, os.ErrDeadlineExceeded)
// holds; the connection is closed after the answer.
type SlowBodyError struct {
	MinBytes int
	Per      time.Duration
	Err      error
}

func (e *SlowBodyError) Error() string {
	return fmt.Sprintf("the request body arrived slower than %d bytes per %s", e.MinBytes, e.Per)
}

func (e *SlowBodyError) Unwrap() error { return e.Err }

// transferLimits hold a connection to a minimum rate while a request body
// is read and while an answer is written. They count only the time spent
// waiting for the client, never the time the service spends on its own work
// between reads or writes (sealing, a slow blob store), and give no credit
// for bursts: after each MinTransferBytes the next must come within a fresh
// window.
type transferLimits struct {
	read, write time.Duration
	min         int
}

// wrap applies the limits to every request h serves.
func (l transferLimits) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctl := http.NewResponseController(w)
		// Covers what the server writes before the handler does (an
		// interim 100 Continue); each Write sets its own deadline.
		ctl.SetWriteDeadline(time.Now().Add(l.allowance(l.write, bufferedMax)))
		var body *slowBody
		if r.Body != nil && r.Body != http.NoBody {
			body = &slowBody{rc: r.Body, ctl: ctl, l: l}
			r.Body = body
		}
		h.ServeHTTP(&slowWriter{ResponseWriter: w, ctl: ctl, l: l}, r)
		// The server flushes what is buffered, and reads and discards
		// what the handler left of the body, after this returns: one
		// more window each, not forever.
		ctl.SetWriteDeadline(time.Now().Add(l.allowance(l.write, bufferedMax)))
		if body != nil && !body.eof {
			ctl.SetReadDeadline(time.Now().Add(l.read))
		}
	})
}

// allowance is the time n bytes may take at the minimum rate, at least one
// window.
func (l transferLimits) allowance(window time.Duration, n int) time.Duration {
	return window * time.Duration(max(1, (n+l.min-1)/l.min))
}

// slowBody is a request body read under the minimum rate.
type slowBody struct {
	rc     io.ReadCloser
	ctl    *http.ResponseController
	l      transferLimits
	got    int           // bytes of the current window
	waited time.Duration // time spent waiting for them
	eof    bool
}

func (b *slowBody) Read(p []byte) (int, error) {
	start := time.Now()
	// The deadline only matters when the read has to wait for the client;
	// data already buffered comes back at once.
	b.ctl.SetReadDeadline(start.Add(b.l.read - b.waited))
	n, err := b.rc.Read(p)
	b.waited += time.Since(start)
	if b.got += n; b.got >= b.l.min {
		b.got, b.waited = 0, 0
	}
	switch {
	case err == io.EOF:
		b.eof = true
		// The server now watches the idle connection itself; a deadline
		// left here would cancel a request still being worked on.
		b.ctl.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = &SlowBodyError{MinBytes: b.l.min, Per: b.l.read, Err: err}
	}
	return n, err
}

func (b *slowBody) Close() error { return b.rc.Close() }

// slowWriter is an answer written under the minimum rate. A write is handed
// to the server in pieces of at most bufferedMax bytes (what the server may
// hold before it must send), each with the allowance of its own size: a
// client that stops reading is cut after one piece's allowance, however
// large the handler's write (a 1 MiB record would otherwise allow hours).
type slowWriter struct {
	http.ResponseWriter
	ctl *http.ResponseController
	l   transferLimits
}

func (w *slowWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		piece := p[:min(len(p), bufferedMax)]
		w.ctl.SetWriteDeadline(time.Now().Add(w.l.allowance(w.l.write, len(piece))))
		n, err := w.ResponseWriter.Write(piece)
		written += n
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// Flush sends what is buffered, under the same limit.
func (w *slowWriter) Flush() {
	w.ctl.SetWriteDeadline(time.Now().Add(w.l.allowance(w.l.write, bufferedMax)))
	w.ctl.Flush()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *slowWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// DefaultLakeMinFreeMiB is the space the local-files lake leaves free on
// its volume by default: 1 GiB, room for the databases to keep writing
// (key health, audit, job progress) when uploads have filled the rest.
const DefaultLakeMinFreeMiB = 1024
