package azurekv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/kms"
)

var testRef = kms.KeyRef{VaultURL: vaultURL, Name: "cmk"}

func newProvider(t *testing.T, f *fake, mod func(*Config)) *Provider {
	t.Helper()
	cfg := Config{
		TenantID:                 homeTenant,
		ClientID:                 testClientID,
		ClientSecret:             testSecret,
		AuthorityHost:            f.authority(),
		HTTPClient:               f.httpClient(),
		DisableInstanceDiscovery: true,
		Timeout:                  5 * time.Second,
		ExtraVaultSuffixes:       []string{vaultSuffix},
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	return p
}

func TestRoundTrip(t *testing.T) {
	f := newFake(t)
	p := newProvider(t, f, nil)
	ctx := context.Background()
	v1 := f.keys["cmk"][0].id

	info, err := p.Describe(ctx, testRef)
	if err != nil {
		t.Fatalf("Describe() error = %v", err)
	}
	nbf, exp := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2034, 1, 1, 0, 0, 0, 0, time.UTC)
	if info.KID != vaultURL+"/keys/cmk/"+v1 || info.Version != v1 || info.KeyType != "RSA" || info.Bits != 2048 ||
		!info.Enabled || !info.HasOp("wrapKey") || !info.HasOp("unwrapKey") || info.RecoveryLevel != "Recoverable" ||
		info.NotBefore == nil || !info.NotBefore.Equal(nbf) || info.Expires == nil || !info.Expires.Equal(exp) {
		t.Errorf("Describe() = %+v, want version %s of a 2048-bit enabled RSA key with wrapKey/unwrapKey, Recoverable, nbf %v, exp %v", info, v1, nbf, exp)
	}

	dek := bytes.Repeat([]byte{0x42}, 32)
	w1, err := p.Wrap(ctx, testRef, dek)
	if err != nil {
		t.Fatalf("Wrap() error = %v", err)
	}
	if w1.KeyVersion != v1 || w1.Alg != "RSA-OAEP-256" || len(w1.Ciphertext) != 256 {
		t.Errorf("Wrap() = {%s %s %d bytes}, want {%s RSA-OAEP-256 256 bytes}", w1.KeyVersion, w1.Alg, len(w1.Ciphertext), v1)
	}
	got, err := p.Unwrap(ctx, testRef, w1)
	if err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("Unwrap(Wrap(dek)) = %x, %v, want %x, nil", got, err, dek)
	}

	// Rotation: a new version becomes the one Wrap uses; the old one still unwraps.
	v2 := f.addVersion("cmk")
	w2, err := p.Wrap(ctx, testRef, dek)
	if err != nil || w2.KeyVersion != v2 {
		t.Fatalf("Wrap() after rotation = version %q, %v, want %q, nil", w2.KeyVersion, err, v2)
	}
	for _, w := range []kms.Wrapped{w1, w2} {
		if got, err := p.Unwrap(ctx, testRef, w); err != nil || !bytes.Equal(got, dek) {
			t.Errorf("Unwrap(version %s) = %x, %v, want %x, nil", w.KeyVersion, got, err, dek)
		}
	}

	// Ciphertext not produced by the named version, or tampered with.
	wrong := w2
	wrong.KeyVersion = v1
	tampered := w1
	tampered.Ciphertext = append([]byte(nil), w1.Ciphertext...)
	tampered.Ciphertext[17] ^= 1
	for name, w := range map[string]kms.Wrapped{"wrong version": wrong, "tampered": tampered} {
		_, err := p.Unwrap(ctx, testRef, w)
		if kind := kms.KindOf(err); kind != kms.KindUnwrapFailed {
			t.Errorf("Unwrap(%s) kind = %q (%v), want %q", name, kind, err, kms.KindUnwrapFailed)
		}
	}

	// The vault's challenge, not the configuration, chose the tenant; and
	// the vault client (with its learned challenge) was reused.
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, tenant := range f.tokenTenants {
		if tenant != customerTenant {
			t.Errorf("token issued for tenant %q, want only %q", tenant, customerTenant)
		}
	}
	if len(f.tokenTenants) != 1 {
		t.Errorf("tokens issued = %d, want 1 (cached)", len(f.tokenTenants))
	}
	if f.challenges != 1 {
		t.Errorf("unauthenticated vault requests = %d, want 1 (client cached per vault)", f.challenges)
	}
}

func TestCertificateCredential(t *testing.T) {
	f := newFake(t)
	p := newProvider(t, f, func(c *Config) {
		c.ClientSecret = ""
		c.CertificatePEM = testCertPEM(t)
	})
	if _, err := p.Describe(context.Background(), testRef); err != nil {
		t.Fatalf("Describe() with a certificate credential error = %v, want nil", err)
	}
}

func testCertPEM(t *testing.T) []byte {
	key := rsaKey(t, 2)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: "cmk app"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	pem.Encode(&b, &pem.Block{Type: "PRIVATE KEY", Bytes: mustPKCS8(t, key)})
	return b.Bytes()
}

func mustPKCS8(t *testing.T, k *rsa.PrivateKey) []byte {
	b, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNewRejectsIncompleteConfig(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{TenantID: "t"},
		{TenantID: "t", ClientID: "c"},
		{TenantID: "t", ClientID: "c", CertificatePEM: []byte("not pem")},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) error = nil, want error", cfg)
		}
	}
}

func vaultErr(status int, code, inner, msg string) *canned {
	body := fmt.Sprintf(`{"error":{"code":%q,"message":%q}}`, code, msg)
	if inner != "" {
		body = fmt.Sprintf(`{"error":{"code":%q,"message":%q,"innererror":{"code":%q}}}`, code, msg, inner)
	}
	return &canned{status: status, body: body}
}

func entraErr(status int, errCode string, aadsts int, desc string) *canned {
	return &canned{status: status, body: fmt.Sprintf(
		`{"error":%q,"error_description":"AADSTS%d: %s\r\nTrace ID: 0000\r\nCorrelation ID: 1111\r\nTimestamp: 2025-01-01 00:00:00Z","error_codes":[%d],"timestamp":"2025-01-01 00:00:00Z","trace_id":"0000","correlation_id":"1111","error_uri":"https://login.microsoftonline.com/error?code=%d"}`,
		errCode, aadsts, desc, aadsts, aadsts)}
}

// TestFailures drives every failure Azure is known to return through the real
// SDK against the fake and checks the classification.
func TestFailures(t *testing.T) {
	v1 := versionID(0)
	tests := []struct {
		name       string
		op         string // describe, wrap, unwrap
		ref        kms.KeyRef
		setup      func(f *fake)
		cfg        func(c *Config, f *fake)
		kind       kms.Kind
		wantOp     string // default: op
		status     int
		code       string
		inner      string
		retryAfter time.Duration // checked within a second
		requests   int           // authorised vault requests, -1 to skip
	}{
		{name: "key not found", op: "describe", ref: kms.KeyRef{VaultURL: vaultURL, Name: "gone"},
			kind: kms.KindKeyNotFound, status: 404, code: "KeyNotFound", requests: 1},
		{name: "key disabled (inner code)", op: "wrap",
			setup: func(f *fake) {
				f.vaultFail = vaultErr(403, "Forbidden", "KeyDisabled", "Operation wrapKey is not allowed on a disabled key.")
			},
			kind: kms.KindKeyDisabled, status: 403, code: "Forbidden", inner: "KeyDisabled", requests: 1},
		{name: "key disabled (message only)", op: "describe",
			setup: func(f *fake) {
				f.vaultFail = vaultErr(403, "Forbidden", "", "Operation get is not allowed on a disabled key.")
			},
			kind: kms.KindKeyDisabled, status: 403, code: "Forbidden", requests: 1},
		{name: "rbac", op: "describe",
			setup: func(f *fake) {
				f.vaultFail = vaultErr(403, "Forbidden", "ForbiddenByRbac", "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid=x;oid=y;iss=https://sts.windows.net/t/\r\nAction: 'Microsoft.KeyVault/vaults/keys/read'\r\nAssignment: (not found)\r\nDecisionReason: 'DeniedWithNoValidRBAC'\r\nVault: myvault;location=eastus")
			},
			kind: kms.KindIdentityUnauthorized, status: 403, code: "Forbidden", inner: "ForbiddenByRbac", requests: 1},
		{name: "access policy", op: "wrap",
			setup: func(f *fake) {
				f.vaultFail = vaultErr(403, "Forbidden", "ForbiddenByPolicy", "The user, group or application 'appid=x;oid=y;iss=https://sts.windows.net/t/' does not have keys wrapKey permission on key vault 'myvault;location=westeurope'.")
			},
			kind: kms.KindIdentityUnauthorized, status: 403, code: "Forbidden", inner: "ForbiddenByPolicy", requests: 1},
		{name: "access denied", op: "describe",
			setup: func(f *fake) {
				f.vaultFail = vaultErr(403, "Forbidden", "AccessDenied", "You may be missing permissions in access policy to do that operation.")
			},
			kind: kms.KindIdentityUnauthorized, status: 403, code: "Forbidden", inner: "AccessDenied", requests: 1},
		{name: "firewall", op: "describe",
			setup: func(f *fake) {
				f.vaultFail = vaultErr(403, "Forbidden", "ForbiddenByFirewall", "Client address is not authorized and caller is not a trusted service.\r\nClient address: 20.126.176.160\r\nVault: myvault;location=westeurope")
			},
			kind: kms.KindNetworkDenied, status: 403, code: "Forbidden", inner: "ForbiddenByFirewall", requests: 1},
		{name: "public access disabled (not a disabled key)", op: "describe",
			setup: func(f *fake) {
				f.vaultFail = vaultErr(403, "Forbidden", "", "Public network access is disabled and request is not from a trusted service nor via an approved private link.")
			},
			kind: kms.KindNetworkDenied, status: 403, code: "Forbidden", requests: 1},
		{name: "operation not in key_ops", op: "unwrap",
			setup: func(f *fake) {
				f.vaultFail = vaultErr(403, "Forbidden", "KeyOperationForbidden", "Operation unwrapKey is not permitted on this key.")
			},
			kind: kms.KindKeyOperationForbidden, status: 403, code: "Forbidden", inner: "KeyOperationForbidden", requests: 1},
		{name: "expired key on wrap", op: "wrap",
			setup: func(f *fake) {
				f.vaultFail = vaultErr(403, "Forbidden", "", "Operation wrapKey is not allowed on an expired key.")
			},
			kind: kms.KindKeyNotActive, status: 403, code: "Forbidden", requests: 1},
		{name: "not yet valid key on wrap", op: "wrap",
			setup: func(f *fake) {
				f.vaultFail = vaultErr(403, "Forbidden", "KeyNotYetValid", "The key is not yet valid.")
			},
			kind: kms.KindKeyNotActive, status: 403, code: "Forbidden", inner: "KeyNotYetValid", requests: 1},
		{name: "unwrap bad parameter", op: "unwrap",
			setup: func(f *fake) {
				f.vaultFail = vaultErr(400, "BadParameter", "", "Unable to decrypt specified value with this key")
			},
			kind: kms.KindUnwrapFailed, status: 400, code: "BadParameter", requests: 1},
		{name: "wrap bad parameter", op: "wrap",
			setup: func(f *fake) {
				f.vaultFail = vaultErr(400, "BadParameter", "", "Property  has invalid value\r\n")
			},
			kind: kms.KindInvalidRequest, status: 400, code: "BadParameter", requests: 1},
		// A 400 is an answer about the request unless it positively says the
		// value could not be decrypted: none of these may read as a lost key.
		{name: "unwrap: api-version not recognized", op: "unwrap",
			setup: func(f *fake) {
				f.vaultFail = vaultErr(400, "BadParameter", "", "The specified version (2099-01-01) is not recognized. Consider using the latest supported version (7.6).")
			},
			kind: kms.KindInvalidRequest, status: 400, code: "BadParameter", requests: 1},
		{name: "unwrap: api-version missing", op: "unwrap",
			setup: func(f *fake) {
				f.vaultFail = vaultErr(400, "BadParameter", "", "The request URI contains an invalid or missing 'api-version' query parameter.")
			},
			kind: kms.KindInvalidRequest, status: 400, code: "BadParameter", requests: 1},
		{name: "unwrap: bad parameter about the value", op: "unwrap",
			setup: func(f *fake) {
				f.vaultFail = vaultErr(400, "BadParameter", "", "Content of 'value' is not base64url.\r\nProperty 'value' is required.\r\n")
			},
			kind: kms.KindInvalidRequest, status: 400, code: "BadParameter", requests: 1},
		{name: "unwrap: unknown 400", op: "unwrap",
			setup: func(f *fake) {
				f.vaultFail = vaultErr(400, "SomethingNew", "", "A reason no one has seen before.")
			},
			kind: kms.KindInvalidRequest, status: 400, code: "SomethingNew", requests: 1},
		{name: "wrap: api-version not recognized", op: "wrap",
			setup: func(f *fake) {
				f.vaultFail = vaultErr(400, "BadParameter", "", "The specified version (2099-01-01) is not recognized. Consider using the latest supported version (7.6).")
			},
			kind: kms.KindInvalidRequest, status: 400, code: "BadParameter", requests: 1},
		{name: "describe: unknown 400", op: "describe",
			setup: func(f *fake) {
				f.vaultFail = vaultErr(400, "BadParameter", "", "Something about the request.")
			},
			kind: kms.KindInvalidRequest, status: 400, code: "BadParameter", requests: 1},
		{name: "vault rejects token (wrong issuer)", op: "describe",
			setup: func(f *fake) {
				f.vaultFail = &canned{status: 401,
					header: map[string]string{"WWW-Authenticate": fmt.Sprintf(`Bearer authorization="%s/%s", resource="https://%s"`, f.srv.URL, customerTenant, vaultSuffix)},
					body:   `{"error":{"code":"Unauthorized","message":"AKV10032: Invalid issuer. Expected one of https://sts.windows.net/a/, found https://sts.windows.net/b/."}}`}
			},
			kind: kms.KindIdentityUnauthorized, status: 401, code: "Unauthorized", inner: "AKV10032", requests: 1},
		{name: "throttled, seconds", op: "wrap",
			setup: func(f *fake) {
				f.vaultFail = &canned{status: 429, header: map[string]string{"Retry-After": "7"},
					body: `{"error":{"code":"Throttled","message":"Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached"}}`}
			},
			kind: kms.KindThrottled, status: 429, code: "Throttled", retryAfter: 7 * time.Second, requests: 1},
		{name: "throttled, http date", op: "describe",
			setup: func(f *fake) {
				retryDate := time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)
				f.vaultFail = &canned{status: 429, header: map[string]string{"Retry-After": retryDate},
					body: `{"error":{"code":"Throttled","message":"Request was not processed because too many requests were received."}}`}
			},
			kind: kms.KindThrottled, status: 429, code: "Throttled", retryAfter: 30 * time.Second, requests: 1},
		{name: "throttled, no header", op: "unwrap",
			setup: func(f *fake) {
				f.vaultFail = &canned{status: 429, body: `{"error":{"code":"Throttled","message":"Request was not processed because too many requests were received."}}`}
			},
			kind: kms.KindThrottled, status: 429, code: "Throttled", requests: 1},
		{name: "503 retried then transient", op: "describe",
			setup: func(f *fake) {
				f.vaultFail = &canned{status: 503, body: `{"error":{"code":"ServiceUnavailable","message":"try later"}}`}
			},
			kind: kms.KindTransient, status: 503, code: "ServiceUnavailable", requests: 3},
		{name: "500", op: "wrap",
			setup: func(f *fake) {
				f.vaultFail = &canned{status: 500, body: `{"error":{"code":"InternalError","message":"boom"}}`}
			},
			kind: kms.KindTransient, status: 500, code: "InternalError", requests: 3},
		{name: "408", op: "unwrap",
			setup: func(f *fake) {
				f.vaultFail = &canned{status: 408, body: `{"error":{"code":"RequestTimeout","message":"slow"}}`}
			},
			kind: kms.KindTransient, status: 408, code: "RequestTimeout", requests: 3},
		{name: "conflict while recovering", op: "describe",
			setup: func(f *fake) {
				f.vaultFail = vaultErr(409, "Conflict", "ObjectIsBeingRecovered", "Key cmk is currently being recovered and cannot be re-created; retry later.")
			},
			kind: kms.KindTransient, status: 409, code: "Conflict", inner: "ObjectIsBeingRecovered", requests: 1},
		{name: "connection reset", op: "describe",
			setup: func(f *fake) { f.vaultFail = &canned{hangup: true} },
			kind:  kms.KindTransient, requests: -1}, // net/http may retry an idempotent request once more
		{name: "timeout", op: "unwrap",
			setup: func(f *fake) { f.vaultFail = &canned{stall: true} },
			cfg:   func(c *Config, f *fake) { c.Timeout = 300 * time.Millisecond },
			kind:  kms.KindTransient, requests: -1},
		{name: "vault dns not found", op: "describe", ref: kms.KeyRef{VaultURL: "https://deleted." + vaultSuffix, Name: "cmk"},
			kind: kms.KindVaultDNSUnresolvable, requests: 0},
		{name: "connection refused", op: "wrap", ref: kms.KeyRef{VaultURL: "https://" + refusedHost, Name: "cmk"},
			kind: kms.KindTransient, requests: 0},
		{name: "host not allowed", op: "describe", ref: kms.KeyRef{VaultURL: "https://evil.example.com", Name: "cmk"},
			kind: kms.KindMalformedKeyURI, requests: 0},
		{name: "emulator suffix not configured", op: "describe",
			cfg:  func(c *Config, f *fake) { c.ExtraVaultSuffixes = nil },
			kind: kms.KindMalformedKeyURI, requests: 0},
		{name: "challenge for another resource", op: "describe",
			setup: func(f *fake) { f.challengeResource = "https://vault.azure.net" },
			kind:  kms.KindInvalidRequest, requests: 0},
		{name: "answer about another key", op: "wrap",
			setup: func(f *fake) { f.kidName = "other" },
			kind:  kms.KindInvalidRequest, requests: 1},
		{name: "consent missing", op: "describe",
			setup: func(f *fake) {
				f.tokenFail = entraErr(400, "unauthorized_client", 700016, "Application with identifier 'app-client-id' was not found in the directory 'customer'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.")
			},
			kind: kms.KindIdentityInvalid, wantOp: "token", status: 400, code: "unauthorized_client", inner: "AADSTS700016", requests: 0},
		{name: "bad secret", op: "wrap",
			cfg:  func(c *Config, f *fake) { c.ClientSecret = "wrong" },
			kind: kms.KindTokenAcquisitionFailed, wantOp: "token", status: 401, code: "invalid_client", inner: "AADSTS7000215", requests: 0},
		{name: "expired secret", op: "unwrap",
			setup: func(f *fake) {
				f.tokenFail = entraErr(401, "invalid_client", 7000222, "The provided client secret keys for app 'app-client-id' are expired.")
			},
			kind: kms.KindTokenAcquisitionFailed, wantOp: "token", status: 401, code: "invalid_client", inner: "AADSTS7000222", requests: 0},
		{name: "tenant not found", op: "describe",
			setup: func(f *fake) {
				f.tokenFail = entraErr(400, "invalid_request", 90002, "Tenant '"+customerTenant+"' not found.")
				f.discoveryFail = true
			},
			kind: kms.KindTokenAcquisitionFailed, wantOp: "token", status: 400, code: "invalid_request", inner: "AADSTS90002", requests: 0},
		{name: "token endpoint 503", op: "describe",
			setup: func(f *fake) {
				f.tokenFail = &canned{status: 503, body: `{"error":"temporarily_unavailable","error_description":"AADSTS90033: A transient error has occurred.","error_codes":[90033]}`}
			},
			kind: kms.KindTransient, wantOp: "token", status: 503, code: "temporarily_unavailable", inner: "AADSTS90033", requests: 0},
		{name: "token endpoint unreachable", op: "describe",
			cfg:  func(c *Config, f *fake) { c.AuthorityHost = "https://" + closedAddr(t) + "/" },
			kind: kms.KindTransient, wantOp: "token", requests: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t)
			if tt.setup != nil {
				f.set(tt.setup)
			}
			p := newProvider(t, f, func(c *Config) {
				if tt.cfg != nil {
					tt.cfg(c, f)
				}
			})
			ref := tt.ref
			if ref == (kms.KeyRef{}) {
				ref = testRef
			}
			var err error
			ctx := context.Background()
			switch tt.op {
			case "describe":
				_, err = p.Describe(ctx, ref)
			case "wrap":
				_, err = p.Wrap(ctx, ref, make([]byte, 32))
			case "unwrap":
				_, err = p.Unwrap(ctx, ref, kms.Wrapped{KeyVersion: v1, Alg: "RSA-OAEP-256", Ciphertext: make([]byte, 256)})
			}
			var ke *kms.Error
			if !errors.As(err, &ke) {
				t.Fatalf("%s() error = %v, want *kms.Error", tt.op, err)
			}
			wantOp := tt.wantOp
			if wantOp == "" {
				wantOp = tt.op
			}
			if ke.Kind != tt.kind || ke.Op != wantOp || ke.Status != tt.status || ke.Code != tt.code || ke.InnerCode != tt.inner {
				t.Errorf("%s() error = {Kind %s, Op %s, Status %d, Code %q, InnerCode %q}, want {Kind %s, Op %s, Status %d, Code %q, InnerCode %q}\nerror: %v",
					tt.op, ke.Kind, ke.Op, ke.Status, ke.Code, ke.InnerCode, tt.kind, wantOp, tt.status, tt.code, tt.inner, err)
			}
			if d := ke.RetryAfter - tt.retryAfter; d < -time.Second || d > time.Second {
				t.Errorf("%s() RetryAfter = %v, want %v", tt.op, ke.RetryAfter, tt.retryAfter)
			}
			if ke.Key != ref.String() {
				t.Errorf("%s() error Key = %q, want %q", tt.op, ke.Key, ref.String())
			}
			f.mu.Lock()
			n := f.vaultRequests
			f.mu.Unlock()
			if tt.requests >= 0 && n != tt.requests {
				t.Errorf("%s() authorised vault requests = %d, want %d", tt.op, n, tt.requests)
			}
		})
	}
}

func TestLocalRefusals(t *testing.T) {
	f := newFake(t)
	p := newProvider(t, f, nil)
	ctx := context.Background()
	versioned := kms.KeyRef{VaultURL: vaultURL, Name: "cmk/" + versionID(0)}
	tests := []struct {
		name string
		call func() error
		want kms.Kind
	}{
		{"empty dek", func() error { _, err := p.Wrap(ctx, testRef, nil); return err }, kms.KindInvalidRequest},
		{"versioned ref", func() error { _, err := p.Describe(ctx, versioned); return err }, kms.KindMalformedKeyURI},
		{"no version", func() error {
			_, err := p.Unwrap(ctx, testRef, kms.Wrapped{Ciphertext: []byte{1}})
			return err
		}, kms.KindInvalidRequest},
		{"bad version", func() error {
			_, err := p.Unwrap(ctx, testRef, kms.Wrapped{KeyVersion: "../../secrets/x", Ciphertext: []byte{1}})
			return err
		}, kms.KindInvalidRequest},
		{"other alg", func() error {
			_, err := p.Unwrap(ctx, testRef, kms.Wrapped{KeyVersion: versionID(0), Alg: "RSA1_5", Ciphertext: []byte{1}})
			return err
		}, kms.KindInvalidRequest},
		{"empty ciphertext", func() error {
			_, err := p.Unwrap(ctx, testRef, kms.Wrapped{KeyVersion: versionID(0)})
			return err
		}, kms.KindUnwrapFailed},
	}
	for _, tt := range tests {
		if got := kms.KindOf(tt.call()); got != tt.want {
			t.Errorf("%s: kind = %q, want %q", tt.name, got, tt.want)
		}
	}
	if f.challenges+f.vaultRequests != 0 {
		t.Errorf("vault requests = %d, want 0", f.challenges+f.vaultRequests)
	}
}

func TestClassifyPassThrough(t *testing.T) {
	if err := Classify("wrap", testRef, nil); err != nil {
		t.Errorf("Classify(nil) = %v, want nil", err)
	}
	in := &kms.Error{Kind: kms.KindKeyDisabled, Op: "wrap"}
	if got := Classify("describe", testRef, fmt.Errorf("ctx: %w", in)); kms.KindOf(got) != kms.KindKeyDisabled {
		t.Errorf("Classify(wrapped *kms.Error) kind = %q, want %q", kms.KindOf(got), kms.KindKeyDisabled)
	}
	for _, err := range []error{context.DeadlineExceeded, context.Canceled, errors.New("something new")} {
		if got := kms.KindOf(Classify("describe", testRef, err)); got != kms.KindTransient {
			t.Errorf("Classify(%v) kind = %q, want %q", err, got, kms.KindTransient)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		header map[string]string
		want   time.Duration
	}{
		{nil, 0},
		{map[string]string{"Retry-After": "12"}, 12 * time.Second},
		{map[string]string{"Retry-After": " 3 "}, 3 * time.Second},
		{map[string]string{"Retry-After": "0"}, 0},
		{map[string]string{"Retry-After": "-5"}, 0},
		{map[string]string{"Retry-After": "soon"}, 0},
		{map[string]string{"Retry-After": now.Add(90 * time.Second).Format(http.TimeFormat)}, 90 * time.Second},
		{map[string]string{"Retry-After": now.Add(-time.Minute).Format(http.TimeFormat)}, 0},
		{map[string]string{"Retry-After": "12", "Retry-After-Ms": "1500"}, 1500 * time.Millisecond},
		{map[string]string{"X-Ms-Retry-After-Ms": "250"}, 250 * time.Millisecond},
		{map[string]string{"Retry-After": "86400"}, MaxRetryAfter},
		{map[string]string{"Retry-After": now.Add(48 * time.Hour).Format(http.TimeFormat)}, MaxRetryAfter},
	}
	for _, tt := range tests {
		h := http.Header{}
		for k, v := range tt.header {
			h.Set(k, v)
		}
		if got := retryAfter(h, now); got != tt.want {
			t.Errorf("retryAfter(%v) = %v, want %v", tt.header, got, tt.want)
		}
	}
}

func TestClassify403Messages(t *testing.T) {
	tests := []struct {
		code, msg string
		want      kms.Kind
	}{
		{"Forbidden", "Request was not allowed by NSP rules and the client address is not authorized", kms.KindNetworkDenied},
		{"Forbidden", "Operation get is not allowed on a disabled entity.", kms.KindKeyDisabled},
		{"Forbidden", "Operation decrypt is not permitted on this key.", kms.KindKeyOperationForbidden},
		{"Forbidden", "Operation is not allowed.\r\nOperation: \"decrypt\"", kms.KindIdentityUnauthorized},
		{"KeyExpired", "", kms.KindKeyNotActive},
		{"Forbidden", "", kms.KindIdentityUnauthorized},
	}
	for _, tt := range tests {
		if got := classify403(tt.code, strings.ToLower(tt.msg)); got != tt.want {
			t.Errorf("classify403(%q, %q) = %q, want %q", tt.code, tt.msg, got, tt.want)
		}
	}
}
