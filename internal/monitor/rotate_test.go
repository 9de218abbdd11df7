package monitor

import (
	"bytes"
	"context"
	"crypto/rand"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/store"
	"github.com/cmk-project/cmk/internal/systemkey"
)

// rotateEnv is a checkEnv whose org has one data key wrapped under v1 of
// its key, and whose key has just gained v2: a rotation to v2 is due.
type rotateEnv struct {
	*checkEnv
	dek    []byte // the data key's plaintext
	slept  []time.Duration
	sleepM sync.Mutex
}

func newRotateEnv(t *testing.T) *rotateEnv {
	t.Helper()
	e := &rotateEnv{checkEnv: newCheckEnv(t)}
	sys, err := systemkey.New(randomBytes(32))
	if err != nil {
		t.Fatal(err)
	}
	e.m.Keyring = &keyring.Keyring{Store: e.st, System: sys, Customer: e.kms}
	e.m.Sleep = func(ctx context.Context, d time.Duration) error {
		e.sleepM.Lock()
		defer e.sleepM.Unlock()
		e.slept = append(e.slept, d)
		e.now = e.now.Add(d)
		return ctx.Err()
	}
	e.check(t, keyhealth.Healthy, "")
	e.dek = randomBytes(32)
	dk, err := e.m.Keyring.WrapCustomer(context.Background(), kms.KeyRef{VaultURL: "https://contoso.vault.azure.net", Name: "cmk"},
		store.DataKey{ID: "dk-1", OrgID: e.org, Sandbox: "prod", Store: "lake"}, e.dek)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.CreateSandbox(context.Background(), e.org, "prod", []store.DataKey{dk}); err != nil {
		t.Fatal(err)
	}
	e.kms.addVersion(t, "v2")
	if h := e.check(t, keyhealth.Healthy, ""); h.RotateTo != "v2" {
		t.Fatalf("check after v2: RotateTo = %q, want v2", h.RotateTo)
	}
	return e
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// rotate claims the due rotation and runs it once.
func (e *rotateEnv) rotate(t *testing.T) error {
	t.Helper()
	h, err := e.st.ClaimRotation(context.Background(), e.m.Owner, time.Minute)
	if err != nil {
		t.Fatalf("ClaimRotation() = %v", err)
	}
	return e.m.rotate(context.Background(), h)
}

// dataKey returns the org's data key and checks it opens to the data key.
func (e *rotateEnv) dataKey(t *testing.T) store.DataKey {
	t.Helper()
	keys, err := e.st.DataKeys(context.Background(), e.org)
	if err != nil || len(keys) != 1 {
		t.Fatalf("DataKeys() = %d keys, %v, want 1", len(keys), err)
	}
	got, err := e.m.Keyring.Unwrap(context.Background(), keys[0])
	if err != nil || !bytes.Equal(got, e.dek) {
		t.Errorf("Unwrap(data key at %s) = %x, %v, want %x", keys[0].KEKVersion, got, err, e.dek)
	}
	return keys[0]
}

// TestRotationNeverUnderUnusableKey: a rotation re-wraps only under a
// target version Describe shows usable, and replaces a wrapping only once
// the new one is proved to unwrap to the same data key.
func TestRotationNeverUnderUnusableKey(t *testing.T) {
	for _, tt := range []struct {
		name    string
		during  func(f *fakeKMS, op string, n int) *kms.Error
		kind    kms.Kind // of the error rotate returns; "" for none
		wraps   int      // wrap calls the rotation makes
		version string   // of the data key's wrapping afterwards
	}{
		{"usable", nil, "", 1, "v2"},
		{"disabled before it starts", func(f *fakeKMS, op string, n int) *kms.Error {
			f.disabled = f.disabled || op == "describe"
			return nil
		}, kms.KindKeyDisabled, 0, "v1"},
		{"expired before it starts", func(f *fakeKMS, op string, n int) *kms.Error {
			if op == "describe" {
				exp := time.Unix(0, 0)
				f.exp = &exp
			}
			return nil
		}, kms.KindKeyNotActive, 0, "v1"},
		{"disabled during the wrap", func(f *fakeKMS, op string, n int) *kms.Error {
			f.disabled = f.disabled || op == "wrap"
			return nil
		}, kms.KindKeyDisabled, 1, "v1"},
		{"unwrapKey removed during the wrap", func(f *fakeKMS, op string, n int) *kms.Error {
			if op == "wrap" {
				f.ops = []string{"wrapKey"}
			}
			return nil
		}, kms.KindKeyOperationForbidden, 1, "v1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newRotateEnv(t)
			wraps := e.kms.count("wrap")
			e.kms.set(func(f *fakeKMS) { f.during = tt.during })
			err := e.rotate(t)
			if kms.KindOf(err) != tt.kind || (tt.kind == "") != (err == nil) {
				t.Errorf("rotate() = %v, want kind %q", err, tt.kind)
			}
			if got := e.kms.count("wrap") - wraps; got != tt.wraps {
				t.Errorf("wrap calls = %d, want %d", got, tt.wraps)
			}
			e.kms.set(func(f *fakeKMS) { f.during, f.disabled, f.exp, f.ops = nil, false, nil, nil })
			if dk := e.dataKey(t); dk.KEKVersion != tt.version {
				t.Errorf("data key wrapped by %s, want %s", dk.KEKVersion, tt.version)
			}
		})
	}
}

// TestRotationThrottled: a throttled re-wrap waits the vault's Retry-After,
// or 1, 2, 4, 8, 16 s (then 16 s) when it gave none.
func TestRotationThrottled(t *testing.T) {
	s := time.Second
	for _, tt := range []struct {
		name   string
		op     string
		calls  int           // the first calls of op after the rotation starts are throttled
		after  time.Duration // their Retry-After
		pauses []time.Duration
	}{
		{"wrap, no Retry-After", "wrap", 6, 0, []time.Duration{1 * s, 2 * s, 4 * s, 8 * s, 16 * s, 16 * s}},
		{"wrap, Retry-After 3 s", "wrap", 2, 3 * s, []time.Duration{3 * s, 3 * s}},
		{"proof, no Retry-After", "unwrap", 3, 0, []time.Duration{1 * s, 2 * s, 4 * s}},
		{"key check, no Retry-After", "describe", 2, 0, []time.Duration{1 * s, 2 * s}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newRotateEnv(t)
			// The rotation's first unwrap is of the old wrapping.
			first := e.kms.count(tt.op) + 1
			if tt.op == "unwrap" {
				first++
			}
			e.kms.set(func(f *fakeKMS) {
				f.during = func(_ *fakeKMS, op string, n int) *kms.Error {
					if op == tt.op && n >= first && n < first+tt.calls {
						return &kms.Error{Kind: kms.KindThrottled, Status: 429, Code: "Throttled", RetryAfter: tt.after}
					}
					return nil
				}
			})
			if err := e.rotate(t); err != nil {
				t.Fatalf("rotate() = %v", err)
			}
			if !slices.Equal(e.slept, tt.pauses) {
				t.Errorf("pauses = %v, want %v", e.slept, tt.pauses)
			}
			if dk := e.dataKey(t); dk.KEKVersion != "v2" {
				t.Errorf("data key wrapped by %s, want v2", dk.KEKVersion)
			}
		})
	}
}
