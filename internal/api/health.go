package api

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/cmk-project/cmk/internal/alerts"
	"github.com/cmk-project/cmk/internal/auth"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/preflight"
	"github.com/cmk-project/cmk/internal/store"
)

// State reported for orgs still on system-managed keys.
const stateSystemManaged = "SYSTEM_MANAGED"

type rotationView struct {
	TargetVersion     string `json:"targetVersion"`
	DataKeysRewrapped int    `json:"dataKeysRewrapped"`
	DataKeysTotal     int    `json:"dataKeysTotal"`
}

type revocationView struct {
	CheckInterval string `json:"checkInterval"`
	Grace         string `json:"grace"`
	Explanation   string `json:"explanation"`
}

type healthView struct {
	OrgID       string         `json:"orgId"`
	State       string         `json:"state"`
	Cause       string         `json:"cause,omitempty"`
	Message     string         `json:"message,omitempty"`
	DataBlocked bool           `json:"dataBlocked"`
	Remedy      []string       `json:"remedy,omitempty"`
	KeyVaultURI string         `json:"keyVaultUri,omitempty"`
	KeyName     string         `json:"keyName,omitempty"`
	KeyVersion  string         `json:"keyVersion,omitempty"`
	Since       *time.Time     `json:"since,omitempty"`
	LastCheck   *time.Time     `json:"lastCheck,omitempty"`
	LastOK      *time.Time     `json:"lastOk,omitempty"`
	NextCheck   *time.Time     `json:"nextCheck,omitempty"`
	Rotation    *rotationView  `json:"rotation,omitempty"`
	Revocation  revocationView `json:"revocation"`
}

func tp(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func (s *Server) revocationInfo() revocationView {
	iv, grace := s.Monitor.Interval, s.Monitor.Grace
	return revocationView{
		CheckInterval: iv.String(),
		Grace:         grace.String(),
		Explanation: fmt.Sprintf("The platform checks your key every %s. When you disable or delete the key, remove the app's role or block the vault, "+
			"every read and write of your data — data lake, profile store and caches — is refused within about %s, and the keys held in memory are wiped. "+
			"When access returns, the next check restores everything within about %s; nothing is lost and nothing needs re-ingesting. "+
			"If the vault is only unreachable (timeouts, outages), data stays available for %s before it is refused.", iv, 2*iv, 2*iv, grace),
	}
}

func (s *Server) healthOf(r *http.Request, org string) (healthView, error) {
	v := healthView{OrgID: org, Revocation: s.revocationInfo()}
	o, err := s.Store.Org(r.Context(), org)
	if err != nil {
		return v, err
	}
	h, err := s.Store.Health(r.Context(), org)
	if errors.Is(err, store.ErrNotFound) {
		v.State = stateSystemManaged
		return v, nil
	}
	if err != nil {
		return v, err
	}
	v.State, v.Cause, v.Message = h.State, h.Cause, h.Message
	v.KeyVaultURI, v.KeyName, v.KeyVersion = o.VaultURL, o.KeyName, h.KeyVersion
	v.Since, v.LastCheck, v.LastOK, v.NextCheck = tp(h.Since), tp(h.LastCheck), tp(h.LastOK), tp(h.NextCheck)
	v.DataBlocked = s.Gate.Allow(org) != nil
	if h.State != keyhealth.Healthy {
		v.Remedy = preflight.Remedy(kms.Kind(h.Cause), s.Env, keyring.CustomerRef(o))
	}
	if h.RotateTo != "" {
		total, at, err := s.Store.CountAtVersion(r.Context(), org, h.RotateTo)
		if err == nil {
			v.Rotation = &rotationView{TargetVersion: h.RotateTo, DataKeysRewrapped: at, DataKeysTotal: total}
		}
	}
	return v, nil
}

func (s *Server) getHealth(w http.ResponseWriter, r *http.Request) {
	v, err := s.healthOf(r, orgOf(r))
	if err != nil {
		s.internal(w, r, err)
		return
	}
	writeJSON(w, 200, v)
}

func (s *Server) recheck(w http.ResponseWriter, r *http.Request) {
	org := orgOf(r)
	_, err := s.Monitor.CheckOrg(r.Context(), org)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, r, 409, codeNotEnabled, "Customer-managed keys not enabled", "This org uses system-managed keys; there is no customer key to check.",
			"Enable customer-managed keys first, or run a preflight check of a key with POST /data/infrastructure/manager/byok/preflight.")
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.getHealth(w, r)
}

// ---- alerts ----

func (s *Server) listAlerts(w http.ResponseWriter, r *http.Request) {
	status := r.URL.Query().Get("status")
	if status != "" && status != store.AlertOpen && status != store.AlertResolved {
		writeError(w, r, 400, codeBadField, "Invalid status filter", fmt.Sprintf("status is %q; use OPEN or RESOLVED, or leave it out for all.", status), "")
		return
	}
	list, err := s.Store.Alerts(r.Context(), orgOf(r), status)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	out := []alerts.View{}
	for _, a := range list {
		out = append(out, alerts.ViewOf(a))
	}
	writeJSON(w, 200, map[string]any{"alerts": out})
}

func (s *Server) getAlert(w http.ResponseWriter, r *http.Request) {
	a, err := s.Store.Alert(r.Context(), orgOf(r), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, r, 404, codeNotFound, "Alert not found", fmt.Sprintf("Org %q has no alert %q.", orgOf(r), r.PathValue("id")), "List alerts with GET /data/infrastructure/manager/byok/alerts.")
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	writeJSON(w, 200, alerts.ViewOf(a))
}

func (s *Server) ackAlert(w http.ResponseWriter, r *http.Request) {
	claims := r.Context().Value(ctxClaims).(*auth.Claims)
	a, err := s.Store.AcknowledgeAlert(r.Context(), orgOf(r), r.PathValue("id"), claims.Subject)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, r, 404, codeNotFound, "Alert not found", fmt.Sprintf("Org %q has no alert %q.", orgOf(r), r.PathValue("id")), "")
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	writeJSON(w, 200, alerts.ViewOf(a))
}

// ---- webhooks ----

// maxWebhooksPerOrg bounds the deliveries one org's alerts can cause.
const maxWebhooksPerOrg = 10

type webhookView struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Secret    string    `json:"secret,omitempty"` // only when created
	CreatedAt time.Time `json:"createdAt"`
}

func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request) {
	var req struct {
		URL string `json:"url"`
	}
	if err := decodeStrict(r, &req); err != nil {
		writeError(w, r, 400, codeBadJSON, "Malformed request body", err.Error(), `Send {"url": "https://hooks.example.com/cmk"}.`)
		return
	}
	if err := s.WebhookPolicy.Check(req.URL); err != nil {
		writeError(w, r, 400, codeBadField, "Webhook URL not allowed", err.Error(), "Use an https URL on a public host.")
		return
	}
	if hooks, err := s.Store.Webhooks(r.Context(), orgOf(r)); err != nil {
		s.internal(w, r, err)
		return
	} else if len(hooks) >= maxWebhooksPerOrg {
		writeError(w, r, 409, codeTooMany, "Too many webhooks", fmt.Sprintf("An org may subscribe at most %d webhooks.", maxWebhooksPerOrg), "Delete one you no longer use.")
		return
	}
	b := make([]byte, 32)
	rand.Read(b)
	hook := &store.Webhook{ID: uuid.NewString(), OrgID: orgOf(r), URL: req.URL, Secret: hex.EncodeToString(b)}
	if err := s.Store.CreateWebhook(r.Context(), hook); err != nil {
		s.internal(w, r, err)
		return
	}
	writeJSON(w, 201, webhookView{ID: hook.ID, URL: hook.URL, Secret: hook.Secret, CreatedAt: hook.CreatedAt.UTC()})
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request) {
	hooks, err := s.Store.Webhooks(r.Context(), orgOf(r))
	if err != nil {
		s.internal(w, r, err)
		return
	}
	out := []webhookView{}
	for _, h := range hooks {
		out = append(out, webhookView{ID: h.ID, URL: h.URL, CreatedAt: h.CreatedAt.UTC()})
	}
	writeJSON(w, 200, map[string]any{"webhooks": out})
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request) {
	err := s.Store.DeleteWebhook(r.Context(), orgOf(r), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, r, 404, codeNotFound, "Webhook not found", fmt.Sprintf("Org %q has no webhook %q.", orgOf(r), r.PathValue("id")), "")
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	w.WriteHeader(204)
}

// ---- audit ----

type auditView struct {
	ID         string    `json:"id"`
	At         time.Time `json:"at"`
	Op         string    `json:"operation"`
	Key        string    `json:"key,omitempty"`
	KeyVersion string    `json:"keyVersion,omitempty"`
	Outcome    string    `json:"outcome"`
	RequestID  string    `json:"requestId,omitempty"`
	Detail     string    `json:"detail,omitempty"`
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, r, 400, codeBadField, "Invalid limit", fmt.Sprintf("limit is %q; use a number from 1 to 1000.", v), "")
			return
		}
		limit = n
	}
	var since time.Time
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			writeError(w, r, 400, codeBadField, "Invalid since", fmt.Sprintf("since is %q; use an RFC 3339 time such as 2026-01-02T15:04:05Z.", v), "")
			return
		}
		since = t
	}
	entries, err := s.Store.Audit(r.Context(), orgOf(r), q.Get("operation"), since, limit)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	out := []auditView{}
	for _, e := range entries {
		out = append(out, auditView{ID: e.ID, At: e.At, Op: e.Op, Key: e.KeyRef, KeyVersion: e.KeyVersion, Outcome: e.Outcome, RequestID: e.RequestID, Detail: e.Detail})
	}
	writeJSON(w, 200, map[string]any{"entries": out})
}
