package control

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/consent"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/preflight"
	"github.com/cmk-project/cmk/internal/store"
)

// CodeRedeemer exchanges the authorization code of an admin-consent
// redirect, with the PKCE verifier of the link's challenge, for the Azure
// tenant the administrator signed in to (the ID token's tid).
// *azurekv.Provider implements it; its errors are *kms.Error, wrapping
// consent.ErrNotAdministrator when the code was redeemed but the user who
// signed in may not consent for the tenant.
type CodeRedeemer interface {
	RedeemConsentCode(ctx context.Context, code, redirectURI, verifier string) (tenant string, err error)
}

// ConsentLimiter admits a consent callback about to redeem a code, per org
// of its verified state and per client address, and caps the redemptions
// in flight. It returns the function that ends the redemption, or an error
// to answer as is (*ratelimit.Limits implements it: *ratelimit.Exceeded).
type ConsentLimiter interface {
	Consent(org, client string) (release func(), err error)
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
	// Limits admits the callbacks that redeem a code (nil: no limit).
	Limits ConsentLimiter
}

// ConsentLink returns org's admin-consent link: the authorization endpoint
// with the org sealed into its state and the redirect back to the consent
// callback, and the PKCE challenge of the state's verifier. Every call seals
// a fresh state (valid consent.DefaultTTL). It returns "" when the service
// has no Azure app to consent to. The link is a credential of the org while
// its state lives: it goes only into the live app-registration answer,
// never into anything stored.
func (s *Service) ConsentLink(org string) (string, error) {
	o := s.Ownership
	if o.Signer == nil || o.ClientID == "" || o.CallbackURL == nil {
		return "", nil
	}
	state, err := o.Signer.Seal(org)
	if err != nil {
		return "", err
	}
	return consent.Link(o.AuthorizeURL, o.ClientID, o.CallbackURL(), state, consent.Challenge(o.Signer.Verifier(state)))
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
	// Client is the address the callback came from, for its rate limit.
	Client string
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
// tenant id in a URL). The code is redeemed with the PKCE verifier of the
// state, so only a code issued for this very link redeems, and the token's
// user must hold a directory role that may consent for the whole tenant.
// A state binds once: after its code was redeemed it is refused.
//
// Nothing is recorded unless all of this checks out. Failures are Problems
// for ErrConsent (ErrConsentNotAdmin when the user who signed in is not
// such an administrator), ErrNotFound (the org is gone) or
// ErrIdentityUnavailable (Entra ID could not be asked; try again), or the
// error of Ownership.Limits when the callback is over its limit.
func (s *Service) CompleteConsent(ctx context.Context, in ConsentReply) (*Binding, error) {
	o := s.Ownership
	if o.Signer == nil || o.Redeemer == nil || o.CallbackURL == nil {
		return nil, problem(ErrConsent, "Consent is not set up", "This service has no Azure app configured, so no consent can be confirmed; nothing was recorded.",
			"Ask the platform operator to configure the platform's Azure app.")
	}
	org, expires, err := o.Signer.Open(in.State)
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
	if !consent.PlausibleCode(in.Code) {
		// Not sent to Entra ID: junk costs no call out.
		return nil, problem(ErrConsent, "Consent not confirmed", fmt.Sprintf("The answer's authorization code is not one Microsoft Entra ID issues; nothing was recorded for org %s.", org),
			"Open the consent link again and accept as an administrator of the Azure tenant that owns your key vault.")
	}
	stateID := consent.StateID(in.State)
	if used, err := s.Store.ConsentStateUsed(ctx, stateID); err != nil {
		return nil, err
	} else if used {
		return nil, linkUsed(org)
	}
	if o.Limits != nil {
		release, err := o.Limits.Consent(org, in.Client)
		if err != nil {
			s.log().Warn("consent callback refused by its rate limit", "org", org, "client", in.Client, "err", err)
			return nil, err
		}
		defer release()
	}
	tenant, err := o.Redeemer.RedeemConsentCode(ctx, in.Code, o.CallbackURL(), o.Signer.Verifier(in.State))
	if errors.Is(err, consent.ErrNotAdministrator) {
		// The code was good and is spent: so is the state.
		if _, err := s.Store.UseConsentState(ctx, stateID, expires); err != nil {
			return nil, err
		}
		s.log().Warn("consent by a user who may not consent for the tenant", "org", org, "err", err)
		return nil, problem(ErrConsentNotAdmin, "Consent not given by an administrator",
			"The account that signed in is not an administrator who may consent for its Azure tenant (Global Administrator, Privileged Role Administrator, Cloud Application Administrator or Application Administrator); nothing was recorded for org "+org+".",
			"An administrator of the Azure tenant that owns your key vault must open a fresh consent link (applicationRedirectUrl from the app-registration API) and accept.")
	}
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
	// Of two callbacks with the same state and two good codes, one binds.
	if fresh, err := s.Store.UseConsentState(ctx, stateID, expires); err != nil {
		return nil, err
	} else if !fresh {
		return nil, linkUsed(org)
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
	// The callback carries no platform token: the actor is the consenting
	// tenant's administrator, known only by tenant.
	s.AuditLog.Action(audit.WithActor(ctx, audit.TenantAdminActor(tid)), org, audit.OpTenantBind,
		"ok", fmt.Sprintf("tenant %s (new binding: %t)", tid, created))
	return &Binding{OrgID: org, TenantID: tid, New: created}, nil
}

// linkUsed refuses a state that was used before.
func linkUsed(org string) error {
	return problem(ErrConsent, "Consent link already used", fmt.Sprintf("This consent link was used already; a link binds once. Nothing was recorded for org %s.", org),
		"Get a fresh consent link (applicationRedirectUrl from the app-registration API) and open it again.")
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
