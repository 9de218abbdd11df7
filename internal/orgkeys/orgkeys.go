// Package orgkeys hands the data plane the data keys of an org's stores:
// the key to seal new objects with, and the key a stored object names. Every
// lookup first asks the key-health gate whether the org's data may be served
// at all, so a revoked org is refused before any key is touched. Keys come
// from the in-memory cache; only a miss unwraps (one key-vault call for a
// customer key).
//
// It also counts the objects sealed under each data key, reserving blocks of
// uses in the database, and moves a store to a fresh data key before the
// limit of the envelope format is reached.
package orgkeys

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/cmk-project/cmk/internal/dekcache"
	"github.com/cmk-project/cmk/internal/envelope"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/metrics"
	"github.com/cmk-project/cmk/internal/store"
)

// reserveBlock is how many uses are reserved in the database at a time.
const reserveBlock = 1 << 16

// ErrWrongStore is returned when an object names a data key of another org,
// sandbox or store: it cannot be opened here.
var ErrWrongStore = errors.New("object is sealed with a data key of another store")

// Resolver is safe for concurrent use.
type Resolver struct {
	Store   Store
	Keyring *keyring.Keyring
	Cache   *dekcache.Cache
	Gate    *keyhealth.Gate
	Metrics *metrics.Metrics
	// MaxUses is the number of objects one data key may seal; default
	// envelope.DefaultMaxUses.
	MaxUses int64

	mu     sync.Mutex
	active map[slot]*activeKey    // store -> key sealing new objects
	meta   map[string]*keyMeta    // data key id -> what is known of it
	uses   map[string]*useCounter // data key id -> uses
}

type activeKey struct{ id string }

// keyMeta is what the resolver remembers of one data key: its record,
// without the wrapping, and the loader that unwraps it on a cache miss.
// Both are made once per key and shared by pointer, so the data path
// neither copies the record nor makes a loader on every call.
type keyMeta struct {
	store.DataKey
	load dekcache.Loader
}

func (r *Resolver) newKeyMeta(dk store.DataKey) *keyMeta {
	dk.Wrapped = nil
	return &keyMeta{DataKey: dk, load: r.loader(dk.ID, dk.OrgID)}
}

type useCounter struct {
	mu       sync.Mutex
	used     int64 // uses taken (as seen by this process)
	reserved int64 // uses reserved in the database up to here
}

// slot names a store: the data keys of one kind of store of a sandbox.
type slot struct{ org, sandbox, kind string }

func (r *Resolver) init() {
	if r.active == nil {
		r.active = map[slot]*activeKey{}
		r.meta = map[string]*keyMeta{}
		r.uses = map[string]*useCounter{}
	}
	if r.MaxUses == 0 {
		r.MaxUses = envelope.DefaultMaxUses
	}
}

// Allow says whether the org's data may be served now.
func (r *Resolver) Allow(org string) error { return r.Gate.Allow(org) }

// AllowStore is Allow for a request of one store (keyhealth.StoreLake, …):
// the gate counts its refusal, or its being served after refusals, for the
// org's access history.
func (r *Resolver) AllowStore(org, store string) error { return r.Gate.AllowStore(org, store) }

// Key is a data key ready for use. Clear Bytes when done.
type Key struct {
	ID    string
	Bytes []byte
}

// Clear zeroes the key bytes.
func (k *Key) Clear() { clear(k.Bytes) }

// SealKey returns the key to seal one new object of a store with, counting
// the use.
func (r *Resolver) SealKey(ctx context.Context, org, sandbox, kind string) (*Key, error) {
	dk, err := r.sealMeta(ctx, org, sandbox, kind)
	if err != nil {
		return nil, err
	}
	b, err := r.Cache.Get(ctx, dk.OrgID, dk.ID, dk.load)
	if err != nil {
		return nil, err
	}
	return &Key{ID: dk.ID, Bytes: b}, nil
}

// SealRecord seals one record of a store under the store's current data
// key, counting the use. The data key stays in the cache, prepared for
// records, so a record costs no derivation.
func (r *Resolver) SealRecord(ctx context.Context, org, sandbox, kind string, b envelope.Binding, plaintext []byte) ([]byte, error) {
	dk, err := r.sealMeta(ctx, org, sandbox, kind)
	if err != nil {
		return nil, err
	}
	var out []byte
	err = r.Cache.WithRecordKey(ctx, dk.OrgID, dk.ID, dk.load, func(k *envelope.RecordKey) error {
		var err error
		out, err = k.Seal(b, plaintext)
		return err
	})
	return out, err
}

// sealMeta returns the data key to seal one new object of a store with,
// counting the use and moving the store to a new key when it is spent.
func (r *Resolver) sealMeta(ctx context.Context, org, sandbox, kind string) (*keyMeta, error) {
	if err := r.Gate.Allow(org); err != nil {
		return nil, err
	}
	for attempt := 0; attempt < 3; attempt++ {
		dk, err := r.activeKey(ctx, org, sandbox, kind)
		if err != nil {
			return dk, err
		}
		exhausted, err := r.take(ctx, dk.ID)
		if errors.Is(err, store.ErrNotFound) {
			// The key is gone (the org was deleted and created again,
			// perhaps through another replica): look the store up afresh.
			r.ForgetOrg(org)
			continue
		}
		if err != nil {
			return dk, err
		}
		if exhausted {
			if err := r.rotate(ctx, org, sandbox, kind, dk.ID); err != nil {
				return dk, err
			}
			continue
		}
		return dk, nil
	}
	return nil, fmt.Errorf("store %s/%s/%s: could not get a data key with uses left", org, sandbox, kind)
}

// OpenKey returns the key with the given id, if it belongs to the store.
func (r *Resolver) OpenKey(ctx context.Context, org, sandbox, kind, id string) ([]byte, error) {
	dk, err := r.openMeta(ctx, org, sandbox, kind, []byte(id))
	if err != nil {
		return nil, err
	}
	return r.Cache.Get(ctx, dk.OrgID, dk.ID, dk.load)
}

// OpenRecord opens a record of a store with the data key it names, if that
// key belongs to the store. It decrypts in place: sealed must be the
// caller's own copy, and is not usable afterwards.
func (r *Resolver) OpenRecord(ctx context.Context, org, sandbox, kind string, b envelope.Binding, sealed []byte) ([]byte, error) {
	id, err := envelope.KeyIDBytes(sealed)
	if err != nil {
		return nil, err
	}
	dk, err := r.openMeta(ctx, org, sandbox, kind, id)
	if err != nil {
		return nil, err
	}
	var out []byte
	err = r.Cache.WithRecordKey(ctx, dk.OrgID, dk.ID, dk.load, func(k *envelope.RecordKey) error {
		var err error
		out, err = k.OpenInPlace(b, sealed)
		return err
	})
	return out, err
}

// openMeta returns the data key with the given id, if it belongs to the
// store and the org's data may be served.
func (r *Resolver) openMeta(ctx context.Context, org, sandbox, kind string, id []byte) (*keyMeta, error) {
	if err := r.Gate.Allow(org); err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.init()
	dk, ok := r.meta[string(id)] // no copy of id
	r.mu.Unlock()
	var err error
	if !ok {
		dk, err = r.metaOf(ctx, string(id))
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrWrongStore
	}
	if err != nil {
		return nil, err
	}
	if dk.OrgID != org || dk.Sandbox != sandbox || dk.Store != kind {
		return nil, ErrWrongStore
	}
	return dk, nil
}

// loader unwraps a data key on a cache miss.
func (r *Resolver) loader(id, org string) dekcache.Loader {
	return func(ctx context.Context) ([]byte, error) {
		if r.Metrics != nil {
			r.Metrics.DEKCacheLoads.Inc()
		}
		// Re-read the wrapping: it may have moved to the customer key or a
		// new key version since the metadata was cached.
		full, err := r.Store.DataKey(ctx, id)
		if err != nil {
			return nil, err
		}
		// The gate may have closed while this request waited.
		if err := r.Gate.Allow(org); err != nil {
			return nil, err
		}
		return r.Keyring.Unwrap(ctx, full)
	}
}

func (r *Resolver) metaOf(ctx context.Context, id string) (*keyMeta, error) {
	r.mu.Lock()
	r.init()
	m, ok := r.meta[id]
	r.mu.Unlock()
	if ok {
		return m, nil
	}
	dk, err := r.Store.DataKey(ctx, id)
	if err != nil {
		return nil, err
	}
	m = r.newKeyMeta(dk)
	r.mu.Lock()
	r.meta[id] = m
	r.mu.Unlock()
	return m, nil
}

func (r *Resolver) activeKey(ctx context.Context, org, sandbox, kind string) (*keyMeta, error) {
	r.mu.Lock()
	r.init()
	a, ok := r.active[slot{org, sandbox, kind}]
	r.mu.Unlock()
	if ok {
		return r.metaOf(ctx, a.id)
	}
	dk, err := r.Store.ActiveDataKey(ctx, org, sandbox, kind)
	if err != nil {
		return nil, fmt.Errorf("data key of %s/%s/%s: %w", org, sandbox, kind, err)
	}
	m := r.newKeyMeta(dk)
	r.mu.Lock()
	r.active[slot{org, sandbox, kind}] = &activeKey{id: dk.ID}
	r.meta[dk.ID] = m
	r.mu.Unlock()
	return m, nil
}

// take counts one use of a data key, reserving a new block in the database
// when this process's block runs out. It reports whether the key is spent.
func (r *Resolver) take(ctx context.Context, id string) (bool, error) {
	r.mu.Lock()
	r.init()
	u, ok := r.uses[id]
	if !ok {
		u = &useCounter{}
		r.uses[id] = u
	}
	r.mu.Unlock()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.used >= u.reserved {
		total, err := r.Store.ReserveUses(ctx, id, reserveBlock)
		if err != nil {
			return false, err
		}
		u.used, u.reserved = total-reserveBlock, total
	}
	if u.used >= r.MaxUses {
		return true, nil
	}
	u.used++
	return false, nil
}

// rotate moves a store to a fresh data key, unless another request did.
func (r *Resolver) rotate(ctx context.Context, org, sandbox, kind, spent string) error {
	r.mu.Lock()
	a := r.active[slot{org, sandbox, kind}]
	r.mu.Unlock()
	if a != nil && a.id != spent {
		return nil
	}
	cur, err := r.Store.ActiveDataKey(ctx, org, sandbox, kind)
	if err != nil {
		return err
	}
	if cur.ID == spent {
		if cur, err = r.Keyring.RotateStoreKey(ctx, org, sandbox, kind); err != nil {
			return fmt.Errorf("rotate data key of %s/%s/%s: %w", org, sandbox, kind, err)
		}
	}
	r.mu.Lock()
	r.active[slot{org, sandbox, kind}] = &activeKey{id: cur.ID}
	r.mu.Unlock()
	return nil
}

// ForgetOrg drops what the resolver remembers of an org (it was deleted).
func (r *Resolver) ForgetOrg(org string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.init()
	for id, dk := range r.meta {
		if dk.OrgID == org {
			delete(r.meta, id)
			delete(r.uses, id)
		}
	}
	for k := range r.active {
		if k.org == org {
			delete(r.active, k)
		}
	}
}

// Refused reports whether err is a refusal by the key-health gate.
func Refused(err error) (*keyhealth.Refused, bool) {
	var ref *keyhealth.Refused
	ok := errors.As(err, &ref)
	return ref, ok
}
