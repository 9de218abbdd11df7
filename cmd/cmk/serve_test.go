package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/servecmd"
	"github.com/cmk-project/cmk/internal/service"
)

// TestServeEmulatorMode checks that 'cmk serve' talks to a local emulator
// only when --emulator says so, never because CMK_EMULATOR_* variables are
// set, and that it then warns on stderr and in its log before it starts.
func TestServeEmulatorMode(t *testing.T) {
	ca := writeTestCA(t)
	const emuURL = "https://127.0.0.1:1" // never called: no org uses a key here
	for _, c := range []struct {
		name     string
		env      map[string]string
		args     []string
		emulator bool
	}{
		{name: "flag", args: []string{"--emulator", emuURL, "--emulator-ca", ca}, emulator: true},
		{name: "environment", env: map[string]string{
			"CMK_EMULATOR_URL": emuURL, "CMK_EMULATOR_CA": ca, "CMK_EMULATOR_VAULT_SUFFIX": "vault.azure.localhost",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			stderr := serveUntilListening(t, append(c.args, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--workers", "-1", "--dev-token-issuer"))
			plain := "WARNING: development mode: cmk is using the local Azure emulator at " + emuURL + " instead of Azure; never run this in production"
			if got := strings.Contains(stderr, plain+"\n"); got != c.emulator {
				t.Errorf("stderr has the line %q: %v, want %v; stderr:\n%s", plain, got, c.emulator, stderr)
			}
			warned := false
			for _, line := range strings.Split(stderr, "\n") {
				var rec struct{ Level, Msg, Emulator string }
				if json.Unmarshal([]byte(line), &rec) == nil && rec.Level == "WARN" && strings.Contains(rec.Msg, "local Azure emulator") {
					warned = true
					if rec.Emulator != emuURL {
						t.Errorf("warning logged emulator=%q, want %q", rec.Emulator, emuURL)
					}
				}
			}
			if warned != c.emulator {
				t.Errorf("a WARN record about development mode was logged: %v, want %v; stderr:\n%s", warned, c.emulator, stderr)
			}
		})
	}
}

// TestServeDevTokenIssuer checks that 'cmk serve' trusts the development
// token issuer only when --dev-token-issuer says so, and then warns on
// stderr and in its log.
func TestServeDevTokenIssuer(t *testing.T) {
	cmd := newServeCmd()
	dir := filepath.Join(t.TempDir(), "data")
	cmd.SetArgs([]string{"--addr", "127.0.0.1:0", "--data-dir", dir, "--workers", "-1"})
	cmd.SetErr(io.Discard)
	err := cmd.Execute()
	if !errors.Is(err, service.ErrNoTokenIssuer) || !strings.Contains(servecmd.HintOf(err), "--dev-token-issuer") {
		t.Errorf("cmk serve without --jwks-url = %v (hint %q), want ErrNoTokenIssuer with a hint naming --dev-token-issuer", err, servecmd.HintOf(err))
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cmk serve without a token issuer created its data directory (stat: %v)", err)
	}

	stderr := serveUntilListening(t, []string{"--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--workers", "-1", "--dev-token-issuer"})
	if want := "WARNING: " + service.DevTokenIssuerWarning + "\n"; !strings.Contains(stderr, want) {
		t.Errorf("stderr lacks the line %q; stderr:\n%s", want, stderr)
	}
	warned := false
	for _, line := range strings.Split(stderr, "\n") {
		var rec struct {
			Level, Msg   string
			TokenKeyFile string `json:"token_key_file"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Level == "WARN" && rec.Msg == service.DevTokenIssuerWarning && rec.TokenKeyFile != "" {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no WARN record about the development token issuer was logged; stderr:\n%s", stderr)
	}
}

// serveUntilListening runs 'cmk serve args' until the service logs that it
// listens, stops it as Ctrl-C would, and returns its stderr.
func serveUntilListening(t *testing.T, args []string) string {
	t.Helper()
	cmd := newServeCmd()
	cmd.SetArgs(args)
	var stderr lockedBuffer
	cmd.SetErr(&stderr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	deadline := time.After(30 * time.Second)
	for !strings.Contains(stderr.String(), `"msg":"cmk listening"`) {
		select {
		case err := <-done:
			t.Fatalf("cmk serve %s ended before listening: %v; stderr:\n%s", strings.Join(args, " "), err, stderr.String())
		case <-deadline:
			t.Fatalf("cmk serve %s did not listen within 30s; stderr:\n%s", strings.Join(args, " "), stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("cmk serve stopped with %v", err)
	}
	return stderr.String()
}

// lockedBuffer is a bytes.Buffer the service's goroutines can log into
// while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// writeTestCA writes a self-signed CA certificate (PEM) and returns its path.
func writeTestCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
