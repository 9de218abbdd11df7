package api

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cmk-project/cmk/internal/auth"
	"github.com/cmk-project/cmk/internal/cmkapi"
)

// appVerifier accepts tokens "app:<appid>" and nothing else.
type appVerifier struct{}

func (appVerifier) Verify(_ context.Context, token string) (*auth.Claims, error) {
	app, ok := strings.CutPrefix(token, "app.")
	if !ok {
		return nil, &auth.TokenError{Reason: auth.ErrBadSignature, Detail: "not a test token"}
	}
	return &auth.Claims{AppID: app}, nil
}

const eventGridApp = "4962773b-9cdb-44cf-a8bf-237846a00ab7"

func postEvent(t *testing.T, s *Server, token, kind, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequest("POST", cmkapi.KeyVaultEvents.Path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if kind != "" {
		req.Header.Set("aeg-event-type", kind)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

func TestKeyVaultEventsEndpoint(t *testing.T) {
	off := &Server{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if code, body := postEvent(t, off, "app."+eventGridApp, "Notification", "[]"); code != 404 || !strings.Contains(body, cmkapi.CodeNotFound) {
		t.Errorf("with events not configured = %d %s, want 404", code, body)
	}

	s := &Server{Log: off.Log, Events: &EventSource{Verifier: appVerifier{}, AppID: eventGridApp}}
	validation := func(code string) string {
		b, _ := json.Marshal([]map[string]any{{"id": "1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "subject": "",
			"data": map[string]string{"validationCode": code, "validationUrl": "https://169.254.169.254/never-fetched"}}})
		return string(b)
	}
	keyEvent := `[{"eventType":"Microsoft.KeyVault.KeyNewVersionCreated","subject":"k","data":{"Id":"https://evil.example.com/keys/k/v","ObjectType":"Key","ObjectName":"k"}}]`
	for _, tc := range []struct {
		name, token, kind, body string
		status                  int
		contains                string
	}{
		{"validation", "app." + eventGridApp, "SubscriptionValidation", validation("512d38b6-c7b8-40c8-89fe-f46f9e9622b6"), 200, `"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"`},
		{"no token", "", "SubscriptionValidation", validation("c"), 401, cmkapi.CodeMissingToken},
		{"a token that does not verify", "forged", "SubscriptionValidation", validation("c"), 401, cmkapi.CodeInvalidToken},
		{"another app", "app.someone-else", "SubscriptionValidation", validation("c"), 401, cmkapi.CodeInvalidToken},
		{"no delivery type", "app." + eventGridApp, "", validation("c"), 400, "aeg-event-type"},
		{"a validation code too long", "app." + eventGridApp, "SubscriptionValidation", validation(strings.Repeat("c", 257)), 400, "validationCode"},
		{"a validation code with a newline", "app." + eventGridApp, "SubscriptionValidation", validation("a\nb"), 400, "validationCode"},
		{"two validation events", "app." + eventGridApp, "SubscriptionValidation", "[" + validation("a")[1:len(validation("a"))-1] + "," + validation("b")[1:], 400, cmkapi.CodeMalformedRequestBody},
		{"not an array", "app." + eventGridApp, "Notification", `{"eventType":"x"}`, 400, cmkapi.CodeMalformedRequestBody},
		{"empty array", "app." + eventGridApp, "Notification", `[]`, 400, cmkapi.CodeMalformedRequestBody},
		{"too large", "app." + eventGridApp, "Notification", "[" + strings.Repeat(" ", 1<<20) + "]", 413, ""},
		{"too many events", "app." + eventGridApp, "Notification", "[" + strings.Repeat(`{"eventType":"Other"},`, 100) + `{"eventType":"Other"}]`, 413, "at most 100 events"},
		{"a key outside the allowlist", "app." + eventGridApp, "Notification", keyEvent, 400, "not an allowed key identifier"},
	} {
		code, body := postEvent(t, s, tc.token, tc.kind, tc.body)
		if code != tc.status || !strings.Contains(body, tc.contains) {
			t.Errorf("%s: = %d %.200s, want %d containing %q", tc.name, code, body, tc.status, tc.contains)
		}
	}
}
