package platformkey

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/store"
	"github.com/cmk-project/cmk/internal/systemkey"
)

// fakeKMS is a key service that does real work: AES-256-GCM under one
// random key per version, the ciphertext bound (as associated data) to the
// key, the version and, when bind is set, the org of the call's context (as
// AWS KMS binds its encryption context). It honours ctx cancellation.
type fakeKMS struct {
	mu       sync.Mutex
	ref      kms.KeyRef
	versions []string
	keys     map[string]cipher.AEAD
	bind     bool
	refuse   bool // every call fails as a withdrawn role would
	calls    map[string]int
}

func newFakeKMS(t testing.TB, ref kms.KeyRef, bind bool) *fakeKMS {
	f := &fakeKMS{ref: ref, keys: map[string]cipher.AEAD{}, bind: bind, calls: map[string]int{}}
	f.addVersion(t)
	return f
}

func (f *fakeKMS) addVersion(t testing.TB) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	raw := make([]byte, 32)
	rand.Read(raw)
	block, _ := aes.NewCipher(raw)
	aead, _ := cipher.NewGCM(block)
	v := fmt.Sprintf("v%d", len(f.versions)+1)
	f.versions = append(f.versions, v)
	f.keys[v] = aead
	return v
}

func (f *fakeKMS) aad(ctx context.Context, ref kms.KeyRef, v string) []byte {
	s := ref.String() + "\x00" + v
	if f.bind {
		s += "\x00" + audit.OrgOf(ctx)
	}
	return []byte(s)
}

func (f *fakeKMS) check(ctx context.Context, op string, ref kms.KeyRef) error {
	if err := ctx.Err(); err != nil {
		return &kms.Error{Kind: kms.KindTransient, Op: op, Key: ref.String(), Err: err}
	}
	if ref != f.ref {
		return &kms.Error{Kind: kms.KindKeyNotFound, Op: op, Key: ref.String()}
	}
	if f.refuse {
		return &kms.Error{Kind: kms.KindIdentityUnauthorized, Op: op, Key: ref.String(), Status: 403}
	}
	f.calls[op]++
	return nil
}

func (f *fakeKMS) Describe(ctx context.Context, ref kms.KeyRef) (kms.KeyInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(ctx, "describe", ref); err != nil {
		return kms.KeyInfo{}, err
	}
	v := f.versions[len(f.versions)-1]
	return kms.KeyInfo{KID: ref.String() + "/" + v, Version: v, KeyType: "RSA", Bits: 3072, Ops: []string{"wrapKey", "unwrapKey"}, Enabled: true}, nil
}

func (f *fakeKMS) Wrap(ctx context.Context, ref kms.KeyRef, dek []byte) (kms.Wrapped, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(ctx, "wrap", ref); err != nil {
		return kms.Wrapped{}, err
	}
	v := f.versions[len(f.versions)-1]
	nonce := make([]byte, 12)
	rand.Read(nonce)
	return kms.Wrapped{KeyVersion: v, Alg: "FAKE-GCM", Ciphertext: f.keys[v].Seal(nonce, nonce, dek, f.aad(ctx, ref, v))}, nil
}

func (f *fakeKMS) Unwrap(ctx context.Context, ref kms.KeyRef, w kms.Wrapped) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(ctx, "unwrap", ref); err != nil {
		return nil, err
	}
	aead := f.keys[w.KeyVersion]
	if aead == nil || len(w.Ciphertext) < 12 {
		return nil, &kms.Error{Kind: kms.KindUnwrapFailed, Op: "unwrap", Key: ref.String()}
	}
	out, err := aead.Open(nil, w.Ciphertext[:12], w.Ciphertext[12:], f.aad(ctx, ref, w.KeyVersion))
	if err != nil {
		return nil, &kms.Error{Kind: kms.KindUnwrapFailed, Op: "unwrap", Key: ref.String(), Err: err}
	}
	return out, nil
}

var platformRef = kms.KeyRef{VaultURL: "https://platform.vault.azure.net", Name: "system"}

type world struct {
	t   *testing.T
	ctx context.Context
	st  *store.Store
	kms *fakeKMS
}

func newWorld(t *testing.T, bind bool) *world {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "cmk.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &world{t: t, ctx: ctx, st: st, kms: newFakeKMS(t, platformRef, bind)}
}

func (w *world) open() *Ring {
	w.t.Helper()
	r, err := Open(w.ctx, Config{Store: w.st, Provider: w.kms, Key: platformRef})
	if err != nil {
		w.t.Fatalf("Open: %v", err)
	}
	return r
}

// orgs makes n orgs with one sandbox each (three data keys apiece),
// wrapped by sys, and returns every data key in plaintext by id.
func (w *world) orgs(sys keyring.SystemKeys, n int) map[string][]byte {
	w.t.Helper()
	kr := &keyring.Keyring{Store: w.st, System: sys}
	for i := range n {
		org := fmt.Sprintf("ORG%04d@CmkOrg", i)
		if _, err := w.st.EnsureOrg(w.ctx, org); err != nil {
			w.t.Fatal(err)
		}
		if err := kr.CreateSandbox(w.ctx, org, "prod"); err != nil {
			w.t.Fatal(err)
		}
	}
	return w.plain(kr, n)
}

func (w *world) plain(kr *keyring.Keyring, n int) map[string][]byte {
	w.t.Helper()
	out := map[string][]byte{}
	for i := range n {
		keys, err := w.st.DataKeys(w.ctx, fmt.Sprintf("ORG%04d@CmkOrg", i))
		if err != nil {
			w.t.Fatal(err)
		}
		for _, dk := range keys {
			dek, err := kr.Unwrap(w.ctx, dk)
			if err != nil {
				w.t.Fatalf("unwrap data key %s (under %s): %v", dk.ID, dk.KEKRef, err)
			}
			out[dk.ID] = dek
		}
	}
	return out
}

func (w *world) same(a, b map[string][]byte) {
	w.t.Helper()
	if len(a) != len(b) || len(a) == 0 {
		w.t.Fatalf("%d data keys, want %d", len(b), len(a))
	}
	for id, dek := range a {
		if !bytes.Equal(dek, b[id]) {
			w.t.Fatalf("data key %s changed", id)
		}
	}
}

func TestOpenFreshMakesRoot(t *testing.T) {
	w := newWorld(t, true)
	r := w.open()
	gens := r.Generations()
	if len(gens) != 1 || !gens[0].Root || r.Current() != r.Root() || gens[0].KMSVersion != "v1" || gens[0].KMSKey != platformRef.String() {
		t.Fatalf("generations = %+v, want one root under %s v1", gens, platformRef)
	}
	// A second replica opens the same root.
	r2 := w.open()
	if r2.Root().ID() != r.Root().ID() || !bytes.Equal(r2.Root().Derive("x"), r.Root().Derive("x")) {
		t.Fatalf("second replica's root = %s, want %s", r2.Root().ID(), r.Root().ID())
	}
}

func TestOpenRefusesFileKeyedState(t *testing.T) {
	w := newWorld(t, true)
	file, err := systemkey.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	w.orgs(file, 1)
	if _, err := Open(w.ctx, Config{Store: w.st, Provider: w.kms, Key: platformRef}); !errors.Is(err, ErrNeedsMigration) {
		t.Fatalf("Open over file-wrapped data keys = %v, want ErrNeedsMigration", err)
	}
}

func TestRotateRewrapsAndRetires(t *testing.T) {
	w := newWorld(t, true)
	r := w.open()
	root, secret := r.Root().ID(), r.Root().Derive("webhooks")
	before := w.orgs(r, 5)
	old := r.Current().ID()
	g, err := r.Rotate(w.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Current().ID() != g.ID || g.ID == old {
		t.Fatalf("current after Rotate = %s, want the new generation %s", r.Current().ID(), g.ID)
	}
	rw := &Rewrapper{Ring: r, Owner: "a", Page: 4}
	n, err := rw.Pass(w.ctx)
	if err != nil || n != len(before) {
		t.Fatalf("Pass = %d, %v; want %d re-wrapped", n, err, len(before))
	}
	st, err := r.Status(w.ctx, w.st)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending != 0 || len(st.Generations) != 2 || st.Generations[0].DataKeys != 0 || st.Generations[0].Retired.IsZero() || st.Generations[1].DataKeys != len(before) {
		t.Fatalf("status after re-wrap = %+v", st)
	}
	// Every data key reads back, through a fresh replica too.
	w.same(before, w.plain(&keyring.Keyring{Store: w.st, System: r}, 5))
	r2 := w.open()
	w.same(before, w.plain(&keyring.Keyring{Store: w.st, System: r2}, 5))
	if r2.Current().ID() != g.ID || r2.Root().ID() != root || !bytes.Equal(r2.Root().Derive("webhooks"), secret) {
		t.Fatalf("after rotation: current %s root %s; want current %s, root %s and the same derived secret", r2.Current().ID(), r2.Root().ID(), g.ID, root)
	}
	if n, err := rw.Pass(w.ctx); err != nil || n != 0 {
		t.Fatalf("second Pass = %d, %v; want nothing to do", n, err)
	}
}

func TestReplicaReloadsUnknownGeneration(t *testing.T) {
	w := newWorld(t, true)
	a, b := w.open(), w.open()
	if _, err := a.Rotate(w.ctx); err != nil {
		t.Fatal(err)
	}
	// a wraps a new data key under the new generation; b, which has just
	// reloaded, has not seen it, and still opens it at once.
	if err := b.Reload(w.ctx); err != nil {
		t.Fatal(err)
	}
	before := w.orgs(a, 1)
	w.same(before, w.plain(&keyring.Keyring{Store: w.st, System: b}, 1))
	if b.Current().ID() != a.Current().ID() {
		t.Fatalf("b's current = %s, want %s after its reload", b.Current().ID(), a.Current().ID())
	}
	// Lookups of an id nobody stored fail together, with one reload and
	// no KMS call.
	calls := w.kms.calls["unwrap"]
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := b.Key(w.ctx, "system:0000000000000000")
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrUnknownGeneration) {
			t.Fatalf("Key(unknown) = %v, want ErrUnknownGeneration", err)
		}
	}
	if got := w.kms.calls["unwrap"]; got != calls {
		t.Fatalf("looking up an unknown generation made %d KMS unwrap calls", got-calls)
	}
	// A cancelled lookup stops waiting.
	cctx, cancel := context.WithCancel(w.ctx)
	cancel()
	if _, err := b.Key(cctx, "system:0000000000000000"); !errors.Is(err, context.Canceled) && !errors.Is(err, ErrUnknownGeneration) {
		t.Fatalf("Key(unknown) with a cancelled context = %v", err)
	}
}

// A replica that cannot load a generation the others use says so (Err,
// behind /readyz), and keeps serving the generations it holds.
func TestReloadFailureShows(t *testing.T) {
	w := newWorld(t, true)
	a, b := w.open(), w.open()
	before := w.orgs(b, 1)
	if _, err := a.Rotate(w.ctx); err != nil {
		t.Fatal(err)
	}
	w.kms.mu.Lock()
	w.kms.refuse = true
	w.kms.mu.Unlock()
	if err := b.Reload(w.ctx); kms.KindOf(err) != kms.KindIdentityUnauthorized || b.Err() == nil {
		t.Fatalf("Reload with the KMS refusing = %v (Err %v), want IDENTITY_UNAUTHORIZED", err, b.Err())
	}
	w.same(before, w.plain(&keyring.Keyring{Store: w.st, System: b}, 1))
	w.kms.mu.Lock()
	w.kms.refuse = false
	w.kms.mu.Unlock()
	if err := b.Reload(w.ctx); err != nil || b.Err() != nil || b.Current().ID() != a.Current().ID() {
		t.Fatalf("Reload after the KMS came back = %v (Err %v), current %s", err, b.Err(), b.Current().ID())
	}
}

// A stored generation moved onto another's row is refused, even by a KMS
// that binds nothing to the ciphertext (Azure Key Vault's wrapKey).
func TestSwappedGenerationRefused(t *testing.T) {
	w := newWorld(t, false)
	r := w.open()
	if _, err := r.Rotate(w.ctx); err != nil {
		t.Fatal(err)
	}
	gens := r.Generations()
	if err := w.st.RewrapPlatformGeneration(w.ctx, gens[1].ID, gens[1].KMSKey, gens[1].KMSVersion, gens[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(w.ctx, Config{Store: w.st, Provider: w.kms, Key: platformRef}); err == nil {
		t.Fatal("Open with generation 1's wrapping on generation 2's row succeeded")
	}
}

// With an AWS-style KMS the wrapping is bound to its generation by the
// call's context, so the KMS itself refuses a moved one.
func TestGenerationBoundByContext(t *testing.T) {
	w := newWorld(t, true)
	r := w.open()
	g := r.Generations()[0]
	if _, err := w.kms.Unwrap(kmsCtx(w.ctx, "system:other"), platformRef, kms.Wrapped{KeyVersion: g.KMSVersion, Alg: g.Alg, Ciphertext: g.Wrapped}); kms.KindOf(err) != kms.KindUnwrapFailed {
		t.Fatalf("unwrap under another generation's context = %v, want UNWRAP_FAILED", err)
	}
}

func TestNewKMSVersionRewrapsGenerations(t *testing.T) {
	w := newWorld(t, true)
	r := w.open()
	if _, err := r.Rotate(w.ctx); err != nil {
		t.Fatal(err)
	}
	v2 := w.kms.addVersion(t)
	n, err := r.RewrapGenerations(w.ctx)
	if err != nil || n != 2 {
		t.Fatalf("RewrapGenerations = %d, %v; want 2", n, err)
	}
	for _, g := range mustGenerations(t, w) {
		if g.KMSVersion != v2 {
			t.Fatalf("generation %s at version %s, want %s", g.ID, g.KMSVersion, v2)
		}
	}
	w.open() // every generation opens under the new version
	if n, err := r.RewrapGenerations(w.ctx); err != nil || n != 0 {
		t.Fatalf("second RewrapGenerations = %d, %v; want 0", n, err)
	}
}

func mustGenerations(t *testing.T, w *world) []store.PlatformGeneration {
	gens, err := w.st.PlatformGenerations(w.ctx)
	if err != nil {
		t.Fatal(err)
	}
	return gens
}

func TestMigrateFromFile(t *testing.T) {
	w := newWorld(t, true)
	raw := make([]byte, 32)
	io.ReadFull(rand.Reader, raw)
	file, err := systemkey.New(raw)
	if err != nil {
		t.Fatal(err)
	}
	before := w.orgs(file, 3)
	// Another installation's key file is refused, and nothing is stored.
	stray := make([]byte, 32)
	io.ReadFull(rand.Reader, stray)
	if _, _, err := Migrate(w.ctx, Config{Store: w.st, Provider: w.kms, Key: platformRef}, stray); !errors.Is(err, ErrWrongKeyFile) {
		t.Fatalf("Migrate(a stray key file) = %v, want ErrWrongKeyFile", err)
	}
	if n := len(mustGenerations(t, w)); n != 0 {
		t.Fatalf("%d generations stored after a refused Migrate, want 0", n)
	}
	r, imported, err := Migrate(w.ctx, Config{Store: w.st, Provider: w.kms, Key: platformRef}, raw)
	if err != nil {
		t.Fatal(err)
	}
	if imported.ID != file.ID() || !imported.Root || r.Root().ID() != file.ID() || r.Current().ID() == file.ID() {
		t.Fatalf("after Migrate: imported %s (root %v), root %s, current %s; want the file key %s as root, a new current", imported.ID, imported.Root, r.Root().ID(), r.Current().ID(), file.ID())
	}
	if !bytes.Equal(r.Root().Derive("webhooks"), file.Derive("webhooks")) {
		t.Fatal("a secret derived after the migration differs from the key file's")
	}
	// The file's data keys open before the re-wrap, and after it.
	w.same(before, w.plain(&keyring.Keyring{Store: w.st, System: w.open()}, 3))
	if _, err := (&Rewrapper{Ring: r, Owner: "a"}).Pass(w.ctx); err != nil {
		t.Fatal(err)
	}
	counts, _ := w.st.CountSystemKeys(w.ctx)
	if counts[file.ID()] != 0 || counts[r.Current().ID()] != len(before) {
		t.Fatalf("data keys per generation after the re-wrap = %v", counts)
	}
	w.same(before, w.plain(&keyring.Keyring{Store: w.st, System: w.open()}, 3))
	// Running the command again changes nothing.
	if _, _, err := Migrate(w.ctx, Config{Store: w.st, Provider: w.kms, Key: platformRef}, raw); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if n := len(mustGenerations(t, w)); n != 2 {
		t.Fatalf("%d generations after a second Migrate, want 2", n)
	}
}

func TestRewrapLeaseHeldByOne(t *testing.T) {
	w := newWorld(t, true)
	r := w.open()
	before := w.orgs(r, 2)
	if _, err := r.Rotate(w.ctx); err != nil {
		t.Fatal(err)
	}
	if held, err := w.st.ClaimPlatformLease(w.ctx, LeaseName, "other", DefaultLease); err != nil || !held {
		t.Fatalf("claim = %v, %v", held, err)
	}
	if n, err := (&Rewrapper{Ring: r, Owner: "a"}).Pass(w.ctx); err != nil || n != 0 {
		t.Fatalf("Pass while another replica holds the lease = %d, %v; want 0", n, err)
	}
	w.st.ReleasePlatformLease(w.ctx, LeaseName, "other")
	if n, err := (&Rewrapper{Ring: r, Owner: "a"}).Pass(w.ctx); err != nil || n != len(before) {
		t.Fatalf("Pass after the release = %d, %v; want %d", n, err, len(before))
	}
}

func TestParseRef(t *testing.T) {
	for _, ref := range []kms.KeyRef{platformRef, {VaultURL: "arn:aws:kms:eu-west-1:111122223333", Name: "key/1234abcd-12ab-34cd-56ef-1234567890ab"}, {VaultURL: "arn:aws:kms:eu-west-1:111122223333", Name: "alias/cmk"}} {
		if got, err := ParseRef(ref.String()); err != nil || got != ref {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", ref.String(), got, err, ref)
		}
	}
	for _, bad := range []string{"", "https://v.vault.azure.net", "https://v.vault.azure.net/keys/", "https://v.vault.azure.net/keys/a/b", "arn:aws:kms:eu-west-1:1:"} {
		if _, err := ParseRef(bad); err == nil {
			t.Errorf("ParseRef(%q) succeeded", bad)
		}
	}
}

// BenchmarkRewrap measures the background re-wrap after a rotation, in
// data keys per second (SQLite in a temporary directory).
func BenchmarkRewrap(b *testing.B) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(b.TempDir(), "cmk.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	fk := newFakeKMS(b, platformRef, true)
	r, err := Open(ctx, Config{Store: st, Provider: fk, Key: platformRef})
	if err != nil {
		b.Fatal(err)
	}
	kr := &keyring.Keyring{Store: st, System: r}
	const orgs = 200 // a data key per store kind each
	for i := range orgs {
		org := fmt.Sprintf("ORG%04d@CmkOrg", i)
		if _, err := st.EnsureOrg(ctx, org); err != nil {
			b.Fatal(err)
		}
		if err := kr.CreateSandbox(ctx, org, "prod"); err != nil {
			b.Fatal(err)
		}
	}
	want := orgs * len(store.StoreKinds)
	total := 0
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		if _, err := r.Rotate(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		n, err := (&Rewrapper{Ring: r, Owner: "bench"}).Pass(ctx)
		if err != nil || n != want {
			b.Fatalf("Pass = %d, %v; want %d", n, err, want)
		}
		total += n
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "keys/s")
}

// Every altered byte of a stored generation, and a truncated one, is
// refused at load.
func TestTamperedGenerationRefused(t *testing.T) {
	w := newWorld(t, false)
	r := w.open()
	if _, err := r.Rotate(w.ctx); err != nil {
		t.Fatal(err)
	}
	g := mustGenerations(t, w)[1]
	set := func(to store.PlatformGeneration) {
		t.Helper()
		cur := mustGenerations(t, w)[1]
		if err := w.st.RewrapPlatformGeneration(w.ctx, g.ID, cur.KMSKey, cur.KMSVersion, to); err != nil {
			t.Fatal(err)
		}
	}
	opens := func() bool {
		_, err := Open(w.ctx, Config{Store: w.st, Provider: w.kms, Key: platformRef, NoCreate: true})
		return err == nil
	}
	for i := range g.Wrapped {
		bad := g
		bad.Wrapped = bytes.Clone(g.Wrapped)
		bad.Wrapped[i] ^= 0x01
		set(bad)
		if opens() {
			t.Fatalf("a generation with byte %d flipped opened", i)
		}
	}
	bad := g
	bad.Wrapped = g.Wrapped[:len(g.Wrapped)-1]
	set(bad)
	if opens() {
		t.Fatal("a truncated generation opened")
	}
	bad = g
	bad.KMSVersion = "v9"
	set(bad)
	if opens() {
		t.Fatal("a generation naming another key version opened")
	}
	set(g)
	if !opens() {
		t.Fatal("the generation as stored does not open")
	}
}
