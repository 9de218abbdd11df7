package auth

import (
	"crypto/subtle"
	"slices"
	"time"
)

// Permissions carried per org in the "orgs" claim.
const (
	PermManageCMK = "manage_customer_managed_key" // "Manage Customer Managed Key"
	PermDataRead  = "data_read"
	PermDataWrite = "data_write"
)

// Request headers every API call carries.
const (
	HeaderAPIKey = "x-api-key"
	HeaderOrgID  = "x-gw-ims-org-id"
)

// Claims are the verified contents of a token.
type Claims struct {
	Subject  string
	Issuer   string
	Audience string
	// Orgs maps an org id to the permissions the caller holds in it
	// (JSON claim "orgs"). An org present with no permissions is held but
	// grants nothing.
	Orgs map[string][]string
	// ClientID is the JSON claim "client_id"; it should equal the x-api-key
	// header, which callers check with CheckAPIKey.
	ClientID string
	// AppID is the calling application of a Microsoft Entra access token
	// (claim appid, or azp in v2.0 tokens); TenantID its tid.
	AppID    string
	TenantID string

	IssuedAt, NotBefore, ExpiresAt time.Time
}

// HoldsOrg reports whether the token lists org. Org ids are compared exactly
// (case-sensitive).
func (c *Claims) HoldsOrg(org string) bool {
	if c == nil || org == "" {
		return false
	}
	_, ok := c.Orgs[org]
	return ok
}

// Can reports whether the token grants perm in org.
func (c *Claims) Can(org, perm string) bool {
	if !c.HoldsOrg(org) || perm == "" {
		return false
	}
	return slices.Contains(c.Orgs[org], perm)
}

// CheckAPIKey checks the x-api-key header value against the token's
// client_id. It returns a *TokenError wrapping ErrAPIKeyMismatch on failure.
func (c *Claims) CheckAPIKey(apiKey string) error {
	if apiKey == "" {
		return tokenErr(ErrAPIKeyMismatch, "missing "+HeaderAPIKey+" header")
	}
	if c == nil || c.ClientID == "" {
		return tokenErr(ErrAPIKeyMismatch, "token has no client_id claim")
	}
	if subtle.ConstantTimeCompare([]byte(apiKey), []byte(c.ClientID)) != 1 {
		return tokenErr(ErrAPIKeyMismatch, HeaderAPIKey+" header does not match the token's client_id")
	}
	return nil
}
