// Package blob stores the data lake's objects: opaque, immutable byte
// streams addressed by '/'-separated keys such as "org/sandbox/dataset/file".
//
// The bytes are ciphertext produced by the layer above; this package never
// looks inside them. It offers one small interface, [Backend], and two
// implementations: [FS] on a local directory and [Azure] on Azure Blob
// Storage.
//
// # Guarantees
//
// Every backend makes a Put visible atomically and only once it has
// completed: a reader that fails, a cancelled context or a crashed process
// leaves no partial object behind, and any object previously stored under
// the same key stays intact. Objects are streamed in bounded memory in both
// directions, whatever their size.
//
// Keys are validated the same way by every backend (see [ValidateKey]), so
// data can move between backends without renaming.
//
// The conformance suite in package blobtest checks these guarantees; a new
// backend is done when it passes it.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ErrNotFound is returned (wrapped) by Get and Delete when no object is
// stored under the key.
var ErrNotFound = errors.New("object not found")

// ErrInvalidKey is returned (wrapped) for a key that [ValidateKey] rejects.
var ErrInvalidKey = errors.New("invalid object key")

// Object describes one stored object.
type Object struct {
	Key      string
	Size     int64
	Modified time.Time
}

// Backend stores immutable objects by key.
//
// All methods reject an invalid key with an error wrapping ErrInvalidKey
// and honour ctx. Implementations are safe for concurrent use.
type Backend interface {
	// Put streams r into key and returns the number of bytes stored. The
	// object becomes visible atomically, only when complete: if r fails,
	// ctx is cancelled or the process dies mid-way, no partial object is
	// visible and any previous object under key is intact. An error from r
	// is returned wrapped. If r is also an io.WriterTo, a backend may
	// call WriteTo instead of Read; either way it consumes r once.
	Put(ctx context.Context, key string, r io.Reader) (int64, error)
	// Get opens the object under key and returns it with its size. The
	// caller must close the reader. It returns ErrNotFound (wrapped) when
	// there is no such object.
	Get(ctx context.Context, key string) (io.ReadCloser, int64, error)
	// Delete removes the object under key, or returns ErrNotFound (wrapped).
	Delete(ctx context.Context, key string) error
	// List returns the objects whose keys start with prefix, sorted by key.
	// The prefix is matched byte-wise: "a/b" matches "a/bc/x", "a/b/"
	// does not. An empty prefix lists everything.
	List(ctx context.Context, prefix string) ([]Object, error)
}

// MaxKeyLen is the longest key, in bytes. It is Azure Blob Storage's limit
// on blob names, so every key is storable in every backend.
const MaxKeyLen = 1024

// MaxSegmentLen is the longest segment between two '/' of a key, in bytes.
// The FS backend stores each segment as a file or directory name with a
// two-byte suffix, and Linux file systems cap names at 255 bytes.
const MaxSegmentLen = 250

// ValidateKey reports whether key can name an object. A key is at most
// MaxKeyLen bytes of printable UTF-8, made of '/'-separated segments that
// are non-empty, at most MaxSegmentLen bytes, and neither "." nor "..". So
// it has no leading or trailing '/' and no "//". The error wraps
// ErrInvalidKey and says which rule the key broke.
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: key is empty", ErrInvalidKey)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: key is %d bytes; at most %d are allowed", ErrInvalidKey, len(key), MaxKeyLen)
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("%w: key %q is not valid UTF-8", ErrInvalidKey, key)
	}
	for _, r := range key {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: key %q contains the non-printable character %U", ErrInvalidKey, key, r)
		}
	}
	for i, seg := range strings.Split(key, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("%w: key %q has an empty segment at position %d (leading, trailing or double '/')", ErrInvalidKey, key, i)
		case seg == "." || seg == "..":
			return fmt.Errorf("%w: key %q has a %q segment", ErrInvalidKey, key, seg)
		case len(seg) > MaxSegmentLen:
			return fmt.Errorf("%w: key %q has a segment of %d bytes; at most %d are allowed", ErrInvalidKey, key, len(seg), MaxSegmentLen)
		}
	}
	return nil
}

// copyBufSize is the chunk in which the FS backend streams a Put; it bounds
// the memory one Put holds, whatever the object's size.
const copyBufSize = 1 << 20

// readFull reads from r until buf is full, r ends or r fails, checking ctx
// before each read so that a cancelled Put stops at the next chunk. It
// returns the bytes read and io.EOF only once r has ended with nothing read.
func readFull(ctx context.Context, r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			if n == 0 {
				return 0, io.EOF
			}
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("read object data: %w", err)
		}
	}
	return n, nil
}
