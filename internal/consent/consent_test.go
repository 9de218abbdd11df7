package consent

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

var (
	testKey = bytes.Repeat([]byte{0x5a}, 32)
	t0      = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
)

func newSigner(t testing.TB, now *time.Time) *Signer {
	t.Helper()
	s, err := NewSigner(testKey)
	if err != nil {
		t.Fatal(err)
	}
	s.Now = func() time.Time { return *now }
	return s
}

func TestSealOpen(t *testing.T) {
	now := t0
	s := newSigner(t, &now)
	for _, org := range []string{"A", "85A1B2C3D4E5F6A7B8C9D0E1@AdobeOrg", "DEMO0RG1234567890@CmkOrg", strings.Repeat("x", MaxOrgLen), "ünïcode@Org"} {
		st, err := s.Seal(org)
		if err != nil {
			t.Fatalf("Seal(%q) = %v", org, err)
		}
		if len(st) > MaxStateLen {
			t.Errorf("len(Seal(%q)) = %d, want at most %d", org, len(st), MaxStateLen)
		}
		got, exp, err := s.Open(st)
		if err != nil || got != org || !exp.Equal(t0.Add(DefaultTTL)) {
			t.Errorf("Open(Seal(%q)) = %q, %v, %v; want %q, %v, nil", org, got, exp, err, org, t0.Add(DefaultTTL))
		}
	}
	a, _ := s.Seal("A")
	b, _ := s.Seal("A")
	if a == b {
		t.Error("two states for one org are equal; want a fresh nonce each time")
	}
}

func TestSealRefusesBadOrgs(t *testing.T) {
	now := t0
	s := newSigner(t, &now)
	for _, org := range []string{"", "a b", "a/b", `a\b`, "a\x00", "a\x7f", strings.Repeat("x", MaxOrgLen+1), "\xff"} {
		if st, err := s.Seal(org); err == nil {
			t.Errorf("Seal(%q) = %q, nil; want an error", org, st)
		}
	}
}

func TestOpenExpiry(t *testing.T) {
	now := t0
	s := newSigner(t, &now)
	st, _ := s.Seal("A")
	now = t0.Add(DefaultTTL - time.Second)
	if _, _, err := s.Open(st); err != nil {
		t.Errorf("Open a second before expiry = %v, want nil", err)
	}
	now = t0.Add(DefaultTTL)
	if _, _, err := s.Open(st); !errors.Is(err, ErrExpired) {
		t.Errorf("Open at expiry = %v, want ErrExpired", err)
	}
	s.TTL = time.Minute
	now = t0
	st, _ = s.Seal("A")
	now = t0.Add(time.Minute)
	if _, _, err := s.Open(st); !errors.Is(err, ErrExpired) {
		t.Errorf("Open after a 1-minute TTL = %v, want ErrExpired", err)
	}
}

// TestOpenTamper flips every bit of every character of a state, truncates
// it, and opens it under another key: nothing opens.
func TestOpenTamper(t *testing.T) {
	now := t0
	s := newSigner(t, &now)
	st, _ := s.Seal("ORGA@CmkOrg")
	for i := range len(st) {
		for bit := range 8 {
			b := []byte(st)
			b[i] ^= 1 << bit
			if org, _, err := s.Open(string(b)); err == nil {
				t.Fatalf("Open(state with byte %d bit %d flipped) = %q, nil; want an error", i, bit, org)
			}
		}
	}
	for n := range len(st) {
		if org, _, err := s.Open(st[:n]); err == nil {
			t.Fatalf("Open(state truncated to %d) = %q, nil; want an error", n, org)
		}
	}
	other, _ := NewSigner(bytes.Repeat([]byte{0x5b}, 32))
	other.Now = s.Now
	if _, _, err := other.Open(st); !errors.Is(err, ErrForged) {
		t.Errorf("Open under another key = %v, want ErrForged", err)
	}
}

// TestOpenForgedPayload: a state re-encoded with another org or expiry but
// the old MAC is refused as forged; the signature is checked before the
// payload is believed.
func TestOpenForgedPayload(t *testing.T) {
	now := t0
	s := newSigner(t, &now)
	st, _ := s.Seal("ORGB@CmkOrg")
	rest := strings.TrimPrefix(st, "v1.")
	p64, m64, _ := strings.Cut(rest, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(p64)
	swapped := append(bytes.Clone(payload[:16]), "ORGA@CmkOrg"...)
	forged := "v1." + base64.RawURLEncoding.EncodeToString(swapped) + "." + m64
	if org, _, err := s.Open(forged); !errors.Is(err, ErrForged) {
		t.Errorf("Open(another org under the old MAC) = %q, %v; want ErrForged", org, err)
	}
	later := bytes.Clone(payload)
	later[0] ^= 0x01
	forged = "v1." + base64.RawURLEncoding.EncodeToString(later) + "." + m64
	if _, _, err := s.Open(forged); !errors.Is(err, ErrForged) {
		t.Errorf("Open(later expiry under the old MAC) = %v, want ErrForged", err)
	}
}

func TestOpenMalformed(t *testing.T) {
	now := t0
	s := newSigner(t, &now)
	good, _ := s.Seal("A")
	for _, st := range []string{"", "v1.", "v1..", "v2." + strings.TrimPrefix(good, "v1."), good + ".", good + "=", strings.Repeat("a", MaxStateLen+1),
		"v1.AAAA.AAAA", "v1." + strings.TrimPrefix(good, "v1.") + ".x"} {
		if _, _, err := s.Open(st); !errors.Is(err, ErrMalformed) {
			t.Errorf("Open(%.40q) = %v, want ErrMalformed", st, err)
		}
	}
}

func TestNewSignerNeedsAKey(t *testing.T) {
	if _, err := NewSigner(make([]byte, 31)); err == nil {
		t.Error("NewSigner(31 bytes) = nil error, want one")
	}
}

func TestTenantID(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"22222222-2222-4222-8222-222222222222", "22222222-2222-4222-8222-222222222222", true},
		{"72F988BF-86F1-41AF-91AB-2D7CD011DB47", "72f988bf-86f1-41af-91ab-2d7cd011db47", true},
		{"common", "", false},
		{"organizations", "", false},
		{"contoso.onmicrosoft.com", "", false},
		{"22222222-2222-4222-8222-22222222222", "", false},
		{"22222222-2222-4222-8222-2222222222222", "", false},
		{"22222222_2222-4222-8222-222222222222", "", false},
		{"2222222g-2222-4222-8222-222222222222", "", false},
		{"{22222222-2222-4222-8222-222222222222}", "", false},
		{"", "", false},
	} {
		got, ok := TenantID(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("TenantID(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestLink(t *testing.T) {
	link, err := Link("https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize?domain_hint=contoso.com", "33333333-3333-4333-8333-333333333333",
		"https://cmk.example/data/infrastructure/manager/byok/consent/callback", "v1.abc.def")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(link)
	if u.Host != "login.microsoftonline.com" || u.Path != "/organizations/oauth2/v2.0/authorize" {
		t.Errorf("Link endpoint = %s%s, want the authorization endpoint given", u.Host, u.Path)
	}
	q := u.Query()
	want := map[string]string{
		"client_id": "33333333-3333-4333-8333-333333333333", "response_type": "code", "response_mode": "query",
		"redirect_uri": "https://cmk.example/data/infrastructure/manager/byok/consent/callback",
		"scope":        "openid profile", "prompt": "admin_consent", "state": "v1.abc.def", "domain_hint": "contoso.com",
	}
	for k, v := range want {
		if q.Get(k) != v {
			t.Errorf("Link query %s = %q, want %q", k, q.Get(k), v)
		}
	}
	if _, err := Link("not a url", "c", "r", "s"); err == nil {
		t.Error("Link(not a url) = nil error, want one")
	}
}
