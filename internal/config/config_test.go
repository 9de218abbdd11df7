package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func flags() (*pflag.FlagSet, *string, *bool, *time.Duration) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address")
	dev := fs.Bool("dev-mode", false, "development only")
	every := fs.Duration("check-interval", 30*time.Second, "how often")
	fs.String("database", "", "DSN")
	fs.String("token-file", "", "secret file")
	MarkFlagOnly(fs, "dev-mode")
	MarkRedacted(fs, "database")
	return fs, addr, dev, every
}

var secrets = []Secret{{Name: "token", Env: "CMK_TOKEN", FileKey: "token-file"}}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestFlagOnlyIgnoresEnvironment: a development switch is never turned on
// by a variable, and refused in the file.
func TestFlagOnlyIgnoresEnvironment(t *testing.T) {
	fs, _, dev, _ := flags()
	eff, _, err := Apply(fs, "", env(map[string]string{"CMK_DEV_MODE": "true"}), secrets)
	if err != nil || *dev {
		t.Errorf("Apply with CMK_DEV_MODE=true: dev = %v, err %v; want it off", *dev, err)
	}
	if s := eff.get("dev-mode"); s == nil || s.Env != "" || s.Source != FromDefault {
		t.Errorf("dev-mode setting = %+v, want no variable and the default", s)
	}
	fs, _, _, _ = flags()
	_, _, err = Apply(fs, write(t, `{"dev-mode": true}`), env(nil), secrets)
	var ce *Error
	if !errors.As(err, &ce) || ce.Setting != "dev-mode" || !strings.Contains(ce.Hint(), "--dev-mode") {
		t.Errorf("dev-mode in the file = %v, want an *Error naming it with a hint to use the flag", err)
	}
}

func TestPrecedenceAndSources(t *testing.T) {
	fs, addr, _, every := flags()
	if err := fs.Parse([]string{"--addr", "0.0.0.0:1"}); err != nil {
		t.Fatal(err)
	}
	eff, got, err := Apply(fs, write(t, `{"addr": "file:1", "check-interval": "1m", "database": "postgres://u:pw@h/db"}`),
		env(map[string]string{"CMK_ADDR": "env:1", "CMK_CHECK_INTERVAL": "2m", "CMK_TOKEN": "tok"}), secrets)
	if err != nil {
		t.Fatal(err)
	}
	if *addr != "0.0.0.0:1" || *every != 2*time.Minute || got["token"] != "tok" {
		t.Errorf("addr %q, interval %s, token %q; want the flag, the variable, the variable", *addr, *every, got["token"])
	}
	for key, want := range map[string]string{"addr": "flag", "check-interval": "env", "database": "file", "token": "env", "dev-mode": "default"} {
		if s := eff.get(key); s == nil || string(s.Source) != want {
			t.Errorf("source of %s = %+v, want %s", key, s, want)
		}
	}
	var b strings.Builder
	eff.Print(&b)
	if strings.Contains(b.String(), "pw@") || strings.Contains(b.String(), "tok\"") {
		t.Errorf("Print shows a secret:\n%s", b.String())
	}
}

func TestClosest(t *testing.T) {
	fs, _, _, _ := flags()
	for in, want := range map[string]string{"adr": "addr", "check_interval": "check-interval", "databse": "database", "tokenfile": "token-file"} {
		if got := closest(in, fs, secrets); got != want {
			t.Errorf("closest(%q) = %q, want %q", in, got, want)
		}
	}
}
