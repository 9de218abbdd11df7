// Package web serves the Encryption page: the tenant administrator's view of
// customer-managed keys, as static assets embedded in the binary that call
// the same API with the same tokens.
package web

import (
	"net/http"
)

// Options configure the UI.
type Options struct {
	// DevLogin, when set (cmk dev only), mints a token for the demo org so
	// the page can sign in without an identity provider.
	DevLogin func() (org, apiKey, token string, err error)
}

// Handler serves the UI under /ui/.
func Handler(o Options) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "the Encryption page is not built yet", http.StatusNotFound)
	})
}
