package azemu

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// aadError is the body Entra ID returns from its token and discovery
// endpoints on failure (as Entra ID does).
type aadError struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	ErrorCodes       []int  `json:"error_codes"`
	Timestamp        string `json:"timestamp"`
	TraceID          string `json:"trace_id"`
	CorrelationID    string `json:"correlation_id"`
	ErrorURI         string `json:"error_uri,omitempty"`
}

func (e *Emulator) writeAADError(w http.ResponseWriter, r *http.Request, status int, errName string, code int, msg string) {
	ts := e.now().UTC().Format("2006-01-02 15:04:05Z")
	trace := newID()
	corr := r.Header.Get("client-request-id")
	if corr == "" {
		corr = newID()
	}
	desc := fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s", code, msg, trace, corr, ts)
	writeJSON(w, status, aadError{Error: errName, ErrorDescription: desc, ErrorCodes: []int{code},
		Timestamp: ts, TraceID: trace, CorrelationID: corr,
		ErrorURI: fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", code)})
}

// secretExpiredMsg is AADSTS7000222's text (azure-errors.md section 13).
func secretExpiredMsg(clientID string) string {
	return fmt.Sprintf("The provided client secret keys for app '%s' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.", clientID)
}

func tenantNotFoundMsg(t string) string {
	return fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.", t)
}

func appNotInTenantMsg(clientID, tenant string) string {
	return fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.", clientID, tenant)
}

func (e *Emulator) tenant(id string) *tenantState {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st.Tenants[strings.ToLower(id)]
}

func (e *Emulator) handleOpenIDConfig(w http.ResponseWriter, r *http.Request) {
	tid := r.PathValue("tenant")
	t := e.tenant(tid)
	if t == nil {
		e.writeAADError(w, r, http.StatusBadRequest, "invalid_request", 90002, tenantNotFoundMsg(tid))
		return
	}
	base := e.url + "/" + t.ID
	writeJSON(w, http.StatusOK, map[string]any{
		"token_endpoint":                        base + "/oauth2/v2.0/token",
		"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
		"issuer":                                base + "/v2.0",
		"jwks_uri":                              base + "/discovery/v2.0/keys",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post"},
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"grant_types_supported":                 []string{"client_credentials"},
		"tenant_region_scope":                   "NA",
		"cloud_instance_name":                   "azemu.localhost",
	})
}

func (e *Emulator) handleJWKS(w http.ResponseWriter, r *http.Request) {
	pub := e.signKey.PublicKey
	writeJSON(w, http.StatusOK, map[string]any{"keys": []map[string]any{{
		"kty": "RSA", "use": "sig", "alg": "RS256", "kid": e.signKID, "x5t": e.signKID,
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}})
}

func (e *Emulator) handleToken(w http.ResponseWriter, r *http.Request) {
	tid := r.PathValue("tenant")
	fail := func(status int, errName string, code int, msg string) {
		e.mu.Lock()
		e.stats.TokenFailures++
		e.mu.Unlock()
		e.writeAADError(w, r, status, errName, code, msg)
	}
	e.mu.Lock()
	fault := e.tokenFault
	e.mu.Unlock()
	if fault != 0 {
		// Code and text chosen by the emulator (Azure's exact answer varies).
		fail(fault, "temporarily_unavailable", 90033, "A transient error has occurred. Please try again.")
		return
	}
	if err := r.ParseForm(); err != nil {
		fail(http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
		return
	}
	if r.PostForm.Get("grant_type") == "authorization_code" {
		e.redeemCode(w, r, tid, fail)
		return
	}
	t := e.tenant(tid)
	if t == nil {
		fail(http.StatusBadRequest, "invalid_request", 90002, tenantNotFoundMsg(tid))
		return
	}
	if gt := r.PostForm.Get("grant_type"); gt != "client_credentials" {
		fail(http.StatusBadRequest, "unsupported_grant_type", 70003, fmt.Sprintf("The app requested an unsupported grant type '%s'. The emulator supports client_credentials and authorization_code only.", gt))
		return
	}
	clientID := r.PostForm.Get("client_id")
	if clientID == "" {
		fail(http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
		return
	}
	e.mu.Lock()
	app := e.st.Apps[strings.ToLower(clientID)]
	var appCopy App
	if app != nil {
		appCopy = *app
	}
	oid := e.effectiveServicePrincipalLocked(t, clientID) // after the propagation delay
	e.mu.Unlock()
	if app == nil || oid == "" {
		fail(http.StatusBadRequest, "unauthorized_client", 700016, appNotInTenantMsg(clientID, t.ID))
		return
	}
	secret := r.PostForm.Get("client_secret")
	if secret == "" {
		fail(http.StatusUnauthorized, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
		return
	}
	if secret != appCopy.ClientSecret {
		fail(http.StatusUnauthorized, "invalid_client", 7000215, fmt.Sprintf("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", appCopy.ClientID))
		return
	}
	now := e.now()
	if !appCopy.SecretExpires.IsZero() && !now.Before(appCopy.SecretExpires) {
		fail(http.StatusUnauthorized, "invalid_client", 7000222, secretExpiredMsg(appCopy.ClientID))
		return
	}
	scope := strings.Fields(r.PostForm.Get("scope"))
	resource := ""
	for _, s := range scope {
		if strings.HasSuffix(s, "/.default") {
			resource = strings.TrimSuffix(s, "/.default")
			break
		}
	}
	if resource == "" {
		fail(http.StatusBadRequest, "invalid_scope", 1002012, fmt.Sprintf("The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", r.PostForm.Get("scope")))
		return
	}
	e.mu.Lock()
	known := e.knownResourceLocked(resource)
	e.mu.Unlock()
	if !known {
		fail(http.StatusBadRequest, "invalid_resource", 500011, resourceNotFoundMsg(resource, t.ID))
		return
	}
	tok, err := e.issueToken(t.ID, appCopy.ClientID, oid, resource, now)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	e.mu.Lock()
	e.stats.TokensIssued++
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type":     "Bearer",
		"expires_in":     int(e.tokenLifetime().Seconds()),
		"ext_expires_in": int(e.tokenLifetime().Seconds()),
		"access_token":   tok,
	})
}

func (e *Emulator) tokenLifetime() time.Duration {
	if e.opts.TokenLifetime > 0 {
		return e.opts.TokenLifetime
	}
	return time.Hour
}

func stsIssuer(tenant string) string { return "https://sts.windows.net/" + tenant + "/" }

// IssueToken mints an access token as the token endpoint would, without
// checking consent or secrets (handy for negative tests: wrong audience,
// wrong tenant, expired...).
func (e *Emulator) IssueToken(tenantID, clientID, objectID, resource string, now time.Time) (string, error) {
	return e.issueToken(tenantID, clientID, objectID, resource, now)
}

func (e *Emulator) issueToken(tenantID, clientID, oid, resource string, now time.Time) (string, error) {
	claims := jwt.MapClaims{
		"aud":      resource,
		"iss":      stsIssuer(tenantID),
		"iat":      now.Unix(),
		"nbf":      now.Add(-5 * time.Minute).Unix(),
		"exp":      now.Add(e.tokenLifetime()).Unix(),
		"appid":    clientID,
		"appidacr": "1",
		"idp":      stsIssuer(tenantID),
		"idtyp":    "app",
		"oid":      oid,
		"sub":      oid,
		"tid":      tenantID,
		"uti":      newVersionID()[:22],
		"ver":      "1.0",
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = e.signKID
	tok.Header["x5t"] = e.signKID
	return tok.SignedString(e.signKey)
}

// ---- admin consent ----

var consentTmpl = template.Must(template.New("consent").Parse(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Permissions requested - azemu</title>
<style>
body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#1b1b1b}
main{border:1px solid #8a8886;border-radius:4px;padding:1.5rem}
.err{color:#a4262c}
button{font-size:1rem;padding:.5rem 1.25rem;margin-right:.5rem;cursor:pointer}
button.primary{background:#0067b8;color:#fff;border:1px solid #0067b8}
button:focus{outline:3px solid #000;outline-offset:2px}
label{display:block;margin:.75rem 0 .25rem;font-weight:600}
input[type=text]{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box}
</style></head>
<body><main>
<p>Local Azure emulator sign-in (not Microsoft)</p>
{{if .Error}}<h1>Sorry, there is a problem</h1>
<p class="err" role="alert">{{.Error}}</p>
{{else}}<h1>Permissions requested</h1>
<p><strong>{{.AppName}}</strong> wants access to your organization{{if .Tenant}} (<code>{{.Tenant}}</code>){{end}}.</p>
<p>Accepting adds the app to your directory as a service principal. It can then be given roles on your key vaults.
You can remove it at any time.</p>
<ul><li>Client ID: <code>{{.ClientID}}</code></li>{{if .Scope}}<li>Scope: <code>{{.Scope}}</code></li>{{end}}</ul>
<form method="post" action="{{.Action}}">
{{if .AskTenant}}<label for="tenant">Your organization's tenant ID</label>
<input type="text" id="tenant" name="tenant" required autocomplete="off">{{end}}
<input type="hidden" name="client_id" value="{{.ClientID}}">
<input type="hidden" name="redirect_uri" value="{{.RedirectURI}}">
<input type="hidden" name="state" value="{{.State}}">
<input type="hidden" name="scope" value="{{.Scope}}">
<input type="hidden" name="response_type" value="{{.ResponseType}}">
<input type="hidden" name="prompt" value="{{.Prompt}}">
<input type="hidden" name="code_challenge" value="{{.CodeChallenge}}">
<input type="hidden" name="code_challenge_method" value="{{.CodeChallengeMethod}}">
<p><button class="primary" type="submit" name="action" value="accept">Accept</button>
<button type="submit" name="action" value="cancel">Cancel</button></p>
</form>{{end}}
</main></body></html>
`))

type consentView struct {
	Error, AppName, Tenant, ClientID, RedirectURI, State, Scope, ResponseType, Action string
	Prompt, CodeChallenge, CodeChallengeMethod                                        string
	AskTenant                                                                         bool
}

func consentTenant(r *http.Request) (tenant string, ask bool) {
	t := r.PathValue("tenant")
	if t == "" || strings.EqualFold(t, "common") || strings.EqualFold(t, "organizations") {
		return "", true
	}
	return t, false
}

func (e *Emulator) renderConsent(w http.ResponseWriter, status int, v consentView) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.WriteHeader(status)
	_ = consentTmpl.Execute(w, v)
}

// checkConsentRequest validates tenant, app and redirect URI; it returns an
// error text for the page, or "" and the app.
func (e *Emulator) checkConsentRequest(tenant string, askTenant bool, clientID, redirectURI string) (string, App) {
	if !askTenant && e.tenant(tenant) == nil {
		return "AADSTS90002: " + tenantNotFoundMsg(tenant), App{}
	}
	e.mu.Lock()
	a := e.st.Apps[strings.ToLower(clientID)]
	var app App
	if a != nil {
		app = *a
	}
	e.mu.Unlock()
	if a == nil {
		return fmt.Sprintf("AADSTS700016: Application with identifier '%s' was not found in the directory.", clientID), App{}
	}
	if redirectURI != "" && !app.allowsRedirect(redirectURI) {
		return fmt.Sprintf("AADSTS50011: The redirect URI '%s' specified in the request does not match the redirect URIs configured for the application '%s'.", redirectURI, clientID), App{}
	}
	return "", app
}

func (e *Emulator) handleConsentPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if refuseCommonAdminConsent(e, w, r, q.Get("client_id")) {
		return
	}
	tenant, ask := consentTenant(r)
	v := consentView{Tenant: tenant, AskTenant: ask, ClientID: q.Get("client_id"), RedirectURI: q.Get("redirect_uri"),
		State: q.Get("state"), Scope: q.Get("scope"), ResponseType: q.Get("response_type"), Action: r.URL.Path,
		Prompt: q.Get("prompt"), CodeChallenge: q.Get("code_challenge"), CodeChallengeMethod: q.Get("code_challenge_method")}
	msg, app := e.checkConsentRequest(tenant, ask, v.ClientID, v.RedirectURI)
	if msg == "" && isAuthorizeV2(r) && v.ResponseType != "code" {
		msg = fmt.Sprintf("AADSTS700054: response_type '%s' is not enabled for the application; the emulator's authorization endpoint answers with a code only.", v.ResponseType)
	}
	if msg == "" {
		msg = checkChallenge(v.CodeChallenge, v.CodeChallengeMethod)
	}
	if msg != "" {
		v.Error = msg
		e.renderConsent(w, http.StatusBadRequest, v)
		return
	}
	v.AppName = app.Name
	e.renderConsent(w, http.StatusOK, v)
}

// checkChallenge checks a PKCE challenge of an authorization request: none,
// or S256 (the emulator supports no other method). It returns an error text
// for the page, or "".
func checkChallenge(challenge, method string) string {
	switch {
	case challenge == "" && method == "":
		return ""
	case method != "S256":
		return fmt.Sprintf("AADSTS501491: Invalid code_challenge_method '%s'; the emulator supports S256 only.", method)
	case len(challenge) != 43:
		return "AADSTS501491: Invalid size of code_challenge parameter."
	}
	return ""
}

// isAuthorizeV2 reports whether r is for the v2 authorization endpoint,
// whose redirect carries a code and the state but no tenant (as Entra ID's
// does), unlike the v2 admin-consent endpoint.
func isAuthorizeV2(r *http.Request) bool {
	return strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/authorize")
}

func (e *Emulator) handleConsentPost(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	f := r.PostForm
	if refuseCommonAdminConsent(e, w, r, f.Get("client_id")) {
		return
	}
	tenant, ask := consentTenant(r)
	if ask {
		tenant = strings.TrimSpace(f.Get("tenant"))
	}
	v := consentView{Tenant: tenant, ClientID: f.Get("client_id"), RedirectURI: f.Get("redirect_uri"),
		State: f.Get("state"), Scope: f.Get("scope"), Action: r.URL.Path,
		Prompt: f.Get("prompt"), CodeChallenge: f.Get("code_challenge"), CodeChallengeMethod: f.Get("code_challenge_method")}
	msg, app := e.checkConsentRequest(tenant, false, v.ClientID, v.RedirectURI)
	if msg == "" {
		msg = checkChallenge(v.CodeChallenge, v.CodeChallengeMethod)
	}
	// role=member signs in as a plain member of the tenant instead of its
	// administrator (tests). A member cannot accept the admin-consent page,
	// but once the tenant consented, a sign-in without prompt=admin_consent
	// gives a member a code silently, as Entra ID does.
	member := f.Get("role") == "member"
	if msg == "" && member && f.Get("action") == "accept" {
		switch {
		case v.Prompt == "admin_consent":
			msg = fmt.Sprintf("AADSTS90094: Admin consent is required for the permissions requested by '%s'. Only an administrator of the tenant can accept.", app.Name)
		case !e.hasServicePrincipal(tenant, app.ClientID):
			msg = fmt.Sprintf("AADSTS65001: The user or administrator has not consented to use the application with ID '%s'. Ask an administrator of the tenant.", app.ClientID)
		}
	}
	if msg != "" {
		v.Error = msg
		e.renderConsent(w, http.StatusBadRequest, v)
		return
	}
	redirect := v.RedirectURI
	if redirect == "" {
		redirect = app.RedirectURI
	}
	out := url.Values{}
	if f.Get("action") == "accept" {
		if !member {
			if _, err := e.GrantConsent(tenant, app.ClientID); err != nil {
				v.Error = err.Error()
				e.renderConsent(w, http.StatusBadRequest, v)
				return
			}
		}
		tid := e.tenant(tenant).ID
		var code string
		if f.Get("response_type") == "code" {
			code = e.issueCode(authCode{tenant: tid, clientID: app.ClientID, redirectURI: v.RedirectURI, challenge: v.CodeChallenge, member: member})
		}
		switch {
		case isAuthorizeV2(r):
			if code == "" {
				v.Error = "AADSTS700054: the emulator's authorization endpoint answers with a code only (response_type=code)."
				e.renderConsent(w, http.StatusBadRequest, v)
				return
			}
			out.Set("code", code)
			out.Set("session_state", newID())
		default:
			out.Set("admin_consent", "True")
			out.Set("tenant", tid)
			if v.Scope != "" {
				out.Set("scope", v.Scope)
			}
			if code != "" {
				out.Set("code", code)
			}
		}
	} else {
		declined(out, r)
	}
	if v.State != "" {
		out.Set("state", v.State)
	}
	if redirect == "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "consent result: %s\n", out.Encode())
		return
	}
	sep := "?"
	if strings.Contains(redirect, "?") {
		sep = "&"
	}
	http.Redirect(w, r, redirect+sep+out.Encode(), http.StatusFound)
}

// ---- authorization codes ----

// codeLifetime is how long an authorization code can be redeemed (Entra ID
// documents about ten minutes).
const codeLifetime = 10 * time.Minute

// authCode is an authorization code issued by the consent page: for one app
// and redirect URI, in the tenant whose administrator (or, with
// role=member, a plain member) signed in, bound to the PKCE challenge of the
// request when it had one.
type authCode struct {
	tenant, clientID, redirectURI string
	challenge                     string // S256 PKCE challenge, "" without PKCE
	member                        bool   // signed in as a member, not the administrator
	expires                       time.Time
}

func (e *Emulator) issueCode(ac authCode) string {
	code := newVersionID() + newVersionID()
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	for c, ac := range e.codes {
		if !now.Before(ac.expires) {
			delete(e.codes, c)
		}
	}
	ac.clientID = strings.ToLower(ac.clientID)
	ac.expires = now.Add(codeLifetime)
	e.codes[code] = ac
	return code
}

// hasServicePrincipal reports whether the app was consented to in tenant.
func (e *Emulator) hasServicePrincipal(tenant, clientID string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.st.Tenants[strings.ToLower(tenant)]
	return t != nil && e.effectiveServicePrincipalLocked(t, clientID) != ""
}

// pkceChallenge is the S256 challenge of a verifier (RFC 7636).
func pkceChallenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// redeemCode is the token endpoint's authorization_code grant: the app's
// client id and secret, a code the consent page issued to that app (once,
// within codeLifetime), the same redirect URI, and the PKCE verifier of the
// code's challenge. The answer carries an ID token whose tid is the tenant
// whose user signed in, with wids naming Global Administrator for the
// administrator and only the User role for a member. The path's
// tenant may be "organizations" or "common", or must be that tenant.
func (e *Emulator) redeemCode(w http.ResponseWriter, r *http.Request, pathTenant string, fail func(int, string, int, string)) {
	f := r.PostForm
	clientID := f.Get("client_id")
	if clientID == "" {
		fail(http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
		return
	}
	e.mu.Lock()
	a := e.st.Apps[strings.ToLower(clientID)]
	var app App
	if a != nil {
		app = *a
	}
	e.mu.Unlock()
	if a == nil {
		fail(http.StatusBadRequest, "unauthorized_client", 700016, fmt.Sprintf("Application with identifier '%s' was not found in the directory.", clientID))
		return
	}
	now := e.now()
	switch secret := f.Get("client_secret"); {
	case secret == "":
		fail(http.StatusUnauthorized, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
		return
	case secret != app.ClientSecret:
		fail(http.StatusUnauthorized, "invalid_client", 7000215, fmt.Sprintf("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", app.ClientID))
		return
	case !app.SecretExpires.IsZero() && !now.Before(app.SecretExpires):
		fail(http.StatusUnauthorized, "invalid_client", 7000222, secretExpiredMsg(app.ClientID))
		return
	}
	code := f.Get("code")
	e.mu.Lock()
	ac, ok := e.codes[code]
	delete(e.codes, code) // a code is redeemed at most once, even when the request fails
	e.mu.Unlock()
	// Messages are the emulator's own; Entra ID answers invalid_grant for
	// each of these.
	switch {
	case code == "" || !ok:
		fail(http.StatusBadRequest, "invalid_grant", 9002313, "Invalid request. The authorization code is not valid or was already redeemed.")
		return
	case !now.Before(ac.expires):
		fail(http.StatusBadRequest, "invalid_grant", 70008, "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.")
		return
	case ac.clientID != strings.ToLower(clientID):
		fail(http.StatusBadRequest, "invalid_grant", 70000, "The provided authorization code was issued to another application.")
		return
	case ac.redirectURI != f.Get("redirect_uri"):
		fail(http.StatusBadRequest, "invalid_grant", 50148, "The redirect URI does not match the one the authorization code was issued for.")
		return
	case !strings.EqualFold(pathTenant, "organizations") && !strings.EqualFold(pathTenant, "common") && !strings.EqualFold(pathTenant, ac.tenant):
		fail(http.StatusBadRequest, "invalid_grant", 50020, fmt.Sprintf("The authorization code was issued in tenant '%s', not '%s'.", ac.tenant, pathTenant))
		return
	case ac.challenge != "" && f.Get("code_verifier") == "":
		fail(http.StatusBadRequest, "invalid_grant", 501481, "The Code_Verifier is missing: the authorization request carried a code_challenge.")
		return
	case ac.challenge != "" && pkceChallenge(f.Get("code_verifier")) != ac.challenge:
		fail(http.StatusBadRequest, "invalid_grant", 501481, "The Code_Verifier does not match the code_challenge supplied in the authorization request.")
		return
	}
	idToken, err := e.issueIDToken(ac.tenant, app.ClientID, !ac.member, now)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	access, err := e.issueToken(ac.tenant, app.ClientID, userObjectID(ac.tenant, !ac.member), graphResource, now)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	e.mu.Lock()
	e.stats.TokensIssued++
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type":   "Bearer",
		"scope":        f.Get("scope"),
		"expires_in":   int(e.tokenLifetime().Seconds()),
		"access_token": access,
		"id_token":     idToken,
	})
}

// graphResource is the audience of the access token an openid sign-in gets.
const graphResource = "https://graph.microsoft.com"

// Directory roles as the ID token's wids lists them (role template ids).
const (
	globalAdministratorRole = "62e90394-69f5-4237-9190-012177145e10"
	userRole                = "b79fbf4d-3ef9-4689-8143-76b194e85509" // every member holds it
)

// userObjectID is the object id of the emulated administrator (or member)
// who signs in to a tenant on the consent page: one each per tenant, stable.
func userObjectID(tenant string, admin bool) string {
	who := "azemu admin\x00"
	if !admin {
		who = "azemu member\x00"
	}
	sum := sha256.Sum256([]byte(who + strings.ToLower(tenant)))
	h := hex.EncodeToString(sum[:16])
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-8" + h[17:20] + "-" + h[20:32]
}

// issueIDToken mints the v2.0 ID token of the tenant's administrator (or a
// member) for the app, as Entra ID's token endpoint returns it for an openid
// scope to an app whose groupMembershipClaims include DirectoryRole: wids
// lists the user's directory roles.
func (e *Emulator) issueIDToken(tenantID, clientID string, admin bool, now time.Time) (string, error) {
	oid := userObjectID(tenantID, admin)
	name, user, wids := "Emulated tenant administrator", "admin@", []string{globalAdministratorRole, userRole}
	if !admin {
		name, user, wids = "Emulated tenant member", "member@", []string{userRole}
	}
	claims := jwt.MapClaims{
		"aud":                clientID,
		"iss":                e.url + "/" + tenantID + "/v2.0",
		"iat":                now.Unix(),
		"nbf":                now.Unix(),
		"exp":                now.Add(time.Hour).Unix(),
		"tid":                tenantID,
		"oid":                oid,
		"sub":                oid,
		"name":               name,
		"preferred_username": user + tenantID,
		"wids":               wids,
		"ver":                "2.0",
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = e.signKID
	return tok.SignedString(e.signKey)
}

// ---- instance discovery ----

// handleInstanceDiscovery answers MSAL's instance discovery
// (GET /common/discovery/instance?api-version=1.1&authorization_endpoint=…),
// which a confidential client with default options calls before its first
// token request for an authority host it does not know. The emulator vouches
// only for itself: the authorization endpoint must be on the emulator's own
// host, and the answer sends the client to that host's tenant metadata, with
// the host as its only alias. Any other authority gets Entra ID's
// invalid_instance error (AADSTS50049), so the emulator never points a client
// at a host it does not serve.
func (e *Emulator) handleInstanceDiscovery(w http.ResponseWriter, r *http.Request) {
	raw := r.URL.Query().Get("authorization_endpoint")
	u, err := url.Parse(raw)
	if raw == "" || err != nil || u.Scheme != "https" {
		e.writeAADError(w, r, http.StatusBadRequest, "invalid_request", 90014,
			"The request must contain the authorization_endpoint query parameter: the https URL of the authority's authorize endpoint.")
		return
	}
	tenant, _, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if !strings.EqualFold(u.Host, e.host) || tenant == "" {
		e.writeAADError(w, r, http.StatusBadRequest, "invalid_instance", 50049,
			fmt.Sprintf("Unknown or invalid instance. This emulator serves only the authority %s, not %s.", e.url, u.Host))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"tenant_discovery_endpoint": e.url + "/" + url.PathEscape(tenant) + "/v2.0/.well-known/openid-configuration",
		"api-version":               "1.1",
		"metadata": []map[string]any{{
			"preferred_network": e.host,
			"preferred_cache":   e.host,
			"aliases":           []string{e.host},
		}},
	})
}
