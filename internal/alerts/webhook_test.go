package alerts

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"a:alert.opened"}`)
	sig := Sign("s3cret", now, body)
	if err := Verify("s3cret", sig, body, now.Add(time.Minute), 5*time.Minute); err != nil {
		t.Errorf("Verify(good) = %v, want nil", err)
	}
	cases := []struct {
		name, secret, header string
		body                 []byte
		at                   time.Time
	}{
		{"wrong secret", "other", sig, body, now},
		{"tampered body", "s3cret", sig, []byte(`{"id":"b"}`), now},
		{"replayed late", "s3cret", sig, body, now.Add(time.Hour)},
		{"malformed", "s3cret", "v1=abc", body, now},
	}
	for _, c := range cases {
		if err := Verify(c.secret, c.header, c.body, c.at, 5*time.Minute); !errors.Is(err, ErrBadSignature) {
			t.Errorf("Verify(%s) = %v, want ErrBadSignature", c.name, err)
		}
	}
}

func TestURLPolicy(t *testing.T) {
	strict := URLPolicy{}
	for _, u := range []string{"https://hooks.example.com/cmk", "https://203.0.114.7/x", "https://1st.example.com/x", "https://hooks.example.com./x", "https://hooks.example.com:443/x"} {
		if err := strict.Check(u); err != nil {
			t.Errorf("Check(%q) = %v, want nil", u, err)
		}
	}
	for _, u := range []string{"http://hooks.example.com/", "ftp://x/", "https://user:pw@hooks.example.com/", "not a url",
		"https://127.0.0.1/", "https://10.1.2.3/", "https://169.254.169.254/", "https://100.100.100.200/", "https://[::1]/",
		"https://[64:ff9b::a9fe:a9fe]/", "https://[2002:a00:1::]/", "https://[::ffff:10.0.0.1]/", "https://[fd00::1]/", "https://198.18.0.1/",
		"https://2130706433/", "https://0x7f000001/", "https://127.1/", "https://0177.0.0.1/", "https://localhost/", "https://a.localhost./",
		"https://hooks.example.com:22/", "https://hooks.example.com:8443/", "https://203.0.114.7:6379/"} {
		if err := strict.Check(u); err == nil {
			t.Errorf("Check(%q) = nil, want refusal", u)
		}
	}
	if err := (URLPolicy{AllowHTTP: true, AllowPrivateNetworks: true}).Check("http://127.0.0.1:9/hook"); err != nil {
		t.Errorf("development policy refused a loopback receiver: %v", err)
	}
	for _, ip := range []string{"8.8.8.8", "2606:4700::1111"} {
		if !public(net.ParseIP(ip)) {
			t.Errorf("public(%s) = false, want true", ip)
		}
	}
}

// FuzzURLPolicy checks that whatever the strict policy accepts is an https
// URL without credentials whose host is a DNS name that does not read as a
// number, or a public IP address.
func FuzzURLPolicy(f *testing.F) {
	for _, s := range []string{"https://hooks.example.com/cmk", "https://203.0.114.7/x", "https://127.0.0.1/", "https://2130706433/",
		"https://[::ffff:10.0.0.1]/", "https://user@h.example/", "http://h.example/", "https://localhost./", "https://0x7f.0x0.0x0.0x1/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		if (URLPolicy{}).Check(raw) != nil {
			return
		}
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "https" || u.User != nil || u.Hostname() == "" {
			t.Fatalf("Check(%q) accepted a URL that is not https, has credentials or has no host", raw)
		}
		host := u.Hostname()
		if ip := net.ParseIP(host); ip != nil {
			if !public(ip) {
				t.Fatalf("Check(%q) accepted the non-public address %s", raw, ip)
			}
			return
		}
		name := strings.TrimSuffix(strings.ToLower(host), ".")
		if numericLabel(name[strings.LastIndexByte(name, '.')+1:]) || name == "localhost" || strings.HasSuffix(name, ".localhost") {
			t.Fatalf("Check(%q) accepted host %q", raw, host)
		}
	})
}

// TestTestFailureHidesTheNetwork: why a test event failed is told in fixed
// phrases, never with the addresses, resolver or certificate names the
// network error holds.
func TestTestFailureHidesTheNetwork(t *testing.T) {
	for _, c := range []struct {
		status int
		err    error
		want   string
	}{
		{401, errors.New("receiver answered HTTP 401"), "the receiver answered HTTP 401"},
		{0, &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "db.corp.internal", Server: "10.255.255.53:53", IsNotFound: true}}, "the receiver's host name does not resolve"},
		{0, errors.New("Post: dial tcp 10.1.2.3:443: connect to 10.1.2.3 refused: not a public address"), "the receiver's address is not a public address"},
		{0, context.DeadlineExceeded, "the receiver did not answer in time"},
		{0, errors.New("Post: tls: failed to verify certificate: x509: certificate is valid for internal.corp, not hooks.example.com"), "the TLS handshake with the receiver failed (is its certificate valid for its name?)"},
		{0, errors.New("Post: dial tcp 203.0.114.7:443: connect: connection refused"), "could not connect to the receiver"},
	} {
		got := testFailure(c.status, c.err)
		if got != c.want {
			t.Errorf("testFailure(%d, %v) = %q, want %q", c.status, c.err, got, c.want)
		}
		for _, leak := range []string{"10.", "corp", "203.0", ":53", ":443"} {
			if strings.Contains(got, leak) {
				t.Errorf("testFailure(%v) = %q shows %q", c.err, got, leak)
			}
		}
	}
}
