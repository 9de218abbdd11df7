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

// fakeRedeemer answers for codes it knows; it records what it was asked.
type fakeRedeemer struct {
	tenants  map[string]string // code -> tenant
	err      error
	asked    []string
	redirect string
}

func (f *fakeRedeemer) RedeemConsentCode(_ context.Context, code, redirectURI string) (string, error) {
	f.asked = append(f.asked, code)
	f.redirect = redirectURI
	if f.err != nil {
		return "", f.err
	}
	t, ok := f.tenants[code]
	if !ok {
		return "", &kms.Error{Kind: kms.KindTokenAcquisitionFailed, Op: "token", Code: "invalid_grant", InnerCode: "AADSTS9002313"}
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
	r := &fakeRedeemer{tenants: map[string]string{"good-code": strings.ToUpper(tenantA)}}
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
	b, err := s.CompleteConsent(ctx, ConsentReply{State: stateOf(t, s, orgB), Code: "good-code"})
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
	b, err = s.CompleteConsent(ctx, ConsentReply{State: stateOf(t, s, orgB), Code: "good-code"})
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
		{"no state", func(*Service, *time.Time) ConsentReply { return ConsentReply{Code: "good-code"} }, nil, ErrConsent, false},
		{"forged state", func(*Service, *time.Time) ConsentReply {
			other, _ := consent.NewSigner(bytes.Repeat([]byte{8}, 32))
			st, _ := other.Seal(orgB)
			return ConsentReply{State: st, Code: "good-code"}
		}, nil, ErrConsent, false},
		{"expired state", func(s *Service, now *time.Time) ConsentReply {
			st := stateOf(t, s, orgB)
			*now = now.Add(consent.DefaultTTL)
			return ConsentReply{State: st, Code: "good-code"}
		}, nil, ErrConsent, false},
		{"declined", func(s *Service, _ *time.Time) ConsentReply {
			return ConsentReply{State: stateOf(t, s, orgB), Error: "access_denied", ErrorDescription: "AADSTS65004: declined"}
		}, nil, ErrConsent, false},
		{"tenant in the URL, no code", func(s *Service, _ *time.Time) ConsentReply {
			return ConsentReply{State: stateOf(t, s, orgB)}
		}, nil, ErrConsent, false},
		{"made-up code", func(s *Service, _ *time.Time) ConsentReply {
			return ConsentReply{State: stateOf(t, s, orgB), Code: "made-up"}
		}, nil, ErrConsent, true},
		{"Entra ID down", func(s *Service, _ *time.Time) ConsentReply {
			return ConsentReply{State: stateOf(t, s, orgB), Code: "good-code"}
		}, func(_ *Service, r *fakeRedeemer) { r.err = &kms.Error{Kind: kms.KindTransient, Op: "token"} }, ErrIdentityUnavailable, true},
		{"token names no tenant id", func(s *Service, _ *time.Time) ConsentReply {
			return ConsentReply{State: stateOf(t, s, orgB), Code: "good-code"}
		}, func(_ *Service, r *fakeRedeemer) { r.tenants["good-code"] = "organizations" }, ErrConsent, true},
		{"org deleted since", func(s *Service, _ *time.Time) ConsentReply {
			st := stateOf(t, s, orgB)
			if err := s.DeleteOrg(ctx, orgB, orgB); err != nil {
				t.Fatal(err)
			}
			return ConsentReply{State: st, Code: "good-code"}
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

func TestNoOwnershipNoLink(t *testing.T) {
	s, _ := newService(t)
	if link, err := s.ConsentLink(orgA); link != "" || err != nil {
		t.Errorf("ConsentLink without an app = %q, %v; want none", link, err)
	}
	_, err := s.CompleteConsent(context.Background(), ConsentReply{State: "v1.x.y", Code: "c"})
	wantProblem(t, "CompleteConsent without an app", err, ErrConsent)
}
