package azurekv

// A small fake of Entra ID and Key Vault, enough for azidentity and azkeys
// to run unmodified against it: TLS, OpenID discovery, a client-credentials
// token endpoint that issues one token per tenant, and a vault that answers
// with a challenge naming the customer's tenant, then does real RSA-OAEP-256.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	homeTenant     = "home-tenant"
	customerTenant = "11111111-2222-3333-4444-555555555555"
	testClientID   = "app-client-id"
	testSecret     = "app-secret"
	vaultSuffix    = "vault.azure.localhost"
	vaultHost      = "myvault." + vaultSuffix
	vaultURL       = "https://" + vaultHost
	refusedHost    = "refused." + vaultSuffix // resolves, but nothing listens
)

// canned is a fixed HTTP answer.
type canned struct {
	status int
	header map[string]string
	body   string
	hangup bool // close the connection without answering
	stall  bool // answer only when the client gives up
}

func (c canned) write(w http.ResponseWriter, r *http.Request) {
	if c.hangup {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	if c.stall {
		io.Copy(io.Discard, r.Body) // lets the server notice the client leaving
		select {
		case <-r.Context().Done():
		case <-time.After(3 * time.Second):
		}
		return
	}
	for k, v := range c.header {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(c.status)
	fmt.Fprint(w, c.body)
}

type fakeVersion struct {
	id      string
	priv    *rsa.PrivateKey
	enabled bool
	nbf     time.Time
	exp     time.Time
}

type fake struct {
	t   *testing.T
	srv *httptest.Server

	mu sync.Mutex
	// keys of the one vault at vaultHost, versions oldest first.
	keys map[string][]fakeVersion
	// tenant the vault's challenge names and whose tokens it accepts.
	tenant string
	// challengeResource is the resource the vault's challenge announces.
	challengeResource string
	// tokenFail, when set, answers every token request (and discovery, if
	// discoveryFail) instead of issuing a token.
	tokenFail     *canned
	discoveryFail bool
	// vaultFail, when set, answers every authorised vault request.
	vaultFail *canned
	// kidName, when set, is the key name the vault puts in its answers.
	kidName string

	// challengeFail, when set, answers every vault request without a token.
	challengeFail *canned
	// codeAnswer answers authorization_code grants (400 invalid_grant when nil).
	codeAnswer *canned

	tokenForms      []url.Values // every token request's form
	tokenTenants    []string     // tenants tokens were issued for
	challenges      int          // unauthenticated vault requests answered with 401
	vaultRequests   int          // authorised vault requests
	discoveryTenant []string
}

var (
	tlsOnce sync.Once
	tlsCert tls.Certificate
	keyOnce sync.Once
	rsaKeys []*rsa.PrivateKey
)

// serverCert is a self-signed certificate for the fake's hosts.
func serverCert(t *testing.T) tls.Certificate {
	tlsOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "fake azure"},
			DNSNames:              []string{"*." + vaultSuffix, vaultSuffix},
			IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(time.Hour),
			IsCA:                  true,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		tlsCert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	})
	return tlsCert
}

// rsaKey returns the i-th of a few shared test keys (generated once: RSA
// key generation dominates the test time otherwise).
func rsaKey(t *testing.T, i int) *rsa.PrivateKey {
	keyOnce.Do(func() {
		for range 3 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				t.Fatal(err)
			}
			rsaKeys = append(rsaKeys, k)
		}
	})
	return rsaKeys[i%len(rsaKeys)]
}

func versionID(i int) string { return fmt.Sprintf("%032x", 0xabc000+i) }

func newFake(t *testing.T) *fake {
	f := &fake{
		t:                 t,
		keys:              map[string][]fakeVersion{},
		tenant:            customerTenant,
		challengeResource: "https://" + vaultSuffix,
	}
	f.addVersion("cmk")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert(t)}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	f.srv = srv
	return f
}

// addVersion adds a new, enabled version to key name and returns its id.
func (f *fake) addVersion(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.keys[name])
	v := fakeVersion{
		id:      versionID(n + 10*len(f.keys)),
		priv:    rsaKey(f.t, n),
		enabled: true,
		nbf:     time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		exp:     time.Date(2034, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	f.keys[name] = append(f.keys[name], v)
	return v.id
}

func (f *fake) set(fn func(f *fake)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// httpClient routes the fake's hosts to it: vaultHost to the fake,
// refusedHost to a closed port, any other *.vault.azure.localhost to "no
// such host", and 127.0.0.1 (the authority) as is.
func (f *fake) httpClient() *http.Client {
	tr := f.srv.Client().Transport.(*http.Transport).Clone()
	addr := f.srv.Listener.Addr().String()
	closed := closedAddr(f.t)
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, address string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return nil, err
		}
		switch {
		case host == "127.0.0.1":
			return d.DialContext(ctx, network, address)
		case host == vaultHost:
			return d.DialContext(ctx, network, addr)
		case host == refusedHost:
			return d.DialContext(ctx, network, closed)
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return &http.Client{Transport: tr}
}

// closedAddr returns an address nothing listens on.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func (f *fake) authority() string { return f.srv.URL + "/" }

func (f *fake) serve(w http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	if host == "127.0.0.1" {
		f.serveEntra(w, r)
		return
	}
	f.serveVault(w, r)
}

func (f *fake) serveEntra(w http.ResponseWriter, r *http.Request) {
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 2)
	if len(parts) != 2 {
		http.NotFound(w, r)
		return
	}
	tenant, rest := parts[0], parts[1]
	f.mu.Lock()
	fail, discoveryFail := f.tokenFail, f.discoveryFail
	f.mu.Unlock()
	base := f.srv.URL + "/" + tenant
	switch rest {
	case "v2.0/.well-known/openid-configuration":
		f.mu.Lock()
		f.discoveryTenant = append(f.discoveryTenant, tenant)
		f.mu.Unlock()
		if fail != nil && discoveryFail {
			fail.write(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"authorization_endpoint": base + "/oauth2/v2.0/authorize",
			"token_endpoint":         base + "/oauth2/v2.0/token",
			"issuer":                 base + "/v2.0",
		})
	case "oauth2/v2.0/token":
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if fail != nil {
			fail.write(w, r)
			return
		}
		f.mu.Lock()
		f.tokenForms = append(f.tokenForms, r.PostForm)
		codeAnswer := f.codeAnswer
		f.mu.Unlock()
		if r.PostForm.Get("grant_type") == "authorization_code" {
			if codeAnswer == nil {
				codeAnswer = &canned{status: 400, body: `{"error":"invalid_grant","error_description":"AADSTS9002313: Invalid request.","error_codes":[9002313]}`}
			}
			codeAnswer.write(w, r)
			return
		}
		secretOK := r.PostForm.Get("client_secret") == testSecret
		certOK := r.PostForm.Get("client_assertion") != "" // signature not checked
		if r.PostForm.Get("client_id") != testClientID || !(secretOK || certOK) {
			canned{status: 401, body: `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}`}.write(w, r)
			return
		}
		f.mu.Lock()
		f.tokenTenants = append(f.tokenTenants, tenant)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"token_type":   "Bearer",
			"expires_in":   3600,
			"access_token": "tok:" + tenant,
		})
	default:
		http.NotFound(w, r)
	}
}

func (f *fake) serveVault(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	challenge := fmt.Sprintf(`Bearer authorization="%s/%s", resource="%s"`, f.srv.URL, f.tenant, f.challengeResource)
	switch r.Header.Get("Authorization") {
	case "":
		f.challenges++
		if f.challengeFail != nil {
			f.challengeFail.write(w, r)
			return
		}
		canned{status: 401, header: map[string]string{"WWW-Authenticate": challenge},
			body: `{"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}}`}.write(w, r)
		return
	case "Bearer tok:" + f.tenant:
	default:
		canned{status: 401, header: map[string]string{"WWW-Authenticate": challenge},
			body: `{"error":{"code":"Unauthorized","message":"AKV10032: Invalid issuer."}}`}.write(w, r)
		return
	}
	f.vaultRequests++
	if f.vaultFail != nil {
		c := *f.vaultFail
		f.mu.Unlock()
		c.write(w, r)
		f.mu.Lock()
		return
	}

	// /keys/{name}[/{version}][/{action}], version possibly empty.
	// (azkeys drops the empty version segment of wrapkey/unwrapkey).
	segs := strings.Split(strings.TrimPrefix(r.URL.Path, "/keys/"), "/")
	name, version, action := segs[0], "", ""
	if last := segs[len(segs)-1]; r.Method == http.MethodPost {
		action, segs = last, segs[:len(segs)-1]
	}
	if len(segs) > 1 {
		version = segs[1]
	}
	v, ok := f.find(name, version)
	if !ok {
		canned{status: 404, body: fmt.Sprintf(`{"error":{"code":"KeyNotFound","message":"A key with (name/id) %s was not found in this key vault."}}`, name)}.write(w, r)
		return
	}
	kidName := name
	if f.kidName != "" {
		kidName = f.kidName
	}
	kid := fmt.Sprintf("https://%s/keys/%s/%s", r.Host, kidName, v.id)
	switch {
	case r.Method == http.MethodGet && action == "":
		writeJSON(w, 200, map[string]any{
			"key": map[string]any{
				"kid":     kid,
				"kty":     "RSA",
				"key_ops": []string{"wrapKey", "unwrapKey", "encrypt", "decrypt"},
				"n":       b64(v.priv.N.Bytes()),
				"e":       b64(big.NewInt(int64(v.priv.E)).Bytes()),
			},
			"attributes": map[string]any{
				"enabled":         v.enabled,
				"nbf":             v.nbf.Unix(),
				"exp":             v.exp.Unix(),
				"created":         v.nbf.Unix(),
				"updated":         v.nbf.Unix(),
				"recoveryLevel":   "Recoverable",
				"recoverableDays": 90,
			},
		})
	case r.Method == http.MethodPost && (action == "wrapkey" || action == "unwrapkey"):
		var req struct {
			Alg   string `json:"alg"`
			Value string `json:"value"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Alg != "RSA-OAEP-256" {
			canned{status: 400, body: `{"error":{"code":"BadParameter","message":"Property  has invalid value\r\n"}}`}.write(w, r)
			return
		}
		in, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(req.Value, "="))
		if err != nil {
			canned{status: 400, body: `{"error":{"code":"BadParameter","message":"Content of 'value' is not base64url.\r\n"}}`}.write(w, r)
			return
		}
		var out []byte
		if action == "wrapkey" {
			out, err = rsa.EncryptOAEP(sha256.New(), rand.Reader, &v.priv.PublicKey, in, nil)
		} else {
			out, err = rsa.DecryptOAEP(sha256.New(), nil, v.priv, in, nil)
		}
		if err != nil {
			canned{status: 400, body: `{"error":{"code":"BadParameter","message":"Unable to decrypt specified value with this key"}}`}.write(w, r)
			return
		}
		writeJSON(w, 200, map[string]any{"kid": kid, "value": b64(out)})
	default:
		http.Error(w, "unexpected request", http.StatusMethodNotAllowed)
	}
}

func (f *fake) find(name, version string) (fakeVersion, bool) {
	vs := f.keys[name]
	if len(vs) == 0 {
		return fakeVersion{}, false
	}
	if version == "" {
		return vs[len(vs)-1], true
	}
	for _, v := range vs {
		if strings.EqualFold(v.id, version) {
			return v, true
		}
	}
	return fakeVersion{}, false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
