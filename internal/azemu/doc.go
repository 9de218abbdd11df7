// Package azemu is a local stand-in for the two Azure services cmk talks to:
// an Entra ID (Azure AD) authority that issues client-credential tokens, and
// Azure Key Vault's keys data plane. It exists for development, demos and
// tests, and is built so that the official Go SDK clients (azidentity and
// azkeys) work against it without code changes: only the HTTP transport
// (which trusts the emulator's CA and routes vault host names to it) and the
// authority host differ from a production setup.
//
// # What it guarantees
//
//   - One HTTPS listener serves everything. Requests whose Host is
//     "{vault}.{suffix}" reach the Key Vault data plane of that vault; every
//     other host reaches the authority and the admin API.
//   - The cryptography is real: keys are crypto/rsa keys, wrapKey/unwrapKey
//     use RSA-OAEP-256 (RSA-OAEP is also accepted), tokens are
//     RS256 JWTs signed by the emulator and verified on every vault request.
//   - Failures look like Azure's (as documented and observed for the real services):
//     same HTTP statuses, same JSON envelopes, same error and innererror
//     codes and, where known, the same message text. A deleted vault does not
//     answer at all: Transport reports a *net.DNSError ("no such host"), the
//     way a real deleted vault's name stops resolving.
//   - Time comes from Options.Now, so tests can move a token or key past its
//     expiry without sleeping. Certificates use the wall clock.
//   - State lives in memory. With Options.StateFile it is loaded at start and
//     written (atomically) after every mutation, including the CA and token
//     signing key, so a restarted emulator keeps trusting clients' CA files.
//     Fault injection, throttle counters and statistics are not persisted.
//
// # Authority (Entra ID)
//
//	GET  /{tenant}/v2.0/.well-known/openid-configuration
//	GET  /{tenant}/discovery/v2.0/keys           (JWKS)
//	POST /{tenant}/oauth2/v2.0/token             (client_credentials, authorization_code)
//	GET  /{tenant}/v2.0/adminconsent             (HTML consent page)
//	POST /{tenant}/v2.0/adminconsent             (Accept / Cancel)
//	GET  /{tenant}/oauth2/v2.0/authorize         (consent page, response_type=code)
//	POST /{tenant}/oauth2/v2.0/authorize         (Accept / Cancel)
//	GET  /common/oauth2/authorize                (classic form; asks for the tenant)
//
// A client-credentials token is issued only when the tenant exists, the app
// is registered, the app has a service principal in that tenant (admin
// consent was granted) and the secret matches and has not expired. Access
// tokens carry aud (the requested resource), iss
// "https://sts.windows.net/{tenant}/", tid, oid (the service principal's
// object id in that tenant), appid and a one-hour exp.
//
// Consent pages under "organizations" or "common" ask for the tenant id in
// a form field: the emulator's stand-in for an administrator signing in to
// their directory. Accept adds the app's service principal to that tenant.
// The admin-consent endpoint redirects with admin_consent=True, tenant and
// state; the v2 authorization endpoint (response_type=code, as used with
// prompt=admin_consent) redirects with code, state and session_state only.
// A code is redeemed once, within ten minutes, at the token endpoint
// ("organizations", "common" or the tenant that accepted) by the app with
// its secret and the same redirect_uri; the answer carries a v2.0 ID token
// (aud the app, iss "{URL}/{tenant}/v2.0", tid the tenant that accepted)
// and an access token. The redirect URI must be one the app registered
// (App.RedirectURI, App.RedirectURIs, AddRedirectURI).
//
// # Key Vault data plane
//
// Vault hosts are "{vault}.{suffix}" (default suffix "vault.azure.localhost").
// The 401 challenge names the authority "{URL}/{tenant}" and the resource
// "https://{suffix}", which satisfies azkeys' challenge-resource check because
// every vault host ends in "."+suffix; tokens must therefore have
// aud "https://{suffix}". Supported: get key (newest or a version), list keys,
// list versions (paged), create, rotate, update (PATCH), delete, deleted-key
// get/list/recover/purge, wrapkey, unwrapkey, encrypt, decrypt, sign, verify.
// The order of checks on each request is: injected fault, api-version,
// authentication (401), throttling (429), firewall (403), RBAC (403), then the
// key's own state (404/403/400). Authentication comes before the firewall
// because Azure's ForbiddenByFirewall message names the caller (appid, oid,
// iss), which it can only know from a validated token.
//
// Deliberate differences from Azure, for the sake of tests: vault names of
// 1-24 characters are accepted (Azure wants 3-24), soft delete and purge
// protection can be switched off again with UpdateVault, and only RSA keys
// exist. Throttling applies to every authenticated request of the vault.
//
// # Admin API
//
// JSON over the same listener, only on the emulator's own host (never on a
// vault host). Errors are {"error":{"code","message"}} with 400 (invalid),
// 403 (forbidden, e.g. purge protection), 404 (not found) or 409 (conflict).
//
//	GET    /admin/state                                 snapshot of everything (no secrets)
//	GET    /admin/stats                                 counters
//	GET    /admin/dns/{host}                            200 if host resolves, 404 if not
//	POST   /admin/tenants                               {"tenantId"}
//	POST   /admin/apps                                  App
//	PUT    /admin/token-fault                           {"status"} (0 = normal)
//	GET    /admin/tenants/{tenant}/consents/{clientId}  -> {"principalObjectId"}
//	POST   /admin/tenants/{tenant}/consents/{clientId}  grant -> {"principalObjectId"}
//	DELETE /admin/tenants/{tenant}/consents/{clientId}  revoke
//	POST   /admin/vaults                                Vault
//	GET    /admin/vaults/{vault}                        VaultInfo
//	PATCH  /admin/vaults/{vault}                        VaultPatch
//	DELETE /admin/vaults/{vault}
//	POST   /admin/vaults/{vault}/recover
//	POST   /admin/vaults/{vault}/purge
//	POST   /admin/vaults/{vault}/roles                  {"principalObjectId","role"}
//	DELETE /admin/vaults/{vault}/roles                  {"principalObjectId","role"}
//	PUT    /admin/vaults/{vault}/throttle               {"limit","windowMs"}
//	PUT    /admin/vaults/{vault}/fault                  {"status","delayMs"}
//	POST   /admin/vaults/{vault}/keys/{key}             KeyOptions -> {"version"}
//	GET    /admin/vaults/{vault}/keys/{key}             KeyInfo
//	PATCH  /admin/vaults/{vault}/keys/{key}             KeyUpdate
//	DELETE /admin/vaults/{vault}/keys/{key}
//	POST   /admin/vaults/{vault}/keys/{key}/rotate      -> {"version"}
//	POST   /admin/vaults/{vault}/keys/{key}/recover
//	POST   /admin/vaults/{vault}/keys/{key}/purge
//
// AdminClient calls these endpoints from another process; errors it returns
// wrap ErrNotFound, ErrInvalid, ErrConflict or ErrForbidden like the Go API.
package azemu
