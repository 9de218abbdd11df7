// Package web serves the Encryption page: the tenant administrator's view of
// customer-managed keys, as static assets embedded in the binary that call
// the same API with the same tokens.
//
// The page is plain HTML, CSS and JavaScript modules with no build step. It
// keeps the org id, API key and token the administrator signs in with in the
// browser's sessionStorage and sends them as the API's usual headers; this
// package holds no credentials and proxies nothing.
//
// Every response carries a Content-Security-Policy that allows only this
// origin, so the page loads nothing from elsewhere and runs no inline code.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strings"
	"time"
)

// Options configure the UI.
type Options struct {
	// DevLogin, when set (cmk dev only), mints a token for the demo org so
	// the page can sign in without an identity provider. It answers only
	// requests made to a loopback address by its own page (see
	// localRequest).
	DevLogin func() (org, apiKey, token string, err error)
}

// Prefix is where the API mounts the UI.
const Prefix = "/ui/"

// ContentSecurityPolicy is sent with every UI response. Everything the page
// needs comes from its own origin; it has no inline scripts or styles, is
// never framed, and submits forms only to itself.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

//go:embed static
var static embed.FS

// asset is one embedded file, read once at start.
type asset struct {
	body  []byte
	ctype string
	etag  string
}

var startTime = time.Now()

// contentTypes are fixed here rather than taken from the host's MIME tables,
// which differ between systems (and nosniff makes a wrong one fatal).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

// Handler serves the UI under /ui/: the page's files, GET /ui/api/config and,
// when o.DevLogin is set, POST /ui/api/dev-login. Anything else is 404;
// directories are never listed.
func Handler(o Options) http.Handler {
	assets := loadAssets()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui/api/config", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"devLogin": o.DevLogin != nil})
	})
	if o.DevLogin != nil {
		mux.HandleFunc("POST /ui/api/dev-login", func(w http.ResponseWriter, r *http.Request) {
			devLogin(w, r, o.DevLogin)
		})
	}
	mux.HandleFunc("/ui/api/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"title": "Not found", "detail": "There is no such UI endpoint."})
	})
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		serveAsset(w, r, assets)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		mux.ServeHTTP(w, r)
	})
}

// loadAssets reads every embedded file, keyed by its path under /ui/.
func loadAssets() map[string]asset {
	out := map[string]asset{}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ctype, ok := contentTypes[path.Ext(p)]
		if !ok {
			ctype = "application/octet-stream"
		}
		out[strings.TrimPrefix(p, "static/")] = asset{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		// The files are compiled in; failing to read them is a build bug.
		panic("web: reading embedded assets: " + err.Error())
	}
	return out
}

func serveAsset(w http.ResponseWriter, r *http.Request, assets map[string]asset) {
	name := strings.TrimPrefix(r.URL.Path, Prefix)
	if name == "" {
		name = "index.html"
	}
	a, ok := assets[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("ETag", a.etag)
	// Revalidate every time: the files change with each release of the
	// binary and the ETag makes an unchanged file cost one round trip.
	h.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, name, startTime, bytes.NewReader(a.body))
}

func devLogin(w http.ResponseWriter, r *http.Request, mint func() (string, string, string, error)) {
	// The answer is a credential: refuse requests another site's page made.
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		writeJSON(w, http.StatusForbidden, map[string]string{"title": "Cross-site request refused", "detail": "Dev login works only from the Encryption page itself."})
		return
	}
	if why := localRequest(r); why != "" {
		slog.Warn("ui dev login refused", "reason", why)
		writeJSON(w, http.StatusForbidden, map[string]string{"title": "Dev login refused", "detail": "Dev login works only on this machine, from the Encryption page opened at http://localhost:<port>/ui/ or http://127.0.0.1:<port>/ui/: " + why + "."})
		return
	}
	org, apiKey, token, err := mint()
	if err != nil {
		slog.Error("ui dev login failed", "err", err)
		writeJSON(w, http.StatusInternalServerError, map[string]string{"title": "Dev login failed", "detail": "The service could not mint a token for the demo org."})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]string{"org": org, "apiKey": apiKey, "token": token})
}

// localRequest says why r is not a request the dev login may answer, or "".
// The Host must be a loopback name or address (localhost, 127.0.0.0/8,
// [::1]) with the port this server accepted the connection on, and an
// Origin, when sent, must be that same http origin. A page from another site
// that rebinds its own DNS name to 127.0.0.1 reaches this server with its own
// name as Host and Origin, and so is refused.
func localRequest(r *http.Request) string {
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		host, port = r.Host, "80"
	}
	if ip := net.ParseIP(host); !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
		return fmt.Sprintf("the request was addressed to %q, not to a loopback name or address", clip(r.Host))
	}
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if local == nil {
		return "the server's own address is unknown"
	}
	if _, lport, err := net.SplitHostPort(local.String()); err != nil || lport != port {
		return fmt.Sprintf("the request was addressed to port %s, but this server listens on %s", clip(port), local)
	}
	if o := r.Header.Get("Origin"); o != "" && !strings.EqualFold(o, "http://"+r.Host) {
		return fmt.Sprintf("the request came from the page at %q, not from %q", clip(o), "http://"+r.Host)
	}
	return ""
}

// clip bounds request-supplied text echoed in an answer.
func clip(s string) string {
	const max = 100
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
