package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/cmk-project/cmk/internal/devenv"
)

const appRegistrationPath = "/data/infrastructure/manager/byok/app-registration"

// consentAnswer is what the browser gets back from the service.
type consentAnswer struct {
	status int
	header http.Header
	body   string
}

func (a consentAnswer) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(a.body), &m); err != nil {
		t.Fatalf("answer is not JSON: %s", a.body)
	}
	return m
}

func browserGet(t *testing.T, u, accept string) consentAnswer {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Accept", accept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return consentAnswer{resp.StatusCode, resp.Header, string(b)}
}

// acceptConsent opens link on the emulator's consent page as an
// administrator of tenant and accepts; it returns where the emulator sends
// the browser back, without going there.
func acceptConsent(t *testing.T, env *devenv.Env, link, tenant string) string {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	form := u.Query()
	form.Set("tenant", tenant)
	form.Set("action", "accept")
	u.RawQuery = ""
	req, _ := http.NewRequest("POST", u.String(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	cl := env.Emu.HTTPClient()
	cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("consent accept = %d, want 302", resp.StatusCode)
	}
	return resp.Header.Get("Location")
}

// TestConsentCallback: the consent callback binds the org named by the
// link's sealed state to the tenant of the ID token its code is exchanged
// for, and nothing else binds: a redirect that names a tenant in its URL, a
// made-up code, a replayed answer, a declined consent, a missing state.
// Its page is not cached, framed or sent as a Referer, and repeats none of
// the redirect's own text.
func TestConsentCallback(t *testing.T) {
	env := startEnv(t)
	ctx := context.Background()
	const org = "NEWORG@CmkOrg"
	c := adminClient(t, env, org)
	code, app := c.do("GET", appRegistrationPath, nil)
	if code != 200 || len(app["boundTenants"].([]any)) != 0 {
		t.Fatalf("app-registration of a new org = %d %v, want no bound tenant", code, app)
	}
	link := app["applicationRedirectUrl"].(string)
	lu, _ := url.Parse(link)
	state := lu.Query().Get("state")
	if state == "" || lu.Query().Get("redirect_uri") != env.Svc.ConsentCallbackURL() {
		t.Fatalf("consent link %s has no state or does not come back to the callback", link)
	}
	callback := env.Svc.ConsentCallbackURL()
	with := func(q url.Values) string { return callback + "?" + q.Encode() }

	for _, tc := range []struct {
		name string
		q    url.Values
	}{
		{"tenant named in the URL, no code", url.Values{"state": {state}, "admin_consent": {"True"}, "tenant": {devenv.CustomerTenant}}},
		{"made-up code", url.Values{"state": {state}, "code": {"made-up"}, "tenant": {devenv.CustomerTenant}}},
		{"no state", url.Values{"code": {"made-up"}}},
		{"state of a link not ours", url.Values{"state": {"v1.AAAAAGmlUZABAgMEBQYHCE9SR0FAQ21rT3Jn.lLH4ixZjw88zGP8kDTpRYLCGTq6Fym4eb3E_2Ui3D8E"}, "code": {"made-up"}}},
		{"declined", url.Values{"state": {state}, "error": {"access_denied"}, "error_description": {"AADSTS65004: declined"}}},
	} {
		a := browserGet(t, with(tc.q), "application/json")
		if body := a.json(t); a.status != 400 || body["errorCode"] != "CONSENT_INVALID" || body["detail"] == "" {
			t.Errorf("callback (%s) = %d %v, want 400 CONSENT_INVALID", tc.name, a.status, body)
		}
	}
	// The page for a person: escaped, and none of the redirect's own words.
	a := browserGet(t, with(url.Values{"state": {state}, "error": {"<script>alert(1)</script>"}, "error_description": {"AADSTS65004 call +1 555 0100 <script>"}}), "text/html")
	if a.status != 400 || !strings.HasPrefix(a.header.Get("Content-Type"), "text/html") || strings.Contains(a.body, "<script>") || strings.Contains(a.body, "555") ||
		!strings.Contains(a.body, "AADSTS65004") {
		t.Errorf("declined consent page = %d %s, want 400 HTML naming AADSTS65004 and nothing else of the redirect", a.status, a.body)
	}
	for h, want := range map[string]string{"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"} {
		if got := a.header.Get(h); got != want {
			t.Errorf("consent page %s = %q, want %q", h, got, want)
		}
	}
	if csp := a.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("consent page CSP = %q, want default-src 'none'", csp)
	}
	if got, _ := env.Svc.Store.OrgTenants(ctx, org); len(got) != 0 {
		t.Fatalf("OrgTenants(%s) after refused answers = %v, want none", org, got)
	}

	// A real consent: Entra ID's redirect carries a code and the state, no
	// tenant; the callback binds the org to the tenant the code was for.
	back := acceptConsent(t, env, link, devenv.CustomerTenant)
	if bu, _ := url.Parse(back); bu.Query().Has("tenant") || bu.Query().Get("code") == "" {
		t.Fatalf("consent redirect %s, want a code and no tenant", back)
	}
	a = browserGet(t, back, "application/json")
	if body := a.json(t); a.status != 200 || body["imsOrgId"] != org || body["tenantId"] != devenv.CustomerTenant || body["new"] != true {
		t.Fatalf("callback with the real answer = %d %v, want %s bound to %s", a.status, body, org, devenv.CustomerTenant)
	}
	if a := browserGet(t, back, "application/json"); a.status != 400 {
		t.Errorf("the same answer again = %d %s, want 400: a code is redeemed once", a.status, a.body)
	}
	// The page a person sees names the org and the tenant.
	a = browserGet(t, acceptConsent(t, env, link, devenv.CustomerTenant), "text/html")
	if a.status != 200 || !strings.Contains(a.body, devenv.CustomerTenant) || !strings.Contains(a.body, org) || a.header.Get("Cache-Control") != "no-store" {
		t.Errorf("consent page = %d %s, want 200 naming the tenant and the org", a.status, a.body)
	}
	if code, app := c.do("GET", appRegistrationPath, nil); code != 200 || len(app["boundTenants"].([]any)) != 1 || app["boundTenants"].([]any)[0] != devenv.CustomerTenant {
		t.Errorf("app-registration after consent = %d %v, want boundTenants [%s]", code, app, devenv.CustomerTenant)
	}
	// Another org's answer never binds this one: the state decides.
	other := adminClient(t, env, "SOMEONE@CmkOrg")
	_, oapp := other.do("GET", appRegistrationPath, nil)
	if a := browserGet(t, acceptConsent(t, env, oapp["applicationRedirectUrl"].(string), devenv.CustomerTenant), "application/json"); a.json(t)["imsOrgId"] != "SOMEONE@CmkOrg" {
		t.Errorf("another org's consent = %s, want it bound to that org", a.body)
	}
	if got, _ := env.Svc.Store.OrgTenants(ctx, org); len(got) != 1 {
		t.Errorf("OrgTenants(%s) = %v, want one binding", org, got)
	}
}
