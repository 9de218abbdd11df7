package alerts

import (
	"errors"
	"net"
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
	for _, u := range []string{"https://hooks.example.com/cmk", "https://203.0.114.7/x", "https://1st.example.com/x", "https://hooks.example.com./x"} {
		if err := strict.Check(u); err != nil {
			t.Errorf("Check(%q) = %v, want nil", u, err)
		}
	}
	for _, u := range []string{"http://hooks.example.com/", "ftp://x/", "https://user:pw@hooks.example.com/", "not a url",
		"https://127.0.0.1/", "https://10.1.2.3/", "https://169.254.169.254/", "https://100.100.100.200/", "https://[::1]/",
		"https://[64:ff9b::a9fe:a9fe]/", "https://[2002:a00:1::]/", "https://[::ffff:10.0.0.1]/", "https://[fd00::1]/", "https://198.18.0.1/",
		"https://2130706433/", "https://0x7f000001/", "https://127.1/", "https://0177.0.0.1/", "https://localhost/", "https://a.localhost./"} {
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
