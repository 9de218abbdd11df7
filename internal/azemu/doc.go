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
//     "{vault}.{suffix}" reach the Key Vault data plane of that vault,
//     "{hsm}.{HSM suffix}" that of a Managed HSM; every other host reaches
//     the authority and the admin API. The server certificate also names
//     login.microsoftonline.com, where MSAL sends instance discovery; the
//     emulator's transports route that host to the listener.
//   - The cryptography is real: RSA keys are crypto/rsa keys (wrap and
//     encrypt with RSA-OAEP-256 or RSA-OAEP, sign with RS256/384/512 and
//     PS256/384/512); EC keys on P-256, P-384 and P-521 are crypto/ecdsa
//     keys, and P-256K (secp256k1) has math/big arithmetic of its own, not
//     constant time, fit for an emulator only; ES256, ES256K, ES384 and ES512
//     signatures are JWS r||s. oct keys (Managed HSM) are AES keys for
//     A128/192/256 KW, GCM, CBC and CBCPAD. Tokens are RS256 JWTs signed by
//     the emulator and verified on every vault request.
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
//	GET  /common/discovery/instance              (MSAL instance discovery)
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
// Instance discovery (api-version 1.1, as MSAL calls it for an authority
// it does not know) answers for the emulator's own host only: the
// tenant_discovery_endpoint of the tenant in authorization_endpoint and
// metadata whose preferred_network, preferred_cache and only alias are the
// emulator's host. Any other authority gets 400 invalid_instance
// (AADSTS50049), so the emulator never sends a client elsewhere. A
// ClientSecretCredential with default options therefore works.
//
// # Key Vault data plane
//
// Vault hosts are "{vault}.{suffix}" (default suffix "vault.azure.localhost").
// The 401 challenge names the authority "{URL}/{tenant}" and the resource
// "https://{suffix}", which satisfies azkeys' challenge-resource check because
// every vault host ends in "."+suffix; tokens must therefore have
// aud "https://{suffix}". Supported: get key (newest or a version), list keys,
// list versions (paged, opaque nextLink), create (RSA, RSA-HSM, EC, EC-HSM;
// the -HSM types need a premium vault), import (PUT /keys/{name} with a JSON
// web key and its private parts, checked for consistency), rotate, update
// (PATCH), delete, deleted-key get/list/recover/purge (recoveryId,
// deletedDate, scheduledPurgeDate), backup and restore, rotation policy GET
// (the default policy, Notify 30 days before expiry, when none was set) and
// PUT (validated; its expiryTime dates versions made by rotate), wrapkey,
// unwrapkey, encrypt, decrypt, sign, verify.
//
// A backup is an opaque blob: the key with all its versions sealed with
// AES-256-GCM under a key derived from the emulator's signing key, bound to
// the tenant and the kind of vault it came from. Only this emulator (or one
// restarted from its state file) restores it, only into a vault (or HSM) of
// the same tenant, and restore answers 409 when the name is live or deleted.
//
// Deletes and recovers run in the background as in Azure when
// Options.KeyStateDelay is set: after DELETE the key is gone at once but
// GET /deletedkeys/{name} answers 404 (and the deleted-key list omits it)
// until the delay has passed; after a recover the key answers 404 until
// then. Zero, the default, settles at once.
//
// # Managed HSM
//
// CreateManagedHSM makes a Managed HSM served on "{hsm}.{HSM suffix}"
// (default suffix "managedhsm.azure.localhost"). Its challenge names the
// resource "https://{HSM suffix}" (azkeys checks it as for vaults) and its
// tokens need that audience; a vault token is refused, and an HSM does not
// answer on a vault host nor a vault on an HSM host. Every key is
// HSM-protected: RSA, EC and oct requests become RSA-HSM, EC-HSM and oct-HSM.
// Soft delete is always on; purge protection is an HSM property that can be
// switched on and never off; recoveryLevel follows the vault rules
// (Recoverable+Purgeable, Recoverable, Customized... under 90 days).
// POST /rng returns random bytes (1-128 per call). Access is local RBAC:
// AssignHSMRole grants a built-in role at scope "/" (or "/keys", all keys)
// or "/keys/{name}" (that key only), with the data actions Azure gives it:
//
//	Managed HSM Crypto User                     keys: read, create, import, update, rotate, delete,
//	                                            backup, restore, encrypt/decrypt, wrap/unwrap,
//	                                            sign/verify; deleted keys: read; random bytes
//	Managed HSM Crypto Officer                  keys: read, create, import, update, rotate, delete,
//	                                            backup, restore; deleted keys: read, recover, purge
//	Managed HSM Crypto Service Encryption User  keys: read, wrap, unwrap
//	Managed HSM Crypto Auditor                  keys and deleted keys: read
//	Managed HSM Administrator                   role management only; no key access
//
// Vault roles (AssignRole) are not honoured on an HSM.
//
// The order of checks on each request is:
//
//  1. injected faults: a connection reset (SetVaultReset), then the delay
//     and status of SetVaultFault;
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
//   - Vaults and Managed HSMs share one name space; vault roles (AssignRole)
//     are not honoured on an HSM.
//   - Not provided: key release (no attestation service; release policies
//     and the exportable flag are stored and shown, never evaluated), key
//     attestation, automatic rotation by a policy's lifetime actions (the
//     policy is stored; rotate is explicit), RSA1_5, ECDH and HSM-wide
//     backup or security domains.
//   - The texts of Managed HSM errors are the vault ones with HSM action
//     names (unverified).
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
//	PUT    /admin/vaults/{vault}/reset                  {"reset"} (true: every request's connection is reset)
//	POST   /admin/vaults/{vault}/keys/{key}             KeyOptions -> {"version"}
//	GET    /admin/vaults/{vault}/keys/{key}             KeyInfo
//	PATCH  /admin/vaults/{vault}/keys/{key}             KeyUpdate
//	DELETE /admin/vaults/{vault}/keys/{key}
//	POST   /admin/vaults/{vault}/keys/{key}/rotate      -> {"version"}
//	POST   /admin/vaults/{vault}/keys/{key}/recover
//	POST   /admin/vaults/{vault}/keys/{key}/purge
//	POST   /admin/managedhsms                           ManagedHSM
//	GET    /admin/managedhsms/{hsm}                     VaultInfo
//	PATCH  /admin/managedhsms/{hsm}                     {"purgeProtection":true} (false -> 403)
//	POST   /admin/managedhsms/{hsm}/roles               {"principalObjectId","role","scope"}
//	DELETE /admin/managedhsms/{hsm}/roles               {"principalObjectId","role","scope"}
//
// A Managed HSM's keys, deletion, recovery and purge use the /admin/vaults
// routes with the HSM's name.
//
//	POST   /admin/vaults/{vault}/eventSubscriptions     EventSubscription (validation handshake) -> EventSubscription
//	GET    /admin/vaults/{vault}/eventSubscriptions     -> [EventSubscription]
//	GET    /admin/vaults/{vault}/eventSubscriptions/{name}
//	DELETE /admin/vaults/{vault}/eventSubscriptions/{name}
//	GET    /admin/eventgrid/validate/{vault}/{name}?code=  the validationUrl: validates by hand
//	PUT    /admin/eventgrid/delivery                    EventDelivery {"stopped","delayMs"}
//	POST   /admin/eventgrid/scan                        publish due KeyNearExpiry/KeyExpired now
//	GET    /admin/eventgrid/stats                       EventStats
//
// # Event Grid
//
// Each vault publishes Microsoft.KeyVault.KeyNewVersionCreated (a key's
// first version too), KeyNearExpiry (30 days before the newest version's
// exp), KeyExpired and VaultAccessPolicyChanged (a role assigned or
// removed) to its event subscriptions, as a JSON array of one event in the
// Event Grid schema (id, topic
// "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{vault}",
// subject, eventType, eventTime, data {Id, VaultName, ObjectType,
// ObjectName, Version, NBF, EXP}, dataVersion, metadataVersion "1").
// Creating a subscription sends the endpoint a SubscriptionValidation
// request (header aeg-event-type) with data.validationCode and
// validationUrl; the subscription is validated when the answer is 200
// {"validationResponse": code} or its validationUrl is fetched, and gets
// nothing before. Every request carries "Authorization: Bearer" with an
// access token the emulator signs: iss "https://sts.windows.net/{tenantId}/"
// and tid of the subscription's tenant, aud its audience, appid Event
// Grid's (EventGridAppID). A delivery that does not answer 2xx is tried 4
// times with a doubling pause from 100 ms (Event Grid retries for up to a
// day; SetEventRetries). Expiry is checked every second on Options.Now
// (ScanKeyExpiry to check at once). Subscriptions are not persisted.
//
// AdminClient calls these endpoints from another process; errors it returns
// wrap ErrNotFound, ErrInvalid, ErrConflict or ErrForbidden like the Go API.
package azemu
