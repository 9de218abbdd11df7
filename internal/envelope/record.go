package envelope

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Records are sealed in version 2 (docs/format.md, "Record, version 2"):
// AES-256-GCM under a record key derived once per DEK, with a random 96-bit
// nonce per record and a commitment to the DEK and its id. Deriving per DEK
// rather than per record takes the HKDF and the AES key schedule off every
// record, which is most of the cost of sealing or opening a small value;
// the DEK's use limit (DefaultMaxUses, from NIST SP 800-38D) is what keeps
// the random nonces from repeating. Version-1 records stay readable.

const (
	// Version2 is the version byte of records sealed by this package.
	// Streams are version 1: there is no version-2 stream.
	Version2 = 2

	// recordLabel starts the HKDF info of the per-DEK record key, apart
	// from every other derivation from a DEK.
	recordLabel = "cmk envelope v2 record key+commitment"
)

// RecordKey is a DEK prepared for records: it seals version-2 records and
// opens records of both versions. Preparing it costs one HKDF and one AES
// key schedule, so callers that seal or open many records under a DEK keep
// it (as the data-key cache does) rather than passing the DEK each time.
// It is safe for concurrent use. Wipe it when the DEK must be forgotten.
type RecordKey struct {
	// mu is held for reading by every Seal and Open, and for writing by
	// Wipe, which therefore waits for calls in progress before it zeroes.
	mu     sync.RWMutex
	keyID  string
	dek    []byte // kept for version-1 records
	aead   cipher.AEAD
	commit [commitSize]byte
	rand   io.Reader // nil means crypto/rand; set only by tests
}

// NewRecordKey prepares dek, whose id is keyID, for records. It keeps its
// own copy of dek.
func NewRecordKey(dek []byte, keyID string) (*RecordKey, error) {
	if err := checkDEK(dek); err != nil {
		return nil, err
	}
	if err := checkKeyID(keyID); err != nil {
		return nil, err
	}
	info := make([]byte, 0, len(recordLabel)+1+len(keyID))
	info = append(info, recordLabel...)
	info = append(info, byte(len(keyID)))
	info = append(info, keyID...)
	aead, commit, err := deriveKey(dek, nil, info)
	if err != nil {
		return nil, fmt.Errorf("envelope: derive record key: %w", err)
	}
	return &RecordKey{keyID: keyID, dek: append([]byte(nil), dek...), aead: aead, commit: commit}, nil
}

// KeyID returns the id of the key's DEK.
func (k *RecordKey) KeyID() string { return k.keyID }

// Wipe waits for calls in progress, zeroes the copy of the DEK and drops
// the record key, after which every call fails with ErrWiped. Go gives no
// way to zero the AES key schedule inside the dropped cipher; it becomes
// unreachable garbage.
func (k *RecordKey) Wipe() {
	k.mu.Lock()
	defer k.mu.Unlock()
	clear(k.dek)
	clear(k.commit[:])
	k.dek, k.aead = nil, nil
}

// ErrWiped is returned by a RecordKey that was wiped. A caller that got
// the key from a cache may fetch it again: the cache may have dropped it
// only because it reached its age or use bound.
var ErrWiped = errors.New("envelope: record key was wiped")

// aadPoolSize bounds the associated data built in a pooled buffer; ids of
// orgs, sandboxes and objects are far shorter in practice.
const aadPoolSize = 512

var aadPool = sync.Pool{New: func() any { return new([aadPoolSize]byte) }}

// recordPrefixSize is the size of a version-2 record header before the
// nonce: magic, version, kind, key id length and key id.
func recordPrefixSize(keyID string) int { return fixedSize + len(keyID) }

// RecordOverhead returns how many bytes a version-2 record under a DEK
// with id keyID adds to its plaintext: the header and the GCM tag.
func RecordOverhead(keyID string) (int, error) {
	if err := checkKeyID(keyID); err != nil {
		return 0, err
	}
	return recordPrefixSize(keyID) + nonceSize + commitSize + tagSize, nil
}

// Seal encrypts plaintext as one version-2 record bound to b. It does not
// count the use of the DEK; the caller must (see Sealer and DefaultMaxUses).
func (k *RecordKey) Seal(b Binding, plaintext []byte) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.aead == nil {
		return nil, ErrWiped
	}
	if uint64(len(plaintext)) > maxRecordSize {
		return nil, fmt.Errorf("envelope: record is %d bytes; at most %d are allowed, use a stream", len(plaintext), uint64(maxRecordSize))
	}
	aadLen, err := b.encodedSize()
	if err != nil {
		return nil, err
	}
	pre := recordPrefixSize(k.keyID)
	hdr := pre + nonceSize + commitSize
	// One allocation holds the record and, past its end, the associated
	// data, which is the header through the nonce followed by the binding.
	out := make([]byte, 0, hdr+len(plaintext)+tagSize+pre+nonceSize+aadLen)
	out = append(out, magic...)
	out = append(out, Version2, kindRecord, byte(len(k.keyID)))
	out = append(out, k.keyID...)
	n := out[pre : pre+nonceSize]
	out = out[:pre+nonceSize]
	if k.rand == nil {
		rand.Read(n) // never fails since Go 1.24
	} else if _, err := io.ReadFull(k.rand, n); err != nil {
		return nil, fmt.Errorf("envelope: read nonce: %w", err)
	}
	out = append(out, k.commit[:]...)
	end := hdr + len(plaintext) + tagSize
	aad := b.appendEncoded(append(out[end:end], out[:pre+nonceSize]...))
	sealed := k.aead.Seal(out, n, plaintext, aad)
	return sealed[:len(sealed):len(sealed)], nil
}

// Open decrypts a record of either version sealed under the key's DEK with
// the same Binding. It returns an error wrapping ErrFormat if ciphertext is
// not a record, and one wrapping ErrAuth if it does not authenticate.
func (k *RecordKey) Open(b Binding, ciphertext []byte) ([]byte, error) {
	return k.open(b, ciphertext, false)
}

// OpenInPlace is Open for a caller that owns ciphertext and is done with
// it: a version-2 record is decrypted in place, and the plaintext returned
// is a part of ciphertext's memory. Whatever the outcome, ciphertext must
// not be used afterwards.
func (k *RecordKey) OpenInPlace(b Binding, ciphertext []byte) ([]byte, error) {
	return k.open(b, ciphertext, true)
}

func (k *RecordKey) open(b Binding, ciphertext []byte, inPlace bool) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.aead == nil {
		return nil, ErrWiped
	}
	version, kind, idLen, err := parseFixed(ciphertext)
	if err != nil {
		return nil, err
	}
	if kind != kindRecord {
		return nil, fmt.Errorf("%w: ciphertext is a stream, not a record", ErrFormat)
	}
	pre := fixedSize + idLen
	if len(ciphertext) < pre {
		return nil, fmt.Errorf("%w: header truncated", ErrFormat)
	}
	// The key id must be this key's: an id equal to it is known to be
	// well formed. In version 2, the id and the commitment tie the record
	// to one DEK; both are checked before anything is decrypted.
	if err := k.checkID(ciphertext[fixedSize:pre]); err != nil {
		return nil, err
	}
	if version == Version1 {
		return openRecordV1(k.dek, b, ciphertext)
	}
	hdr := pre + nonceSize + commitSize
	if len(ciphertext) < hdr {
		return nil, fmt.Errorf("%w: header truncated", ErrFormat)
	}
	if subtle.ConstantTimeCompare(ciphertext[pre+nonceSize:hdr], k.commit[:]) != 1 {
		return nil, fmt.Errorf("%w: key commitment does not match (wrong key)", ErrAuth)
	}
	body := ciphertext[hdr:]
	if len(body) < tagSize {
		return nil, fmt.Errorf("%w: record truncated", ErrAuth)
	}
	aadLen, err := b.encodedSize()
	if err != nil {
		return nil, err
	}
	ptLen := len(body) - tagSize
	var buf, aad []byte
	if inPlace {
		buf = body[:0]
		// The associated data is built in a pooled buffer: opening a
		// record in place then allocates nothing.
		if n := pre + nonceSize + aadLen; n <= aadPoolSize {
			p := aadPool.Get().(*[aadPoolSize]byte)
			defer aadPool.Put(p)
			aad = p[:0]
		} else {
			aad = make([]byte, 0, n)
		}
	} else {
		// The plaintext and, after it, the associated data share one
		// allocation.
		buf = make([]byte, 0, ptLen+pre+nonceSize+aadLen)
		aad = buf[ptLen:ptLen]
	}
	aad = b.appendEncoded(append(aad, ciphertext[:pre+nonceSize]...))
	pt, err := k.aead.Open(buf, ciphertext[pre:pre+nonceSize], body, aad)
	if err != nil {
		return nil, fmt.Errorf("%w: record", ErrAuth)
	}
	return pt[:len(pt):len(pt)], nil
}

// checkID refuses a record that names another key id than the key's.
func (k *RecordKey) checkID(id []byte) error {
	if string(id) == k.keyID {
		return nil
	}
	if err := checkKeyID(id); err != nil {
		return fmt.Errorf("%w: %v", ErrFormat, err)
	}
	return fmt.Errorf("%w: record names data key %s, not %s", ErrAuth, id, k.keyID)
}

// SealRecord encrypts plaintext as one version-2 record under dek, naming
// the key keyID in the header and binding the ciphertext to b. It does not
// count the use of dek; see Sealer. The result is RecordOverhead(keyID) +
// len(plaintext) bytes long. To seal many records under one DEK, prepare a
// RecordKey once instead.
func SealRecord(dek []byte, keyID string, b Binding, plaintext []byte) ([]byte, error) {
	return sealRecord(nil, dek, keyID, b, plaintext)
}

func sealRecord(rnd io.Reader, dek []byte, keyID string, b Binding, plaintext []byte) ([]byte, error) {
	k, err := NewRecordKey(dek, keyID)
	if err != nil {
		return nil, err
	}
	defer k.Wipe()
	k.rand = rnd
	return k.Seal(b, plaintext)
}

// OpenRecord decrypts a record of either version sealed under dek with the
// same Binding. It returns an error wrapping ErrFormat if ciphertext is not
// a record, and one wrapping ErrAuth if it does not authenticate.
func OpenRecord(dek []byte, b Binding, ciphertext []byte) ([]byte, error) {
	if err := checkDEK(dek); err != nil {
		return nil, err
	}
	id, err := KeyID(ciphertext)
	if err != nil {
		return nil, err
	}
	k, err := NewRecordKey(dek, id)
	if err != nil {
		return nil, err
	}
	defer k.Wipe()
	return k.Open(b, ciphertext)
}

// maxRecordSize is GCM's limit for one message (2^32-2 blocks); anything
// larger belongs in a stream anyway.
const maxRecordSize = (1<<32 - 2) * 16

// sealRecordV1 seals a version-1 record. Nothing writes version 1 any
// more; the tests use it to check that such records stay readable.
func sealRecordV1(rnd io.Reader, dek []byte, keyID string, b Binding, plaintext []byte) ([]byte, error) {
	if uint64(len(plaintext)) > maxRecordSize {
		return nil, fmt.Errorf("envelope: record is %d bytes; at most %d are allowed, use a stream", len(plaintext), uint64(maxRecordSize))
	}
	h, k, err := newHeader(rnd, kindRecord, dek, keyID, b)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, h.size()+len(plaintext)+tagSize)
	out = h.append(out)
	var n [nonceSize]byte
	return k.aead.Seal(out, nonce(&n, 0, true), plaintext, k.aad), nil
}

// openRecordV1 opens a version-1 record.
func openRecordV1(dek []byte, b Binding, ciphertext []byte) ([]byte, error) {
	h, err := parseHeader(ciphertext)
	if err != nil {
		return nil, err
	}
	if h.kind != kindRecord {
		return nil, fmt.Errorf("%w: ciphertext is a stream, not a record", ErrFormat)
	}
	k, err := openHeader(dek, h, b)
	if err != nil {
		return nil, err
	}
	body := ciphertext[h.size():]
	if len(body) < tagSize {
		return nil, fmt.Errorf("%w: record truncated", ErrAuth)
	}
	var n [nonceSize]byte
	pt, err := k.aead.Open(nil, nonce(&n, 0, true), body, k.aad)
	if err != nil {
		return nil, fmt.Errorf("%w: record", ErrAuth)
	}
	if pt == nil {
		pt = []byte{}
	}
	return pt, nil
}
