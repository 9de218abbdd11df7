// Package api serves cmk's HTTP control plane: the app-registration and
// customer-config endpoints of seeds 001/002 (same paths, headers, bodies and
// statuses), a key preflight, sandbox management, and the OpenAPI document.
//
// Every request is authenticated the same way: a verified bearer token, an
// x-api-key equal to the token's client_id, and an x-gw-ims-org-id the token
// holds. The org in a request body must equal the header. CMK operations need
// the Manage Customer Managed Key permission.
package api

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/cmk-project/cmk/internal/alerts"
	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/auth"
	"github.com/cmk-project/cmk/internal/enablement"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/keyid"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/lake"
	"github.com/cmk-project/cmk/internal/metrics"
	"github.com/cmk-project/cmk/internal/monitor"
	"github.com/cmk-project/cmk/internal/orgkeys"
	"github.com/cmk-project/cmk/internal/preflight"
	"github.com/cmk-project/cmk/internal/profile"
	"github.com/cmk-project/cmk/internal/store"
)

//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the OpenAPI document the server serves.
func OpenAPI() []byte { return openAPI }

// Permission to create sandboxes.
const PermManageSandboxes = "manage_sandboxes"

// DefaultSandboxes are created with an org the first time it is seen.
var DefaultSandboxes = []string{"prod"}

// App is the platform's multi-tenant Azure app, as the app-registration
// endpoint returns it.
type App struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	ApplicationURI string `json:"applicationUri"`
	ApplicationID  string `json:"applicationId"`
	RedirectURL    string `json:"applicationRedirectUrl"`
}

// Server is the HTTP API.
type Server struct {
	Store    *store.Store
	Keyring  *keyring.Keyring
	Provider kms.Provider
	Verifier auth.Verifier
	Policy   keyid.Policy
	App      App
	Env      preflight.Env
	Log      *slog.Logger
	// PreflightTimeout bounds a synchronous key check.
	PreflightTimeout time.Duration

	Monitor       *monitor.Monitor
	Gate          *keyhealth.Gate
	WebhookPolicy alerts.URLPolicy
	Metrics       *metrics.Metrics

	// UI serves the Encryption page under /ui/ (nil = not served).
	UI http.Handler

	// The data plane; nil parts are not served.
	Lake     *lake.Lake
	Profiles *profile.Store
	Keys     *orgkeys.Resolver
}

func withSandbox(r *http.Request, sb string) context.Context {
	return context.WithValue(r.Context(), ctxSandbox, sb)
}

// Handler returns the routed, authenticated handler.
func (s *Server) Handler() http.Handler {
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.PreflightTimeout == 0 {
		s.PreflightTimeout = 30 * time.Second
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openAPI)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })
	mux.Handle("GET /data/infrastructure/manager/byok/app-registration", s.authed(auth.PermManageCMK, s.appRegistration))
	mux.Handle("POST /data/infrastructure/manager/byok/preflight", s.authed(auth.PermManageCMK, s.preflight))
	mux.Handle("POST /data/infrastructure/manager/customer/config", s.authed(auth.PermManageCMK, s.createConfig))
	mux.Handle("GET /data/infrastructure/manager/customer/config", s.authed(auth.PermManageCMK, s.listConfigs))
	mux.Handle("GET /data/infrastructure/manager/customer/config/{name}", s.authed(auth.PermManageCMK, s.getConfig))
	mux.Handle("DELETE /data/infrastructure/manager/customer/config/{name}", s.authed(auth.PermManageCMK, s.deleteConfig))
	mux.Handle("DELETE /data/infrastructure/manager/org", s.authed(auth.PermManageCMK, s.deleteOrg))
	mux.Handle("GET /data/infrastructure/manager/byok/health", s.authed(auth.PermManageCMK, s.getHealth))
	mux.Handle("POST /data/infrastructure/manager/byok/health/check", s.authed(auth.PermManageCMK, s.recheck))
	mux.Handle("GET /data/infrastructure/manager/byok/alerts", s.authed(auth.PermManageCMK, s.listAlerts))
	mux.Handle("GET /data/infrastructure/manager/byok/alerts/{id}", s.authed(auth.PermManageCMK, s.getAlert))
	mux.Handle("POST /data/infrastructure/manager/byok/alerts/{id}/acknowledge", s.authed(auth.PermManageCMK, s.ackAlert))
	mux.Handle("GET /data/infrastructure/manager/byok/webhooks", s.authed(auth.PermManageCMK, s.listWebhooks))
	mux.Handle("POST /data/infrastructure/manager/byok/webhooks", s.authed(auth.PermManageCMK, s.createWebhook))
	mux.Handle("DELETE /data/infrastructure/manager/byok/webhooks/{id}", s.authed(auth.PermManageCMK, s.deleteWebhook))
	mux.Handle("GET /data/infrastructure/manager/byok/audit", s.authed(auth.PermManageCMK, s.listAudit))
	if s.Metrics != nil {
		mux.Handle("GET /metrics", s.Metrics.Handler())
	}
	s.dataRoutes(mux)
	if s.UI != nil {
		mux.Handle("/ui/", s.UI)
		mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	}
	mux.Handle("GET /data/foundation/sandbox-management/sandboxes", s.authed("", s.listSandboxes))
	mux.Handle("POST /data/foundation/sandbox-management/sandboxes", s.authed(PermManageSandboxes, s.createSandbox))
	return s.withRequestID(mux)
}

func (s *Server) withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("x-request-id")
		if id == "" || len(id) > 64 {
			b := make([]byte, 8)
			rand.Read(b)
			id = hex.EncodeToString(b)
		}
		w.Header().Set("x-request-id", id)
		next.ServeHTTP(w, r)
	})
}

type ctxKey int

const (
	ctxClaims ctxKey = iota
	ctxOrg
)

func orgOf(r *http.Request) string { return r.Context().Value(ctxOrg).(string) }

// authed verifies the token, the api key and the org header, makes sure the
// org exists, and requires perm ("" = any member of the org).
func (s *Server) authed(perm string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, err := auth.BearerToken(r)
		if err != nil {
			writeError(w, r, 401, codeMissingToken, "Missing or malformed bearer token", err.Error(),
				"Send 'Authorization: Bearer <access token>'. For local use, mint one with `cmk token`.")
			return
		}
		claims, err := s.Verifier.Verify(r.Context(), raw)
		if err != nil {
			s.tokenError(w, r, err)
			return
		}
		if err := claims.CheckAPIKey(r.Header.Get(auth.HeaderAPIKey)); err != nil {
			writeError(w, r, 401, codeAPIKey, "Invalid API key", err.Error(), "Send the x-api-key header with your integration's client id (the token's client_id).")
			return
		}
		org := r.Header.Get(auth.HeaderOrgID)
		if org == "" {
			writeError(w, r, 400, codeMissingOrg, "Missing org header", "The x-gw-ims-org-id header is required.", "Send 'x-gw-ims-org-id: <your org id>'.")
			return
		}
		if !validOrgID(org) {
			writeError(w, r, 400, codeBadField, "Invalid org id", "The x-gw-ims-org-id header must be 1 to 128 printable characters without '/' or spaces.", "Send your org id exactly as your token lists it.")
			return
		}
		if !claims.HoldsOrg(org) {
			writeError(w, r, 403, codeOrgNotInToken, "Org not in token", fmt.Sprintf("The token does not grant access to org %q.", org),
				"Use a token issued for this org, or send the org id the token holds.")
			return
		}
		if perm != "" && !claims.Can(org, perm) {
			writeError(w, r, 403, codeForbidden, "Permission required", fmt.Sprintf("This operation needs the %q permission in org %q.", permName(perm), org),
				"Ask an administrator of your org to assign you a role with that permission.")
			return
		}
		if err := s.ensureOrg(r.Context(), org); err != nil {
			s.internal(w, r, err)
			return
		}
		ctx := context.WithValue(r.Context(), ctxClaims, claims)
		ctx = context.WithValue(ctx, ctxOrg, org)
		ctx = audit.WithOrg(audit.WithRequestID(ctx, w.Header().Get("x-request-id")), org)
		h(w, r.WithContext(ctx))
	})
}

// validOrgID keeps org ids usable as one segment of storage keys and logs.
func validOrgID(org string) bool {
	if org == "" || len(org) > 128 {
		return false
	}
	for _, c := range org {
		if c <= ' ' || c == '/' || c == '\\' || c == 0x7f {
			return false
		}
	}
	return true
}

func permName(p string) string {
	switch p {
	case auth.PermManageCMK:
		return "Manage Customer Managed Key"
	case PermManageSandboxes:
		return "Manage Sandboxes"
	}
	return p
}

func (s *Server) tokenError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, auth.ErrKeysUnavailable):
		writeError(w, r, 503, codeUnavailable, "Token keys unavailable", "The service could not fetch the token issuer's signing keys.", "Try again shortly.")
	case errors.Is(err, auth.ErrExpired):
		writeError(w, r, 401, codeTokenExpired, "Token expired", err.Error(), "Obtain a new access token.")
	default:
		writeError(w, r, 401, codeInvalidToken, "Invalid token", err.Error(), "Obtain a new access token from the platform's identity service.")
	}
}

func (s *Server) internal(w http.ResponseWriter, r *http.Request, err error) {
	s.Log.Error("request failed", "method", r.Method, "path", r.URL.Path, "request_id", w.Header().Get("x-request-id"), "err", err)
	writeError(w, r, 500, codeInternal, "Internal error", "The request failed on the server; nothing was changed.", "Try again; if it persists, give the operator the request id.")
}

func (s *Server) ensureOrg(ctx context.Context, org string) error {
	created, err := s.Store.EnsureOrg(ctx, org)
	if err != nil || !created {
		return err
	}
	for _, sb := range DefaultSandboxes {
		if err := s.Keyring.CreateSandbox(ctx, org, sb); err != nil && !errors.Is(err, store.ErrDuplicateName) {
			return err
		}
	}
	return nil
}

// ---- app registration ----

func (s *Server) appRegistration(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, s.App)
}

// ---- configs ----

type configData struct {
	KeyVaultURI           string `json:"keyVaultUri,omitempty"`
	KeyVaultKeyIdentifier string `json:"keyVaultKeyIdentifier"`
	KeyVersion            string `json:"keyVersion,omitempty"`
	KeyName               string `json:"keyName,omitempty"`
	ProviderType          string `json:"providerType"`
}

type configRequest struct {
	Name       string     `json:"name"`
	Type       string     `json:"type"`
	IMSOrgID   string     `json:"imsOrgId"`
	ConfigData configData `json:"configData"`
}

const (
	configTypeBYOK   = "BYOK_CONFIG"
	providerAzure    = "AZURE_KEYVAULT"
	maxConfigNameLen = 128
)

func decodeStrict(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("unexpected data after the JSON object")
	}
	return nil
}

func (s *Server) createConfig(w http.ResponseWriter, r *http.Request) {
	org := orgOf(r)
	var req configRequest
	if err := decodeStrict(r, &req); err != nil {
		writeError(w, r, 400, codeBadJSON, "Malformed request body", "The body is not a valid config request: "+err.Error()+".",
			`Send {"name": "...", "type": "BYOK_CONFIG", "imsOrgId": "<org>", "configData": {"providerType": "AZURE_KEYVAULT", "keyVaultKeyIdentifier": "https://<vault>.vault.azure.net/keys/<key>/<version>"}}.`)
		return
	}
	if req.Name == "" || len(req.Name) > maxConfigNameLen || strings.ContainsAny(req.Name, "/?#%\\") || strings.TrimSpace(req.Name) != req.Name {
		writeError(w, r, 400, codeBadField, "Invalid name", fmt.Sprintf("name must be 1 to %d characters with no surrounding spaces and none of / ? # %% \\.", maxConfigNameLen),
			"Choose a name you will remember: you need it to check the status. Names are case-sensitive.")
		return
	}
	if req.Type != configTypeBYOK {
		writeError(w, r, 400, codeBadConfigType, "Invalid configuration type", fmt.Sprintf("type is %q; it must be %q.", req.Type, configTypeBYOK), `Set "type": "BYOK_CONFIG".`)
		return
	}
	if req.IMSOrgID != org {
		writeError(w, r, 400, codeOrgMismatch, "Org mismatch", fmt.Sprintf("imsOrgId %q does not equal the x-gw-ims-org-id header %q.", req.IMSOrgID, org),
			"Send the same org id in the body and in the header.")
		return
	}
	if req.ConfigData.ProviderType != providerAzure {
		if s.revertAttempt(w, r, org, req.ConfigData.ProviderType) {
			return
		}
		writeError(w, r, 400, codeBadProvider, "Unsupported provider type", fmt.Sprintf("configData.providerType is %q; it must be %q.", req.ConfigData.ProviderType, providerAzure),
			`Set "providerType": "AZURE_KEYVAULT".`)
		return
	}
	id, err := s.Policy.Parse(req.ConfigData.KeyVaultKeyIdentifier)
	if err != nil {
		writeError(w, r, 400, codeBadKeyIdentifier, "Invalid key identifier", err.Error(),
			"Copy the Key Identifier from your key's current version in the Azure portal; it looks like https://<vault>.vault.azure.net/keys/<key>/<version>.")
		return
	}
	if taken, err := s.Store.KeyInUseElsewhere(r.Context(), org, id.VaultURL, id.Name); err != nil {
		s.internal(w, r, err)
		return
	} else if taken {
		writeError(w, r, 409, codeKeyInUse, "Key already protects another org", "This key is already configured for another organization; a key can protect one org's data only.",
			"Create a dedicated key for this org in your vault and submit its identifier.")
		return
	}
	c := &store.Config{
		ID: uuid.NewString(), OrgID: org, Name: req.Name, Type: req.Type, ProviderType: req.ConfigData.ProviderType,
		KeyIdentifier: req.ConfigData.KeyVaultKeyIdentifier, VaultURL: id.VaultURL, KeyName: id.Name, KeyVersion: id.Version,
	}
	switch err := s.Store.CreateConfig(r.Context(), c); {
	case errors.Is(err, store.ErrDuplicateName):
		writeError(w, r, 409, codeNameTaken, "Name already used", fmt.Sprintf("Org %q already has a configuration named %q.", org, req.Name),
			"Check its status with GET .../customer/config/"+url.PathEscape(req.Name)+"?configType=BYOK_CONFIG, or submit with a new name.")
		return
	case errors.Is(err, store.ErrJobActive):
		writeError(w, r, 409, codeJobActive, "Enablement already in progress", "Another configuration of this org is still being applied.",
			"Wait for it to reach COMPLETED or FAILED (check its status), then submit again if needed.")
		return
	case errors.Is(err, store.ErrAlreadyEnabled):
		writeError(w, r, 409, codeIrreversible, "Customer-managed keys already enabled", "This org already encrypts its data with its customer-managed key; the key configuration cannot be replaced or reverted.",
			"To rotate, add a new version of the same key in your vault: the platform always uses the newest version.")
		return
	case err != nil:
		s.internal(w, r, err)
		return
	}
	s.Log.Info("cmk config submitted", "org", org, "config", c.Name, "job", c.ID, "vault", c.VaultURL, "key", c.KeyName)
	writeJSON(w, 201, map[string]any{
		"id": c.ID,
		"config": map[string]any{
			"configData": s.configData(c),
			"name":       c.Name,
			"type":       c.Type,
			"imsOrgId":   c.OrgID,
			"status":     c.Status,
		},
		"status": "CREATED",
	})
}

// revertAttempt answers a request to go back to system-managed keys.
func (s *Server) revertAttempt(w http.ResponseWriter, r *http.Request, org, provider string) bool {
	switch strings.ToUpper(provider) {
	case "SYSTEM", "SYSTEM_MANAGED", "PLATFORM_MANAGED", "NONE", "DEFAULT":
	default:
		return false
	}
	o, err := s.Store.Org(r.Context(), org)
	if err != nil {
		s.internal(w, r, err)
		return true
	}
	if o.KEKMode == store.ModeCustomer {
		writeError(w, r, 409, codeIrreversible, "Cannot revert to system-managed keys", "Customer-managed keys are enabled for this org, and that cannot be undone.",
			"Keep your key vault, key and the app's role in place; to stop the platform reading your data, remove the role (see the revocation docs).")
	} else {
		writeError(w, r, 400, codeBadProvider, "Already system-managed", "This org uses system-managed keys; there is nothing to revert.", `To enable CMK, send "providerType": "AZURE_KEYVAULT".`)
	}
	return true
}

func (s *Server) configData(c *store.Config) configData {
	return configData{KeyVaultURI: c.VaultURL, KeyVaultKeyIdentifier: c.KeyIdentifier, KeyVersion: c.KeyVersion, KeyName: c.KeyName, ProviderType: c.ProviderType}
}

func (s *Server) configView(c *store.Config) map[string]any {
	v := map[string]any{
		"id":         c.ID,
		"name":       c.Name,
		"type":       c.Type,
		"status":     c.Status,
		"configData": s.configData(c),
		"imsOrgId":   c.OrgID,
		"rowType":    "BYOK_KEY",
		"createdAt":  c.CreatedAt.Format(time.RFC3339),
		"updatedAt":  c.UpdatedAt.Format(time.RFC3339),
		"progress":   map[string]int{"dataKeysRewrapped": c.ProgressDone, "dataKeysTotal": c.ProgressTotal},
	}
	if c.Failure != "" {
		var f enablement.Failure
		if json.Unmarshal([]byte(c.Failure), &f) == nil {
			v["failure"] = f
		}
	}
	if c.LastError != "" {
		var p enablement.Problem
		if json.Unmarshal([]byte(c.LastError), &p) == nil {
			v["lastError"] = p
		}
	}
	if c.Checks != "" {
		var checks []preflight.Result
		if json.Unmarshal([]byte(c.Checks), &checks) == nil {
			v["checks"] = checks
		}
	}
	return v
}

func (s *Server) getConfig(w http.ResponseWriter, r *http.Request) {
	org, name := orgOf(r), r.PathValue("name")
	if ct := r.URL.Query().Get("configType"); ct != configTypeBYOK {
		writeError(w, r, 400, codeBadConfigType, "Invalid configType", fmt.Sprintf("configType is %q; it must be %q.", ct, configTypeBYOK), "Add ?configType=BYOK_CONFIG to the URL.")
		return
	}
	if c := s.configNamed(w, r, org, name); c != nil {
		writeJSON(w, 200, s.configView(c))
	}
}

// configNamed returns the org's configuration, or answers 404/500 and
// returns nil.
func (s *Server) configNamed(w http.ResponseWriter, r *http.Request, org, name string) *store.Config {
	c, err := s.Store.ConfigByName(r.Context(), org, name)
	if errors.Is(err, store.ErrNotFound) {
		s.configNotFound(w, r, org, name)
		return nil
	}
	if err != nil {
		s.internal(w, r, err)
		return nil
	}
	return c
}

func (s *Server) configNotFound(w http.ResponseWriter, r *http.Request, org, name string) {
	hint := "List your configurations with GET /data/infrastructure/manager/customer/config."
	if all, err := s.Store.Configs(r.Context(), org); err == nil {
		for _, c := range all {
			if strings.EqualFold(c.Name, name) {
				hint = fmt.Sprintf("Names are case-sensitive: did you mean %q?", c.Name)
			}
		}
	}
	writeError(w, r, 404, codeNotFound, "Configuration not found", fmt.Sprintf("Org %q has no configuration named %q.", org, name), hint)
}

func (s *Server) listConfigs(w http.ResponseWriter, r *http.Request) {
	all, err := s.Store.Configs(r.Context(), orgOf(r))
	if err != nil {
		s.internal(w, r, err)
		return
	}
	out := []map[string]any{}
	for _, c := range all {
		out = append(out, s.configView(c))
	}
	writeJSON(w, 200, map[string]any{"configs": out})
}

func (s *Server) deleteConfig(w http.ResponseWriter, r *http.Request) {
	c := s.configNamed(w, r, orgOf(r), r.PathValue("name"))
	if c == nil {
		return
	}
	if c.Status == store.StatusFailed {
		writeError(w, r, 409, codeIrreversible, "Configurations are kept", "A failed configuration stays as a record of what was tried; it does not block a new one.", "Submit a new configuration with another name.")
		return
	}
	writeError(w, r, 409, codeIrreversible, "Cannot remove the customer-managed key", "Once customer-managed keys are enabled (or being enabled) they cannot be turned off or removed.",
		"To rotate, add a new version of the key in your vault. To withdraw access, remove the app's role on the vault.")
}

// ---- preflight ----

func (s *Server) preflight(w http.ResponseWriter, r *http.Request) {
	var req struct {
		KeyVaultKeyIdentifier string `json:"keyVaultKeyIdentifier"`
	}
	if err := decodeStrict(r, &req); err != nil {
		writeError(w, r, 400, codeBadJSON, "Malformed request body", err.Error(), `Send {"keyVaultKeyIdentifier": "https://<vault>.vault.azure.net/keys/<key>"}.`)
		return
	}
	if id, err := s.Policy.Parse(req.KeyVaultKeyIdentifier); err == nil {
		// Another org's key is not this org's to probe.
		if taken, err := s.Store.KeyInUseElsewhere(r.Context(), orgOf(r), id.VaultURL, id.Name); err != nil {
			s.internal(w, r, err)
			return
		} else if taken {
			writeError(w, r, 409, codeKeyInUse, "Key already protects another org", "This key is already configured for another organization.", "Use a key dedicated to this org.")
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.PreflightTimeout)
	defer cancel()
	rep := preflight.Run(ctx, s.Provider, s.Policy, req.KeyVaultKeyIdentifier, s.Env)
	writeJSON(w, 200, rep)
}

// ---- sandboxes ----

func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	names, err := s.Store.Sandboxes(r.Context(), orgOf(r))
	if err != nil {
		s.internal(w, r, err)
		return
	}
	out := []map[string]string{}
	for _, n := range names {
		out = append(out, map[string]string{"name": n})
	}
	writeJSON(w, 200, map[string]any{"sandboxes": out})
}

func validSandboxName(n string) bool {
	if n == "" || len(n) > 64 {
		return false
	}
	for i, c := range n {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || (c == '-' && i > 0)
		if !ok {
			return false
		}
	}
	return true
}

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	if err := decodeStrict(r, &req); err != nil {
		writeError(w, r, 400, codeBadJSON, "Malformed request body", err.Error(), `Send {"name": "dev"}.`)
		return
	}
	if !validSandboxName(req.Name) {
		writeError(w, r, 400, codeBadField, "Invalid sandbox name", fmt.Sprintf("Sandbox name %q is not allowed: use 1 to 64 lowercase letters, digits and hyphens, starting with a letter or digit.", req.Name), "")
		return
	}
	if err := s.Gate.Allow(orgOf(r)); err != nil {
		if ref, ok := orgkeys.Refused(err); ok {
			s.refused(w, r, ref)
			return
		}
	}
	err := s.Keyring.CreateSandbox(r.Context(), orgOf(r), req.Name)
	switch {
	case errors.Is(err, store.ErrDuplicateName):
		writeError(w, r, 409, codeSandboxExists, "Sandbox exists", fmt.Sprintf("Sandbox %q already exists.", req.Name), "")
		return
	case kms.KindOf(err) != "":
		writeError(w, r, 503, codeUnavailable, "Customer key unavailable", "The sandbox's data keys could not be wrapped: "+preflight.Describe(err), "Check your key's health, then try again.")
		return
	case err != nil:
		s.internal(w, r, err)
		return
	}
	writeJSON(w, 201, map[string]string{"name": req.Name})
}
