package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/auth"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/service"
	"github.com/cmk-project/cmk/internal/store"
)

// TestAuthorizationMatrix walks every operation of the served OpenAPI
// document and calls it as a caller who must be refused: without a token,
// with an expired one, with one from another issuer, for an org the token
// does not hold, with a body naming another org, with another org's
// sandbox, and without the operation's permission. Each answer must be the
// expected 4xx, and no answer may carry anything of the victim org.
func TestAuthorizationMatrix(t *testing.T) {
	env := startEnv(t)
	ctx := context.Background()
	const victim, attacker = "VICTIM0RG@CmkOrg", "ATTACK0RG@CmkOrg"

	// The victim's data, each piece carrying a marker no answer may show.
	// Ids are the victim's too, but plain: an answer may echo what the
	// caller sent.
	const marker = "victim-secret-7f3a"
	v := adminClient(t, env, victim)
	if code, body := v.do("POST", cmkapi.CreateSandbox.Path, map[string]string{"name": "vsb"}); code != 201 {
		t.Fatalf("victim: create sandbox = %d %v", code, body)
	}
	if code, _ := v.raw("PUT", cmkapi.PutProfile.Expand("vprof"), "vsb", strings.NewReader(`{"note":"`+marker+`"}`)); code != 200 {
		t.Fatalf("victim: put profile = %d", code)
	}
	if code, _ := v.raw("PUT", cmkapi.PutLakeFile.Expand("vds", "vfile"), "vsb", strings.NewReader(marker)); code != 201 {
		t.Fatalf("victim: put lake file = %d", code)
	}
	if code, body := v.do("POST", cmkapi.CreateConfig.Path, configBody(victim, "vconfig", "https://"+marker+".vault.azure.net/keys/k")); code != 201 {
		t.Fatalf("victim: submit config = %d %v", code, body)
	}
	alertID := "valert"
	a := &store.Alert{ID: alertID, OrgID: victim, Kind: cmkapi.AlertKeyAccessDisabled, Cause: "KEY_DISABLED"}
	a.Detail.Message = marker
	if _, err := env.Svc.Store.RaiseAlert(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := env.Svc.Store.CreateWebhook(ctx, &store.Webhook{ID: "vhook", OrgID: victim, URL: "https://" + marker + ".example/hook", SealedSecret: marker}); err != nil {
		t.Fatal(err)
	}
	// The attacker's org exists too, with its own default sandbox.
	adminClient(t, env, attacker).do("GET", cmkapi.ListSandboxes.Path, nil)

	// Path arguments name the victim's objects.
	args := map[string]string{"name": "vconfig", "id": alertID, "dataset": "vds", "file": "vfile"}
	pathOf := func(rt cmkapi.Route) string {
		p := rt.Path
		for k, val := range args {
			if rt == cmkapi.GetProfile || rt == cmkapi.PutProfile || rt == cmkapi.DeleteProfile {
				if k == "id" {
					val = "vprof"
				}
			}
			if rt == cmkapi.DeleteWebhook && k == "id" {
				val = "vhook"
			}
			p = strings.ReplaceAll(p, "{"+k+"}", val)
		}
		return p
	}
	bodyOf := func(rt cmkapi.Route, org string) []byte {
		switch rt {
		case cmkapi.CreateConfig:
			b, _ := json.Marshal(configBody(org, "c-"+org, "https://attacker.vault.azure.net/keys/k"))
			return b
		case cmkapi.PreflightKey:
			return []byte(`{"keyVaultKeyIdentifier": "https://attacker.vault.azure.net/keys/k"}`)
		case cmkapi.CreateSandbox:
			return []byte(`{"name": "asb"}`)
		case cmkapi.CreateWebhook:
			return []byte(`{"url": "https://hooks.example.com/x"}`)
		case cmkapi.PutProfile:
			return []byte(`{"a": 1}`)
		case cmkapi.PutLakeFile:
			return []byte("attacker")
		}
		return nil
	}

	// Tokens.
	full := mint(t, env.Svc.Issuer, attacker, nil, time.Hour)
	none := mint(t, env.Svc.Issuer, attacker, []string{}, time.Hour)
	past := *env.Svc.Issuer
	past.Now = func() time.Time { return time.Now().Add(-3 * time.Hour) }
	expired := mint(t, &past, attacker, nil, time.Hour)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	foreign := mint(t, auth.NewIssuer(key, service.DevIssuer, service.DevAudience), attacker, nil, time.Hour)

	type call struct {
		token, org, sandbox string
		bodyOrg             string
	}
	type caseRow struct {
		name     string
		call     call
		applies  func(cmkapi.Route) bool
		status   int
		code     string
		orDenied bool // the route may also answer with a refusal of its own (e.g. 404 of the victim's object)
	}
	all := func(cmkapi.Route) bool { return true }
	rows := []caseRow{
		{"no token", call{"", attacker, "prod", attacker}, all, 401, cmkapi.CodeMissingToken, false},
		{"expired token", call{expired, attacker, "prod", attacker}, all, 401, cmkapi.CodeTokenExpired, false},
		{"token of another issuer", call{foreign, attacker, "prod", attacker}, all, 401, cmkapi.CodeInvalidToken, false},
		{"org header not in token", call{full, victim, "vsb", victim}, all, 403, cmkapi.CodeOrgNotInToken, false},
		{"body names another org", call{full, attacker, "prod", victim},
			func(rt cmkapi.Route) bool { return rt == cmkapi.CreateConfig }, 400, cmkapi.CodeOrgMismatch, false},
		{"sandbox of another org", call{full, attacker, "vsb", attacker},
			func(rt cmkapi.Route) bool { return rt.Access == cmkapi.Sandboxed }, 404, cmkapi.CodeSandboxNotFound, false},
		{"missing permission", call{none, attacker, "prod", attacker},
			func(rt cmkapi.Route) bool { return rt.Permission != "" }, 403, cmkapi.CodePermissionRequired, false},
		// With every permission in its own org, an object of the victim is
		// still not found: objects belong to one org.
		{"victim's object by id", call{full, attacker, "prod", attacker},
			func(rt cmkapi.Route) bool {
				return strings.Contains(rt.Path, "{") && rt.Method != "PUT" && rt != cmkapi.ListDatasetFiles
			}, 404, cmkapi.CodeNotFound, true},
	}

	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
		} `json:"paths"`
	}
	resp, err := http.Get(env.Svc.URL() + cmkapi.OpenAPIDocument.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	byID := map[string]cmkapi.Route{}
	for _, rt := range cmkapi.Routes {
		byID[rt.ID] = rt
	}

	checked := 0
	for path, ops := range doc.Paths {
		for method, op := range ops {
			rt, ok := byID[op.OperationID]
			if !ok {
				continue // parameters and the like
			}
			if rt.Path != path || !strings.EqualFold(rt.Method, method) {
				t.Errorf("openapi.json: %s %s is operation %s, which the route table has at %s %s", method, path, op.OperationID, rt.Method, rt.Path)
			}
			if rt.Access == cmkapi.Public {
				continue
			}
			for _, row := range rows {
				if !row.applies(rt) {
					continue
				}
				var body io.Reader
				if b := bodyOf(rt, row.call.bodyOrg); b != nil {
					body = bytes.NewReader(b)
				}
				req, _ := http.NewRequest(rt.Method, env.Svc.URL()+pathOf(rt), body)
				if row.call.token != "" {
					req.Header.Set("Authorization", "Bearer "+row.call.token)
				}
				req.Header.Set(cmkapi.HeaderAPIKey, env.APIKey)
				req.Header.Set(cmkapi.HeaderOrgID, row.call.org)
				req.Header.Set(cmkapi.HeaderSandbox, row.call.sandbox)
				if rt == cmkapi.GetConfig {
					req.URL.RawQuery = "configType=" + cmkapi.ConfigTypeBYOK
				}
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				got, _ := io.ReadAll(res.Body)
				res.Body.Close()
				checked++
				if strings.Contains(string(got), marker) {
					t.Errorf("%s %s (%s) as %q answered %d with the victim's data: %.300s", rt.Method, path, rt.ID, row.name, res.StatusCode, got)
				}
				code := errorCode(got)
				wantStatus, wantCode := row.status, row.code
				if rt.Access == cmkapi.ServiceCaller && row.call.token != "" {
					// A service caller's route takes only its own issuer's
					// tokens: a token for an org, whatever it holds, is one
					// of another issuer (events_test.go: the forged ones).
					wantStatus, wantCode = 401, cmkapi.CodeInvalidToken
				}
				if res.StatusCode == wantStatus && code == wantCode {
					continue
				}
				if row.orDenied && res.StatusCode >= 400 && res.StatusCode < 500 {
					continue
				}
				t.Errorf("%s %s (%s) as %q = %d %s, want %d %s", rt.Method, path, rt.ID, row.name, res.StatusCode, code, wantStatus, wantCode)
			}
		}
	}
	t.Logf("authorization matrix: %d refused calls over the OpenAPI document", checked)
	if checked < 100 {
		t.Errorf("the matrix made only %d calls; the OpenAPI document or the route table lost routes", checked)
	}

	// Nothing of the victim's changed.
	code, got := v.raw("GET", cmkapi.GetProfile.Expand("vprof"), "vsb", nil)
	if code != 200 || !strings.Contains(string(got), marker) {
		t.Errorf("victim's profile after the matrix = %d %s", code, got)
	}
	if code, list := v.do("GET", cmkapi.ListWebhooks.Path, nil); code != 200 || len(list["webhooks"].([]any)) != 1 {
		t.Errorf("victim's webhooks after the matrix = %d %v, want the one", code, list)
	}
	if al, err := env.Svc.Store.Alert(ctx, victim, alertID); err != nil || al.AcknowledgedBy != "" {
		t.Errorf("victim's alert after the matrix = %+v, %v; want it unacknowledged", al, err)
	}
}

func mint(t *testing.T, iss *auth.Issuer, org string, perms []string, ttl time.Duration) string {
	t.Helper()
	if perms == nil {
		perms = service.AllPermissions
	}
	tok, err := iss.Mint(auth.Claims{Subject: "matrix", ClientID: service.DevAPIKey, Orgs: map[string][]string{org: perms}}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
