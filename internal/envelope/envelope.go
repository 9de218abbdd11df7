// Package envelope is cmk's encryption format for data at rest: records
// (small values sealed in one piece) and files (streams of any length,
// sealed in chunks and never held whole in memory), each encrypted under a
// data-encryption key (DEK) with AES-256-GCM.
//
// The package never sees how a DEK is wrapped or where it is stored. A
// ciphertext names its DEK by id in a cleartext header (see KeyID and
// NewReader), so the reader knows which key to fetch and unwrap.
//
// # Guarantees
//
//   - Confidentiality and integrity of the content under AES-256-GCM: a
//     stream under a fresh key derived from the DEK and a random salt, a
//     record under a record key derived once per DEK, with a random nonce.
//   - Binding: a ciphertext opens only with the Binding (org, sandbox, store,
//     object) it was sealed with. The Binding is not stored; the caller
//     supplies it, so a ciphertext copied to another object, store, sandbox
//     or org fails with ErrAuth.
//   - Key commitment: a ciphertext opens under at most one DEK. The header
//     carries a commitment that is checked, in constant time, before
//     anything is decrypted.
//   - Streams: truncation (also at a chunk boundary), appended data, and
//     dropped, duplicated, reordered or spliced chunks all fail with
//     ErrAuth. A Reader releases a chunk's plaintext only after verifying it.
//
// It does not hide the length of an object, the id of its DEK, or when it
// was written. docs/format.md describes the format byte by byte.
//
// # Key use
//
// Nonces do not repeat under a key: every stream gets its own derived key
// and numbers its chunks; records draw random 96-bit nonces under their
// DEK's record key. A DEK may therefore seal only so many objects; Sealer
// counts them and returns ErrKeyExhausted at the limit (DefaultMaxUses,
// NIST SP 800-38D's bound for random nonces, unless configured) so the
// caller rotates to a new DEK.
//
// # Compatibility
//
// Every ciphertext starts with a magic string and a version byte. Streams
// are Version1; records are written as Version2, and Version1 records stay
// readable. Every ciphertext this package has written will stay readable
// by every later version of it; a new format gets a new version byte and
// old readers refuse it with ErrFormat rather than misreading it.
package envelope

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

const (
	// Version1 is the version byte of streams, and of records sealed
	// before Version2.
	Version1 = 1

	// ChunkSize is the plaintext size of every chunk of a stream but the
	// last, which is shorter (possibly empty). 64 KiB keeps the per-chunk
	// overhead (16 bytes, 0.02%) negligible while bounding what a reader
	// must buffer before it can verify and release plaintext.
	ChunkSize = 64 << 10

	// KeySize is the size of a DEK: AES-256.
	KeySize = 32

	// MaxKeyIDSize bounds the DEK id stored in the header. Ids are UUIDs
	// (36 bytes); the bound leaves room for other schemes while keeping the
	// header small and its length field one byte.
	MaxKeyIDSize = 64

	// MaxHeaderSize is the largest header of any ciphertext (version-1
	// headers are the longest), so a prefix this long is always enough
	// for KeyID.
	MaxHeaderSize = fixedSize + MaxKeyIDSize + saltSize + commitSize
)

// Sentinel errors. Callers branch on them with errors.Is; the messages
// returned wrap them with the operation and, for streams, the chunk.
var (
	// ErrAuth reports a ciphertext that failed authentication: wrong key,
	// wrong key id, wrong binding, tampering, truncation or appended data.
	// The package deliberately does not say which.
	ErrAuth = errors.New("envelope: message authentication failed")

	// ErrFormat reports bytes that are not an envelope this package can
	// read: bad magic, unknown version or kind, or a malformed header.
	ErrFormat = errors.New("envelope: not a valid envelope")

	// ErrKeyExhausted reports that a DEK has sealed as many objects as its
	// limit allows; the caller must seal new objects under a new DEK.
	ErrKeyExhausted = errors.New("envelope: data key exhausted")
)

// Binding names the object a ciphertext belongs to. It is authenticated as
// associated data but not stored: opening requires the same Binding, so a
// ciphertext moved to another org, sandbox, store or object fails with
// ErrAuth. Fields are compared byte for byte; any of them may be empty, and
// the zero Binding is valid (it binds to nothing but itself).
type Binding struct {
	Org, Sandbox, Store, Object string
}

// encode returns the Binding as four length-prefixed fields (4-byte
// big-endian length, then the bytes), so that no two Bindings share an
// encoding however their fields are split.
func (b Binding) encode() ([]byte, error) {
	size, err := b.encodedSize()
	if err != nil {
		return nil, err
	}
	return b.appendEncoded(make([]byte, 0, size)), nil
}

// encodedSize returns the size of the encoding, or an error if a field is
// too long to encode.
func (b Binding) encodedSize() (int, error) {
	size := 0
	for _, f := range [...]string{b.Org, b.Sandbox, b.Store, b.Object} {
		if uint64(len(f)) > math.MaxUint32 {
			return 0, fmt.Errorf("envelope: binding field is %d bytes; at most %d are allowed", len(f), uint32(math.MaxUint32))
		}
		size += 4 + len(f)
	}
	return size, nil
}

// appendEncoded appends the encoding; encodedSize must have accepted b.
func (b Binding) appendEncoded(dst []byte) []byte {
	for _, f := range [...]string{b.Org, b.Sandbox, b.Store, b.Object} {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(f)))
		dst = append(dst, f...)
	}
	return dst
}

// Header layout; docs/format.md is the reference.
const (
	magic      = "CMKE"
	fixedSize  = len(magic) + 3 // magic, version, kind, key id length
	saltSize   = 32
	commitSize = 32
	tagSize    = 16 // GCM tag
	nonceSize  = 12 // GCM standard nonce

	kindRecord byte = 'R'
	kindStream byte = 'S'

	// hkdfLabel starts the HKDF info, so that keys derived here can never
	// collide with keys derived from the same DEK for any other purpose.
	hkdfLabel = "cmk envelope v1 object key+commitment"
)

// header is the cleartext prefix of every ciphertext.
type header struct {
	kind   byte
	keyID  string
	salt   [saltSize]byte
	commit [commitSize]byte
}

func (h *header) size() int { return fixedSize + len(h.keyID) + saltSize + commitSize }

// appendPrefix appends the header bytes that precede the salt: everything that
// names the format and the key. They go into the HKDF info so that a
// change to any of them changes the derived key and the commitment.
func (h *header) appendPrefix(dst []byte) []byte {
	dst = append(dst, magic...)
	dst = append(dst, Version1, h.kind, byte(len(h.keyID)))
	return append(dst, h.keyID...)
}

func (h *header) append(dst []byte) []byte {
	dst = h.appendPrefix(dst)
	dst = append(dst, h.salt[:]...)
	return append(dst, h.commit[:]...)
}

// parseFixed checks the first fixedSize bytes and returns the version, the
// kind and the length of the key id that follows. Version 2 exists only
// for records.
func parseFixed(b []byte) (version, kind byte, idLen int, err error) {
	if len(b) < fixedSize {
		return 0, 0, 0, fmt.Errorf("%w: %d bytes is shorter than any header", ErrFormat, len(b))
	}
	if string(b[:len(magic)]) != magic {
		return 0, 0, 0, fmt.Errorf("%w: bad magic", ErrFormat)
	}
	version, kind = b[len(magic)], b[len(magic)+1]
	if kind != kindRecord && kind != kindStream {
		return 0, 0, 0, fmt.Errorf("%w: unknown kind 0x%02x", ErrFormat, kind)
	}
	switch {
	case version == Version1:
	case version == Version2 && kind == kindRecord:
	case version == Version2:
		return 0, 0, 0, fmt.Errorf("%w: version 2 is defined for records only, and this is a stream", ErrFormat)
	default:
		return 0, 0, 0, fmt.Errorf("%w: version %d is not supported (this package reads versions %d and %d)", ErrFormat, version, Version1, Version2)
	}
	idLen = int(b[len(magic)+2])
	if idLen == 0 || idLen > MaxKeyIDSize {
		return 0, 0, 0, fmt.Errorf("%w: key id length %d is outside 1..%d", ErrFormat, idLen, MaxKeyIDSize)
	}
	return version, kind, idLen, nil
}

// parseHeader parses a complete version-1 header from the start of b.
func parseHeader(b []byte) (*header, error) {
	version, kind, idLen, err := parseFixed(b)
	if err != nil {
		return nil, err
	}
	if version != Version1 {
		return nil, fmt.Errorf("%w: version %d where version 1 was expected", ErrFormat, version)
	}
	h := &header{kind: kind}
	if len(b) < fixedSize+idLen+saltSize+commitSize {
		return nil, fmt.Errorf("%w: header truncated", ErrFormat)
	}
	rest := b[fixedSize:]
	id := string(rest[:idLen])
	if err := checkKeyID(id); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	h.keyID = id
	rest = rest[idLen:]
	copy(h.salt[:], rest[:saltSize])
	copy(h.commit[:], rest[saltSize:saltSize+commitSize])
	return h, nil
}

// checkKeyID accepts 1..MaxKeyIDSize bytes of printable ASCII without
// spaces. Key ids are read from untrusted headers and end up in logs and
// key lookups, so control characters and non-ASCII are refused.
func checkKeyID[T string | []byte](id T) error {
	if len(id) == 0 || len(id) > MaxKeyIDSize {
		return fmt.Errorf("envelope: key id is %d bytes; 1 to %d are required", len(id), MaxKeyIDSize)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("envelope: key id has byte 0x%02x at offset %d; only printable ASCII without spaces is allowed", c, i)
		}
	}
	return nil
}

func checkDEK(dek []byte) error {
	if len(dek) != KeySize {
		return fmt.Errorf("envelope: data key is %d bytes; %d are required", len(dek), KeySize)
	}
	return nil
}

// objectKey holds what is derived for one object.
type objectKey struct {
	aead   cipher.AEAD
	commit [commitSize]byte
	aad    []byte // encoded Binding
}

// derive computes the per-object AES-256-GCM key and the commitment:
//
//	HKDF-SHA256(secret = DEK, salt = header salt,
//	            info = label || header prefix || encoded binding) -> 64 bytes
//
// The first 32 bytes are the object key, the last 32 the commitment.
func derive(dek []byte, h *header, b Binding) (*objectKey, error) {
	aad, err := b.encode()
	if err != nil {
		return nil, err
	}
	info := make([]byte, 0, len(hkdfLabel)+fixedSize+len(h.keyID)+len(aad))
	info = append(info, hkdfLabel...)
	info = h.appendPrefix(info)
	info = append(info, aad...)
	aead, commit, err := deriveKey(dek, h.salt[:], info)
	if err != nil {
		return nil, fmt.Errorf("envelope: derive object key: %w", err)
	}
	return &objectKey{aead: aead, commit: commit, aad: aad}, nil
}

// deriveKey expands dek with HKDF-SHA256 (salt, info) into 64 bytes: an
// AES-256-GCM key, returned ready to use, then a commitment.
func deriveKey(dek, salt, info []byte) (cipher.AEAD, [commitSize]byte, error) {
	var commit [commitSize]byte
	okm, err := hkdf.Key(sha256.New, dek, salt, string(info), KeySize+commitSize)
	if err != nil {
		return nil, commit, err
	}
	defer clear(okm)
	block, err := aes.NewCipher(okm[:KeySize])
	if err != nil {
		return nil, commit, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, commit, err
	}
	copy(commit[:], okm[KeySize:])
	return aead, commit, nil
}

// newHeader draws a fresh salt from rnd and derives the object key.
func newHeader(rnd io.Reader, kind byte, dek []byte, keyID string, b Binding) (*header, *objectKey, error) {
	if err := checkDEK(dek); err != nil {
		return nil, nil, err
	}
	if err := checkKeyID(keyID); err != nil {
		return nil, nil, err
	}
	h := &header{kind: kind, keyID: keyID}
	if rnd == nil {
		rand.Read(h.salt[:]) // never fails since Go 1.24
	} else if _, err := io.ReadFull(rnd, h.salt[:]); err != nil {
		return nil, nil, fmt.Errorf("envelope: read salt: %w", err)
	}
	k, err := derive(dek, h, b)
	if err != nil {
		return nil, nil, err
	}
	h.commit = k.commit
	return h, k, nil
}

// openHeader derives the object key for a parsed header and checks the
// commitment before anything is decrypted.
func openHeader(dek []byte, h *header, b Binding) (*objectKey, error) {
	if err := checkDEK(dek); err != nil {
		return nil, err
	}
	k, err := derive(dek, h, b)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(k.commit[:], h.commit[:]) != 1 {
		return nil, fmt.Errorf("%w: key commitment does not match (wrong key, key id or binding)", ErrAuth)
	}
	return k, nil
}

// nonce writes the nonce of chunk i: 3 zero bytes, the chunk index as a
// 64-bit big-endian integer, then 1 if the chunk is the last, else 0.
// A record is chunk 0 and last.
func nonce(n *[nonceSize]byte, i uint64, last bool) []byte {
	n[0], n[1], n[2] = 0, 0, 0
	binary.BigEndian.PutUint64(n[3:11], i)
	n[11] = 0
	if last {
		n[11] = 1
	}
	return n[:]
}

// KeyIDBytes is KeyID returning the id as a slice of b, without copying.
func KeyIDBytes(b []byte) ([]byte, error) {
	_, _, idLen, err := parseFixed(b)
	if err != nil {
		return nil, err
	}
	if len(b) < fixedSize+idLen {
		return nil, fmt.Errorf("%w: header truncated", ErrFormat)
	}
	id := b[fixedSize : fixedSize+idLen]
	if err := checkKeyID(id); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	return id, nil
}

// KeyID returns the id of the DEK that sealed a record or stream, from its
// first bytes. b may be a whole ciphertext or any prefix that holds the
// header (MaxHeaderSize bytes always do). The id is not authenticated until
// the ciphertext is opened: use it only to choose which key to fetch.
func KeyID(b []byte) (string, error) {
	id, err := KeyIDBytes(b)
	return string(id), err
}

// HeaderSize returns the size of the header of a ciphertext whose DEK id
// is keyID.
func HeaderSize(keyID string) (int, error) {
	if err := checkKeyID(keyID); err != nil {
		return 0, err
	}
	return fixedSize + len(keyID) + saltSize + commitSize, nil
}

// CiphertextSize returns the exact size of the stream NewWriter produces
// for plaintextSize bytes under a DEK with id keyID, e.g. for a
// Content-Length.
func CiphertextSize(keyID string, plaintextSize int64) (int64, error) {
	hs, err := HeaderSize(keyID)
	if err != nil {
		return 0, err
	}
	if plaintextSize < 0 {
		return 0, fmt.Errorf("envelope: plaintext size %d is negative", plaintextSize)
	}
	chunks := plaintextSize/ChunkSize + 1 // the last chunk is never full
	if uint64(chunks) > MaxChunks {
		return 0, fmt.Errorf("envelope: %d bytes need %d chunks; at most %d are allowed", plaintextSize, chunks, uint64(MaxChunks))
	}
	return int64(hs) + plaintextSize + chunks*tagSize, nil
}
