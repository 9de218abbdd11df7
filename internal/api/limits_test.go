package api

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cmk-project/cmk/internal/cmkapi"
)

// limitedByHandler are routes limited by their operation rather than by a
// route class: the consent callback is public, so it is charged to the org
// of its verified state and to its client address (control.Ownership.Limits).
var limitedByHandler = map[string]bool{cmkapi.ConsentCallback.ID: true}

// TestLimitedRoutesDocument429 checks that every route with a rate-limit
// class (or limited by its handler) documents its 429 and Retry-After in
// openapi.json, and no other route does.
func TestLimitedRoutesDocument429(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]struct {
			Responses map[string]struct {
				Headers map[string]any `json:"headers"`
			} `json:"responses"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.json does not parse: %v", err)
	}
	for _, rt := range cmkapi.Routes {
		res, documented := doc.Paths[rt.Path][strings.ToLower(rt.Method)].Responses["429"]
		limited := rt.Limit != "" || limitedByHandler[rt.ID]
		switch {
		case limited && (!documented || res.Headers["Retry-After"] == nil):
			t.Errorf("route %s (limit %q) does not document 429 with Retry-After", rt.Pattern(), rt.Limit)
		case !limited && documented:
			t.Errorf("route %s documents 429 but has no limit class", rt.Pattern())
		}
	}
}
