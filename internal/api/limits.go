package api

import (
	"net/http"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/ratelimit"
)

// limited charges the caller's org for one call of the route's limit class
// before the handler runs, and meters the vault calls the handler makes for
// the vault cap. A route without a class, or a server without Limits, is
// not limited.
func (s *Server) limited(rt cmkapi.Route, h http.Handler) http.Handler {
	if rt.Limit == "" || s.Limits == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.Limits.Org(rt.Limit, orgOf(r)); err != nil {
			s.fail(w, r, err)
			return
		}
		h.ServeHTTP(w, r.WithContext(ratelimit.Metered(r.Context())))
	})
}

// vaultCapped answers 429 when the vault cap refused a vault call made for
// this request; the handler then sends nothing else. The operation saw the
// refusal as the vault throttling, so what it returned says nothing about
// the key.
func (s *Server) vaultCapped(w http.ResponseWriter, r *http.Request) bool {
	err := ratelimit.Refused(r.Context())
	if err == nil {
		return false
	}
	s.fail(w, r, err)
	return true
}
