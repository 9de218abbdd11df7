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
		"https://cmk.example/data/infrastructure/manager/byok/consent/callback", "v1.abc.def", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
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
		"code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256",
	}
	for k, v := range want {
		if q.Get(k) != v {
			t.Errorf("Link query %s = %q, want %q", k, q.Get(k), v)
		}
	}
	if _, err := Link("not a url", "c", "r", "s", "x"); err == nil {
		t.Error("Link(not a url) = nil error, want one")
	}
}

// TestChallenge pins S256 to the vector of RFC 7636, Appendix B.
func TestChallenge(t *testing.T) {
	const verifier, want = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
	if got := Challenge(verifier); got != want {
		t.Errorf("Challenge(%s) = %s, want %s", verifier, got, want)
	}
}

func TestVerifier(t *testing.T) {
	s, err := NewSigner(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewSigner(bytes.Repeat([]byte{2}, 32))
	a, _ := s.Seal("ORGA@CmkOrg")
	b, _ := s.Seal("ORGB@CmkOrg")
	va := s.Verifier(a)
	// RFC 7636 4.1: 43 to 128 characters of [A-Z a-z 0-9 - . _ ~].
	if len(va) != 43 || !PlausibleCode(va) {
		t.Errorf("Verifier = %q (%d characters), want 43 unreserved characters", va, len(va))
	}
	if s.Verifier(a) != va {
		t.Error("Verifier is not deterministic: the callback could not recompute it")
	}
	if s.Verifier(b) == va || other.Verifier(a) == va {
		t.Error("Verifier is the same for another state or another key")
	}
	if id := StateID(a); id == StateID(b) || id != StateID(strings.Clone(a)) {
		t.Error("StateID does not name one state")
	}
}

func TestCanConsentForTenant(t *testing.T) {
	for _, tc := range []struct {
		wids []string
		want bool
	}{
		{nil, false},
		{[]string{"b79fbf4d-3ef9-4689-8143-76b194e85509"}, false},                                         // User (every member)
		{[]string{"fe930be7-5e62-47db-91af-98c3a49a38b1", "b79fbf4d-3ef9-4689-8143-76b194e85509"}, false}, // User Administrator
		{[]string{"62e90394-69f5-4237-9190-012177145e10"}, true},                                          // Global Administrator
		{[]string{"b79fbf4d-3ef9-4689-8143-76b194e85509", "E8611AB8-C189-4E8F-8D9E-9EA3D0B2BBD9"}, true},
		{[]string{"158c047a-c907-4556-b7ef-446551a6b5f7"}, true},
		{[]string{"9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3"}, true},
		{[]string{"62e90394-69f5-4237-9190-012177145e1"}, false},
	} {
		if got := CanConsentForTenant(tc.wids); got != tc.want {
			t.Errorf("CanConsentForTenant(%v) = %v, want %v", tc.wids, got, tc.want)
		}
	}
}

func TestPlausibleCode(t *testing.T) {
	for _, tc := range []struct {
		code string
		want bool
	}{
		{"", false},
		{"made-up", false},
		{strings.Repeat("a", 31), false},
		{strings.Repeat("a", 32), true},
		{"0.AXoA" + strings.Repeat("Ab-_.~9", 100), true},
		{strings.Repeat("a", 8<<10), true},
		{strings.Repeat("a", 8<<10+1), false},
		{strings.Repeat("a", 40) + " ", false},
		{strings.Repeat("a", 40) + "%00", false},
		{strings.Repeat("a", 40) + "<", false},
	} {
		if got := PlausibleCode(tc.code); got != tc.want {
			t.Errorf("PlausibleCode(%.50q) = %v, want %v", tc.code, got, tc.want)
		}
	}
}

// TestOpenOnlyTheCanonicalSpelling: a state opens only as Seal wrote it.
// Base64 decoders skip CR and LF, so without this a used state with one
// inserted would open under another StateID and bind again.
func TestOpenOnlyTheCanonicalSpelling(t *testing.T) {
	now := t0
	s := newSigner(t, &now)
	st, err := s.Seal("ORGA@CmkOrg")
	if err != nil {
		t.Fatal(err)
	}
	for _, variant := range []string{
		st[:10] + "\r" + st[10:],
		st[:10] + "\n" + st[10:],
		st[:len(st)-5] + "\r\n" + st[len(st)-5:],
		st + "\n",
	} {
		if StateID(variant) == StateID(st) {
			t.Fatalf("variant %q has the same StateID; the test proves nothing", variant)
		}
		if org, _, err := s.Open(variant); err == nil {
			t.Errorf("Open(%q) = %q, nil; want it refused as malformed", variant, org)
		}
	}
	if _, _, err := s.Open(st); err != nil {
		t.Errorf("Open(the state as sealed) = %v", err)
	}
}
