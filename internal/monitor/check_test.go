package monitor

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cmk-project/cmk/internal/alerts"
	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/dekcache"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/metrics"
	"github.com/cmk-project/cmk/internal/store"
)

// fakeKMS is a key service in memory that does real work: every version of
// the key is an AES-256-GCM key, wrap seals under the newest, unwrap opens
// under the version named and fails with KindUnwrapFailed when that does
// not work. fail makes an operation fail with the given error.
//
// Like Key Vault, a disabled key still wraps and refuses only unwrap (403
// KeyDisabled), and a key outside its nbf/exp dates still unwraps and
// refuses only wrap.
type fakeKMS struct {
	mu       sync.Mutex
	versions map[string]cipher.AEAD
	newest   string
	disabled bool
	ops      []string   // key_ops; nil: wrapKey and unwrapKey
	exp      *time.Time // attributes.exp
	now      func() time.Time
	fail     map[string]*kms.Error // by operation: "describe", "wrap", "unwrap"
	calls    map[string]int
	// during, when set, runs at the start of the nth call of op, under
	// the fake's lock (it may change the fake's fields, not call it); a
	// non-nil answer fails the call.
	during func(f *fakeKMS, op string, n int) *kms.Error
}

func newFakeKMS(t *testing.T) *fakeKMS {
	f := &fakeKMS{versions: map[string]cipher.AEAD{}, fail: map[string]*kms.Error{}, calls: map[string]int{}, now: time.Now}
	f.addVersion(t, "v1")
	return f
}

func (f *fakeKMS) addVersion(t *testing.T, v string) {
	key := make([]byte, 32)
	rand.Read(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.versions[v], f.newest = aead, v
}

func (f *fakeKMS) set(fn func(f *fakeKMS)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeKMS) failure(ctx context.Context, op string, ref kms.KeyRef) error {
	f.calls[op]++
	if err := ctx.Err(); err != nil {
		return &kms.Error{Kind: kms.KindTransient, Op: op, Key: ref.String(), Err: err}
	}
	if f.during != nil {
		if e := f.during(f, op, f.calls[op]); e != nil {
			cp := *e
			cp.Op, cp.Key = op, ref.String()
			return &cp
		}
	}
	if e := f.fail[op]; e != nil {
		cp := *e
		cp.Op, cp.Key = op, ref.String()
		return &cp
	}
	return nil
}

func (f *fakeKMS) Describe(ctx context.Context, ref kms.KeyRef) (kms.KeyInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failure(ctx, "describe", ref); err != nil {
		return kms.KeyInfo{}, err
	}
	ops := f.ops
	if ops == nil {
		ops = []string{"wrapKey", "unwrapKey"}
	}
	return kms.KeyInfo{KID: ref.String() + "/" + f.newest, Version: f.newest, KeyType: "RSA", Bits: 3072,
		Ops: append([]string(nil), ops...), Enabled: !f.disabled, Expires: f.exp}, nil
}

func (f *fakeKMS) hasOp(op string) bool { return f.ops == nil || slices.Contains(f.ops, op) }

func (f *fakeKMS) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *fakeKMS) Wrap(ctx context.Context, ref kms.KeyRef, dek []byte) (kms.Wrapped, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failure(ctx, "wrap", ref); err != nil {
		return kms.Wrapped{}, err
	}
	switch {
	case f.exp != nil && !f.now().Before(*f.exp):
		return kms.Wrapped{}, &kms.Error{Kind: kms.KindKeyNotActive, Op: "wrap", Key: ref.String(), Status: 403, Code: "Forbidden"}
	case !f.hasOp("wrapKey"):
		return kms.Wrapped{}, &kms.Error{Kind: kms.KindKeyOperationForbidden, Op: "wrap", Key: ref.String(), Status: 403, Code: "Forbidden", InnerCode: "KeyOperationForbidden"}
	}
	aead := f.versions[f.newest]
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	return kms.Wrapped{KeyVersion: f.newest, Alg: "RSA-OAEP-256", Ciphertext: aead.Seal(nonce, nonce, dek, nil)}, nil
}

func (f *fakeKMS) Unwrap(ctx context.Context, ref kms.KeyRef, w kms.Wrapped) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failure(ctx, "unwrap", ref); err != nil {
		return nil, err
	}
	switch {
	case f.disabled:
		return nil, &kms.Error{Kind: kms.KindKeyDisabled, Op: "unwrap", Key: ref.String(), Status: 403, Code: "Forbidden", InnerCode: "KeyDisabled"}
	case !f.hasOp("unwrapKey"):
		return nil, &kms.Error{Kind: kms.KindKeyOperationForbidden, Op: "unwrap", Key: ref.String(), Status: 403, Code: "Forbidden", InnerCode: "KeyOperationForbidden"}
	}
	refused := &kms.Error{Kind: kms.KindUnwrapFailed, Op: "unwrap", Key: ref.String(), Status: 400, Code: "BadParameter"}
	aead, ok := f.versions[w.KeyVersion]
	if !ok || len(w.Ciphertext) < aead.NonceSize() {
		return nil, refused
	}
	n := aead.NonceSize()
	dek, err := aead.Open(nil, w.Ciphertext[:n], w.Ciphertext[n:], nil)
	if err != nil {
		return nil, refused
	}
	return dek, nil
}

// checkEnv is a monitor over a SQLite store with one org on its customer
// key, whose clock the test moves.
type checkEnv struct {
	m     *Monitor
	kms   *fakeKMS
	st    *store.Store
	now   time.Time
	org   string
	cache *dekcache.Cache
	gate  *keyhealth.Gate
}

func newCheckEnv(t *testing.T) *checkEnv {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "cmk.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	const org, owner = "org-1", "test"
	if _, err := st.EnsureOrg(ctx, org); err != nil {
		t.Fatal(err)
	}
	c := &store.Config{ID: "cfg-1", OrgID: org, Name: "cmk", Type: "BYOK", ProviderType: "AZURE_KEY_VAULT",
		KeyIdentifier: keyRef, VaultURL: "https://contoso.vault.azure.net", KeyName: "cmk"}
	if err := st.CreateConfig(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ClaimJob(ctx, owner, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := st.BeginCustomerKEK(ctx, c.ID, owner, c, "v1", "", nil); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := &checkEnv{kms: newFakeKMS(t), st: st, now: time.Now(), org: org, cache: dekcache.New(), gate: &keyhealth.Gate{}}
	e.kms.now = func() time.Time { return e.now }
	e.m = &Monitor{
		Store: st, Provider: e.kms, Cache: e.cache, Gate: e.gate,
		Notifier: &alerts.Notifier{Store: st, Log: log}, Audit: &audit.Recorder{Store: st, Log: log},
		Log: log, Owner: owner, Now: func() time.Time { return e.now },
	}
	return e
}

// check runs one check of the org and wants it to end in state/cause.
func (e *checkEnv) check(t *testing.T, state, cause string) *keyhealth.Health {
	t.Helper()
	h, err := e.m.CheckOrg(context.Background(), e.org)
	if err != nil {
		t.Fatalf("CheckOrg() error = %v", err)
	}
	if h.State != state || h.Cause != cause {
		t.Fatalf("CheckOrg() = %s/%s, want %s/%s", h.State, h.Cause, state, cause)
	}
	saved, err := e.st.Health(context.Background(), e.org)
	if err != nil {
		t.Fatal(err)
	}
	if saved.State != state || saved.Cause != cause {
		t.Fatalf("saved health = %s/%s, want %s/%s", saved.State, saved.Cause, state, cause)
	}
	return h
}

func (e *checkEnv) openAlerts(t *testing.T) map[string]string {
	t.Helper()
	as, err := e.st.Alerts(context.Background(), e.org, store.AlertOpen)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, a := range as {
		out[a.Kind] = a.Cause
	}
	return out
}

func (e *checkEnv) audits(t *testing.T, op string) []store.AuditEntry {
	t.Helper()
	es, err := e.st.Audit(context.Background(), e.org, op, time.Time{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// cacheKey puts a data key of the org in memory.
func (e *checkEnv) cacheKey(t *testing.T) {
	t.Helper()
	if _, err := e.cache.Get(context.Background(), e.org, "dk-1", func(context.Context) ([]byte, error) { return make([]byte, 32), nil }); err != nil {
		t.Fatal(err)
	}
}

// TestCheckRevocationAndRecovery: the effects of a revocation and of the
// recovery that follows reach the gate, the cache, the alerts and the audit.
func TestCheckRevocationAndRecovery(t *testing.T) {
	e := newCheckEnv(t)
	h := e.check(t, keyhealth.Healthy, "")
	if len(h.Probe) == 0 || h.ProbeVersion != "v1" {
		t.Errorf("first check: probe = %d bytes at %q, want a probe at v1", len(h.Probe), h.ProbeVersion)
	}
	if err := e.gate.Allow(e.org); err != nil {
		t.Errorf("gate.Allow() after a healthy check = %v, want nil", err)
	}

	e.cacheKey(t)
	e.kms.set(func(f *fakeKMS) { f.disabled = true })
	e.now = e.now.Add(time.Minute)
	e.check(t, keyhealth.Revoked, string(kms.KindKeyDisabled))
	var refused *keyhealth.Refused
	if err := e.gate.Allow(e.org); !errors.As(err, &refused) || refused.Cause != string(kms.KindKeyDisabled) {
		t.Errorf("gate.Allow() after revocation = %v, want *Refused with cause KEY_DISABLED", err)
	}
	if n := e.cache.Len(); n != 0 {
		t.Errorf("cache.Len() after revocation = %d, want 0", n)
	}
	if got := e.openAlerts(t); got[alerts.KindAccessDisabled] != string(kms.KindKeyDisabled) || len(got) != 1 {
		t.Errorf("open alerts after revocation = %v, want %s/KEY_DISABLED", got, alerts.KindAccessDisabled)
	}
	if got := e.audits(t, opRevocation); len(got) != 1 || got[0].Outcome != string(kms.KindKeyDisabled) || got[0].KeyVersion != "v1" {
		t.Errorf("revocation audit = %+v, want one entry KEY_DISABLED at v1", got)
	}

	e.kms.set(func(f *fakeKMS) { f.disabled = false })
	e.now = e.now.Add(time.Minute)
	e.check(t, keyhealth.Healthy, "")
	if err := e.gate.Allow(e.org); err != nil {
		t.Errorf("gate.Allow() after recovery = %v, want nil", err)
	}
	if got := e.openAlerts(t); len(got) != 0 {
		t.Errorf("open alerts after recovery = %v, want none", got)
	}
	if got := e.audits(t, opRecovery); len(got) != 1 || got[0].Detail != "access restored after REVOKED (KEY_DISABLED)" {
		t.Errorf("recovery audit = %+v, want one entry after REVOKED (KEY_DISABLED)", got)
	}
}

// TestCheckGraceRunsOut: a vault that stops answering lets the org coast,
// then the grace runs out on the monitor's clock and the org is revoked.
func TestCheckGraceRunsOut(t *testing.T) {
	e := newCheckEnv(t)
	e.check(t, keyhealth.Healthy, "")
	e.cacheKey(t)
	e.kms.set(func(f *fakeKMS) {
		f.fail["unwrap"] = &kms.Error{Kind: kms.KindTransient, Status: 503, Code: "ServiceUnavailable"}
	})

	e.now = e.now.Add(time.Minute)
	e.check(t, keyhealth.Coasting, string(kms.KindTransient))
	if err := e.gate.Allow(e.org); err != nil {
		t.Errorf("gate.Allow() while coasting = %v, want nil", err)
	}
	if n := e.cache.Len(); n != 1 {
		t.Errorf("cache.Len() while coasting = %d, want 1", n)
	}
	if got := e.openAlerts(t); got[alerts.KindNotification] != string(kms.KindTransient) {
		t.Errorf("open alerts while coasting = %v, want %s/TRANSIENT", got, alerts.KindNotification)
	}

	e.now = e.now.Add(DefaultGrace - time.Second)
	e.check(t, keyhealth.Coasting, string(kms.KindTransient))
	e.now = e.now.Add(time.Second)
	e.check(t, keyhealth.Revoked, cmkapi.CauseGraceExhausted)
	if err := e.gate.Allow(e.org); err == nil {
		t.Error("gate.Allow() once the grace ran out = nil, want *Refused")
	}
	if n := e.cache.Len(); n != 0 {
		t.Errorf("cache.Len() once the grace ran out = %d, want 0", n)
	}
	if got := e.openAlerts(t); got[alerts.KindAccessFailure] != cmkapi.CauseGraceExhausted {
		t.Errorf("open alerts once the grace ran out = %v, want %s/%s", got, alerts.KindAccessFailure, cmkapi.CauseGraceExhausted)
	}
}

// TestCheckDegradedAndRotation: wrap failing with unwrap working keeps data
// readable; a new key version is detected and audited once.
func TestCheckDegradedAndRotation(t *testing.T) {
	e := newCheckEnv(t)
	e.m.WrapEvery = 1
	e.check(t, keyhealth.Healthy, "")
	e.kms.set(func(f *fakeKMS) {
		f.fail["wrap"] = &kms.Error{Kind: kms.KindKeyNotActive, Status: 403, Code: "Forbidden"}
	})
	e.check(t, keyhealth.Degraded, string(kms.KindKeyNotActive))
	if err := e.gate.Allow(e.org); err != nil {
		t.Errorf("gate.Allow() while degraded = %v, want nil", err)
	}
	e.kms.set(func(f *fakeKMS) { delete(f.fail, "wrap") })
	e.check(t, keyhealth.Healthy, "")
	if got := e.audits(t, opRecovery); len(got) != 1 || got[0].Detail != "access restored after DEGRADED (KEY_NOT_ACTIVE)" {
		t.Errorf("recovery audit = %+v, want one entry after DEGRADED (KEY_NOT_ACTIVE)", got)
	}
	if got := e.openAlerts(t); len(got) != 0 {
		t.Errorf("open alerts after recovery from DEGRADED = %v, want none", got)
	}

	e.kms.addVersion(t, "v2")
	h := e.check(t, keyhealth.Healthy, "")
	if h.RotateTo != "v2" || h.ProbeVersion != "v2" {
		t.Errorf("check after a new version: RotateTo, ProbeVersion = %q, %q, want v2, v2", h.RotateTo, h.ProbeVersion)
	}
	e.check(t, keyhealth.Healthy, "")
	if got := e.audits(t, opRotation); len(got) != 1 || got[0].Outcome != "started" || got[0].KeyVersion != "v2" {
		t.Errorf("rotation audit = %+v, want one entry started at v2", got)
	}
}

// TestCheckAttributes: what Describe says counts even when the calls would
// work: a key outside its dates or without wrapKey is DEGRADED before any
// wrap is tried, a key without unwrapKey or disabled is REVOKED.
func TestCheckAttributes(t *testing.T) {
	for _, tt := range []struct {
		name         string
		set          func(e *checkEnv, f *fakeKMS)
		state, cause string
	}{
		{"expired", func(e *checkEnv, f *fakeKMS) { exp := e.now.Add(-time.Second); f.exp = &exp }, keyhealth.Degraded, string(kms.KindKeyNotActive)},
		{"wrapKey removed", func(_ *checkEnv, f *fakeKMS) { f.ops = []string{"unwrapKey"} }, keyhealth.Degraded, string(kms.KindKeyOperationForbidden)},
		{"unwrapKey removed", func(_ *checkEnv, f *fakeKMS) { f.ops = []string{"wrapKey"} }, keyhealth.Revoked, string(kms.KindKeyOperationForbidden)},
		{"disabled, wrap still allowed", func(_ *checkEnv, f *fakeKMS) { f.disabled = true }, keyhealth.Revoked, string(kms.KindKeyDisabled)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newCheckEnv(t)
			e.m.WrapEvery = 1000 // wrap is not proved by the next checks
			e.check(t, keyhealth.Healthy, "")
			e.kms.set(func(f *fakeKMS) { tt.set(e, f) })
			wraps := e.kms.count("wrap")
			e.now = e.now.Add(time.Minute)
			e.check(t, tt.state, tt.cause)
			if got := e.kms.count("wrap"); got != wraps {
				t.Errorf("wrap calls during the check = %d, want 0", got-wraps)
			}
		})
	}
}

// TestCheckUnrecognisedAnswerCoasts: an answer the monitor does not know as a
// loss of access (here Key Vault's 400 for an api-version it does not know)
// leaves the data path serving, raises a notification that names the
// answer, and revokes only when the grace runs out.
func TestCheckUnrecognisedAnswerCoasts(t *testing.T) {
	e := newCheckEnv(t)
	e.check(t, keyhealth.Healthy, "")
	e.cacheKey(t)
	e.kms.set(func(f *fakeKMS) {
		f.fail["unwrap"] = &kms.Error{Kind: kms.KindInvalidRequest, Status: 400, Code: "BadParameter"}
	})
	e.now = e.now.Add(time.Minute)
	e.check(t, keyhealth.Coasting, string(kms.KindInvalidRequest))
	if err := e.gate.Allow(e.org); err != nil {
		t.Errorf("gate.Allow() while coasting on an unrecognised answer = %v, want nil", err)
	}
	if n := e.cache.Len(); n != 1 {
		t.Errorf("cache.Len() while coasting = %d, want 1", n)
	}
	as, err := e.st.Alerts(context.Background(), e.org, store.AlertOpen)
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 1 || as[0].Kind != alerts.KindNotification || !strings.Contains(as[0].Detail.Message, "HTTP 400 BadParameter") {
		t.Errorf("open alerts = %+v, want one %s naming HTTP 400 BadParameter", as, alerts.KindNotification)
	}
	if got := e.audits(t, opRevocation); len(got) != 0 {
		t.Errorf("revocation audit = %+v, want none", got)
	}
	e.now = e.now.Add(DefaultGrace)
	e.check(t, keyhealth.Revoked, cmkapi.CauseGraceExhausted)
}

// TestCheckDataKeyUnwrapFailureCoasts: before the org has a probe, the check
// proves unwrap with one of its data keys; that one wrapping not opening is
// no proof the key is lost.
func TestCheckDataKeyUnwrapFailureCoasts(t *testing.T) {
	e := newCheckEnv(t)
	dk := store.DataKey{ID: "dk-bad", OrgID: e.org, Sandbox: "prod", Store: "lake", KEK: store.KEKCustomer, KEKRef: keyRef, KEKVersion: "v1", Alg: "RSA-OAEP-256", Wrapped: []byte("not a wrapping this key made")}
	if err := e.st.CreateSandbox(context.Background(), e.org, "prod", []store.DataKey{dk}); err != nil {
		t.Fatal(err)
	}
	e.check(t, keyhealth.Coasting, string(kms.KindUnwrapFailed))
	if err := e.gate.Allow(e.org); err != nil {
		t.Errorf("gate.Allow() = %v, want nil", err)
	}
}

// TestCheckFlappingTellsTheTruth: after a key flaps, disabling it again
// opens the Key access disabled alert beside the flapping notification;
// the notification counts state changes, not healthy checks, and closes
// once the key has been stable for a whole window.
func TestCheckFlappingTellsTheTruth(t *testing.T) {
	e := newCheckEnv(t)
	e.m.FlapCount, e.m.FlapWindow = 4, 10*time.Minute
	e.check(t, keyhealth.Healthy, "")
	step := func(disabled bool, state, cause string) {
		t.Helper()
		e.kms.set(func(f *fakeKMS) { f.disabled = disabled })
		e.now = e.now.Add(30 * time.Second)
		e.check(t, state, cause)
	}
	flapping := func() *store.Alert {
		t.Helper()
		as, err := e.st.Alerts(context.Background(), e.org, store.AlertOpen)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			if a.Cause == cmkapi.CauseFlapping {
				return a
			}
		}
		return nil
	}
	for range 2 {
		step(true, keyhealth.Revoked, string(kms.KindKeyDisabled))
		step(false, keyhealth.Healthy, "")
	}
	n := flapping()
	if n == nil {
		t.Fatalf("open alerts after two disable/enable cycles = %v, want a flapping notification", e.openAlerts(t))
	}
	for range 5 {
		step(false, keyhealth.Healthy, "")
	}
	if a := flapping(); a == nil || a.Occurrences != n.Occurrences {
		t.Fatalf("flapping notification after 5 healthy checks = %+v, want open with %d occurrences", a, n.Occurrences)
	}
	step(true, keyhealth.Revoked, string(kms.KindKeyDisabled))
	if got := e.openAlerts(t); got[alerts.KindAccessDisabled] != string(kms.KindKeyDisabled) {
		t.Errorf("open alerts while disabled again during flapping = %v, want %s/KEY_DISABLED", got, alerts.KindAccessDisabled)
	}
	if a := flapping(); a == nil || a.Occurrences != n.Occurrences+1 {
		t.Errorf("flapping notification after one more change = %+v, want %d occurrences", a, n.Occurrences+1)
	}
	step(false, keyhealth.Healthy, "")
	if got := e.openAlerts(t); len(got) != 1 || got[alerts.KindNotification] != cmkapi.CauseFlapping {
		t.Errorf("open alerts on recovery during flapping = %v, want only the flapping notification", got)
	}
	// A whole window without a change closes it.
	e.now = e.now.Add(e.m.FlapWindow)
	step(false, keyhealth.Healthy, "")
	if got := e.openAlerts(t); len(got) != 0 {
		t.Errorf("open alerts after a stable window = %v, want none", got)
	}
}

// TestRunRecordsLateness: a scheduled check that starts late is observed in
// cmk_check_lateness_seconds by how late it is; the first check after
// enablement, due "now", is not.
func TestRunRecordsLateness(t *testing.T) {
	e := newCheckEnv(t)
	e.m.Metrics = metrics.New()
	e.m.Interval = time.Second
	// The first check runs, by the monitor's clock, ten seconds ago: the
	// next one was due about nine seconds ago (the interval ±10 %).
	e.now = time.Now().Add(-10 * time.Second)
	e.check(t, "HEALTHY", "")
	if got := histogramCount(t, e.m.Metrics.CheckLateness); got != 0 {
		t.Fatalf("lateness observations after a re-check = %d, want 0", got)
	}
	e.m.Now = time.Now
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.m.Run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for histogramCount(t, e.m.Metrics.CheckLateness) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	var m dto.Metric
	if err := e.m.Metrics.CheckLateness.Write(&m); err != nil {
		t.Fatal(err)
	}
	h := m.GetHistogram()
	if h.GetSampleCount() != 1 {
		t.Fatalf("lateness observations = %d, want 1", h.GetSampleCount())
	}
	// Due at 10 s ago + 0.9..1.1 s; started now (plus the claim's poll).
	if got := h.GetSampleSum(); got < 8.8 || got > 9.6 {
		t.Errorf("lateness = %.2f s, want about 9 s", got)
	}
}

func histogramCount(t *testing.T, h prometheus.Histogram) uint64 {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// claimRecorder records the limit of every claim of due checks.
type claimRecorder struct {
	Store
	mu     sync.Mutex
	limits []int
}

func (c *claimRecorder) ClaimDueChecks(ctx context.Context, owner string, lease time.Duration, limit int) ([]*store.Health, error) {
	c.mu.Lock()
	c.limits = append(c.limits, limit)
	c.mu.Unlock()
	return c.Store.ClaimDueChecks(ctx, owner, lease, limit)
}

// TestRunClaimsOnlyWhatItCanStart: a replica claims no more due checks
// than it has free slots, so none waits under its lease while another
// replica could run it; with every slot busy it claims nothing.
func TestRunClaimsOnlyWhatItCanStart(t *testing.T) {
	e := newCheckEnv(t)
	e.m.Now = time.Now
	e.m.Concurrency = 1
	e.m.Interval = time.Hour
	rec := &claimRecorder{Store: e.st}
	e.m.Store = rec
	// The org's check hangs in describe until released.
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	e.kms.set(func(f *fakeKMS) {
		f.during = func(f *fakeKMS, op string, n int) *kms.Error {
			if op == "describe" {
				started <- struct{}{}
				f.mu.Unlock()
				<-release
				f.mu.Lock()
			}
			return nil
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.m.Run(ctx); close(done) }()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the due check did not start")
	}
	time.Sleep(300 * time.Millisecond) // several polls, were it polling
	rec.mu.Lock()
	limits := slices.Clone(rec.limits)
	rec.mu.Unlock()
	close(release)
	cancel()
	<-done
	if !slices.Equal(limits, []int{1}) {
		t.Errorf("claims while the only slot was busy: limits %v, want [1] (one claim, for the one free slot)", limits)
	}
}
