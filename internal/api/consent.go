package api

import (
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/control"
	"github.com/cmk-project/cmk/internal/ratelimit"
)

// appRegistration answers the platform's app with the calling org's own
// consent link and the tenants the org is bound to.
func (s *Server) appRegistration(w http.ResponseWriter, r *http.Request) {
	org := orgOf(r)
	app := s.App
	link, err := s.Control.ConsentLink(org)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if link != "" {
		app.RedirectURL = link
	}
	tenants, err := s.Control.BoundTenants(r.Context(), org)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	app.BoundTenants = append([]string{}, tenants...)
	writeJSON(w, 200, app)
}

// consentCallback is where Entra ID sends the administrator's browser after
// the admin consent of an org's link. It answers a page for the person (or
// JSON when asked for it), and binds the org only when the link's state and
// the authorization code both check out (control.CompleteConsent).
func (s *Server) consentCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	client, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		client = r.RemoteAddr
	}
	b, err := s.Control.CompleteConsent(r.Context(), control.ConsentReply{
		State: q.Get("state"), Code: q.Get("code"), Error: q.Get("error"), ErrorDescription: q.Get("error_description"), Client: client,
	})
	wantJSON := strings.Contains(r.Header.Get("Accept"), "application/json")
	var ex *ratelimit.Exceeded
	if errors.As(err, &ex) {
		status, code, _ := statusOf(ex)
		if wantJSON {
			s.tooMany(w, r, status, code, ex)
			return
		}
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(ex)))
		writeConsentPage(w, status, consentView{Title: "Too many requests", Code: code,
			Detail: "This consent answer was not checked: too many arrived for this org or from this address; nothing was recorded.",
			Hint:   fmt.Sprintf("Open the consent link again in %d seconds.", retryAfterSeconds(ex))})
		return
	}
	if err != nil {
		var p *control.Problem
		if !errors.As(err, &p) {
			s.internal(w, r, err)
			return
		}
		status, code, ok := statusOf(p.Err)
		if !ok {
			s.internal(w, r, err)
			return
		}
		if wantJSON {
			writeError(w, r, status, code, p.Title, p.Detail, p.Hint)
			return
		}
		writeConsentPage(w, status, consentView{Title: p.Title, Detail: p.Detail, Hint: p.Hint, Code: code})
		return
	}
	if wantJSON {
		writeJSON(w, 200, cmkapi.ConsentBinding{IMSOrgID: b.OrgID, TenantID: b.TenantID, New: b.New})
		return
	}
	writeConsentPage(w, 200, consentView{OK: true, Title: "Consent recorded", Org: b.OrgID, Tenant: b.TenantID})
}

type consentView struct {
	OK                  bool
	Title, Detail, Hint string
	Code, Org, Tenant   string
}

var consentPage = template.Must(template.New("consent").Parse(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} - cmk</title>
<style>
body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;line-height:1.5;color:#1b1b1b}
main{border:1px solid #8a8886;border-radius:4px;padding:1.5rem}
.err{color:#a4262c}
code{word-break:break-all}
</style></head>
<body><main>
<h1>{{.Title}}</h1>
{{if .OK}}<p role="status">Azure tenant <code id="tenant">{{.Tenant}}</code> is now bound to org <code id="org">{{.Org}}</code>:
the org may use keys from key vaults of this tenant, and no other org can use them unless an administrator of this tenant consents for it too.</p>
<p>Next, grant the app the Key Vault Crypto Service Encryption User role on your key vault, then send your key identifier.</p>
{{else}}<p class="err" role="alert" data-code="{{.Code}}">{{.Detail}}</p>
<p>{{.Hint}}</p>{{end}}
<p><a href="/ui/">Go to the Encryption page</a></p>
</main></body></html>
`))

// writeConsentPage writes the callback's page. The URL that brought the
// browser here holds a one-time code and the link's state, so the page is
// not cached, framed or named in a Referer.
func writeConsentPage(w http.ResponseWriter, status int, v consentView) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	w.WriteHeader(status)
	consentPage.Execute(w, v)
}
