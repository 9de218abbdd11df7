package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/lake"
	"github.com/cmk-project/cmk/internal/metrics"
	"github.com/cmk-project/cmk/internal/profile"
)

// TestOpenAPIMatchesRoutes checks that the OpenAPI document describes
// exactly the routes of cmkapi.Routes: each with its method and
// operationId, and nothing more.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.json does not parse: %v", err)
	}
	inTable := map[string]bool{}
	for _, rt := range cmkapi.Routes {
		key := rt.Method + " " + rt.Path
		inTable[key] = true
		op, ok := doc.Paths[rt.Path][strings.ToLower(rt.Method)]
		if !ok {
			t.Errorf("route %s (%s) is not in openapi.json", key, rt.ID)
			continue
		}
		if op.OperationID != rt.ID {
			t.Errorf("openapi.json operationId of %s = %q, want %q", key, op.OperationID, rt.ID)
		}
	}
	for path, ops := range doc.Paths {
		for method := range ops {
			switch method {
			case "get", "post", "put", "delete", "patch":
			default:
				continue // parameters and the like
			}
			if key := strings.ToUpper(method) + " " + path; !inTable[key] {
				t.Errorf("openapi.json documents %s, which is not a route", key)
			}
		}
	}
}

// TestEveryRouteHasAHandler checks that a server with every part serves
// every route of the table, and has no handler for a route not in it.
func TestEveryRouteHasAHandler(t *testing.T) {
	s := &Server{Lake: &lake.Lake{}, Profiles: &profile.Store{}, Metrics: metrics.New(), UI: http.NotFoundHandler(),
		Ready: func(context.Context) cmkapi.Readiness { return cmkapi.Readiness{} }}
	hs := s.handlers()
	ids := map[string]bool{}
	for _, rt := range cmkapi.Routes {
		if ids[rt.ID] {
			t.Errorf("route id %q appears twice in cmkapi.Routes", rt.ID)
		}
		ids[rt.ID] = true
		if hs[rt.ID] == nil {
			t.Errorf("route %s (%s) has no handler", rt.Pattern(), rt.ID)
		}
	}
	for id := range hs {
		if !ids[id] {
			t.Errorf("handler %q serves no route of cmkapi.Routes", id)
		}
	}
}
