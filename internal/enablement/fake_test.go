package enablement_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/cmk-project/cmk/internal/kms"
)

// fakeVault is a kms.Provider that does real work, in memory: every version
// of every key is a random AES-256-GCM key, and each wrapping is bound (as
// associated data) to the key and version that made it, so unwrapping it
// under any other key or version fails with kms.KindUnwrapFailed, as Key
// Vault's RSA-OAEP would. (AES stands in for RSA-OAEP so that a test does not
// spend a second generating 3072-bit keys; Describe still reports RSA 3072.)
//
// It enforces the key's attributes the way Key Vault does: a disabled key
// still wraps and refuses only unwrap (403 KeyDisabled); a key outside its
// nbf/exp dates refuses wrap and still unwraps; an operation missing from
// key_ops is refused. It remembers every wrapping it made while the key
// could not unwrap it (disabled, or without unwrapKey), honours ctx
// cancellation, and lets a test inject a fault into any call.
type fakeVault struct {
	mu    sync.Mutex
	keys  map[string]*fakeKey // by kms.KeyRef.String()
	calls map[string]int      // calls so far by op: "describe", "wrap", "unwrap"
	now   func() time.Time

	// fault, when set, is asked before the nth call (1-based) of op; a
	// non-nil answer fails the call with it.
	fault func(op string, n int) error
	// during, when set, runs inside the nth call of op before its work (a
	// test cancels a context or blocks there).
	during func(ctx context.Context, op string, n int)
	// lie makes Unwrap return a different key than was wrapped.
	lie bool
	// tenant is the Azure tenant every vault belongs to (VaultTenant).
	tenant string
	// unusable holds the wrappings made while the key could not unwrap
	// them, by ciphertext.
	unusable map[string]bool
}

type fakeKey struct {
	info     kms.KeyInfo // newest version's attributes; KID and Version are kept current
	versions map[string]cipher.AEAD
}

func newFakeVault(now func() time.Time) *fakeVault {
	return &fakeVault{keys: map[string]*fakeKey{}, calls: map[string]int{}, now: now, tenant: vaultTenant, unusable: map[string]bool{}}
}

// VaultTenant is the ownership check's lookup (op "tenant"): the vault's
// tenant, or the fault the test injected.
func (v *fakeVault) VaultTenant(ctx context.Context, vaultURL string) (string, error) {
	v.mu.Lock()
	v.calls["tenant"]++
	n, fault, tenant := v.calls["tenant"], v.fault, v.tenant
	v.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return "", &kms.Error{Kind: kms.KindTransient, Op: "tenant", Key: vaultURL, Err: err}
	}
	if fault != nil {
		if err := fault("tenant", n); err != nil {
			return "", err
		}
	}
	return tenant, nil
}

func (v *fakeVault) setTenant(t string) {
	v.mu.Lock()
	v.tenant = t
	v.mu.Unlock()
}

// create adds a key with one version: RSA 3072, wrapKey and unwrapKey
// permitted, enabled, soft-delete and purge protection on.
func (v *fakeVault) create(ref kms.KeyRef) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.keys[ref.String()] = &fakeKey{
		info: kms.KeyInfo{KeyType: "RSA", Bits: 3072, Ops: []string{"encrypt", "decrypt", "wrapKey", "unwrapKey"},
			Enabled: true, RecoveryLevel: "Recoverable"},
		versions: map[string]cipher.AEAD{},
	}
	v.rotateLocked(ref)
}

// rotate adds a new version of the key and returns it.
func (v *fakeVault) rotate(ref kms.KeyRef) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.rotateLocked(ref)
}

func (v *fakeVault) rotateLocked(ref kms.KeyRef) string {
	k := v.keys[ref.String()]
	raw := make([]byte, 32)
	rand.Read(raw)
	block, err := aes.NewCipher(raw)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	id := make([]byte, 16)
	rand.Read(id)
	version := hex.EncodeToString(id) // 32 characters, like Key Vault's
	k.versions[version] = aead
	k.info.Version, k.info.KID = version, ref.String()+"/"+version
	return version
}

// edit changes the attributes of the key's newest version.
func (v *fakeVault) edit(ref kms.KeyRef, f func(*kms.KeyInfo)) {
	v.mu.Lock()
	defer v.mu.Unlock()
	f(&v.keys[ref.String()].info)
}

// version returns the key's newest version.
func (v *fakeVault) version(ref kms.KeyRef) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.keys[ref.String()].info.Version
}

func (v *fakeVault) setFault(f func(op string, n int) error) {
	v.mu.Lock()
	v.fault = f
	v.mu.Unlock()
}

func (v *fakeVault) setDuring(f func(ctx context.Context, op string, n int)) {
	v.mu.Lock()
	v.during = f
	v.mu.Unlock()
}

func (v *fakeVault) setLie(lie bool) {
	v.mu.Lock()
	v.lie = lie
	v.mu.Unlock()
}

// count returns how many calls of op were made.
func (v *fakeVault) count(op string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.calls[op]
}

// begin counts a call, runs the test's hooks and checks ctx. It returns the
// key (nil when there is none) and the error the call must fail with.
func (v *fakeVault) begin(ctx context.Context, op string, ref kms.KeyRef) (*fakeKey, kms.KeyInfo, error) {
	v.mu.Lock()
	v.calls[op]++
	n, fault, during := v.calls[op], v.fault, v.during
	v.mu.Unlock()
	if during != nil {
		during(ctx, op, n)
	}
	if err := ctx.Err(); err != nil {
		return nil, kms.KeyInfo{}, &kms.Error{Kind: kms.KindTransient, Op: op, Key: ref.String(), Err: err}
	}
	if fault != nil {
		if err := fault(op, n); err != nil {
			var ke *kms.Error
			if errors.As(err, &ke) {
				c := *ke
				c.Op, c.Key = op, ref.String()
				return nil, kms.KeyInfo{}, &c
			}
			return nil, kms.KeyInfo{}, err
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	k := v.keys[ref.String()]
	if k == nil {
		return nil, kms.KeyInfo{}, &kms.Error{Kind: kms.KindKeyNotFound, Op: op, Key: ref.String(), Status: 404, Code: "KeyNotFound"}
	}
	info := k.info
	info.Ops = append([]string(nil), info.Ops...)
	return k, info, nil
}

func (v *fakeVault) Describe(ctx context.Context, ref kms.KeyRef) (kms.KeyInfo, error) {
	_, info, err := v.begin(ctx, "describe", ref)
	return info, err
}

func aad(ref kms.KeyRef, version string) []byte {
	return []byte("fake vault\x00" + ref.String() + "\x00" + version)
}

func (v *fakeVault) Wrap(ctx context.Context, ref kms.KeyRef, dek []byte) (kms.Wrapped, error) {
	k, info, err := v.begin(ctx, "wrap", ref)
	if err != nil {
		return kms.Wrapped{}, err
	}
	refuse := func(kind kms.Kind, code string) (kms.Wrapped, error) {
		return kms.Wrapped{}, &kms.Error{Kind: kind, Op: "wrap", Key: ref.String(), Status: 403, Code: "Forbidden", InnerCode: code}
	}
	now := v.now()
	switch {
	case info.NotBefore != nil && now.Before(*info.NotBefore), info.Expires != nil && !now.Before(*info.Expires):
		return refuse(kms.KindKeyNotActive, "KeyNotYetValidOrExpired")
	case !info.HasOp("wrapKey"):
		return refuse(kms.KindKeyOperationForbidden, "KeyOperationForbidden")
	}
	v.mu.Lock()
	aead := k.versions[info.Version]
	v.mu.Unlock()
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	ct := aead.Seal(nonce, nonce, dek, aad(ref, info.Version))
	if !info.Enabled || !info.HasOp("unwrapKey") {
		v.mu.Lock()
		v.unusable[string(ct)] = true
		v.mu.Unlock()
	}
	return kms.Wrapped{KeyVersion: info.Version, Alg: "RSA-OAEP-256", Ciphertext: ct}, nil
}

// madeUnusable reports whether the vault made ciphertext while its key
// could not unwrap it.
func (v *fakeVault) madeUnusable(ciphertext []byte) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.unusable[string(ciphertext)]
}

func (v *fakeVault) Unwrap(ctx context.Context, ref kms.KeyRef, w kms.Wrapped) ([]byte, error) {
	k, info, err := v.begin(ctx, "unwrap", ref)
	if err != nil {
		return nil, err
	}
	failed := func(why string) ([]byte, error) {
		return nil, &kms.Error{Kind: kms.KindUnwrapFailed, Op: "unwrap", Key: ref.String(), Status: 400, Code: "BadParameter", Err: errors.New(why)}
	}
	switch {
	case !info.Enabled:
		return nil, &kms.Error{Kind: kms.KindKeyDisabled, Op: "unwrap", Key: ref.String(), Status: 403, Code: "Forbidden", InnerCode: "KeyDisabled"}
	case !info.HasOp("unwrapKey"):
		return nil, &kms.Error{Kind: kms.KindKeyOperationForbidden, Op: "unwrap", Key: ref.String(), Status: 403, Code: "Forbidden", InnerCode: "KeyOperationForbidden"}
	}
	v.mu.Lock()
	aead, lie := k.versions[w.KeyVersion], v.lie
	v.mu.Unlock()
	if aead == nil {
		return failed("no such key version")
	}
	n := aead.NonceSize()
	if len(w.Ciphertext) < n {
		return failed("ciphertext too short")
	}
	dek, err := aead.Open(nil, w.Ciphertext[:n], w.Ciphertext[n:], aad(ref, w.KeyVersion))
	if err != nil {
		return failed("ciphertext does not open under this key version")
	}
	if lie {
		dek[0] ^= 1
	}
	return dek, nil
}

// Faults.

// kerr is a vault failure of kind, with the HTTP status the vault would give.
func kerr(kind kms.Kind) *kms.Error {
	status := map[kms.Kind]int{
		kms.KindKeyNotFound: 404, kms.KindKeyDisabled: 403, kms.KindKeyOperationForbidden: 403, kms.KindIdentityUnauthorized: 403,
		kms.KindNetworkDenied: 403, kms.KindIdentityInvalid: 401, kms.KindUnwrapFailed: 400, kms.KindInvalidRequest: 400,
		kms.KindThrottled: 429, kms.KindTransient: 503,
	}[kind]
	return &kms.Error{Kind: kind, Status: status}
}

// throttled is a 429 carrying retryAfter (0: no Retry-After header).
func throttled(retryAfter time.Duration) *kms.Error {
	return &kms.Error{Kind: kms.KindThrottled, Status: 429, Code: "Throttled", RetryAfter: retryAfter}
}

// failCalls fails calls from..to (1-based, inclusive; to 0: every call from
// on) of op with err.
func failCalls(op string, from, to int, err error) func(string, int) error {
	return func(o string, n int) error {
		if o == op && n >= from && (to == 0 || n <= to) {
			return err
		}
		return nil
	}
}

// anyFault fails a call when any of fs does.
func anyFault(fs ...func(string, int) error) func(string, int) error {
	return func(op string, n int) error {
		for _, f := range fs {
			if err := f(op, n); err != nil {
				return err
			}
		}
		return nil
	}
}

// fakeClock is the time of a test. It moves only when the job sleeps (by
// exactly the duration asked for, which it records) or when the test
// advances it.
//
// The lease keeper's sleeps (keeper long) are not the job's pauses: they do
// not move the clock but wait for the test to send on tick, so a lease is
// renewed only when a test says so. Before waiting, the keeper announces
// itself on parked, for a test that needs to know it is there.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	slept  []time.Duration
	keeper time.Duration
	parked chan struct{}
	tick   chan struct{}
}

func newFakeClock(start time.Time, keeper time.Duration) *fakeClock {
	return &fakeClock{now: start, keeper: keeper, parked: make(chan struct{}), tick: make(chan struct{})}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if d == c.keeper {
		select {
		case c.parked <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case <-c.tick:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	c.slept = append(c.slept, d)
	c.now = c.now.Add(d)
	c.mu.Unlock()
	return nil
}

// Slept returns the pauses asked for so far.
func (c *fakeClock) Slept() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.slept...)
}
