package azemu

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// Options configures Start.
type Options struct {
	Addr        string           // listen address, default "127.0.0.1:0"
	VaultSuffix string           // DNS suffix for vault hosts, default "vault.azure.localhost"
	HSMSuffix   string           // DNS suffix for Managed HSM hosts, default "managedhsm.azure.localhost"
	StateFile   string           // optional JSON state file
	Now         func() time.Time // default time.Now
	// TokenLifetime is how long access tokens last, default one hour as in
	// Entra ID. Clients use a cached token until it expires, so a short
	// lifetime makes consent and secret changes take effect quickly (tests).
	TokenLifetime time.Duration
	// PropagationDelay is how long role assignment and consent changes take
	// to reach the data plane and the token endpoint (Azure: minutes);
	// default 0, at once. See SetPropagationDelay.
	PropagationDelay time.Duration
	// KeyStateDelay is how long a key delete or recover takes to settle, as
	// in Azure, where both run in the background: after DELETE the key is
	// gone at once but GET /deletedkeys/{name} answers 404 until the delay
	// has passed; after a recover the key answers 404 until then. Zero (the
	// default) settles at once.
	KeyStateDelay time.Duration
}

// DefaultVaultSuffix is used when Options.VaultSuffix is empty.
const DefaultVaultSuffix = "vault.azure.localhost"

// Emulator is a running emulator. All methods are safe for concurrent use.
type Emulator struct {
	opts      Options
	now       func() time.Time
	suffix    string
	hsmSuffix string
	hsmNames  sync.Map // names of Managed HSMs -> true

	ln      net.Listener
	srv     *http.Server
	url     string // https://127.0.0.1:PORT
	host    string // 127.0.0.1:PORT
	port    string
	caPEM   []byte
	signKey *rsa.PrivateKey
	signKID string

	transport *http.Transport
	mux       *http.ServeMux // authority
	adminMux  *http.ServeMux

	mu         sync.Mutex
	st         *state
	tokenFault int
	faults     map[string]vaultFault
	resets     map[string]bool // vaults whose connections are reset (SetVaultReset)
	windows    map[string]*throttleWindow
	codes      map[string]authCode // authorization codes not yet redeemed
	stats      Stats
	propDelay  time.Duration           // see propagation.go
	pending    map[string][]propChange // changes not yet in effect, by setting

	events *eventHub // Event Grid subscriptions and deliveries (events.go)
}

type vaultFault struct {
	status int
	delay  time.Duration
}

type throttleWindow struct {
	start time.Time
	count int
}

// Start creates the emulator, loads Options.StateFile if set and starts
// serving HTTPS in the background.
func Start(opts Options) (*Emulator, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.VaultSuffix == "" {
		opts.VaultSuffix = DefaultVaultSuffix
	}
	opts.VaultSuffix = strings.ToLower(strings.Trim(opts.VaultSuffix, "."))
	if opts.HSMSuffix == "" {
		opts.HSMSuffix = DefaultHSMSuffix
	}
	opts.HSMSuffix = strings.ToLower(strings.Trim(opts.HSMSuffix, "."))
	if opts.HSMSuffix == opts.VaultSuffix {
		return nil, fmt.Errorf("azemu: vault and Managed HSM suffixes must differ (both %q)", opts.VaultSuffix)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	e := &Emulator{opts: opts, now: opts.Now, suffix: opts.VaultSuffix, hsmSuffix: opts.HSMSuffix,
		faults: map[string]vaultFault{}, resets: map[string]bool{}, windows: map[string]*throttleWindow{}, codes: map[string]authCode{},
		stats: Stats{Vaults: map[string]VaultStats{}}, propDelay: max(opts.PropagationDelay, 0), pending: map[string][]propChange{}}

	st := newState()
	if opts.StateFile != "" {
		var err error
		if st, err = loadState(opts.StateFile); err != nil {
			return nil, err
		}
	}
	e.st = st
	for name, v := range st.Vaults {
		if v.ManagedHSM {
			e.hsmNames.Store(name, true)
		}
	}

	caCert, caKey, err := e.loadOrCreateCA()
	if err != nil {
		return nil, err
	}
	if err := e.loadOrCreateSigningKey(); err != nil {
		return nil, err
	}

	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("azemu: listen %s: %w", opts.Addr, err)
	}
	e.ln = ln
	lhost, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(lhost); ip == nil || ip.IsUnspecified() {
		lhost = "127.0.0.1"
	}
	e.port = port
	e.host = net.JoinHostPort(lhost, port)
	e.url = "https://" + e.host

	leaf, err := e.issueServerCert(caCert, caKey, lhost)
	if err != nil {
		ln.Close()
		return nil, err
	}
	if e.transport, err = e.newInProcessTransport(); err != nil {
		ln.Close()
		return nil, err
	}
	e.mux = e.routes()
	e.adminMux = http.NewServeMux()
	e.adminRoutes(e.adminMux)
	e.events = newEventHub(e)
	e.eventRoutes(e.adminMux)
	e.srv = &http.Server{
		Handler:           e,
		ReadHeaderTimeout: 10 * time.Second,
		// HTTP/1.1 only, so a request for a vanished vault can be answered
		// by closing the connection (the closest thing to "no such host").
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		TLSConfig:    &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tls.VersionTLS12},
		ErrorLog:     nil,
	}
	if opts.StateFile != "" {
		e.mu.Lock()
		err := e.saveLocked()
		e.mu.Unlock()
		if err == nil {
			err = os.WriteFile(opts.StateFile+".ca.pem", e.caPEM, 0o644)
		}
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("azemu: write state: %w", err)
		}
	}
	go func() { _ = e.srv.ServeTLS(ln, "", "") }()
	go e.events.run()
	return e, nil
}

// Close stops the server and releases its listener.
func (e *Emulator) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	e.transport.CloseIdleConnections()
	e.events.close()
	err := e.srv.Shutdown(ctx)
	if err != nil {
		err = e.srv.Close()
	}
	return err
}

// URL is the authority and admin API base, "https://127.0.0.1:PORT".
func (e *Emulator) URL() string { return e.url }

// AuthorityHost is URL()+"/", for azidentity's Cloud.ActiveDirectoryAuthorityHost.
func (e *Emulator) AuthorityHost() string { return e.url + "/" }

// CAPEM is the PEM of the emulator's CA certificate.
func (e *Emulator) CAPEM() []byte { return append([]byte(nil), e.caPEM...) }

// CAFile is where the CA PEM was written ("" without a StateFile).
func (e *Emulator) CAFile() string {
	if e.opts.StateFile == "" {
		return ""
	}
	return e.opts.StateFile + ".ca.pem"
}

// VaultSuffix is the DNS suffix of vault hosts.
func (e *Emulator) VaultSuffix() string { return e.suffix }

// VaultURL is "https://{vault}.{suffix}" (no port: the transport routes it).
func (e *Emulator) VaultURL(vault string) string { return e.vaultURLFor(strings.ToLower(vault)) }

// VaultResource is the token audience vaults expect, "https://{suffix}".
func (e *Emulator) VaultResource() string { return "https://" + e.suffix }

// TokenSigningKey is the public key that verifies access tokens.
func (e *Emulator) TokenSigningKey() *rsa.PublicKey { return &e.signKey.PublicKey }

// Transport trusts the emulator's CA and routes the emulator host and every
// existing "{vault}.{suffix}" host to the listener. Unknown or deleted vaults
// fail with *net.DNSError{IsNotFound: true}. The same value is returned on
// every call.
func (e *Emulator) Transport() *http.Transport { return e.transport }

// HTTPClient is an http.Client using Transport().
func (e *Emulator) HTTPClient() *http.Client { return &http.Client{Transport: e.transport} }

// ---- TLS ----

func (e *Emulator) loadOrCreateCA() (*x509.Certificate, crypto.Signer, error) {
	if e.st.CACertPEM != "" && e.st.CAKeyPEM != "" {
		cb, _ := pem.Decode([]byte(e.st.CACertPEM))
		kb, _ := pem.Decode([]byte(e.st.CAKeyPEM))
		if cb != nil && kb != nil {
			cert, err1 := x509.ParseCertificate(cb.Bytes)
			key, err2 := x509.ParsePKCS8PrivateKey(kb.Bytes)
			if signer, ok := key.(crypto.Signer); ok && err1 == nil && err2 == nil && time.Now().Before(cert.NotAfter) {
				e.caPEM = []byte(e.st.CACertPEM)
				return cert, signer, nil
			}
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: "cmk azemu local CA", Organization: []string{"cmk azure emulator"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	e.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	e.st.CACertPEM = string(e.caPEM)
	e.st.CAKeyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	return cert, key, nil
}

func (e *Emulator) issueServerCert(ca *x509.Certificate, caKey crypto.Signer, lhost string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{CommonName: "azemu"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		// login.microsoftonline.com: MSAL's instance discovery goes there
		// whatever the authority; clients route it to the emulator.
		DNSNames: []string{"localhost", e.suffix, "*." + e.suffix, e.hsmSuffix, "*." + e.hsmSuffix,
			discoveryHost},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback},
	}
	if ip := net.ParseIP(lhost); ip != nil {
		if !ip.IsLoopback() {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		}
	} else if lhost != "localhost" {
		tmpl.DNSNames = append(tmpl.DNSNames, lhost)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Raw}, PrivateKey: key}, nil
}

func randSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

func (e *Emulator) loadOrCreateSigningKey() error {
	if e.st.SigningKeyPEM != "" {
		if b, _ := pem.Decode([]byte(e.st.SigningKeyPEM)); b != nil {
			if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
				e.signKey = k
			}
		}
	}
	if e.signKey == nil {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return err
		}
		e.signKey = k
		e.st.SigningKeyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
	}
	sum := sha256.Sum256(x509.MarshalPKCS1PublicKey(&e.signKey.PublicKey))
	e.signKID = base64.RawURLEncoding.EncodeToString(sum[:15])
	return nil
}

// ---- transports ----

func caPool(caPEM []byte) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("azemu: no certificate found in CA PEM")
	}
	return pool, nil
}

func dnsNotFound(host string) error {
	return &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// vaultFromHost returns the vault label of "{vault}.{suffix}" (any port).
func vaultFromHost(hostport, suffix string) (string, bool) {
	h := hostport
	if hh, _, err := net.SplitHostPort(hostport); err == nil {
		h = hh
	}
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	name, ok := strings.CutSuffix(h, "."+suffix)
	if !ok || name == "" || strings.Contains(name, ".") {
		return "", false
	}
	return name, true
}

func newRoutingTransport(pool *x509.CertPool, emuHost, suffix string, resolves func(ctx context.Context, vault string) bool) *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	emuHostOnly, emuPort, _ := net.SplitHostPort(emuHost)
	return &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if addr == emuHost || (port == emuPort && (host == "localhost" || host == emuHostOnly)) {
				return d.DialContext(ctx, network, emuHost)
			}
			if strings.HasSuffix(strings.ToLower(strings.TrimSuffix(host, ".")), "."+suffix) {
				name, ok := vaultFromHost(host, suffix)
				if !ok || !resolves(ctx, name) {
					return nil, dnsNotFound(host)
				}
				return d.DialContext(ctx, network, emuHost)
			}
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       30 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

func (e *Emulator) newInProcessTransport() (*http.Transport, error) {
	pool, err := caPool(e.caPEM)
	if err != nil {
		return nil, err
	}
	t := newRoutingTransport(pool, e.host, e.suffix, func(_ context.Context, vault string) bool {
		return e.VaultResolves(vault) && !e.isHSMName(vault)
	})
	routeHSMHosts(t, e.host, e.hsmSuffix, func(name string) bool { return e.VaultResolves(name) && e.isHSMName(name) })
	routeDiscoveryHost(t, e.host)
	return t, nil
}

// VaultResolves reports whether "{vault}.{suffix}" would resolve in DNS
// (the vault exists and is not deleted).
func (e *Emulator) VaultResolves(vault string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	v := e.st.Vaults[strings.ToLower(vault)]
	return v != nil && !v.Deleted
}

// NewTransport builds, for another process, a transport equivalent to
// Emulator.Transport: it trusts caPEM and sends the emulator host and every
// "{vault}.{vaultSuffix}" host to emulatorURL, and likewise Managed HSM
// hosts "{hsm}.{DefaultHSMSuffix}" and login.microsoftonline.com (instance
// discovery). Vault and HSM existence is asked of the admin API (GET /admin/dns/{host}) and cached for 200 ms; a vault that
// does not exist yields *net.DNSError{IsNotFound: true}. An empty vaultSuffix
// means DefaultVaultSuffix.
func NewTransport(emulatorURL string, caPEM []byte, vaultSuffix string) (*http.Transport, error) {
	u, err := url.Parse(emulatorURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("azemu: bad emulator URL %q", emulatorURL)
	}
	if vaultSuffix == "" {
		vaultSuffix = DefaultVaultSuffix
	}
	vaultSuffix = strings.ToLower(strings.Trim(vaultSuffix, "."))
	emuHost := u.Host
	if u.Port() == "" {
		emuHost = net.JoinHostPort(u.Hostname(), "443")
	}
	pool, err := caPool(caPEM)
	if err != nil {
		return nil, err
	}
	// The admin lookups use a plain transport to the emulator.
	lookup := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, Proxy: nil,
	}}
	base := strings.TrimSuffix(emulatorURL, "/")
	type entry struct {
		ok bool
		at time.Time
	}
	var mu sync.Mutex
	cache := map[string]entry{}
	resolvesHost := func(ctx context.Context, host string) bool {
		mu.Lock()
		ent, hit := cache[host]
		mu.Unlock()
		if hit && time.Since(ent.at) < 200*time.Millisecond {
			return ent.ok
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/admin/dns/"+url.PathEscape(host), nil)
		if err != nil {
			return false
		}
		resp, err := lookup.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		ok := resp.StatusCode == http.StatusOK
		mu.Lock()
		cache[host] = entry{ok: ok, at: time.Now()}
		mu.Unlock()
		return ok
	}
	t := newRoutingTransport(pool, emuHost, vaultSuffix, func(ctx context.Context, vault string) bool {
		return resolvesHost(ctx, vault+"."+vaultSuffix)
	})
	routeHSMHostsCtx(t, emuHost, DefaultHSMSuffix, func(ctx context.Context, name string) bool {
		return resolvesHost(ctx, name+"."+DefaultHSMSuffix)
	})
	routeDiscoveryHost(t, emuHost)
	return t, nil
}

// ---- dispatch ----

func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if name, ok := vaultFromHost(r.Host, e.suffix); ok {
		if e.isHSMName(name) {
			name = "" // an HSM does not answer on a vault host
		}
		e.serveVault(w, r, name)
		return
	}
	if name, ok := vaultFromHost(r.Host, e.hsmSuffix); ok {
		if !e.isHSMName(name) {
			name = ""
		}
		e.serveVault(w, r, name)
		return
	}
	if r.URL.Path == "/admin" || strings.HasPrefix(r.URL.Path, "/admin/") {
		e.adminMux.ServeHTTP(w, r)
		return
	}
	e.mux.ServeHTTP(w, r)
}

func (e *Emulator) routes() *http.ServeMux {
	m := http.NewServeMux()
	// authority
	m.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", e.handleOpenIDConfig)
	m.HandleFunc("GET /{tenant}/discovery/v2.0/keys", e.handleJWKS)
	m.HandleFunc("GET /{tenant}/discovery/keys", e.handleJWKS)
	m.HandleFunc("POST /{tenant}/oauth2/v2.0/token", e.handleToken)
	m.HandleFunc("GET /{tenant}/v2.0/adminconsent", e.handleConsentPage)
	m.HandleFunc("POST /{tenant}/v2.0/adminconsent", e.handleConsentPost)
	m.HandleFunc("GET /{tenant}/oauth2/v2.0/authorize", e.handleConsentPage)
	m.HandleFunc("POST /{tenant}/oauth2/v2.0/authorize", e.handleConsentPost)
	m.HandleFunc("GET /common/oauth2/authorize", e.handleConsentPage)
	m.HandleFunc("POST /common/oauth2/authorize", e.handleConsentPost)
	m.HandleFunc("GET /common/discovery/instance", e.handleInstanceDiscovery)
	m.HandleFunc("GET /{$}", e.handleIndex)
	return m
}

func (e *Emulator) handleIndex(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "cmk azure emulator\nauthority: %s/{tenant}\nvaults: https://{vault}.%s\nadmin API: %s/admin/state\n", e.url, e.suffix, e.url)
}
