package e2e

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/alerts"
	"github.com/cmk-project/cmk/internal/cmkapi"
)

// countingListener is a service a tenant would like the server to reach:
// it counts every connection made to it.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func listenCounting(t *testing.T, network, addr string) *countingListener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("cannot listen on %s %s: %v", network, addr, err)
	}
	c := &countingListener{Listener: ln}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.n.Add(1)
			conn.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return c
}

// TestSSRF sends key identifiers and webhook URLs that aim at addresses a
// tenant must never make the server reach — loopback in every notation,
// cloud metadata, userinfo tricks, other ports, look-alike, punycode and
// trailing-dot hosts, redirects — and checks that each is refused and that
// not one connection reached the listener standing in for the internal
// network.
func TestSSRF(t *testing.T) {
	env := startEnv(t)
	target := listenCounting(t, "tcp4", "127.0.0.1:0")
	port := target.Addr().(*net.TCPAddr).Port
	p := fmt.Sprint(port)
	c := adminClient(t, env, env.Org)

	keyIDs := []string{
		"https://127.0.0.1:" + p + "/keys/k",
		"https://2130706433:" + p + "/keys/k",
		"https://0x7f000001:" + p + "/keys/k",
		"https://0177.0.0.1:" + p + "/keys/k",
		"https://127.1:" + p + "/keys/k",
		"https://0:" + p + "/keys/k",
		"https://[::1]:" + p + "/keys/k",
		"https://[::ffff:127.0.0.1]:" + p + "/keys/k",
		"https://[0:0:0:0:0:ffff:7f00:1]:" + p + "/keys/k",
		"https://localhost:" + p + "/keys/k",
		"https://localhost./keys/k",
		"https://169.254.169.254/keys/k",
		"https://[fd00:ec2::254]/keys/k",
		"https://metadata.google.internal/keys/k",
		"https://100.100.100.200/keys/k",
		"https://contoso.vault.azure.net@127.0.0.1:" + p + "/keys/k",
		"https://user:pass@contoso.vault.azure.net/keys/k",
		"https://127.0.0.1:" + p + "#@contoso.vault.azure.net/keys/k",
		"https://127.0.0.1:" + p + "\\@contoso.vault.azure.net/keys/k",
		"https://contoso.vault.azure.net:" + p + "/keys/k",
		"https://contoso.vault.azure.net.127.0.0.1.nip.io:" + p + "/keys/k",
		"https://contoso.vault.azure.net.evil.example/keys/k",
		"https://contoso.vault-azure.net/keys/k",
		"https://contoso.vaultazure.net/keys/k",
		"https://contoso.vault.azure.net%2e127.0.0.1.nip.io/keys/k",
		"https://contoso.xn--vult-azure-4ob.net/keys/k",
		"https://contoso.vаult.azure.net/keys/k", // Cyrillic а
		"https://contoso.VAULT.AZURE.NET.evil.example/keys/k",
		"http://contoso.vault.azure.net/keys/k",
		"ftp://contoso.vault.azure.net/keys/k",
		"file:///etc/passwd",
		"//127.0.0.1:" + p + "/keys/k",
		"https:/127.0.0.1:" + p + "/keys/k",
		"https://evil.example/contoso.vault.azure.net/keys/k",
		"https://evil.example/?x=.vault.azure.net/keys/k",
	}
	for i, kid := range keyIDs {
		code, rep := c.do("POST", cmkapi.PreflightKey.Path, map[string]string{"keyVaultKeyIdentifier": kid})
		if code != 200 || rep["passed"] != false {
			t.Errorf("preflight(%q) = %d passed=%v, want 200 with the key identifier check failed", kid, code, rep["passed"])
		} else if first := rep["results"].([]any)[0].(map[string]any); first["check"] != "key_identifier" || first["status"] != cmkapi.CheckFailed {
			t.Errorf("preflight(%q): first check = %v %v, want key_identifier FAILED", kid, first["check"], first["status"])
		}
		code, body := c.do("POST", cmkapi.CreateConfig.Path, configBody(env.Org, fmt.Sprintf("ssrf-%d", i), kid))
		if code != 400 || body["errorCode"] != cmkapi.CodeInvalidKeyIdentifier {
			t.Errorf("POST config(%q) = %d %v, want 400 %s", kid, code, body["errorCode"], cmkapi.CodeInvalidKeyIdentifier)
		}
	}

	// Webhooks under the production policy (the one control.CreateWebhook
	// applies; the development world runs a lenient one): refused at
	// registration, and
	// the delivery client itself refuses non-public addresses when it
	// dials, so a name that resolves to loopback is stopped too.
	prod := alerts.URLPolicy{}
	hooks := []string{
		"https://127.0.0.1:" + p + "/hook", "https://[::1]:" + p + "/hook", "https://2130706433:" + p + "/hook",
		"https://169.254.169.254/latest/meta-data/", "https://[fd00:ec2::254]/", "https://10.0.0.1/", "https://192.168.1.1/",
		"https://user@127.0.0.1:" + p + "/", "http://example.com/hook", "file:///etc/passwd", "gopher://127.0.0.1:" + p + "/",
	}
	hooks = append(hooks, "https://localhost:"+p+"/hook", "https://cmk.localhost./hook", "https://0x7f000001:"+p+"/hook", "https://127.1:"+p+"/hook")
	for _, u := range hooks {
		if err := prod.Check(u); err == nil {
			t.Errorf("production webhook policy accepted %q", u)
		}
	}
	dialGuard := alerts.URLPolicy{AllowHTTP: true}.Client(2 * time.Second)
	for _, u := range []string{"http://localhost:" + p + "/hook", "http://127.0.0.1:" + p + "/hook", "http://[::ffff:127.0.0.1]:" + p + "/hook"} {
		if resp, err := dialGuard.Get(u); err == nil {
			resp.Body.Close()
			t.Errorf("delivery client reached %s", u)
		}
	}

	// A receiver that answers with a redirect to the internal listener: the
	// delivery client does not follow it.
	redirector := &http.Server{Handler: http.RedirectHandler("http://127.0.0.1:"+p+"/internal", http.StatusFound)}
	rln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go redirector.Serve(rln)
	t.Cleanup(func() { redirector.Close() })
	lenient := alerts.URLPolicy{AllowHTTP: true, AllowPrivateNetworks: true}.Client(2 * time.Second)
	resp, err := lenient.Get("http://" + rln.Addr().String() + "/hook")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Errorf("delivery client followed a redirect: status %d", resp.StatusCode)
	}

	time.Sleep(100 * time.Millisecond) // let any stray connection be accepted
	if n := target.n.Load(); n != 0 {
		t.Errorf("the internal listener received %d connections, want 0", n)
	}
	t.Logf("SSRF: %d key identifiers and %d webhook URLs refused, 0 connections to the internal listener", len(keyIDs), len(hooks))
	if !strings.HasPrefix(env.KeyIdentifier, "https://") {
		t.Fatal("the demo key identifier is not https")
	}
}
