package control

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/cmk-project/cmk/internal/consent"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/preflight"
	"github.com/cmk-project/cmk/internal/store"
)

// CodeRedeemer exchanges the authorization code of an admin-consent
// redirect for the Azure tenant the administrator signed in to (the ID
// token's tid). *azurekv.Provider implements it; its errors are *kms.Error.
type CodeRedeemer interface {
	RedeemConsentCode(ctx context.Context, code, redirectURI string) (tenant string, err error)
}

// Ownership is what binds an org to the Azure tenant that owns its keys
// (docs/security.md, "Key ownership"): each org's consent link, and the
// consent callback that records the tenant whose administrator accepted it.
// A zero Ownership binds nothing: without a Signer there is no link.
type Ownership struct {
	// Signer seals the org into its consent link's state and opens the
	// state when the consent redirect comes back.
	Signer *consent.Signer
	// AuthorizeURL is the consent link's endpoint, ClientID the platform's
	// app.
	AuthorizeURL, ClientID string
	// CallbackURL is where the consent redirect comes back (the service's
	// public URL and the callback route); it is known once the service
	// listens.
	CallbackURL func() string
	// Redeemer exchanges the redirect's code for the tenant.
	Redeemer CodeRedeemer
	// Tenants finds the tenant of a key's vault for the key_owner check.
	Tenants preflight.TenantFinder
}

// ConsentLink returns org's admin-consent link: the authorization endpoint
// with the org sealed into its state and the redirect back to the consent
// callback. Every call seals a fresh state (valid consent.DefaultTTL). It
// returns "" when the service has no Azure app to consent to.
func (s *Service) ConsentLink(org string) (string, error) {
	o := s.Ownership
	if o.Signer == nil || o.ClientID == "" || o.CallbackURL == nil {
		return "", nil
	}
	state, err := o.Signer.Seal(org)
	if err != nil {
		return "", err
	}
	return consent.Link(o.AuthorizeURL, o.ClientID, o.CallbackURL(), state)
}

// BoundTenants lists the Azure tenants org is bound to.
func (s *Service) BoundTenants(ctx context.Context, org string) ([]string, error) {
	return s.Store.OrgTenants(ctx, org)
}

// ConsentReply is what the consent redirect brings back: the state of the
// link, and the authorization code, or Entra ID's error.
type ConsentReply struct {
	State            string
	Code             string
	Error            string
	ErrorDescription string
}

// Binding is an org bound to a tenant by a completed consent.
type Binding struct {
	OrgID    string
	TenantID string
	New      bool // false when the org was already bound to the tenant
}

// CompleteConsent records the tenant whose administrator accepted an org's
// consent link. The org comes from the link's sealed state, never from the
// request; the tenant from the ID token the redirect's authorization code is
// exchanged for, never from the redirect's own parameters (anyone can put a
// tenant id in a URL). Nothing is recorded unless both check out. Failures
// are Problems for ErrConsent, ErrNotFound (the org is gone) or
// ErrIdentityUnavailable (Entra ID could not be asked; try again).
func (s *Service) CompleteConsent(ctx context.Context, in ConsentReply) (*Binding, error) {
	o := s.Ownership
	if o.Signer == nil || o.Redeemer == nil || o.CallbackURL == nil {
		return nil, problem(ErrConsent, "Consent is not set up", "This service has no Azure app configured, so no consent can be confirmed; nothing was recorded.",
			"Ask the platform operator to configure the platform's Azure app.")
	}
	org, _, err := o.Signer.Open(in.State)
	switch {
	case errors.Is(err, consent.ErrExpired):
		return nil, problem(ErrConsent, "Consent link expired", "The consent link this answer belongs to has expired; nothing was recorded.",
			"Get a fresh consent link (applicationRedirectUrl from the app-registration API) and open it again.")
	case err != nil:
		return nil, problem(ErrConsent, "Not a consent link of this platform", "The answer does not carry a consent state this service issued; nothing was recorded.",
			"Open your org's consent link (applicationRedirectUrl from the app-registration API).")
	}
	if in.Error != "" {
		return nil, problem(ErrConsent, "Consent not given", fmt.Sprintf("Microsoft Entra ID answered %s; nothing was recorded for org %s.", entraError(in.Error, in.ErrorDescription), org),
			"Open the consent link again as an administrator of the Azure tenant that owns your key vault, and select Accept.")
	}
	if in.Code == "" {
		return nil, problem(ErrConsent, "No authorization code", fmt.Sprintf("The answer carries no authorization code; nothing was recorded for org %s.", org),
			"Open the consent link again; Microsoft Entra ID adds the code when an administrator accepts.")
	}
	tenant, err := o.Redeemer.RedeemConsentCode(ctx, in.Code, o.CallbackURL())
	if err != nil {
		if kms.KindOf(err).Transient() {
			return nil, problem(ErrIdentityUnavailable, "Microsoft Entra ID unavailable", "The consent could not be confirmed with Microsoft Entra ID just now; nothing was recorded.",
				"Open the consent link again in a few minutes.")
		}
		s.log().Warn("consent not confirmed", "org", org, "err", err)
		detail := "Microsoft Entra ID did not confirm the sign-in"
		var ke *kms.Error
		if errors.As(err, &ke) && ke.Code != "" {
			detail += " (" + entraError(ke.Code, ke.InnerCode) + ")"
		}
		return nil, problem(ErrConsent, "Consent not confirmed", detail+"; nothing was recorded for org "+org+".",
			"Open the consent link again and accept as an administrator of the Azure tenant that owns your key vault. Each answer can be used once, within minutes.")
	}
	tid, ok := consent.TenantID(tenant)
	if !ok {
		return nil, problem(ErrConsent, "Consent not confirmed", "Microsoft Entra ID's answer names no tenant id; nothing was recorded.", "Open the consent link again.")
	}
	created, err := s.Store.BindTenant(ctx, org, tid)
	if errors.Is(err, store.ErrNotFound) {
		return nil, problem(ErrNotFound, "Org not found", fmt.Sprintf("Org %s no longer exists; nothing was recorded.", org),
			"Get a fresh consent link from the app-registration API of the org.")
	}
	if err != nil {
		return nil, err
	}
	s.log().Info("org bound to Azure tenant by admin consent", "org", org, "tenant", tid, "new", created)
	return &Binding{OrgID: org, TenantID: tid, New: created}, nil
}

var (
	entraErrorName = regexp.MustCompile(`^[a-z_]{1,64}$`)
	aadstsCode     = regexp.MustCompile(`AADSTS\d{1,9}`)
)

// entraError names an Entra ID error for a person: its error name and
// AADSTS code when they have their documented shape, nothing else. The
// redirect's text is not repeated: anyone can write a link whose
// error_description says whatever they like.
func entraError(name, description string) string {
	if !entraErrorName.MatchString(name) {
		name = "an error"
	}
	if code := aadstsCode.FindString(description); code != "" {
		return name + " " + code
	}
	return name
}
