// Package lake is the data lake: datasets of files per sandbox, ingested
// and read as streams, each file sealed with the envelope format under the
// lake store's data key and bound to its org, sandbox, dataset and name, so
// a file copied to another place does not open. Files are never whole in
// memory, and a file becomes visible only once completely written. A Quota
// bounds each file and what each org stores; an upload past it stores
// nothing.
package lake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cmk-project/cmk/internal/envelope"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/lake/blob"
	"github.com/cmk-project/cmk/internal/orgkeys"
)

// StoreKind is the data-key store of the lake.
const StoreKind = "lake"

// Errors callers branch on.
var (
	ErrNotFound    = errors.New("file not found")
	ErrInvalidName = errors.New("invalid name")
)

// Lake serves files.
type Lake struct {
	Backend blob.Backend
	Keys    *orgkeys.Resolver
	// Quota bounds a file and what an org stores; zero fields take the
	// defaults. Set it before the lake is used.
	Quota Quota

	usage usageTracker
}

// File describes a stored file.
type File struct {
	Dataset  string    `json:"dataset"`
	Name     string    `json:"name"`
	Size     int64     `json:"size"` // plaintext bytes
	Modified time.Time `json:"modified"`
}

// CheckName validates a dataset or file name: 1 to 200 characters of
// letters, digits, '.', '_' and '-', not starting with '.'.
func CheckName(what, n string) error {
	if n == "" || len(n) > 200 || n[0] == '.' {
		return fmt.Errorf("%w: %s name %q must be 1 to 200 characters and not start with '.'", ErrInvalidName, what, n)
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: %s name %q may only hold letters, digits, '.', '_' and '-'", ErrInvalidName, what, n)
		}
	}
	return nil
}

func objectKey(org, sandbox, dataset, file string) string {
	return org + "/" + sandbox + "/" + dataset + "/" + file
}

func binding(org, sandbox, dataset, file string) envelope.Binding {
	return envelope.Binding{Org: org, Sandbox: sandbox, Store: StoreKind, Object: dataset + "/" + file}
}

// Put streams r into a file, sealing it on the way; it returns the
// plaintext bytes stored. An upload that passes the Quota is refused with a
// *LimitError at the first read past it, and nothing is stored.
func (l *Lake) Put(ctx context.Context, org, sandbox, dataset, file string, r io.Reader) (int64, error) {
	return l.PutSized(ctx, org, sandbox, dataset, file, r, -1)
}

// PutSized is Put for an upload that declares its size (-1 = unknown), as
// an HTTP Content-Length does: one declared past the Quota is refused
// before anything is read. The declaration is not trusted beyond that;
// what is read is counted all the same.
func (l *Lake) PutSized(ctx context.Context, org, sandbox, dataset, file string, r io.Reader, size int64) (int64, error) {
	if err := CheckName("dataset", dataset); err != nil {
		return 0, err
	}
	if err := CheckName("file", file); err != nil {
		return 0, err
	}
	q := l.Quota.WithDefaults()
	if size > q.FileBytes {
		return 0, &LimitError{Err: ErrFileTooLarge, Limit: q.FileBytes, Declared: size}
	}
	key, err := l.Keys.SealKey(ctx, org, sandbox, StoreKind)
	if err != nil {
		return 0, err
	}
	c := l.usage.claim(l.Backend, org, q)
	m := &metered{ctx: ctx, r: r, limit: q.FileBytes, claim: c}
	src := &sealingSource{key: key, b: binding(org, sandbox, dataset, file), r: gated{m, l.Keys, org}}
	if size > 0 {
		if err := c.grow(ctx, size); err != nil {
			src.abandon()
			c.end(0)
			return 0, err
		}
	}
	stored, err := l.Backend.Put(ctx, objectKey(org, sandbox, dataset, file), src)
	if err != nil {
		src.abandon()
		c.end(0)
		return 0, err
	}
	c.end(stored)
	return src.wait(), nil
}

// sealingSource is the sealed form of a plaintext stream, for a backend's
// Put. A backend that writes to a file calls WriteTo, and the sealing
// writer writes its buffers straight to the file, overlapping encryption
// with the writes; one that reads (to stage blocks) gets the sealed bytes
// through a pipe from a goroutine. It owns the data key and clears it.
type sealingSource struct {
	key *orgkeys.Key
	b   envelope.Binding
	r   io.Reader
	n   int64 // plaintext bytes read from r, once sealing has ended

	used bool           // WriteTo was called, or Read started the pipe
	pr   *io.PipeReader // the pipe, once Read has started it
	done chan struct{}  // closed when the pipe's goroutine ends
}

var errSourceReused = errors.New("lake: sealed source consumed twice")

// WriteTo seals the whole plaintext stream to dst and returns the sealed
// bytes written. If the plaintext source fails, the stream is left
// without its last chunk, so it never opens.
func (s *sealingSource) WriteTo(dst io.Writer) (int64, error) {
	if s.used {
		return 0, errSourceReused
	}
	s.used = true
	return s.seal(dst)
}

func (s *sealingSource) seal(dst io.Writer) (int64, error) {
	cw := &countingWriter{w: dst}
	w, err := envelope.NewWriter(cw, s.key.Bytes, s.key.ID, s.b)
	s.key.Clear()
	if err != nil {
		return 0, err
	}
	s.n, err = io.Copy(w, s.r)
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		// Wait for a write in progress, so that nothing writes to dst
		// once this returns.
		w.Abort()
	}
	return cw.n, err
}

func (s *sealingSource) Read(p []byte) (int, error) {
	if s.pr == nil {
		if s.used {
			return 0, errSourceReused
		}
		s.used = true
		pr, pw := io.Pipe()
		s.pr, s.done = pr, make(chan struct{})
		go func() {
			defer close(s.done)
			_, err := s.seal(pw)
			pw.CloseWithError(err) // nil closes cleanly: the backend commits
		}()
	}
	return s.pr.Read(p)
}

// wait returns the plaintext bytes sealed after a successful Put. If the
// backend read through the pipe, it read to the end, which the goroutine
// closes only once it is done, so the wait is short.
func (s *sealingSource) wait() int64 {
	if s.done != nil {
		<-s.done
	}
	return s.n
}

// abandon is called when Put failed. It clears the key if sealing never
// started, and stops the pipe's goroutine, without waiting for it: it
// may be blocked reading a slow upload, and ends when that read returns
// (the server closes the body when the handler returns), clearing the key
// itself.
func (s *sealingSource) abandon() {
	if !s.used {
		s.key.Clear()
	}
	if s.pr != nil {
		s.pr.CloseWithError(errors.New("upload ended"))
	}
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Open returns a reader of a file's plaintext and its plaintext size. The
// reader fails if the stored bytes were altered, truncated or moved.
func (l *Lake) Open(ctx context.Context, org, sandbox, dataset, file string) (io.ReadCloser, int64, error) {
	if err := CheckName("dataset", dataset); err != nil {
		return nil, 0, err
	}
	if err := CheckName("file", file); err != nil {
		return nil, 0, err
	}
	if err := l.Keys.AllowStore(org, keyhealth.StoreLake); err != nil {
		return nil, 0, err
	}
	rc, size, err := l.Backend.Get(ctx, objectKey(org, sandbox, dataset, file))
	if errors.Is(err, blob.ErrNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	var keyID string
	rd, err := envelope.NewReader(rc, binding(org, sandbox, dataset, file), func(id string) ([]byte, error) {
		keyID = id
		return l.Keys.OpenKey(ctx, org, sandbox, StoreKind, id)
	})
	if err != nil {
		rc.Close()
		return nil, 0, err
	}
	plain, err := plaintextSize(keyID, size)
	if err != nil {
		rc.Close()
		return nil, 0, err
	}
	return readCloser{gated{rd, l.Keys, org}, rd, rc}, plain, nil
}

// gated stops a stream the moment the org's key is revoked: a long upload or
// download that began before the revocation does not run on.
type gated struct {
	r    io.Reader
	keys *orgkeys.Resolver
	org  string
}

func (g gated) Read(p []byte) (int, error) {
	if err := g.keys.AllowStore(g.org, keyhealth.StoreLake); err != nil {
		return 0, err
	}
	return g.r.Read(p)
}

type readCloser struct {
	io.Reader
	dec *envelope.Reader
	src io.Closer
}

// WriteTo streams the plaintext to w on the decrypter's fast path, checking
// the gate before each block is handed on.
func (rc readCloser) WriteTo(w io.Writer) (int64, error) {
	g := rc.Reader.(gated)
	return rc.dec.WriteTo(gatedWriter{w, g.keys, g.org})
}

type gatedWriter struct {
	w    io.Writer
	keys *orgkeys.Resolver
	org  string
}

func (g gatedWriter) Write(p []byte) (int, error) {
	if err := g.keys.AllowStore(g.org, keyhealth.StoreLake); err != nil {
		return 0, err
	}
	return g.w.Write(p)
}

func (rc readCloser) Close() error {
	// Stop the decrypter's read-ahead at once rather than when it is
	// garbage collected.
	if c, ok := any(rc.dec).(io.Closer); ok {
		c.Close()
	}
	return rc.src.Close()
}

// plaintextSize inverts envelope.CiphertextSize for a stored object: the
// sealed size grows with the plaintext size, so a binary search finds it.
func plaintextSize(keyID string, ct int64) (int64, error) {
	lo, hi := int64(0), ct
	for lo < hi {
		mid := lo + (hi-lo)/2
		n, err := envelope.CiphertextSize(keyID, mid)
		if err != nil {
			return 0, err
		}
		if n < ct {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if n, err := envelope.CiphertextSize(keyID, lo); err != nil || n != ct {
		return 0, fmt.Errorf("stored file of %d bytes is not a sealed file", ct)
	}
	return lo, nil
}

// uuidLen is the length of data key ids, which fixes the header size.
const uuidLen = 36

// Delete removes a file.
func (l *Lake) Delete(ctx context.Context, org, sandbox, dataset, file string) error {
	if err := CheckName("dataset", dataset); err != nil {
		return err
	}
	if err := CheckName("file", file); err != nil {
		return err
	}
	if err := l.Keys.AllowStore(org, keyhealth.StoreLake); err != nil {
		return err
	}
	err := l.Backend.Delete(ctx, objectKey(org, sandbox, dataset, file))
	if errors.Is(err, blob.ErrNotFound) {
		return ErrNotFound
	}
	return err
}

// DeleteOrg removes every stored file of an org (org deletion).
func (l *Lake) DeleteOrg(ctx context.Context, org string) error {
	defer l.usage.forget(org)
	objs, err := l.Backend.List(ctx, org+"/")
	if err != nil {
		return err
	}
	for _, o := range objs {
		if err := l.Backend.Delete(ctx, o.Key); err != nil && !errors.Is(err, blob.ErrNotFound) {
			return err
		}
	}
	return nil
}

// List lists a sandbox's files, of one dataset or ("" ) of all.
func (l *Lake) List(ctx context.Context, org, sandbox, dataset string) ([]File, error) {
	if err := l.Keys.AllowStore(org, keyhealth.StoreLake); err != nil {
		return nil, err
	}
	prefix := org + "/" + sandbox + "/"
	if dataset != "" {
		if err := CheckName("dataset", dataset); err != nil {
			return nil, err
		}
		prefix += dataset + "/"
	}
	objs, err := l.Backend.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := []File{}
	for _, o := range objs {
		ds, name, ok := strings.Cut(strings.TrimPrefix(o.Key, org+"/"+sandbox+"/"), "/")
		if !ok {
			continue
		}
		size, err := plaintextSize(strings.Repeat("0", uuidLen), o.Size)
		if err != nil {
			size = -1 // not a file this service wrote
		}
		out = append(out, File{Dataset: ds, Name: name, Size: size, Modified: o.Modified})
	}
	return out, nil
}
