// Package api serves cmk's HTTP API: the app-registration and
// customer-config endpoints of seeds 001/002 (same paths, headers, bodies and
// statuses), a key preflight, key health, alerts, webhooks, audit, sandbox
// management, the data plane (lake and profiles), and the OpenAPI document.
//
// A handler only authenticates, decodes, calls one operation of the control
// plane (package control) or the data plane, and encodes the answer as the
// types of package cmkapi. The routes are cmkapi.Routes; the failures of the
// control plane map to statuses and error codes through one table
// (errors.go).
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
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cmk-project/cmk/internal/alerts"
	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/auth"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/control"
	"github.com/cmk-project/cmk/internal/lake"
	"github.com/cmk-project/cmk/internal/metrics"
	"github.com/cmk-project/cmk/internal/orgkeys"
	"github.com/cmk-project/cmk/internal/profile"
	"github.com/cmk-project/cmk/internal/ratelimit"
)

//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the OpenAPI document the server serves.
func OpenAPI() []byte { return openAPI }

// Server is the HTTP API.
type Server struct {
	Control  *control.Service
	Verifier auth.Verifier
	App      cmkapi.App
	Log      *slog.Logger
	Metrics  *metrics.Metrics
	// MetricsOnOperator serves Metrics on the operator listener only
	// (OperatorHandler), not to the API's callers: the figures are the
	// whole fleet's.
	MetricsOnOperator bool

	// UI serves the Encryption page under /ui/ (nil = not served).
	UI http.Handler

	// Limits rate-limits the routes that reach a key vault (cmkapi.Route.Limit;
	// nil = not limited). The vault cap needs the provider of the control
	// plane to come from Limits.Vaults.
	Limits *ratelimit.Limits

	// Events verifies deliveries of Key Vault events (nil = the route
	// answers 404: events are not enabled).
	Events *EventSource

	// Ready answers /readyz (nil = the route is not served).
	Ready func(ctx context.Context) cmkapi.Readiness

	// The data plane; nil parts are not served.
	Lake     *lake.Lake
	Profiles *profile.Store
	Keys     *orgkeys.Resolver
}

// Handler returns the routed, authenticated handler.
func (s *Server) Handler() http.Handler {
	if s.Log == nil {
		s.Log = slog.Default()
	}
	mux := http.NewServeMux()
	handlers := s.handlers()
	for _, rt := range cmkapi.Routes {
		h := handlers[rt.ID]
		switch {
		case h == nil:
			continue // a part this server does not serve (data plane, metrics, UI)
		case rt == cmkapi.UI:
			mux.Handle(rt.Path, h)
			mux.Handle("GET /{$}", http.RedirectHandler(rt.Path, http.StatusFound))
		case rt.Access == cmkapi.Public, rt.Access == cmkapi.ServiceCaller:
			// A service caller's token is checked by the handler, against
			// that service's own issuer.
			mux.Handle(rt.Pattern(), h)
		case rt.Access == cmkapi.Sandboxed:
			mux.Handle(rt.Pattern(), s.sandboxed(rt, s.limited(rt, h)))
		default:
			mux.Handle(rt.Pattern(), s.authed(rt.Permission, s.limited(rt, h)))
		}
	}
	return s.withRequestID(mux)
}

// handlers maps each route of cmkapi.Routes to its handler; a route this
// server does not serve maps to nil.
func (s *Server) handlers() map[string]http.Handler {
	hs := map[string]http.HandlerFunc{
		cmkapi.OpenAPIDocument.ID: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(openAPI)
		},
		cmkapi.Healthz.ID:            func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, cmkapi.Status{Status: "ok"}) },
		cmkapi.Livez.ID:              func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, cmkapi.Status{Status: "ok"}) },
		cmkapi.GetAppRegistration.ID: s.appRegistration,
		cmkapi.GetAWSKeyPolicy.ID:    s.awsKeyPolicy,
		cmkapi.ConsentCallback.ID:    s.consentCallback,
		cmkapi.KeyVaultEvents.ID:     s.keyVaultEvents,
		cmkapi.PreflightKey.ID:       s.preflight,
		cmkapi.CreateConfig.ID:       s.createConfig,
		cmkapi.ListConfigs.ID:        s.listConfigs,
		cmkapi.GetConfig.ID:          s.getConfig,
		cmkapi.DeleteConfig.ID:       s.deleteConfig,
		cmkapi.DeleteOrg.ID:          s.deleteOrg,
		cmkapi.GetKeyHealth.ID:       s.getHealth,
		cmkapi.RecheckKey.ID:         s.recheck,
		cmkapi.ListAlerts.ID:         s.listAlerts,
		cmkapi.GetAlert.ID:           s.getAlert,
		cmkapi.AcknowledgeAlert.ID:   s.ackAlert,
		cmkapi.ListWebhooks.ID:       s.listWebhooks,
		cmkapi.CreateWebhook.ID:      s.createWebhook,
		cmkapi.DeleteWebhook.ID:      s.deleteWebhook,
		cmkapi.TestWebhook.ID:        s.testWebhook,
		cmkapi.ListAudit.ID:          s.listAudit,
		cmkapi.GetHistory.ID:         s.getHistory,
		cmkapi.GetAccessReport.ID:    s.getAccessReport,
		cmkapi.ListSandboxes.ID:      s.listSandboxes,
		cmkapi.CreateSandbox.ID:      s.createSandbox,
	}
	if s.Ready != nil {
		hs[cmkapi.Readyz.ID] = s.readyz
	}
	if s.Lake != nil {
		hs[cmkapi.ListLakeFiles.ID] = s.lakeList
		hs[cmkapi.ListDatasetFiles.ID] = s.lakeList
		hs[cmkapi.PutLakeFile.ID] = s.lakePut
		hs[cmkapi.GetLakeFile.ID] = s.lakeGet
		hs[cmkapi.DeleteLakeFile.ID] = s.lakeDelete
	}
	if s.Profiles != nil {
		hs[cmkapi.ListProfiles.ID] = s.profileList
		hs[cmkapi.PutProfile.ID] = s.profilePut
		hs[cmkapi.GetProfile.ID] = s.profileGet
		hs[cmkapi.DeleteProfile.ID] = s.profileDelete
	}
	out := map[string]http.Handler{}
	for id, h := range hs {
		out[id] = h
	}
	if s.Metrics != nil && !s.MetricsOnOperator {
		out[cmkapi.Metrics.ID] = s.Metrics.Handler()
	}
	if s.UI != nil {
		out[cmkapi.UI.ID] = s.UI
	}
	return out
}

func (s *Server) withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(cmkapi.HeaderRequestID)
		if id == "" || len(id) > 64 {
			b := make([]byte, 8)
			rand.Read(b)
			id = hex.EncodeToString(b)
		}
		w.Header().Set(cmkapi.HeaderRequestID, id)
		// No answer of the API is ever to be sniffed into HTML or script.
		w.Header().Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}

type ctxKey int

const (
	ctxClaims ctxKey = iota
	ctxOrg
	ctxSandbox
)

func orgOf(r *http.Request) string     { return r.Context().Value(ctxOrg).(string) }
func sandboxOf(r *http.Request) string { return r.Context().Value(ctxSandbox).(string) }
func claimsOf(r *http.Request) *auth.Claims {
	return r.Context().Value(ctxClaims).(*auth.Claims)
}

// authed authenticates the caller (token, api key, org header the token
// holds, and perm in that org; "" = any member), then makes sure the org is
// known before the handler runs.
func (s *Server) authed(perm string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, org, ok := s.authenticate(w, r, perm)
		if !ok {
			return
		}
		if err := s.Control.EnsureOrg(r.Context(), org); err != nil {
			s.fail(w, r, err)
			return
		}
		ctx := context.WithValue(r.Context(), ctxClaims, claims)
		ctx = context.WithValue(ctx, ctxOrg, org)
		ctx = audit.WithOrg(audit.WithRequestID(ctx, w.Header().Get(cmkapi.HeaderRequestID)), org)
		ctx = audit.WithActor(ctx, audit.UserActor(claims.Subject))
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// authenticate checks who calls and for which org. It has no side effects;
// on failure it has answered and ok is false.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, perm string) (claims *auth.Claims, org string, ok bool) {
	raw, err := auth.BearerToken(r)
	if err != nil {
		writeError(w, r, 401, cmkapi.CodeMissingToken, "Missing or malformed bearer token", err.Error(),
			"Send 'Authorization: Bearer <access token>'. For local use, mint one with `cmk token`.")
		return nil, "", false
	}
	claims, err = s.Verifier.Verify(r.Context(), raw)
	if err != nil {
		s.tokenError(w, r, err)
		return nil, "", false
	}
	// The subject names the actor of every audit entry and acknowledgement:
	// a token without one, or with control characters in it, is refused.
	if !printableSubject(claims.Subject) {
		writeError(w, r, 401, cmkapi.CodeInvalidToken, "Invalid token", "The token has no subject (sub), or its subject is longer than 256 bytes or holds control characters.",
			"Use a token issued to a user or an integration; it names who acts.")
		return nil, "", false
	}
	if err := claims.CheckAPIKey(r.Header.Get(auth.HeaderAPIKey)); err != nil {
		writeError(w, r, 401, cmkapi.CodeInvalidAPIKey, "Invalid API key", err.Error(), "Send the x-api-key header with your integration's client id (the token's client_id).")
		return nil, "", false
	}
	org = r.Header.Get(auth.HeaderOrgID)
	if org == "" {
		writeError(w, r, 400, cmkapi.CodeMissingOrgHeader, "Missing org header", "The x-gw-ims-org-id header is required.", "Send 'x-gw-ims-org-id: <your org id>'.")
		return nil, "", false
	}
	if !validOrgID(org) {
		writeError(w, r, 400, cmkapi.CodeInvalidField, "Invalid org id", "The x-gw-ims-org-id header must be 1 to 128 printable characters without '/' or spaces.", "Send your org id exactly as your token lists it.")
		return nil, "", false
	}
	if !claims.HoldsOrg(org) {
		writeError(w, r, 403, cmkapi.CodeOrgNotInToken, "Org not in token", fmt.Sprintf("The token does not grant access to org %q.", org),
			"Use a token issued for this org, or send the org id the token holds.")
		return nil, "", false
	}
	if perm != "" && !claims.Can(org, perm) {
		writeError(w, r, 403, cmkapi.CodePermissionRequired, "Permission required", fmt.Sprintf("This operation needs the %q permission in org %q.", permName(perm), org),
			"Ask an administrator of your org to assign you a role with that permission.")
		return nil, "", false
	}
	return claims, org, true
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
	case cmkapi.PermManageCMK:
		return "Manage Customer Managed Key"
	case cmkapi.PermManageSandboxes:
		return "Manage Sandboxes"
	}
	return p
}

func (s *Server) tokenError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, auth.ErrKeysUnavailable):
		writeError(w, r, 503, cmkapi.CodeServiceUnavailable, "Token keys unavailable", "The service could not fetch the token issuer's signing keys.", "Try again shortly.")
	case errors.Is(err, auth.ErrExpired):
		writeError(w, r, 401, cmkapi.CodeTokenExpired, "Token expired", err.Error(), "Obtain a new access token.")
	default:
		writeError(w, r, 401, cmkapi.CodeInvalidToken, "Invalid token", err.Error(), "Obtain a new access token from the platform's identity service.")
	}
}

// decodeStrict reads a JSON body of at most 64 KiB with no unknown fields.
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

// ---- configs ----

func (s *Server) createConfig(w http.ResponseWriter, r *http.Request) {
	var req cmkapi.ConfigRequest
	if err := decodeStrict(r, &req); err != nil {
		writeError(w, r, 400, cmkapi.CodeMalformedRequestBody, "Malformed request body", "The body is not a valid config request: "+err.Error()+".",
			`Send {"name": "...", "type": "BYOK_CONFIG", "imsOrgId": "<org>", "configData": {"providerType": "AZURE_KEYVAULT", "keyVaultKeyIdentifier": "https://<vault>.vault.azure.net/keys/<key>/<version>"}}.`)
		return
	}
	c, err := s.Control.SubmitConfig(r.Context(), orgOf(r), control.ConfigInput{
		Name: req.Name, Type: req.Type, OrgID: req.IMSOrgID, ProviderType: req.ConfigData.ProviderType, KeyIdentifier: keyOf(req.ConfigData),
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 201, cmkapi.ConfigCreated{
		ID:     c.ID,
		Config: cmkapi.ConfigSummary{ConfigData: configDataView(c), Name: c.Name, Type: c.Type, IMSOrgID: c.OrgID, Status: c.Status},
		Status: "CREATED",
	})
}

func (s *Server) getConfig(w http.ResponseWriter, r *http.Request) {
	c, err := s.Control.ConfigByName(r.Context(), orgOf(r), r.PathValue("name"), r.URL.Query().Get("configType"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, configView(c))
}

func (s *Server) listConfigs(w http.ResponseWriter, r *http.Request) {
	all, err := s.Control.Configs(r.Context(), orgOf(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := cmkapi.ConfigList{Configs: []cmkapi.Config{}}
	for _, c := range all {
		out.Configs = append(out.Configs, configView(c))
	}
	writeJSON(w, 200, out)
}

func (s *Server) deleteConfig(w http.ResponseWriter, r *http.Request) {
	s.fail(w, r, s.Control.DeleteConfig(r.Context(), orgOf(r), r.PathValue("name")))
}

// ---- preflight ----

func (s *Server) preflight(w http.ResponseWriter, r *http.Request) {
	var req cmkapi.PreflightRequest
	if err := decodeStrict(r, &req); err != nil {
		writeError(w, r, 400, cmkapi.CodeMalformedRequestBody, "Malformed request body", err.Error(), `Send {"keyVaultKeyIdentifier": "https://<vault>.vault.azure.net/keys/<key>"}.`)
		return
	}
	key := req.KeyVaultKeyIdentifier
	if req.KeyArn != "" {
		key = req.KeyArn
	}
	rep, err := s.Control.Preflight(r.Context(), orgOf(r), key)
	if s.vaultCapped(w, r) {
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, reportView(rep))
}

// ---- sandboxes and orgs ----

func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	names, err := s.Control.Sandboxes(r.Context(), orgOf(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := cmkapi.SandboxList{Sandboxes: []cmkapi.Sandbox{}}
	for _, n := range names {
		out.Sandboxes = append(out.Sandboxes, cmkapi.Sandbox{Name: n})
	}
	writeJSON(w, 200, out)
}

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) {
	var req cmkapi.Sandbox
	if err := decodeStrict(r, &req); err != nil {
		writeError(w, r, 400, cmkapi.CodeMalformedRequestBody, "Malformed request body", err.Error(), `Send {"name": "dev"}.`)
		return
	}
	err := s.Control.CreateSandbox(r.Context(), orgOf(r), req.Name)
	if s.vaultCapped(w, r) {
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 201, cmkapi.Sandbox{Name: req.Name})
}

// deleteOrg deletes the org and all its data (see control.DeleteOrg).
func (s *Server) deleteOrg(w http.ResponseWriter, r *http.Request) {
	org := orgOf(r)
	if err := s.Control.DeleteOrg(r.Context(), org, r.URL.Query().Get("confirm")); err != nil {
		s.fail(w, r, err)
		return
	}
	s.Log.Warn("org deleted", "org", org, "client", r.RemoteAddr, "request_id", w.Header().Get(cmkapi.HeaderRequestID))
	writeJSON(w, 200, cmkapi.OrgDeleted{OrgID: org, Deleted: true, Note: control.OrgDeletedNote})
}

// ---- health, alerts, webhooks, audit ----

func (s *Server) getHealth(w http.ResponseWriter, r *http.Request) {
	h, err := s.Control.Health(r.Context(), orgOf(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, healthView(h))
}

func (s *Server) recheck(w http.ResponseWriter, r *http.Request) {
	h, err := s.Control.Recheck(r.Context(), orgOf(r))
	if s.vaultCapped(w, r) {
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, healthView(h))
}

func (s *Server) listAlerts(w http.ResponseWriter, r *http.Request) {
	list, err := s.Control.Alerts(r.Context(), orgOf(r), r.URL.Query().Get("status"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := cmkapi.AlertList{Alerts: []cmkapi.Alert{}}
	for _, a := range list {
		out.Alerts = append(out.Alerts, alerts.ViewOf(a))
	}
	writeJSON(w, 200, out)
}

func (s *Server) getAlert(w http.ResponseWriter, r *http.Request) {
	s.writeAlert(w, r)(s.Control.Alert(r.Context(), orgOf(r), r.PathValue("id")))
}

func (s *Server) ackAlert(w http.ResponseWriter, r *http.Request) {
	s.writeAlert(w, r)(s.Control.AcknowledgeAlert(r.Context(), orgOf(r), r.PathValue("id"), claimsOf(r).Subject))
}

func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request) {
	var req cmkapi.WebhookRequest
	if err := decodeStrict(r, &req); err != nil {
		writeError(w, r, 400, cmkapi.CodeMalformedRequestBody, "Malformed request body", err.Error(), `Send {"url": "https://hooks.example.com/cmk"}.`)
		return
	}
	hook, err := s.Control.CreateWebhook(r.Context(), orgOf(r), req.URL)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 201, cmkapi.Webhook{ID: hook.ID, URL: hook.URL, Secret: hook.Secret, CreatedAt: hook.CreatedAt.UTC()})
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request) {
	hooks, err := s.Control.Webhooks(r.Context(), orgOf(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := cmkapi.WebhookList{Webhooks: []cmkapi.Webhook{}}
	for _, h := range hooks {
		out.Webhooks = append(out.Webhooks, cmkapi.Webhook{ID: h.ID, URL: h.URL, CreatedAt: h.CreatedAt.UTC()})
	}
	writeJSON(w, 200, out)
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request) {
	if err := s.Control.DeleteWebhook(r.Context(), orgOf(r), r.PathValue("id")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(204)
}

func (s *Server) testWebhook(w http.ResponseWriter, r *http.Request) {
	res, err := s.Control.TestWebhook(r.Context(), orgOf(r), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, cmkapi.WebhookTest{WebhookID: r.PathValue("id"), EventID: res.EventID, Delivered: res.Delivered, Status: res.Status, Error: res.Error, TookMs: res.Took.Milliseconds()})
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	query := control.AuditQuery{Operation: q.Get("operation"), Actor: q.Get("actor"), Limit: control.DefaultAuditLimit}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			writeError(w, r, 400, cmkapi.CodeInvalidField, "Invalid limit", fmt.Sprintf("limit is %q; use a number from 1 to %d.", v, control.MaxAuditLimit), "")
			return
		}
		query.Limit = n
	}
	for _, p := range []struct {
		name string
		to   *time.Time
	}{{"since", &query.Since}, {"until", &query.Until}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				writeError(w, r, 400, cmkapi.CodeInvalidField, "Invalid "+p.name, fmt.Sprintf("%s is %q; use an RFC 3339 time such as 2026-01-02T15:04:05Z.", p.name, v), "")
				return
			}
			*p.to = t
		}
	}
	format := q.Get("format")
	if format != "" && format != "json" && format != "csv" {
		writeError(w, r, 400, cmkapi.CodeInvalidField, "Invalid format", fmt.Sprintf("format is %q; use json (the default) or csv.", format), "")
		return
	}
	entries, err := s.Control.Audit(r.Context(), orgOf(r), query)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := cmkapi.AuditList{Entries: []cmkapi.AuditEntry{}}
	for _, e := range entries {
		out.Entries = append(out.Entries, cmkapi.AuditEntry{ID: e.ID, At: e.At.UTC(), Operation: e.Op, Key: e.KeyRef, KeyVersion: e.KeyVersion, Outcome: e.Outcome, RequestID: e.RequestID, Detail: e.Detail, Actor: e.Actor})
	}
	if format == "csv" {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="cmk-audit.csv"`)
		w.WriteHeader(200)
		cmkapi.WriteAuditCSV(w, out.Entries)
		return
	}
	writeJSON(w, 200, out)
}

// printableSubject reports whether a token subject can name an actor: 1 to
// 256 bytes of valid UTF-8 with no control characters.
func printableSubject(sub string) bool {
	if sub == "" || len(sub) > 256 || !utf8.ValidString(sub) {
		return false
	}
	for _, r := range sub {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return false
		}
	}
	return true
}

// readyz answers whether this replica should be sent traffic: 200 when every
// check passes, 503 with the checks otherwise.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	rd := s.Ready(r.Context())
	status := http.StatusOK
	if rd.Status != "ready" {
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, rd)
}
