// Package platformkey keeps the system key — the key that wraps the data
// keys of orgs without a customer-managed key — under a key in the
// platform's own KMS (Azure Key Vault or AWS KMS), through the same
// kms.Provider code as customers' keys.
//
// # Generations
//
// The system key is a set of generations: random 256-bit AES keys (each a
// *systemkey.Key), stored in the state database wrapped by the platform's
// KMS key. Data keys are still wrapped locally with AES-256-GCM under the
// current generation, with no KMS call per data key; a data key's KEKRef
// names its generation. A generation's id is its fingerprint
// (systemkey.Key.ID), so a wrapped generation that unwraps to other bytes
// than its id says is refused, and a key file imported as a generation
// keeps opening the data keys it wrapped.
//
// On start a Ring unwraps every generation through the KMS (one call
// each) and keeps them in memory. A replica asked for a generation it does
// not hold reloads, at most once per ReloadMinInterval.
//
// # Rotation
//
// Rotate adds a generation wrapped under the KMS key's newest version; it
// becomes current on every replica at its next reload (Rewrapper.Run
// reloads every pass). The Rewrapper then re-wraps the system-managed data
// keys of older generations to the current one, page by page, each in one
// compare-and-swap row update, under a lease so one replica does it; a
// crash loses nothing, the next holder carries on from the data. A
// generation left with no data key is marked retired. Retired generations
// stay stored and keep opening (a replica that had not yet reloaded may
// still have wrapped a key under one: the next pass moves it).
//
// When the KMS key gets a new version, RewrapGenerations wraps the
// generations themselves under it (a call or two per generation; no data
// key changes).
//
// # Derived secrets
//
// Secrets derived from the system key (systemkey.Key.Derive and
// DeriveAEAD: webhook secrets, consent state) come from the root
// generation, never from the current one, so rotation leaves them
// unchanged. The root is the first generation: the key file's key after a
// migration, a random key on a fresh installation. It is never erased.
package platformkey

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/store"
	"github.com/cmk-project/cmk/internal/systemkey"
)

// ReloadMinInterval bounds how often a lookup of an unknown generation
// reloads from the database: a data key naming a generation nobody has
// must not turn every request into a database read and KMS calls.
const ReloadMinInterval = time.Second

// Errors callers branch on.
var (
	// ErrNeedsMigration: the database holds system-wrapped data keys but no
	// generation, so the key file must be imported first (Migrate).
	ErrNeedsMigration = errors.New("the state holds data keys wrapped by a system key file, and no platform key generation")
	// ErrUnknownGeneration: a data key names a generation that is not stored.
	ErrUnknownGeneration = errors.New("unknown system key generation")
	// ErrNoGenerations: no generation is stored yet (Config.NoCreate).
	ErrNoGenerations = errors.New("no platform key generation is stored yet")
	// ErrNoPlatformKey: the operation needs a platform key in a KMS and the
	// service uses a key file.
	ErrNoPlatformKey = errors.New("no platform key in a KMS is configured")
	// ErrWrongKeyFile: Migrate was given a key file that wraps none of
	// the state's system-wrapped data keys.
	ErrWrongKeyFile = errors.New("the key file is not this installation's system key")
)

// Store is the part of the state store the ring and the rewrapper use
// (*store.Store implements it).
type Store interface {
	// PlatformGenerations returns every generation, oldest first.
	PlatformGenerations(ctx context.Context) ([]store.PlatformGeneration, error)
	// AddPlatformGeneration stores a generation; store.ErrGenerationExists
	// when its id is taken or it is a second root.
	AddPlatformGeneration(ctx context.Context, g store.PlatformGeneration) error
	// RewrapPlatformGeneration replaces a generation's wrapping if it is
	// still fromKey at fromVersion (store.ErrWrappingChanged otherwise).
	RewrapPlatformGeneration(ctx context.Context, id, fromKey, fromVersion string, to store.PlatformGeneration) error
	// RetirePlatformGeneration marks a generation retired.
	RetirePlatformGeneration(ctx context.Context, id string, at time.Time) error
	// SystemKeysUnder pages through the data keys wrapped by generation ref.
	SystemKeysUnder(ctx context.Context, ref, afterID string, limit int) ([]store.DataKey, error)
	// CountSystemKeys counts the system-wrapped data keys per KEKRef.
	CountSystemKeys(ctx context.Context) (map[string]int, error)
	// ReplaceSystemWrapping swaps a data key's system wrapping if it is
	// still under fromRef (store.ErrWrappingChanged otherwise).
	ReplaceSystemWrapping(ctx context.Context, id, fromRef string, to store.DataKey) error
	// ClaimPlatformLease takes or renews a named lease.
	ClaimPlatformLease(ctx context.Context, name, owner string, lease time.Duration) (bool, error)
	// ReleasePlatformLease gives a lease up.
	ReleasePlatformLease(ctx context.Context, name, owner string) error
}

var _ Store = (*store.Store)(nil)

// Config builds a Ring over a KMS key.
type Config struct {
	Store    Store
	Provider kms.Provider // the platform's own credentials; never the rate-limited, per-org one
	Key      kms.KeyRef   // the platform key (Azure Key Vault key or AWS KMS key ARN)
	Log      *slog.Logger
	Now      func() time.Time // nil = time.Now
	Rand     io.Reader        // nil = crypto/rand
	// NoCreate makes Open fail with ErrNoGenerations on a database
	// without generations rather than create the root (the commands that
	// only look or rotate).
	NoCreate bool
}

// Ring is the set of system key generations this process holds. It
// implements keyring.SystemKeys. The zero Ring is not usable: use Open or
// FromFile.
type Ring struct {
	cfg  Config
	file *systemkey.Key // file mode: the one generation; nil with a KMS key

	mu         sync.RWMutex
	keys       map[string]*systemkey.Key
	rows       []store.PlatformGeneration // as last loaded, oldest first
	current    *systemkey.Key
	root       *systemkey.Key
	lastReload time.Time
	lastErr    error
	reloadMu   sync.Mutex
}

// FromFile is the ring of a key file: one generation, current and root.
func FromFile(k *systemkey.Key) *Ring {
	return &Ring{file: k, keys: map[string]*systemkey.Key{k.ID(): k}, current: k, root: k}
}

// Open loads the generations wrapped by the KMS key. On a fresh database
// (no generation and no system-wrapped data key) it creates the root
// generation. A database whose data keys are wrapped by a key file and that
// has no generation yet fails with ErrNeedsMigration.
func Open(ctx context.Context, cfg Config) (*Ring, error) {
	if cfg.Store == nil || cfg.Provider == nil || cfg.Key.Name == "" {
		return nil, errors.New("platform key: a store, a provider and a key are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	r := &Ring{cfg: cfg, keys: map[string]*systemkey.Key{}}
	rows, err := cfg.Store.PlatformGenerations(ctx)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		counts, err := cfg.Store.CountSystemKeys(ctx)
		if err != nil {
			return nil, err
		}
		if len(counts) > 0 {
			return nil, ErrNeedsMigration
		}
		if cfg.NoCreate {
			return nil, ErrNoGenerations
		}
		if _, err := r.add(ctx, nil, true); err != nil && !errors.Is(err, store.ErrGenerationExists) {
			return nil, err // another replica starting at once made the root: load it
		}
	}
	if err := r.Reload(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// KMS reports whether the ring is wrapped by a KMS key (false: a key file).
func (r *Ring) KMS() bool { return r.file == nil }

// KeyRef is the platform key (zero for a key file).
func (r *Ring) KeyRef() kms.KeyRef { return r.cfg.Key }

// Current is the generation new data keys are wrapped under.
func (r *Ring) Current() *systemkey.Key {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.current
}

// Root is the generation secrets are derived from (Derive, DeriveAEAD).
func (r *Ring) Root() *systemkey.Key {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.root
}

// Key returns generation id. When it is not held, it reloads once: at
// most one reload per ReloadMinInterval, shared by every lookup that began
// before it, so a lookup may wait up to ReloadMinInterval but never misses
// a generation stored before it began. An id still not stored fails
// wrapping ErrUnknownGeneration.
func (r *Ring) Key(ctx context.Context, id string) (*systemkey.Key, error) {
	if k := r.held(id); k != nil {
		return k, nil
	}
	if r.file == nil {
		began := r.now()
		r.reloadMu.Lock()
		defer r.reloadMu.Unlock()
		if k := r.held(id); k != nil {
			return k, nil
		}
		r.mu.RLock()
		last := r.lastReload
		r.mu.RUnlock()
		if !last.After(began) {
			if wait := last.Add(ReloadMinInterval).Sub(r.now()); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil, ctx.Err()
				case <-t.C:
				}
			}
			if err := r.reloadLocked(ctx); err != nil {
				return nil, err
			}
			if k := r.held(id); k != nil {
				return k, nil
			}
		}
	}
	return nil, fmt.Errorf("system key generation %s: %w", id, ErrUnknownGeneration)
}

func (r *Ring) held(id string) *systemkey.Key {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.keys[id]
}

// Generations returns the stored generations as last loaded, oldest first
// (nil for a key file).
func (r *Ring) Generations() []store.PlatformGeneration {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return append([]store.PlatformGeneration(nil), r.rows...)
}

func (r *Ring) now() time.Time {
	if r.cfg.Now != nil {
		return r.cfg.Now()
	}
	return time.Now()
}

func (r *Ring) rand() io.Reader {
	if r.cfg.Rand != nil {
		return r.cfg.Rand
	}
	return rand.Reader
}

// Reload reads the stored generations and unwraps those not yet held
// (one KMS call each). The newest generation that is not retired becomes
// current. It fails without changing the ring when a generation does not
// unwrap to the key its id names.
func (r *Ring) Reload(ctx context.Context) error {
	if r.file != nil {
		return nil
	}
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	return r.reloadLocked(ctx)
}

// reloadLocked is Reload with reloadMu held.
// lastReload is when the last reload began (read the stored generations):
// a lookup that began before it finds there whatever was stored then.
func (r *Ring) reloadLocked(ctx context.Context) error {
	began := r.now()
	err := r.reload(ctx)
	r.mu.Lock()
	r.lastErr = err
	// A failed reload counts too: an unknown generation must not retry it
	// on every request.
	r.lastReload = began
	r.mu.Unlock()
	return err
}

// Err is the last reload's error, nil when it succeeded. A replica that
// cannot open a generation other replicas wrap data keys under is not
// ready; one that only holds what it loaded before is (an outage of the
// KMS alone does not take it out: the generations are in memory).
func (r *Ring) Err() error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.lastErr
}

func (r *Ring) reload(ctx context.Context) error {
	rows, err := r.cfg.Store.PlatformGenerations(ctx)
	if err != nil {
		return err
	}
	keys := map[string]*systemkey.Key{}
	var current, root *systemkey.Key
	for _, g := range rows {
		k := r.held(g.ID)
		if k == nil {
			if k, err = r.unwrap(ctx, g); err != nil {
				return err
			}
		}
		keys[g.ID] = k
		if g.Root {
			root = k
		}
		if g.RetiredAt.IsZero() {
			current = k // rows are oldest first
		}
	}
	if root == nil || current == nil {
		return fmt.Errorf("platform key: the stored generations have no root or no generation in use (%d stored)", len(rows))
	}
	r.mu.Lock()
	r.keys, r.rows, r.current, r.root = keys, rows, current, root
	r.mu.Unlock()
	return nil
}

// kmsCtx binds a KMS call to the use and the generation: for AWS KMS the
// encryption context names them ({"cmk:org": "cmk-platform-key/<id>"}), so
// a wrapped generation opens only as the generation it is.
func kmsCtx(ctx context.Context, id string) context.Context {
	return audit.WithOrg(ctx, "cmk-platform-key/"+id)
}

// ParseRef reads a stored KMS key reference (kms.KeyRef.String) back.
func ParseRef(s string) (kms.KeyRef, error) {
	if strings.HasPrefix(s, "arn:") {
		i := strings.LastIndex(s, ":")
		if ref := (kms.KeyRef{VaultURL: s[:i], Name: s[i+1:]}); i > 0 && ref.Name != "" {
			return ref, nil
		}
	} else if vault, name, ok := strings.Cut(s, "/keys/"); ok && name != "" && !strings.Contains(name, "/") {
		return kms.KeyRef{VaultURL: vault, Name: name}, nil
	}
	return kms.KeyRef{}, fmt.Errorf("platform key reference %q is neither a Key Vault key nor an AWS KMS key ARN", s)
}

// unwrap opens a stored generation with the KMS key that wrapped it and
// checks that it is the generation its id names.
func (r *Ring) unwrap(ctx context.Context, g store.PlatformGeneration) (*systemkey.Key, error) {
	ref, err := ParseRef(g.KMSKey)
	if err != nil {
		return nil, err
	}
	raw, err := r.cfg.Provider.Unwrap(kmsCtx(ctx, g.ID), ref, kms.Wrapped{KeyVersion: g.KMSVersion, Alg: g.Alg, Ciphertext: g.Wrapped})
	defer clear(raw)
	if err != nil {
		return nil, fmt.Errorf("unwrap system key generation %s with platform key %s: %w", g.ID, g.KMSKey, err)
	}
	k, err := systemkey.New(raw)
	if err != nil {
		return nil, fmt.Errorf("unwrap system key generation %s with platform key %s: %w", g.ID, g.KMSKey, err)
	}
	if k.ID() != g.ID {
		return nil, fmt.Errorf("system key generation %s unwrapped to another key (%s) with platform key %s: the stored generation was altered or moved", g.ID, k.ID(), g.KMSKey)
	}
	return k, nil
}

// wrap wraps raw (a generation's bytes, id its fingerprint) under the
// newest version of the platform key and proves the wrapping opens to the
// same generation before it is stored.
func (r *Ring) wrap(ctx context.Context, id string, raw []byte) (store.PlatformGeneration, error) {
	ref := r.cfg.Key
	w, err := r.cfg.Provider.Wrap(kmsCtx(ctx, id), ref, raw)
	if err != nil {
		return store.PlatformGeneration{}, fmt.Errorf("wrap system key generation %s with platform key %s: %w", id, ref, err)
	}
	if !ref.AWS() && w.KeyVersion == "" {
		return store.PlatformGeneration{}, fmt.Errorf("wrap system key generation %s with platform key %s: the vault named no key version", id, ref)
	}
	g := store.PlatformGeneration{ID: id, KMSKey: ref.String(), KMSVersion: w.KeyVersion, Alg: w.Alg, Wrapped: w.Ciphertext}
	if _, err := r.unwrap(ctx, g); err != nil {
		return store.PlatformGeneration{}, fmt.Errorf("prove the new wrapping: %w", err)
	}
	return g, nil
}

// add stores a new generation: raw's key, or a random one when raw is nil.
// It becomes current at the next Reload.
func (r *Ring) add(ctx context.Context, raw []byte, root bool) (store.PlatformGeneration, error) {
	if raw == nil {
		raw = make([]byte, 32)
		defer clear(raw)
		if _, err := io.ReadFull(r.rand(), raw); err != nil {
			return store.PlatformGeneration{}, fmt.Errorf("generate system key generation: %w", err)
		}
	}
	k, err := systemkey.New(raw)
	if err != nil {
		return store.PlatformGeneration{}, err
	}
	g, err := r.wrap(ctx, k.ID(), raw)
	if err != nil {
		return g, err
	}
	g.Root = root
	// Current is the newest by creation time: never at or before a stored one.
	// (The store keeps milliseconds.)
	g.CreatedAt = r.now().Truncate(time.Millisecond)
	rows, err := r.cfg.Store.PlatformGenerations(ctx)
	if err != nil {
		return g, err
	}
	if n := len(rows); n > 0 && !g.CreatedAt.After(rows[n-1].CreatedAt) {
		g.CreatedAt = rows[n-1].CreatedAt.Add(time.Millisecond)
	}
	if err := r.cfg.Store.AddPlatformGeneration(ctx, g); err != nil {
		return g, err
	}
	r.cfg.Log.Info("system key generation added", "generation", g.ID, "platform_key", g.KMSKey, "kms_version", g.KMSVersion, "root", root)
	return g, nil
}

// Rotate adds a new random generation under the platform key's newest
// version and makes it current here; other replicas take it at their next
// reload, and the Rewrapper moves the data keys of older generations to it.
func (r *Ring) Rotate(ctx context.Context) (store.PlatformGeneration, error) {
	if r.file != nil {
		return store.PlatformGeneration{}, ErrNoPlatformKey
	}
	g, err := r.add(ctx, nil, false)
	if err != nil {
		return g, err
	}
	return g, r.Reload(ctx)
}

// Migrate imports a key file's key as a generation wrapped by the platform
// key (the root, when there is none yet: derived secrets stay as they
// were), so the data keys it wrapped keep opening, then rotates to a fresh
// generation; the Rewrapper moves the file's data keys off it. Importing a
// key that is already stored only rotates when nothing newer exists.
// It reports the imported generation.
func Migrate(ctx context.Context, cfg Config, raw []byte) (*Ring, store.PlatformGeneration, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	r := &Ring{cfg: cfg, keys: map[string]*systemkey.Key{}}
	rows, err := cfg.Store.PlatformGenerations(ctx)
	if err != nil {
		return nil, store.PlatformGeneration{}, err
	}
	fileKey, err := systemkey.New(raw)
	if err != nil {
		return nil, store.PlatformGeneration{}, err
	}
	for _, g := range rows {
		if g.ID == fileKey.ID() {
			if err := r.Reload(ctx); err != nil {
				return nil, g, err
			}
			if r.Current().ID() == g.ID {
				_, err = r.Rotate(ctx)
			}
			return r, g, err
		}
	}
	// A file that wraps none of the state's data keys is another
	// installation's (or a stray copy): importing it, as the root of an
	// empty list, would derive the platform's secrets from it for good.
	counts, err := cfg.Store.CountSystemKeys(ctx)
	if err != nil {
		return nil, store.PlatformGeneration{}, err
	}
	if len(counts) > 0 && counts[fileKey.ID()] == 0 {
		held := make([]string, 0, len(counts))
		for ref := range counts {
			held = append(held, ref)
		}
		slices.Sort(held)
		return nil, store.PlatformGeneration{}, fmt.Errorf("%w: it is system key %s, and the state's system-wrapped data keys are under %s; give the file the service runs with (--system-key-file)",
			ErrWrongKeyFile, fileKey.ID(), strings.Join(held, ", "))
	}
	g, err := r.add(ctx, raw, len(rows) == 0)
	if err != nil {
		return nil, g, err
	}
	_, err = r.Rotate(ctx)
	return r, g, err
}

// RewrapGenerations wraps every stored generation that is not under the
// platform key's newest version (or is under another KMS key) anew, and
// reports how many it re-wrapped. A version the KMS does not report (AWS
// KMS keeps its versions to itself) leaves the generations as they are.
func (r *Ring) RewrapGenerations(ctx context.Context) (int, error) {
	if r.file != nil {
		return 0, nil
	}
	info, err := r.cfg.Provider.Describe(kmsCtx(ctx, "describe"), r.cfg.Key)
	if err != nil {
		return 0, fmt.Errorf("describe platform key %s: %w", r.cfg.Key, err)
	}
	if err := kms.CheckUsable(r.cfg.Key, info, r.now()); err != nil {
		return 0, err
	}
	rows, err := r.cfg.Store.PlatformGenerations(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, g := range rows {
		if g.KMSKey == r.cfg.Key.String() && (info.Version == "" || g.KMSVersion == info.Version) {
			continue
		}
		if n2, err := r.rewrapGeneration(ctx, g); err != nil {
			return n, err
		} else {
			n += n2
		}
	}
	return n, nil
}

func (r *Ring) rewrapGeneration(ctx context.Context, g store.PlatformGeneration) (int, error) {
	ref, err := ParseRef(g.KMSKey)
	if err != nil {
		return 0, err
	}
	raw, err := r.cfg.Provider.Unwrap(kmsCtx(ctx, g.ID), ref, kms.Wrapped{KeyVersion: g.KMSVersion, Alg: g.Alg, Ciphertext: g.Wrapped})
	defer clear(raw)
	if err != nil {
		return 0, fmt.Errorf("unwrap system key generation %s with platform key %s: %w", g.ID, g.KMSKey, err)
	}
	if k, err := systemkey.New(raw); err != nil || k.ID() != g.ID {
		return 0, fmt.Errorf("system key generation %s did not unwrap to itself with platform key %s", g.ID, g.KMSKey)
	}
	to, err := r.wrap(ctx, g.ID, raw)
	if err != nil {
		return 0, err
	}
	err = r.cfg.Store.RewrapPlatformGeneration(ctx, g.ID, g.KMSKey, g.KMSVersion, to)
	if errors.Is(err, store.ErrWrappingChanged) {
		return 0, nil // another replica did it
	}
	if err != nil {
		return 0, err
	}
	r.cfg.Log.Info("system key generation re-wrapped", "generation", g.ID, "platform_key", to.KMSKey, "from_version", g.KMSVersion, "to_version", to.KMSVersion)
	return 1, nil
}

// Status is what `cmkd platform-key status` shows.
type Status struct {
	KMS         bool               `json:"kms"`           // false: the system key is a key file
	Key         string             `json:"platformKey"`   // the platform key, without version ("" for a key file)
	Generations []GenerationStatus `json:"generations"`   // oldest first
	Unknown     map[string]int     `json:"unknownKeys"`   // data keys under a system key that is no stored generation
	Pending     int                `json:"pendingRewrap"` // data keys not yet under the current generation
}

// GenerationStatus is one generation in a Status.
type GenerationStatus struct {
	ID         string    `json:"id"`
	Root       bool      `json:"root"`
	Current    bool      `json:"current"`
	KMSKey     string    `json:"kmsKey,omitempty"`
	KMSVersion string    `json:"kmsVersion,omitempty"`
	Created    time.Time `json:"created,omitzero"`
	Retired    time.Time `json:"retired,omitzero"`
	DataKeys   int       `json:"dataKeys"`
}

// Status counts the data keys under each generation.
func (r *Ring) Status(ctx context.Context, st interface {
	CountSystemKeys(context.Context) (map[string]int, error)
}) (Status, error) {
	counts, err := st.CountSystemKeys(ctx)
	if err != nil {
		return Status{}, err
	}
	out := Status{KMS: r.file == nil, Unknown: map[string]int{}}
	cur, root := r.Current().ID(), r.Root().ID()
	seen := map[string]bool{}
	if r.file != nil {
		out.Generations = []GenerationStatus{{ID: cur, Root: true, Current: true, DataKeys: counts[cur]}}
		seen[cur] = true
	} else {
		out.Key = r.cfg.Key.String()
		for _, g := range r.Generations() {
			seen[g.ID] = true
			gs := GenerationStatus{ID: g.ID, Root: g.ID == root, Current: g.ID == cur, KMSKey: g.KMSKey, KMSVersion: g.KMSVersion,
				Created: g.CreatedAt, Retired: g.RetiredAt, DataKeys: counts[g.ID]}
			if !gs.Current {
				out.Pending += gs.DataKeys
			}
			out.Generations = append(out.Generations, gs)
		}
	}
	for ref, n := range counts {
		if !seen[ref] {
			out.Unknown[ref] = n
			out.Pending += n
		}
	}
	return out, nil
}
