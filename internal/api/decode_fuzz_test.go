package api

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/cmk-project/cmk/internal/cmkapi"
)

// FuzzDecodeBodies feeds arbitrary bytes to the strict decoder of every
// JSON request body: it must never panic, must refuse unknown fields and
// trailing data, and whatever it accepts must survive a round trip.
func FuzzDecodeBodies(f *testing.F) {
	for _, s := range []string{
		`{"name":"Config1","type":"BYOK_CONFIG","imsOrgId":"O@CmkOrg","configData":{"providerType":"AZURE_KEYVAULT","keyVaultKeyIdentifier":"https://v.vault.azure.net/keys/k"}}`,
		`{"keyVaultKeyIdentifier":"https://v.vault.azure.net/keys/k"}`, `{"url":"https://hooks.example.com/x"}`, `{"name":"dev"}`,
		`{"name":"dev"} {}`, `{"name":"dev","extra":1}`, `[]`, `null`, `{"configData":{"x":1}}`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, v := range []any{&cmkapi.ConfigRequest{}, &cmkapi.PreflightRequest{}, &cmkapi.WebhookRequest{}, &cmkapi.Sandbox{}} {
			r := httptest.NewRequest("POST", "/", bytes.NewReader(body))
			if err := decodeStrict(r, v); err != nil {
				continue
			}
			again, err := json.Marshal(v)
			if err != nil {
				t.Fatalf("accepted %q but cannot re-encode it: %v", body, err)
			}
			back := reflect.New(reflect.TypeOf(v).Elem()).Interface()
			if err := json.Unmarshal(again, back); err != nil || !reflect.DeepEqual(back, v) {
				t.Fatalf("accepted %q as %+v; the round trip gives %+v, %v", body, v, back, err)
			}
		}
	})
}
