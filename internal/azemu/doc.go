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
//     expiry, or a change past its propagation delay, without sleeping.
//     Certificates use the wall clock.
//   - State lives in memory. With Options.StateFile it is loaded at start and
//     written (atomically) after every mutation, including the CA and token
//     signing key, so a restarted emulator keeps trusting clients' CA files.
//     Fault injection, throttle counters, statistics, the propagation delay
//     and changes still propagating are not persisted.
//
// # Authority (Entra ID)
//
//	GET  /{tenant}/v2.0/.well-known/openid-configuration
//	GET  /{tenant}/discovery/v2.0/keys           (JWKS)
//	POST /{tenant}/oauth2/v2.0/token             (client_credentials, authorization_code)
//	GET  /{tenant}/v2.0/adminconsent             (HTML consent page; not under "common")
//	POST /{tenant}/v2.0/adminconsent             (Accept / Cancel; not under "common")
//	GET  /{tenant}/oauth2/v2.0/authorize         (consent page, response_type=code)
//	POST /{tenant}/oauth2/v2.0/authorize         (Accept / Cancel)
//	GET  /common/oauth2/authorize                (classic form; asks for the tenant)
//
// A client-credentials token is issued only when the tenant exists, the app
// is registered, the app has a service principal in that tenant (admin
// consent was granted) and the secret matches and has not expired. Access
// tokens carry aud (the requested resource), iss
// "https://sts.windows.net/{tenant}/", tid, oid (the service principal's
// object id in that tenant), appid and a one-hour exp. The scope must be
// "{resource}/.default" for the vault resource or a registered app (its
// client id or "api://{clientId}"); any other resource is answered 400
// invalid_resource AADSTS500011.
//
// Consent pages under "organizations" or "common" ask for the tenant id in
// a form field: the emulator's stand-in for an administrator signing in to
// their directory; the v2 admin-consent endpoint refuses "common" with an
// AADSTS90130 error page (Entra ID does not take "common" there; its exact
// answer is unverified). Accept adds the app's service principal to that
// tenant. The admin-consent endpoint redirects with admin_consent=True,
// tenant and state, and Cancel with admin_consent=True,
// error=consent_required, error_description AADSTS65004 and state; the v2
// authorization endpoint (response_type=code, as used with
// prompt=admin_consent) redirects with code, state and session_state only,
// and Cancel with error=access_denied, AADSTS65004 and state.
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
// The order of checks on each request is:
//
//  1. injected fault (SetVaultFault);
//  2. api-version: missing, or not one the vault accepts, is 400
//     BadParameter naming it. A vault accepts DefaultAPIVersions (7.0-7.6,
//     the previews azkeys sent, and 2025-07-01, which azkeys v1.5.0 sends)
//     unless Vault.APIVersions (SetAPIVersions) lists fewer, standing for a
//     cloud that lags (a sovereign cloud, Azure Stack Hub);
//  3. authentication (401 with the challenge);
//  4. the route (404 NotFound / 405 for an unknown operation);
//  5. throttling: 429 Throttled, no Retry-After unless the vault's switch
//     asks for one (Throttle.RetryAfter);
//  6. firewall (403 ForbiddenByFirewall);
//  7. RBAC (403 ForbiddenByRbac), as of the propagation delay;
//  8. the key's own state: 404 KeyNotFound; a disabled key refuses
//     unwrapKey, decrypt and sign with 403 KeyDisabled but still answers
//     GET (attributes.enabled false), wrapKey, encrypt and verify; an
//     operation missing from key_ops is 403 KeyOperationForbidden; outside
//     nbf/exp wrapKey, encrypt and sign are 403 (innererror KeyNotYetValid
//     or KeyExpired, the emulator's codes) while unwrapKey, decrypt and
//     verify work; then 400 BadParameter for bad input.
//
// Authentication comes before the firewall because Azure's
// ForbiddenByFirewall message names the caller (appid, oid, iss), which it
// can only know from a validated token.
//
// # Switches
//
//   - Options.PropagationDelay / SetPropagationDelay (default 0): role
//     assignments and removals reach the data plane, and consent grants and
//     revocations the token endpoint, only after the delay, as in Azure
//     where this takes minutes. The admin view shows changes at once.
//   - Throttle.RetryAfter (SetVaultThrottle): a throttled vault's 429 carries
//     Retry-After, which Key Vault's was not seen to.
//   - Vault.APIVersions (SetAPIVersions): the vault's accepted api-versions.
//
// # Deliberate differences from Azure
//
// For the sake of tests, or where Azure's answer is not known:
//
//   - Vault names of 1-24 characters are accepted (Azure wants 3-24); soft
//     delete and purge protection can be switched off again with
//     UpdateVault.
//   - Only RSA keys exist; RSA1_5 is refused.
//   - Throttling is one fixed window per vault over every authenticated
//     request, not Azure's per-operation-type limits.
//   - Access policies do not exist (only RBAC), so ForbiddenByPolicy is
//     never answered; nor are disabled apps or service principals
//     (AADSTS7000112).
//   - Unverified answers are the emulator's choice: the api-version
//     messages, the nbf/exp innererror codes and messages, the 401 texts
//     for an expired or not yet valid token, the status of AADSTS500011
//     (400), and the /common admin-consent refusal (AADSTS90130).
//   - AADSTS500011 names the tenant by its id (Entra ID uses its name).
//   - The propagation delay is one figure for roles and consent; Azure's
//     varies, and a restarted emulator applies changes on their way at once.
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
//	GET    /admin/propagation                           -> {"delayMs"}
//	PUT    /admin/propagation                           {"delayMs"} (0 = at once)
//	GET    /admin/tenants/{tenant}/consents/{clientId}  -> {"principalObjectId"}
//	POST   /admin/tenants/{tenant}/consents/{clientId}  grant -> {"principalObjectId"}
//	DELETE /admin/tenants/{tenant}/consents/{clientId}  revoke
//	POST   /admin/vaults                                Vault
//	GET    /admin/vaults/{vault}                        VaultInfo
//	PATCH  /admin/vaults/{vault}                        VaultPatch (e.g. {"apiVersions":["7.0","7.1","7.2"]}; [] = default)
//	DELETE /admin/vaults/{vault}
//	POST   /admin/vaults/{vault}/recover
//	POST   /admin/vaults/{vault}/purge
//	POST   /admin/vaults/{vault}/roles                  {"principalObjectId","role"}
//	DELETE /admin/vaults/{vault}/roles                  {"principalObjectId","role"}
//	PUT    /admin/vaults/{vault}/throttle               {"limit","windowMs","retryAfter"}
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
