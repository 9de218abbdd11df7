package envelope

import (
	"fmt"
	"io"
	"sync/atomic"
)

// DefaultMaxUses is how many objects a Sealer seals under one DEK before it
// returns ErrKeyExhausted.
//
// NIST SP 800-38D (section 8.3) limits AES-GCM with random 96-bit nonces to
// 2^32 invocations per key, so that the chance of a nonce repeating stays
// below 2^-32. Records are sealed under one record key per DEK with random
// 96-bit nonces, so this bound applies to them directly. (Streams each get
// a key derived from the DEK and a random 256-bit salt and number their
// chunks, so for them the limit is conservative.) Counting every object
// against the limit also forces regular DEK rotation.
const DefaultMaxUses = 1 << 32

// Sealer seals records and streams under one DEK and counts them, so that
// the DEK is retired before its use limit. It is safe for concurrent use.
type Sealer struct {
	dek   []byte
	rec   *RecordKey
	keyID string
	max   uint64
	used  atomic.Uint64
	rand  io.Reader // for streams; nil means crypto/rand; set only by tests
}

// SealerOptions configures NewSealer.
type SealerOptions struct {
	// MaxUses is the number of objects the DEK may seal; 0 means
	// DefaultMaxUses.
	MaxUses uint64
	// Used is the number of objects already sealed under the DEK, e.g.
	// as persisted next to the wrapped key, counted against MaxUses.
	Used uint64
}

// NewSealer returns a Sealer for dek, whose id keyID is written into every
// header. It keeps its own copy of dek.
func NewSealer(dek []byte, keyID string, opts SealerOptions) (*Sealer, error) {
	if err := checkDEK(dek); err != nil {
		return nil, err
	}
	if err := checkKeyID(keyID); err != nil {
		return nil, err
	}
	rec, err := NewRecordKey(dek, keyID)
	if err != nil {
		return nil, err
	}
	s := &Sealer{dek: append([]byte(nil), dek...), rec: rec, keyID: keyID, max: opts.MaxUses}
	if s.max == 0 {
		s.max = DefaultMaxUses
	}
	s.used.Store(opts.Used)
	return s, nil
}

// Wipe zeroes the Sealer's copy of the DEK and wipes its record key; the
// Sealer must not be used afterwards.
func (s *Sealer) Wipe() {
	clear(s.dek)
	s.rec.Wipe()
}

// KeyID returns the id of the Sealer's DEK.
func (s *Sealer) KeyID() string { return s.keyID }

// Used returns how many objects have been sealed (or reserved by a failed
// seal) under the DEK, including SealerOptions.Used.
func (s *Sealer) Used() uint64 { return s.used.Load() }

// take reserves one use, or returns ErrKeyExhausted.
func (s *Sealer) take() error {
	for {
		u := s.used.Load()
		if u >= s.max {
			return fmt.Errorf("%w: data key %s has sealed %d objects; the limit is %d, rotate to a new data key", ErrKeyExhausted, s.keyID, u, s.max)
		}
		if s.used.CompareAndSwap(u, u+1) {
			return nil
		}
	}
}

// SealRecord is SealRecord with the Sealer's key, counting one use.
func (s *Sealer) SealRecord(b Binding, plaintext []byte) ([]byte, error) {
	if err := s.take(); err != nil {
		return nil, err
	}
	return s.rec.Seal(b, plaintext)
}

// NewWriter is NewWriter with the Sealer's key, counting one use.
func (s *Sealer) NewWriter(dst io.Writer, b Binding) (*Writer, error) {
	if err := s.take(); err != nil {
		return nil, err
	}
	return newWriter(s.rand, dst, s.dek, s.keyID, b)
}
