package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/store"
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
	status, back := acceptConsentAs(t, env, link, tenant, nil)
	if status != http.StatusFound {
		t.Fatalf("consent accept = %d, want 302", status)
	}
	return back
}

// acceptConsentAs is acceptConsent with the sign-in form changed by edit
// first (edit may set role=member, or drop the link's prompt); it returns
// the emulator's status and where it sends the browser back.
func acceptConsentAs(t *testing.T, env *devenv.Env, link, tenant string, edit func(form url.Values)) (int, string) {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	form := u.Query()
	form.Set("tenant", tenant)
	form.Set("action", "accept")
	if edit != nil {
		edit(form)
	}
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
	return resp.StatusCode, resp.Header.Get("Location")
}

// linkOf returns org's consent link and its state.
func linkOf(t *testing.T, env *devenv.Env, org string) (link, state string) {
	t.Helper()
	code, app := adminClient(t, env, org).do("GET", appRegistrationPath, nil)
	if code != 200 {
		t.Fatalf("app-registration of %s = %d %v", org, code, app)
	}
	link = app["applicationRedirectUrl"].(string)
	u, _ := url.Parse(link)
	return link, u.Query().Get("state")
}

// TestConsentByMemberBindsNothing: the link's prompt=admin_consent is only a
// request. Once the tenant consented (the demo org's administrator did), a
// plain member who opens a link without it gets a code silently; the ID
// token it redeems for names the tenant, but not a role that may consent
// for it, and binds nothing.
func TestConsentByMemberBindsNothing(t *testing.T) {
	env := startEnv(t)
	ctx := context.Background()
	const org = "MEMBER@CmkOrg"
	link, _ := linkOf(t, env, org)
	// With the prompt, a member cannot accept at all.
	if status, _ := acceptConsentAs(t, env, link, devenv.CustomerTenant, func(f url.Values) { f.Set("role", "member") }); status == http.StatusFound {
		t.Fatalf("a member accepted the admin-consent page (%d)", status)
	}
	status, back := acceptConsentAs(t, env, link, devenv.CustomerTenant, func(f url.Values) {
		f.Set("role", "member")
		f.Del("prompt")
	})
	if bu, _ := url.Parse(back); status != http.StatusFound || bu.Query().Get("code") == "" {
		t.Fatalf("a member's sign-in without the prompt = %d %s, want a code", status, back)
	}
	tokens := env.Emu.Stats().TokensIssued
	a := browserGet(t, back, "application/json")
	if body := a.json(t); a.status != http.StatusForbidden || body["errorCode"] != "CONSENT_INVALID" || !strings.Contains(body["detail"].(string), "not an administrator") {
		t.Fatalf("callback with a member's code = %d %v, want 403 CONSENT_INVALID naming the missing administrator", a.status, body)
	}
	if env.Emu.Stats().TokensIssued != tokens+1 {
		t.Errorf("the member's code was not redeemed (%d tokens issued, want %d): the refusal must come from the ID token", env.Emu.Stats().TokensIssued, tokens+1)
	}
	if got, _ := env.Svc.Store.OrgTenants(ctx, org); len(got) != 0 {
		t.Fatalf("OrgTenants(%s) after a member's consent = %v, want none", org, got)
	}
	// The same link's state is spent, even with an administrator's code.
	if a := browserGet(t, acceptConsent(t, env, link, devenv.CustomerTenant), "application/json"); a.status == 200 {
		t.Errorf("the member's link accepted by the administrator = %d %s, want refused: the state was used", a.status, a.body)
	}
	// An administrator with a fresh link binds.
	fresh, _ := linkOf(t, env, org)
	if a := browserGet(t, acceptConsent(t, env, fresh, devenv.CustomerTenant), "application/json"); a.status != 200 {
		t.Errorf("administrator's consent = %d %s, want 200", a.status, a.body)
	}
}

// TestConsentCodeOfAnotherLink: a code issued for org A's link (leaked from
// A's administrator's browser) with org B's state binds nothing: the code
// is bound to the PKCE challenge of A's link, and B's state gives another
// verifier. B is not bound and cannot enable A's key.
func TestConsentCodeOfAnotherLink(t *testing.T) {
	env := startEnv(t)
	ctx := context.Background()
	const orgB = "THIEF@CmkOrg"
	linkA, _ := linkOf(t, env, env.Org)
	back := acceptConsent(t, env, linkA, devenv.CustomerTenant) // A's administrator; the browser does not go back
	bu, _ := url.Parse(back)
	codeA := bu.Query().Get("code")
	_, stateB := linkOf(t, env, orgB)
	spliced := env.Svc.ConsentCallbackURL() + "?" + url.Values{"state": {stateB}, "code": {codeA}}.Encode()
	if a := browserGet(t, spliced, "application/json"); a.status == 200 {
		t.Fatalf("callback with B's state and A's code = %d %s, want refused", a.status, a.body)
	}
	if got, _ := env.Svc.Store.OrgTenants(ctx, orgB); len(got) != 0 {
		t.Fatalf("OrgTenants(%s) = %v, want none", orgB, got)
	}
	b := adminClient(t, env, orgB)
	if code, body := b.do("POST", configPath, configBody(orgB, "Stolen", env.KeyIdentifier)); code != 201 {
		t.Fatalf("B's POST config of A's key = %d %v", code, body)
	}
	st := assertFailed(t, b, "Stolen", "key_owner", "KEY_NOT_BOUND")
	// The stored steps name where the link is, not the link: its state is
	// B's credential.
	remedy, _ := json.Marshal(st["failure"].(map[string]any)["remedy"])
	if !strings.Contains(string(remedy), "applicationRedirectUrl") || strings.Contains(string(remedy), "state=") || strings.Contains(string(remedy), "/authorize") {
		t.Errorf("stored remedy = %s, want the app-registration API named and no consent link", remedy)
	}
	if o, _ := env.Svc.Store.Org(ctx, orgB); o.KEKMode != store.ModeSystem {
		t.Errorf("B's mode = %s, want SYSTEM", o.KEKMode)
	}
}

// TestConsentStateBindsOnce: a link binds once. Accepting the same link
// again gives a new, good code, but its state was used.
func TestConsentStateBindsOnce(t *testing.T) {
	env := startEnv(t)
	ctx := context.Background()
	const org = "ONCE@CmkOrg"
	link, _ := linkOf(t, env, org)
	if a := browserGet(t, acceptConsent(t, env, link, devenv.CustomerTenant), "application/json"); a.status != 200 {
		t.Fatalf("first consent = %d %s, want 200", a.status, a.body)
	}
	env.Svc.Store.DeleteOrg(ctx, org) // so a second binding would show
	env.Svc.Store.EnsureOrg(ctx, org)
	tokens := env.Emu.Stats().TokensIssued
	a := browserGet(t, acceptConsent(t, env, link, devenv.CustomerTenant), "application/json")
	if body := a.json(t); a.status != 400 || body["errorCode"] != "CONSENT_INVALID" {
		t.Errorf("the same state again = %d %v, want 400 CONSENT_INVALID", a.status, body)
	}
	if got, _ := env.Svc.Store.OrgTenants(ctx, org); len(got) != 0 {
		t.Errorf("OrgTenants(%s) after the state's second use = %v, want none", org, got)
	}
	if n := env.Emu.Stats().TokensIssued; n != tokens {
		t.Errorf("the used state's code was redeemed (%d tokens, want %d)", n, tokens)
	}
}

// TestConsentCallbackFlood: the callback is public and every code it
// redeems costs a call to Entra ID. 500 anonymous calls with a valid state
// and junk codes make a handful of redemptions: junk that is not shaped like
// an Entra ID code is refused before, and the rest is limited per org and
// per address (429 with Retry-After) and in how many run at once.
func TestConsentCallbackFlood(t *testing.T) {
	env := startEnv(t) // the consent limits are the defaults
	_, state := linkOf(t, env, "VICTIM@CmkOrg")
	before := env.Emu.Stats()
	var (
		mu       sync.Mutex
		statuses = map[int]int{}
		retry    bool
		wg       sync.WaitGroup
	)
	jobs := make(chan int)
	for range 25 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				code := fmt.Sprintf("junk-%d", i) // not an Entra ID code
				if i%2 == 0 {
					code = fmt.Sprintf("0.AXoA%058d", i) // looks like one
				}
				req, _ := http.NewRequest("GET", env.Svc.ConsentCallbackURL()+"?"+url.Values{"state": {state}, "code": {code}}.Encode(), nil)
				req.Header.Set("Accept", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				statuses[resp.StatusCode]++
				if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") != "" {
					retry = true
				}
				mu.Unlock()
			}
		}()
	}
	for i := range 500 {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	after := env.Emu.Stats()
	redeemed := after.TokenFailures + after.TokensIssued - before.TokenFailures - before.TokensIssued
	t.Logf("statuses %v, %d codes sent to the token endpoint", statuses, redeemed)
	if redeemed > 8 {
		t.Errorf("%d of 500 junk callbacks reached the token endpoint, want a handful (at most 8)", redeemed)
	}
	if statuses[http.StatusTooManyRequests] == 0 || !retry {
		t.Errorf("statuses %v, want some 429 with Retry-After", statuses)
	}
	if statuses[http.StatusOK] != 0 || statuses[http.StatusInternalServerError] != 0 {
		t.Errorf("statuses %v, want no 200 and no 500", statuses)
	}
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
	// The page a person sees names the org and the tenant (a link binds
	// once: this is a fresh one).
	_, app = c.do("GET", appRegistrationPath, nil)
	a = browserGet(t, acceptConsent(t, env, app["applicationRedirectUrl"].(string), devenv.CustomerTenant), "text/html")
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
