package service

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
)

// writePair writes a fresh self-signed certificate for 127.0.0.1 named cn
// and its key, and returns the certificate.
func writePair(t *testing.T, certFile, keyFile, cn string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{{127, 0, 0, 1}}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Written whole, then renamed into place, as a certificate manager does.
	for _, f := range []struct {
		path string
		typ  string
		der  []byte
	}{{certFile, "CERTIFICATE", der}, {keyFile, "PRIVATE KEY", kder}} {
		tmp := f.path + ".tmp"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// servedCert makes one TLS connection to s (HTTP/2 offered first) and
// returns the leaf the server presented and the protocol negotiated.
func servedCert(t *testing.T, s *Service) (string, string) {
	t.Helper()
	conn, err := tls.Dial("tcp", s.ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}, MaxVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	defer conn.Close()
	st := conn.ConnectionState()
	return st.PeerCertificates[0].Subject.CommonName, st.NegotiatedProtocol
}

// TestTLSServesAndReloads: the service answers over TLS 1.2+ with HTTP/2, a
// new certificate pair is served without a restart, and a broken new pair
// keeps the previous one.
func TestTLSServesAndReloads(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := writePair(t, certFile, keyFile, "first")
	var logs bytes.Buffer
	opToken := strings.Repeat("o", MinOperatorTokenLen)
	s, _ := startLimited(t, Config{Serving: Serving{TLSCertFile: certFile, TLSKeyFile: keyFile, TLSReloadInterval: -1}, OperatorAddr: "127.0.0.1:0", OperatorToken: opToken})
	s.life.certs.log = slog.New(slog.NewTextHandler(&logs, nil))
	if !strings.HasPrefix(s.URL(), "https://") || !strings.HasPrefix(s.OperatorURL(), "https://") {
		t.Fatalf("URL() = %q, OperatorURL() = %q, want both https", s.URL(), s.OperatorURL())
	}

	pool := x509.NewCertPool()
	pool.AddCert(first)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	res, err := client.Get(s.URL() + cmkapi.Livez.Path)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.ProtoMajor != 2 {
		t.Errorf("GET /livez over TLS = %d %s, want 200 over HTTP/2", res.StatusCode, res.Proto)
	}
	if res.TLS == nil || res.TLS.Version < tls.VersionTLS12 {
		t.Errorf("TLS state = %+v, want TLS 1.2 or later", res.TLS)
	}
	// The operator listener speaks TLS with the same certificate: its
	// token never travels in the clear.
	req, _ := http.NewRequest("GET", s.OperatorURL()+cmkapi.OperatorListOrgs.Path, nil)
	req.Header.Set("Authorization", "Bearer "+opToken)
	if res, err := client.Do(req); err != nil {
		t.Errorf("operator listener over TLS: %v", err)
	} else {
		res.Body.Close()
		if res.StatusCode != 200 || res.TLS == nil {
			t.Errorf("operator listener = %d (TLS %v), want 200 over TLS", res.StatusCode, res.TLS != nil)
		}
	}
	if res, err := http.Get("http://" + strings.TrimPrefix(s.OperatorURL(), "https://") + cmkapi.OperatorListOrgs.Path); err == nil {
		if res.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the operator listener = %d, want the TLS server's 400", res.StatusCode)
		}
		res.Body.Close()
	}

	// TLS 1.1 is refused.
	if c, err := tls.Dial("tcp", s.ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11}); err == nil {
		c.Close()
		t.Error("a TLS 1.1 handshake succeeded, want it refused")
	}

	writePair(t, certFile, keyFile, "second")
	if cn, proto := servedCert(t, s); cn != "second" || proto != "h2" {
		t.Errorf("after the swap the server presents %q over %q, want second over h2", cn, proto)
	}

	// A half-written renewal: the key does not match the certificate.
	other := filepath.Join(dir, "other")
	writePair(t, other+".crt", other+".key", "third")
	k, _ := os.ReadFile(other + ".key")
	time.Sleep(10 * time.Millisecond) // a later modification time than the pair's
	if err := os.WriteFile(keyFile, k, 0o600); err != nil {
		t.Fatal(err)
	}
	if cn, _ := servedCert(t, s); cn != "second" {
		t.Errorf("with a mismatched new key the server presents %q, want the previous certificate (second)", cn)
	}
	if !strings.Contains(logs.String(), "new TLS certificate does not load") {
		t.Errorf("no error logged for the broken pair; log:\n%s", logs.String())
	}
}

// TestTLSReloadInterval: with an interval, the files are looked at no more
// often than that (the injected clock decides).
func TestTLSReloadInterval(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writePair(t, certFile, keyFile, "first")
	c, err := newCertReloader(certFile, keyFile, time.Minute, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c.now = func() time.Time { return now }
	writePair(t, certFile, keyFile, "second")
	cn := func() string {
		got, _ := c.get(nil)
		x, _ := x509.ParseCertificate(got.Certificate[0])
		return x.Subject.CommonName
	}
	if got := cn(); got != "first" {
		t.Errorf("before the interval: %q, want first", got)
	}
	now = now.Add(time.Minute)
	if got := cn(); got != "second" {
		t.Errorf("after the interval: %q, want second", got)
	}
}

func TestTLSSettingsChecked(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		s    Serving
		want string
	}{
		{"cert only", Serving{TLSCertFile: filepath.Join(dir, "a")}, "both a certificate file and a key file"},
		{"missing files", Serving{TLSCertFile: filepath.Join(dir, "a"), TLSKeyFile: filepath.Join(dir, "b")}, "TLS file"},
	} {
		_, err := New(context.Background(), Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), DevTokenIssuer: true, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Serving: c.s})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: New() = %v, want an error containing %q", c.name, err, c.want)
		}
	}
}

// TestForwardedHeadersOnlyFromTrustedProxies: the client address comes from
// X-Forwarded-For only when the peer is a trusted proxy, and then the
// right-most untrusted hop; from anyone else the headers are removed.
func TestForwardedHeadersOnlyFromTrustedProxies(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	s := &Service{cfg: Config{Serving: Serving{TrustedProxies: trusted}}}
	var seenAddr, seenXFF, seenProto string
	h := s.withProxies(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenAddr, seenXFF, seenProto = r.RemoteAddr, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto")
	}))
	for _, c := range []struct {
		name, peer, xff, wantAddr string
		keepHeaders               bool
	}{
		{"untrusted peer", "203.0.113.7:5555", "198.51.100.1", "203.0.113.7:5555", false},
		{"trusted proxy", "10.1.2.3:5555", "198.51.100.1", "198.51.100.1:0", true},
		{"forged left-most hop", "10.1.2.3:5555", "1.2.3.4, 198.51.100.1", "198.51.100.1:0", true},
		{"chain of trusted proxies", "10.1.2.3:5555", "198.51.100.1, 10.9.9.9", "198.51.100.1:0", true},
		{"trusted IPv6 proxy", "[fd00::1]:5555", "2001:db8::5", "[2001:db8::5]:0", true},
		{"trusted proxy, junk header", "10.1.2.3:5555", "not-an-ip", "10.1.2.3:5555", false},
		{"trusted proxy, no header", "10.1.2.3:5555", "", "10.1.2.3:5555", false},
	} {
		r := httptest.NewRequest("GET", "/x", nil)
		r.RemoteAddr = c.peer
		if c.xff != "" {
			r.Header.Set("X-Forwarded-For", c.xff)
		}
		r.Header.Set("X-Forwarded-Proto", "https")
		h.ServeHTTP(httptest.NewRecorder(), r)
		if seenAddr != c.wantAddr {
			t.Errorf("%s: client address = %q, want %q", c.name, seenAddr, c.wantAddr)
		}
		if kept := seenProto != ""; kept != c.keepHeaders {
			t.Errorf("%s: X-Forwarded-Proto kept = %v (For %q), want %v", c.name, kept, seenXFF, c.keepHeaders)
		}
	}
}

// TestReadiness: /readyz is 200 with every check named while all is well,
// 503 naming the database (and no error text) when it is gone, and 503
// naming the drain as soon as Shutdown begins; /livez stays 200.
func TestReadiness(t *testing.T) {
	s, _ := startLimited(t, Config{})
	get := func(path string) (int, cmkapi.Readiness, string) {
		t.Helper()
		res, err := http.Get(s.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		var rd cmkapi.Readiness
		json.Unmarshal(b, &rd)
		return res.StatusCode, rd, string(b)
	}
	code, rd, body := get(cmkapi.Readyz.Path)
	if code != 200 || rd.Status != "ready" || len(rd.Checks) != 3 {
		t.Fatalf("GET /readyz = %d %s, want 200 ready with three checks", code, body)
	}
	if code, _, body := get(cmkapi.Livez.Path); code != 200 {
		t.Errorf("GET /livez = %d %s, want 200", code, body)
	}

	// The database goes away under the service.
	db := s.Store
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	code, rd, body = get(cmkapi.Readyz.Path)
	failed := map[string]bool{}
	for _, c := range rd.Checks {
		if !c.OK {
			failed[c.Name] = true
		}
	}
	if code != 503 || rd.Status != "not ready" || !failed["database"] || failed["platform_key"] {
		t.Errorf("GET /readyz with the database closed = %d %s, want 503 naming the database", code, body)
	}
	if strings.Contains(body, "closed") || strings.Contains(body, "sql") {
		t.Errorf("GET /readyz answer carries an error's text: %s", body)
	}
}

// TestReadyzTurnsAtOnceOnDrain: while an in-flight request holds the drain,
// /readyz already answers 503 on a connection opened before.
func TestReadyzTurnsAtOnceOnDrain(t *testing.T) {
	s, _ := startLimited(t, Config{Serving: Serving{ShutdownTimeout: 5 * time.Second}})
	// A kept-alive connection, opened before the drain.
	client := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	res, err := client.Get(s.URL() + cmkapi.Readyz.Path)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	s.life.draining.Store(true) // what Shutdown does first
	rd := s.Readiness(context.Background())
	if rd.Status != "not ready" || rd.Checks[0].Name != "draining" {
		t.Errorf("Readiness() while draining = %+v, want not ready naming the drain", rd)
	}
	s.life.draining.Store(false)
	start := time.Now()
	if err := s.Shutdown(); err != nil {
		t.Errorf("Shutdown() = %v, want nil with nothing in flight", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Shutdown() took %s with nothing in flight", d)
	}
	if !s.Draining() {
		t.Error("Draining() = false after Shutdown")
	}
}
