package web

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Result()
}

// localAddr is where the tests pretend the server listens.
var localAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}

// devLoginRequest is a POST to the dev login addressed to host, arriving on
// a connection to localAddr, with origin as its Origin header unless "".
func devLoginRequest(host, origin string) *http.Request {
	req := httptest.NewRequest("POST", "/ui/api/dev-login", nil)
	req.Host = host
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	return req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, localAddr))
}

func serve(h http.Handler, req *http.Request) *http.Response {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAssetsServed(t *testing.T) {
	h := Handler(Options{})
	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/ui/", "text/html; charset=utf-8", `<script type="module" src="app.js">`},
		{"/ui/index.html", "text/html; charset=utf-8", "Manage Customer Managed Key"},
		{"/ui/app.js", "text/javascript; charset=utf-8", "import"},
		{"/ui/api.js", "text/javascript; charset=utf-8", "x-gw-ims-org-id"},
		{"/ui/keyid.js", "text/javascript; charset=utf-8", "checkKeyIdentifier"},
		{"/ui/dom.js", "text/javascript; charset=utf-8", "export function h"},
		{"/ui/style.css", "text/css; charset=utf-8", ":focus-visible"},
		{"/ui/favicon.svg", "image/svg+xml", "<svg"},
	} {
		res := get(t, h, "GET", tc.path)
		if res.StatusCode != 200 {
			t.Errorf("GET %s = %d, want 200", tc.path, res.StatusCode)
			continue
		}
		if got := res.Header.Get("Content-Type"); got != tc.ctype {
			t.Errorf("GET %s Content-Type = %q, want %q", tc.path, got, tc.ctype)
		}
		if b := body(t, res); !strings.Contains(b, tc.contains) {
			t.Errorf("GET %s body lacks %q", tc.path, tc.contains)
		}
	}
}

func TestHeadAndConditionalGet(t *testing.T) {
	h := Handler(Options{})
	res := get(t, h, "HEAD", "/ui/app.js")
	if res.StatusCode != 200 {
		t.Fatalf("HEAD /ui/app.js = %d, want 200", res.StatusCode)
	}
	etag := res.Header.Get("ETag")
	if etag == "" {
		t.Fatal("HEAD /ui/app.js has no ETag")
	}
	req := httptest.NewRequest("GET", "/ui/app.js", nil)
	req.Header.Set("If-None-Match", etag)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotModified {
		t.Errorf("GET /ui/app.js with If-None-Match = %d, want 304", rec.Code)
	}
}

func TestSecurityHeadersOnEveryResponse(t *testing.T) {
	h := Handler(Options{DevLogin: func() (string, string, string, error) { return "o", "k", "t", nil }})
	for _, tc := range []struct{ method, path string }{
		{"GET", "/ui/"},
		{"GET", "/ui/app.js"},
		{"GET", "/ui/api/config"},
		{"POST", "/ui/api/dev-login"},
		{"GET", "/ui/nope.html"},
		{"GET", "/ui/api/nope"},
	} {
		res := get(t, h, tc.method, tc.path)
		csp := res.Header.Get("Content-Security-Policy")
		if csp != ContentSecurityPolicy {
			t.Errorf("%s %s Content-Security-Policy = %q, want %q", tc.method, tc.path, csp, ContentSecurityPolicy)
		}
		if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s %s X-Content-Type-Options = %q, want nosniff", tc.method, tc.path, got)
		}
	}
	// The policy allows only this origin and nothing inline.
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(ContentSecurityPolicy, want) {
			t.Errorf("ContentSecurityPolicy lacks %q", want)
		}
	}
	for _, bad := range []string{"unsafe-inline", "unsafe-eval", "*", "http:", "https:", "data:"} {
		if strings.Contains(ContentSecurityPolicy, bad) {
			t.Errorf("ContentSecurityPolicy contains %q", bad)
		}
	}
}

// The page must not reach for anything off its own origin, nor rely on
// inline code the policy would block.
func TestAssetsAreSelfContained(t *testing.T) {
	h := Handler(Options{})
	external := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//`)
	for _, p := range []string{"/ui/", "/ui/app.js", "/ui/api.js", "/ui/dom.js", "/ui/keyid.js", "/ui/style.css"} {
		b := body(t, get(t, h, "GET", p))
		if m := external.FindString(b); m != "" {
			t.Errorf("%s references another origin: %q", p, m)
		}
		if strings.Contains(b, "@import") || strings.Contains(b, "url(http") {
			t.Errorf("%s imports a remote stylesheet or resource", p)
		}
	}
	html := body(t, get(t, h, "GET", "/ui/"))
	if regexp.MustCompile(`<script(?:\s[^>]*)?>\s*\S`).MatchString(strings.ReplaceAll(html, `<script type="module" src="app.js"></script>`, "")) {
		t.Error("index.html has an inline script")
	}
	if strings.Contains(html, " style=") || strings.Contains(html, "<style") {
		t.Error("index.html has inline styles")
	}
	if regexp.MustCompile(`\son[a-z]+=`).MatchString(html) {
		t.Error("index.html has an inline event handler")
	}
}

func TestConfigReportsDevLogin(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want bool
	}{
		{Options{}, false},
		{Options{DevLogin: func() (string, string, string, error) { return "o", "k", "t", nil }}, true},
	} {
		res := get(t, Handler(tc.opts), "GET", "/ui/api/config")
		var got struct {
			DevLogin bool `json:"devLogin"`
		}
		if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != 200 || got.DevLogin != tc.want {
			t.Errorf("GET /ui/api/config = %d devLogin=%v, want 200 devLogin=%v", res.StatusCode, got.DevLogin, tc.want)
		}
	}
}

func TestDevLoginOnlyWhenEnabled(t *testing.T) {
	if res := get(t, Handler(Options{}), "POST", "/ui/api/dev-login"); res.StatusCode != 404 {
		t.Errorf("POST /ui/api/dev-login without DevLogin = %d, want 404", res.StatusCode)
	}

	calls := 0
	h := Handler(Options{DevLogin: func() (string, string, string, error) {
		calls++
		return "ORG@Cmk", "key", "tok", nil
	}})
	res := serve(h, devLoginRequest("127.0.0.1:8080", "http://127.0.0.1:8080"))
	var got map[string]string
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"org": "ORG@Cmk", "apiKey": "key", "token": "tok"}
	if res.StatusCode != 200 || got["org"] != want["org"] || got["apiKey"] != want["apiKey"] || got["token"] != want["token"] {
		t.Errorf("POST /ui/api/dev-login = %d %v, want 200 %v", res.StatusCode, got, want)
	}
	if cc := res.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("dev-login Cache-Control = %q, want no-store", cc)
	}
	if res := get(t, h, "GET", "/ui/api/dev-login"); res.StatusCode != 405 && res.StatusCode != 404 {
		t.Errorf("GET /ui/api/dev-login = %d, want 405 or 404", res.StatusCode)
	}

	req := devLoginRequest("127.0.0.1:8080", "")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 403 {
		t.Errorf("cross-site POST /ui/api/dev-login = %d, want 403", rec.Code)
	}
	if calls != 1 {
		t.Errorf("DevLogin called %d times, want 1", calls)
	}

	failing := Handler(Options{DevLogin: func() (string, string, string, error) { return "", "", "", errors.New("boom") }})
	res = serve(failing, devLoginRequest("localhost:8080", ""))
	if b := body(t, res); res.StatusCode != 500 || strings.Contains(b, "boom") {
		t.Errorf("failing DevLogin = %d %q, want 500 without the internal error", res.StatusCode, b)
	}
}

// TestDevLoginOnlyForLocalPages checks that the dev login answers only
// requests addressed to a loopback name or address with the server's port,
// and only from that same origin: a site that rebinds its DNS name to
// 127.0.0.1, or a page on another origin, gets no token.
func TestDevLoginOnlyForLocalPages(t *testing.T) {
	calls := 0
	h := Handler(Options{DevLogin: func() (string, string, string, error) {
		calls++
		return "ORG@Cmk", "key", "tok", nil
	}})
	for _, tc := range []struct {
		host, origin string
		want         int
	}{
		{"127.0.0.1:8080", "", 200},
		{"127.0.0.1:8080", "http://127.0.0.1:8080", 200},
		{"localhost:8080", "http://localhost:8080", 200},
		{"LocalHost:8080", "http://localhost:8080", 200},
		{"[::1]:8080", "http://[::1]:8080", 200},
		{"127.0.0.2:8080", "", 200},

		{"evil.example:8080", "", 403},
		{"evil.example:8080", "http://evil.example:8080", 403},
		{"rebind.127.0.0.1.nip.io:8080", "http://rebind.127.0.0.1.nip.io:8080", 403},
		{"foo.localhost:8080", "", 403},
		{"localhost.:8080", "", 403},
		{"0.0.0.0:8080", "", 403},
		{"192.168.1.10:8080", "", 403},
		{"[::ffff:192.168.1.10]:8080", "", 403},
		{"127.0.0.1:9090", "", 403},
		{"127.0.0.1", "", 403},
		{"localhost", "http://localhost", 403},
		{"", "", 403},
		{"127.0.0.1:8080", "http://evil.example", 403},
		{"127.0.0.1:8080", "http://localhost:8080", 403},
		{"127.0.0.1:8080", "https://127.0.0.1:8080", 403},
		{"127.0.0.1:8080", "http://127.0.0.1:9090", 403},
		{"127.0.0.1:8080", "null", 403},
	} {
		calls = 0
		res := serve(h, devLoginRequest(tc.host, tc.origin))
		b := body(t, res)
		if res.StatusCode != tc.want {
			t.Errorf("POST /ui/api/dev-login Host %q Origin %q = %d %s, want %d", tc.host, tc.origin, res.StatusCode, b, tc.want)
		}
		if tc.want == 403 && (calls != 0 || strings.Contains(b, "tok")) {
			t.Errorf("POST /ui/api/dev-login Host %q Origin %q minted a token", tc.host, tc.origin)
		}
	}

	// Without the connection's local address the port cannot be checked.
	req := devLoginRequest("127.0.0.1:8080", "")
	if res := serve(h, req.WithContext(context.Background())); res.StatusCode != 403 {
		t.Errorf("POST /ui/api/dev-login with no local address = %d, want 403", res.StatusCode)
	}

	// Through a real server, the port is the listener's.
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, tc := range []struct {
		host string
		want int
	}{
		{srv.Listener.Addr().String(), 200},
		{"localhost:" + srv.URL[strings.LastIndex(srv.URL, ":")+1:], 200},
		{"attacker.example:" + srv.URL[strings.LastIndex(srv.URL, ":")+1:], 403},
	} {
		req, _ := http.NewRequest("POST", srv.URL+"/ui/api/dev-login", nil)
		req.Host = tc.host
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Errorf("POST %s/ui/api/dev-login with Host %q = %d, want %d", srv.URL, tc.host, res.StatusCode, tc.want)
		}
	}
}

func TestUnknownPathsAndNoListing(t *testing.T) {
	h := Handler(Options{})
	for _, p := range []string{
		"/ui/nope.html",
		"/ui/static/",
		"/ui/static/app.js",
		"/ui/static",
		"/ui/%2e%2e/web.go",
		"/ui/app.js/",
		"/ui/api/",
		"/ui/api/unknown",
		"/ui/index.html/x",
	} {
		res := get(t, h, "GET", p)
		if res.StatusCode != 404 {
			t.Errorf("GET %s = %d, want 404", p, res.StatusCode)
		}
		if b := body(t, res); strings.Contains(b, "<a href=") || strings.Contains(b, "app.js\n") {
			t.Errorf("GET %s looks like a directory listing: %q", p, b)
		}
	}
}

// A path that climbs out of /ui/ is cleaned and redirected away by the mux,
// never answered with a file.
func TestDotDotNeverServes(t *testing.T) {
	h := Handler(Options{})
	res := get(t, h, "GET", "/ui/../web.go")
	if res.StatusCode == 200 {
		t.Errorf("GET /ui/../web.go = 200, want a redirect or 404")
	}
	if loc := res.Header.Get("Location"); loc != "" && strings.HasPrefix(loc, "/ui/") {
		t.Errorf("GET /ui/../web.go redirects to %q inside the UI", loc)
	}
}

func TestWriteMethodsRefused(t *testing.T) {
	h := Handler(Options{})
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		res := get(t, h, m, "/ui/app.js")
		if res.StatusCode != 405 {
			t.Errorf("%s /ui/app.js = %d, want 405", m, res.StatusCode)
		}
	}
}
