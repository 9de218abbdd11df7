package control

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/consent"
	"github.com/cmk-project/cmk/internal/kms"
)

// Codes the fake redeemer knows: an administrator's and a plain member's
// (both plausible Entra ID codes), and one that is not.
var (
	goodCode   = "0.AXoA-" + strings.Repeat("good", 10)
	memberCode = "0.AXoA-" + strings.Repeat("memb", 10)
	unknown    = "0.AXoA-" + strings.Repeat("unkn", 10)
)

// fakeRedeemer answers for codes it knows, like Entra ID: a code is bound
// to the PKCE challenge of the link it was issued for (its verifier must
// come with it) and redeems once. It records what it was asked.
type fakeRedeemer struct {
	tenants   map[string]string // code -> tenant
	verifiers map[string]string // code -> verifier of its link ("": any)
	members   map[string]bool   // codes of users who may not consent for the tenant
	err       error
	asked     []string
	redirect  string
}

func (f *fakeRedeemer) RedeemConsentCode(_ context.Context, code, redirectURI, verifier string) (string, error) {
	f.asked = append(f.asked, code)
	f.redirect = redirectURI
	if f.err != nil {
		return "", f.err
	}
	t, ok := f.tenants[code]
	if want := f.verifiers[code]; !ok || want != "" && verifier != want {
		return "", &kms.Error{Kind: kms.KindTokenAcquisitionFailed, Op: "token", Code: "invalid_grant", InnerCode: "AADSTS9002313"}
	}
	if f.members[code] {
		return "", &kms.Error{Kind: kms.KindIdentityInvalid, Op: "token", Err: consent.ErrNotAdministrator}
	}
	return t, nil
}

const callback = "https://cmk.example/data/infrastructure/manager/byok/consent/callback"

func withOwnership(t *testing.T, s *Service, now *time.Time) *fakeRedeemer {
	t.Helper()
	signer, err := consent.NewSigner(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	signer.Now = func() time.Time { return *now }
	r := &fakeRedeemer{tenants: map[string]string{goodCode: strings.ToUpper(tenantA), memberCode: tenantA}, verifiers: map[string]string{}, members: map[string]bool{memberCode: true}}
	s.Ownership = Ownership{Signer: signer, AuthorizeURL: "https://login.example/organizations/oauth2/v2.0/authorize", ClientID: "app-id",
		CallbackURL: func() string { return callback }, Redeemer: r}
	return r
}

// stateOf returns the state of org's consent link.
func stateOf(t *testing.T, s *Service, org string) string {
	t.Helper()
	link, err := s.ConsentLink(org)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("client_id") != "app-id" || q.Get("redirect_uri") != callback || q.Get("response_type") != "code" || q.Get("prompt") != "admin_consent" {
		t.Errorf("ConsentLink(%s) = %s, want the app, the callback, a code response and the admin-consent prompt", org, link)
	}
	return q.Get("state")
}

func TestCompleteConsentBindsTheLinksOrg(t *testing.T) {
	ctx := context.Background()
	s, _ := newService(t)
	now := time.Now()
	r := withOwnership(t, s, &now)
	b, err := s.CompleteConsent(ctx, ConsentReply{State: stateOf(t, s, orgB), Code: goodCode})
	if err != nil || b.OrgID != orgB || b.TenantID != tenantA || !b.New {
		t.Fatalf("CompleteConsent(orgB's state, good code) = %+v, %v; want orgB bound to %s (lowercase)", b, err, tenantA)
	}
	if r.redirect != callback {
		t.Errorf("code redeemed with redirect %q, want %q", r.redirect, callback)
	}
	if got, _ := s.BoundTenants(ctx, orgB); len(got) != 1 || got[0] != tenantA {
		t.Errorf("BoundTenants(orgB) = %v, want [%s]", got, tenantA)
	}
	if got, _ := s.BoundTenants(ctx, orgA); len(got) != 0 {
		t.Errorf("BoundTenants(orgA) = %v, want none: only the link's org is bound", got)
	}
	b, err = s.CompleteConsent(ctx, ConsentReply{State: stateOf(t, s, orgB), Code: goodCode})
	if err != nil || b.New {
		t.Errorf("CompleteConsent again = %+v, %v; want the same binding, not new", b, err)
	}
}

func TestCompleteConsentRefusals(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		reply func(s *Service, now *time.Time) ConsentReply
		setup func(s *Service, r *fakeRedeemer)
		rule  error
		asked bool // the code went to Entra ID
	}{
		{"no state", func(*Service, *time.Time) ConsentReply { return ConsentReply{Code: goodCode} }, nil, ErrConsent, false},
		{"forged state", func(*Service, *time.Time) ConsentReply {
			other, _ := consent.NewSigner(bytes.Repeat([]byte{8}, 32))
			st, _ := other.Seal(orgB)
			return ConsentReply{State: st, Code: goodCode}
		}, nil, ErrConsent, false},
		{"expired state", func(s *Service, now *time.Time) ConsentReply {
			st := stateOf(t, s, orgB)
			*now = now.Add(consent.DefaultTTL)
			return ConsentReply{State: st, Code: goodCode}
		}, nil, ErrConsent, false},
		{"declined", func(s *Service, _ *time.Time) ConsentReply {
			return ConsentReply{State: stateOf(t, s, orgB), Error: "access_denied", ErrorDescription: "AADSTS65004: declined"}
		}, nil, ErrConsent, false},
		{"tenant in the URL, no code", func(s *Service, _ *time.Time) ConsentReply {
			return ConsentReply{State: stateOf(t, s, orgB)}
		}, nil, ErrConsent, false},
		{"made-up code", func(s *Service, _ *time.Time) ConsentReply {
			return ConsentReply{State: stateOf(t, s, orgB), Code: unknown}
		}, nil, ErrConsent, true},
		{"junk code", func(s *Service, _ *time.Time) ConsentReply {
			return ConsentReply{State: stateOf(t, s, orgB), Code: "made-up"}
		}, nil, ErrConsent, false},
		{"code with characters Entra ID does not use", func(s *Service, _ *time.Time) ConsentReply {
			return ConsentReply{State: stateOf(t, s, orgB), Code: goodCode + "<"}
		}, nil, ErrConsent, false},
		{"a plain member's code", func(s *Service, _ *time.Time) ConsentReply {
			return ConsentReply{State: stateOf(t, s, orgB), Code: memberCode}
		}, nil, ErrConsentNotAdmin, true},
		{"Entra ID down", func(s *Service, _ *time.Time) ConsentReply {
			return ConsentReply{State: stateOf(t, s, orgB), Code: goodCode}
		}, func(_ *Service, r *fakeRedeemer) { r.err = &kms.Error{Kind: kms.KindTransient, Op: "token"} }, ErrIdentityUnavailable, true},
		{"token names no tenant id", func(s *Service, _ *time.Time) ConsentReply {
			return ConsentReply{State: stateOf(t, s, orgB), Code: goodCode}
		}, func(_ *Service, r *fakeRedeemer) { r.tenants[goodCode] = "organizations" }, ErrConsent, true},
		{"org deleted since", func(s *Service, _ *time.Time) ConsentReply {
			st := stateOf(t, s, orgB)
			if err := s.DeleteOrg(ctx, orgB, orgB); err != nil {
				t.Fatal(err)
			}
			return ConsentReply{State: st, Code: goodCode}
		}, nil, ErrNotFound, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, st := newService(t)
			now := time.Now()
			r := withOwnership(t, s, &now)
			if tt.setup != nil {
				tt.setup(s, r)
			}
			_, err := s.CompleteConsent(ctx, tt.reply(s, &now))
			wantProblem(t, "CompleteConsent("+tt.name+")", err, tt.rule)
			if got := len(r.asked) > 0; got != tt.asked {
				t.Errorf("code sent to Entra ID = %v, want %v", got, tt.asked)
			}
			if got, _ := st.OrgTenants(ctx, orgB); len(got) != 0 {
				t.Errorf("OrgTenants(orgB) = %v, want none", got)
			}
		})
	}
}

// TestConsentErrorTextIsNotEchoed: the redirect's error_description is
// anyone's to write; only the error's name and AADSTS code are repeated.
func TestConsentErrorTextIsNotEchoed(t *testing.T) {
	s, _ := newService(t)
	now := time.Now()
	withOwnership(t, s, &now)
	_, err := s.CompleteConsent(context.Background(), ConsentReply{State: stateOf(t, s, orgB), Error: "<b>call +1 555</b>",
		ErrorDescription: "AADSTS65004: Your account is suspended, call +1 555 0100"})
	var p *Problem
	if !errors.As(err, &p) {
		t.Fatalf("CompleteConsent = %v, want a *Problem", err)
	}
	text := p.Title + p.Detail + p.Hint
	if strings.Contains(text, "555") || strings.Contains(text, "<b>") || !strings.Contains(text, "AADSTS65004") {
		t.Errorf("problem text = %q, want the AADSTS code and none of the redirect's own words", text)
	}
}

// TestConsentCodeIsBoundToItsLink: a code issued for org A's link (its PKCE
// challenge) does not redeem with org B's state, so it cannot bind B.
func TestConsentCodeIsBoundToItsLink(t *testing.T) {
	ctx := context.Background()
	s, st := newService(t)
	now := time.Now()
	r := withOwnership(t, s, &now)
	link, err := s.ConsentLink(orgA)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(link)
	q := u.Query()
	stateA := q.Get("state")
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") != consent.Challenge(s.Ownership.Signer.Verifier(stateA)) {
		t.Fatalf("ConsentLink(orgA) = %s, want the S256 challenge of its state's verifier", link)
	}
	if strings.Contains(link, s.Ownership.Signer.Verifier(stateA)) {
		t.Fatalf("ConsentLink(orgA) = %s carries the verifier", link)
	}
	// Entra ID bound the code to A's challenge.
	r.verifiers[goodCode] = s.Ownership.Signer.Verifier(stateA)
	_, err = s.CompleteConsent(ctx, ConsentReply{State: stateOf(t, s, orgB), Code: goodCode})
	wantProblem(t, "CompleteConsent(orgB's state, orgA's code)", err, ErrConsent)
	if got, _ := st.OrgTenants(ctx, orgB); len(got) != 0 {
		t.Fatalf("OrgTenants(orgB) = %v, want none", got)
	}
	if b, err := s.CompleteConsent(ctx, ConsentReply{State: stateA, Code: goodCode}); err != nil || b.OrgID != orgA {
		t.Errorf("CompleteConsent(orgA's state, orgA's code) = %+v, %v; want orgA bound", b, err)
	}
}

// TestConsentStateBindsOnce: once a state bound (or its code was redeemed
// for a user who may not consent), the same state is refused without asking
// Entra ID, whatever the code.
func TestConsentStateBindsOnce(t *testing.T) {
	ctx := context.Background()
	for _, first := range []string{goodCode, memberCode} {
		s, st := newService(t)
		now := time.Now()
		r := withOwnership(t, s, &now)
		r.tenants["second-code-of-the-tenant-admin-000000"] = tenantA
		state := stateOf(t, s, orgB)
		s.CompleteConsent(ctx, ConsentReply{State: state, Code: first})
		st.DeleteOrg(ctx, orgB) // forget the binding, if any; the org comes back
		st.EnsureOrg(ctx, orgB)
		asked := len(r.asked)
		_, err := s.CompleteConsent(ctx, ConsentReply{State: state, Code: "second-code-of-the-tenant-admin-000000"})
		wantProblem(t, "CompleteConsent(the same state again)", err, ErrConsent)
		if len(r.asked) != asked {
			t.Errorf("after %s: the used state's code went to Entra ID", first)
		}
		if got, _ := st.OrgTenants(ctx, orgB); len(got) != 0 {
			t.Errorf("after %s: OrgTenants(orgB) = %v, want none", first, got)
		}
	}
	// A refused code (not redeemed) leaves the state usable.
	s, _ := newService(t)
	now := time.Now()
	withOwnership(t, s, &now)
	state := stateOf(t, s, orgB)
	if _, err := s.CompleteConsent(ctx, ConsentReply{State: state, Code: unknown}); err == nil {
		t.Fatal("CompleteConsent(unknown code) = nil error")
	}
	if _, err := s.CompleteConsent(ctx, ConsentReply{State: state, Code: goodCode}); err != nil {
		t.Errorf("CompleteConsent(the state, after a refused code) = %v, want the binding", err)
	}
}

// fakeLimits admits n callbacks, then refuses; it records who was charged.
type fakeLimits struct {
	n       int
	charged []string
	held    int
}

var errOverLimit = errors.New("over the limit")

func (f *fakeLimits) Consent(org, client string) (func(), error) {
	f.charged = append(f.charged, org+" "+client)
	if len(f.charged) > f.n {
		return nil, errOverLimit
	}
	f.held++
	return func() { f.held-- }, nil
}

// TestConsentCallbackLimit: a callback that would redeem a code is charged
// to the org of its state and its client; over the limit, nothing goes to
// Entra ID. Callbacks refused before (junk, forged state) are not charged.
func TestConsentCallbackLimit(t *testing.T) {
	ctx := context.Background()
	s, _ := newService(t)
	now := time.Now()
	r := withOwnership(t, s, &now)
	lim := &fakeLimits{n: 2}
	s.Ownership.Limits = lim
	state := stateOf(t, s, orgB)
	s.CompleteConsent(ctx, ConsentReply{State: state, Code: "junk", Client: "192.0.2.7"})
	s.CompleteConsent(ctx, ConsentReply{State: "v1.x.y", Code: unknown, Client: "192.0.2.7"})
	for range 3 {
		s.CompleteConsent(ctx, ConsentReply{State: state, Code: unknown, Client: "192.0.2.7"})
	}
	if len(lim.charged) != 3 || lim.charged[0] != orgB+" 192.0.2.7" {
		t.Errorf("charged %v, want orgB from 192.0.2.7 three times", lim.charged)
	}
	if len(r.asked) != 2 || lim.held != 0 {
		t.Errorf("%d codes went to Entra ID, %d slots still held; want 2, 0", len(r.asked), lim.held)
	}
	if _, err := s.CompleteConsent(ctx, ConsentReply{State: state, Code: goodCode, Client: "192.0.2.7"}); !errors.Is(err, errOverLimit) {
		t.Errorf("CompleteConsent over the limit = %v, want the limit's error", err)
	}
}

func TestNoOwnershipNoLink(t *testing.T) {
	s, _ := newService(t)
	if link, err := s.ConsentLink(orgA); link != "" || err != nil {
		t.Errorf("ConsentLink without an app = %q, %v; want none", link, err)
	}
	_, err := s.CompleteConsent(context.Background(), ConsentReply{State: "v1.x.y", Code: "c"})
	wantProblem(t, "CompleteConsent without an app", err, ErrConsent)
}
