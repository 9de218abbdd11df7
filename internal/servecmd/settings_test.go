package servecmd

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cmk-project/cmk/internal/config"
	"github.com/cmk-project/cmk/internal/service"
)

// flagOnly are the settings taken on the command line only: development
// switches that a file or a stray variable must never turn on, and the
// command's own.
var flagOnly = map[string]bool{
	"dev-token-issuer": true, "webhook-allow-http": true, "webhook-allow-private": true,
	"config": true, "print-config": true, "help": true,
}

// TestEverySettingHasAKeyAndAVariable: every flag is a key of the
// configuration file and has its own CMK_* variable, except the flag-only
// ones, and no two settings share a variable.
func TestEverySettingHasAKeyAndAVariable(t *testing.T) {
	cmd := New("cmkd")
	cmd.InitDefaultHelpFlag()
	seen := map[string]string{}
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		env := config.EnvName(f)
		if flagOnly[f.Name] {
			if env != "" {
				t.Errorf("flag-only setting %s has the variable %s", f.Name, env)
			}
			return
		}
		if !strings.HasPrefix(env, "CMK_") {
			t.Errorf("setting %s has variable %q, want CMK_*", f.Name, env)
		}
		if other, ok := seen[env]; ok {
			t.Errorf("settings %s and %s share the variable %s", f.Name, other, env)
		}
		seen[env] = f.Name
		// The key is accepted by the file.
		dir := t.TempDir()
		file := filepath.Join(dir, "c.json")
		existing := filepath.Join(dir, "existing")
		os.WriteFile(existing, []byte("x"), 0o600)
		v := `"` + existing + `"`
		switch f.Value.Type() {
		case "bool":
			v = "false"
		case "int":
			v = "3"
		case "duration":
			v = `"42s"`
		case "stringSlice":
			v = `["10.0.0.0/8"]`
		}
		os.WriteFile(file, []byte(`{"`+f.Name+`": `+v+`}`), 0o600)
		c := New("cmkd")
		if _, _, err := config.Apply(c.Flags(), file, noEnv, Secrets); err != nil {
			t.Errorf("a file with the key %q: %v", f.Name, err)
		}
	})
	for _, s := range Secrets {
		if _, ok := seen[s.Env]; ok {
			t.Errorf("secret %s's variable %s is also a setting's", s.Name, s.Env)
		}
		if cmd.Flags().Lookup(s.FileKey) == nil {
			t.Errorf("secret %s names the file setting %s, which is not a flag", s.Name, s.FileKey)
		}
	}
}

func noEnv(string) (string, bool) { return "", false }

// run executes 'cmkd args' with env and a file holding fileJSON (none when
// ""), stopping before the service starts; it returns the config built,
// stdout and the error.
func run(t *testing.T, env map[string]string, fileJSON string, args ...string) (service.Config, string, error) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	if fileJSON != "" {
		file := filepath.Join(t.TempDir(), "cmk.json")
		if err := os.WriteFile(file, []byte(fileJSON), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", file)
	}
	var seen service.Config
	stop := errors.New("stop here")
	cmd := New("cmkd", func(_ *cobra.Command, cfg *service.Config) error { seen = *cfg; return stop })
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append(args, "--data-dir", t.TempDir()))
	err := cmd.Execute()
	if errors.Is(err, stop) {
		err = nil
	}
	return seen, out.String(), err
}

// TestPrecedence: flag > environment > file > default, per setting.
func TestPrecedence(t *testing.T) {
	file := `{"app-name": "from-file", "app-uri": "uri-from-file", "workers": 5, "check-interval": "45s", "trusted-proxies": ["10.0.0.0/8", "192.168.1.1"]}`
	cfg, _, err := run(t, map[string]string{"CMK_APP_NAME": "from-env", "CMK_APP_URI": "uri-from-env", "CMK_WORKERS": "4"}, file, "--app-name", "from-flag")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ what, got, want string }{
		{"flag over env and file", cfg.AppName, "from-flag"},
		{"env over file", cfg.AppURI, "uri-from-env"},
		{"env number over file", strconv.Itoa(cfg.Workers), "4"},
		{"file over default", cfg.Monitor.Interval.String(), "45s"},
		{"default", cfg.TokenIssuer, service.DevIssuer},
		{"list from file", cfg.TrustedProxies[0].String() + " " + cfg.TrustedProxies[1].String(), "10.0.0.0/8 192.168.1.1/32"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %q, want %q", c.what, c.got, c.want)
		}
	}
}

// TestSecrets: a secret comes from its variable or its *-file setting,
// never from the file itself.
func TestSecrets(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secretFile, []byte("from-secret-file\n"), 0o600)
	cfg, _, err := run(t, nil, `{"azure-client-secret-file": "`+secretFile+`"}`)
	if err != nil || cfg.ClientSecret != "from-secret-file" {
		t.Errorf("secret from a file: %q, %v; want from-secret-file", cfg.ClientSecret, err)
	}
	_, _, err = run(t, nil, `{"azure-client-secret": "s3cret"}`)
	wantError(t, "secret in the file", err, "setting azure-client-secret in the configuration file: a secret may not be written in the configuration file",
		"CMK_AZURE_CLIENT_SECRET", "azure-client-secret-file")
	if err != nil && strings.Contains(err.Error()+HintOf(err), "s3cret") {
		t.Errorf("the refusal repeats the secret: %v / %s", err, HintOf(err))
	}
	_, _, err = run(t, nil, `{"lake-azure-account-key": "k"}`)
	wantError(t, "account key in the file", err, "a secret may not be written", "CMK_LAKE_AZURE_ACCOUNT_KEY")
	_, _, err = run(t, nil, `{"azure-client-secret-file": "`+secretFile+`.missing"}`)
	wantError(t, "unreadable secret file", err, "azure-client-secret-file", "cannot be read")
	cfg, _, err = run(t, map[string]string{"CMK_AZURE_CLIENT_SECRET": "from-env"}, "")
	if err != nil || cfg.ClientSecret != "from-env" {
		t.Errorf("secret from the environment: %q, %v; want from-env", cfg.ClientSecret, err)
	}
	_, _, err = run(t, map[string]string{"CMK_AZURE_CLIENT_SECRET": "from-env"}, `{"azure-client-secret-file": "`+secretFile+`"}`)
	wantError(t, "secret given twice", err, "given twice", "keep one")
}

// TestConfigErrors: one case per kind of mistake, each naming the setting,
// the value and what is allowed, with a hint.
func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		name, file string
		env        map[string]string
		args       []string
		want       []string // in the error, then in the hint
		hint       string
	}{
		{name: "unknown key", file: `{"chek-interval": "30s"}`, want: []string{"setting chek-interval in the configuration file: no such setting"}, hint: `did you mean "check-interval"?`},
		{name: "unknown key with underscores", file: `{"shutdown_timeout": "30s"}`, want: []string{"no such setting"}, hint: `did you mean "shutdown-timeout"?`},
		{name: "flag-only key", file: `{"dev-token-issuer": true}`, want: []string{"command line only"}, hint: "--dev-token-issuer"},
		{name: "bad duration in file", file: `{"check-interval": "soon"}`, want: []string{`setting check-interval in the configuration file is "soon": not a duration`}, hint: "30s, 10m or 1h"},
		{name: "bad number in env", env: map[string]string{"CMK_WORKERS": "many"}, want: []string{`setting workers from the environment is "many": not a whole number`}, hint: "workers takes a whole number"},
		{name: "list for a scalar", file: `{"addr": ["a", "b"]}`, want: []string{"setting addr", "a list is allowed only for a list setting"}},
		{name: "object value", file: `{"addr": {"host": "x"}}`, want: []string{"must be a string, a number, a boolean or a list"}},
		{name: "not JSON", file: `addr = "x"`, want: []string{"is not a JSON object of settings"}, hint: `{"addr"`},
		{name: "two values", file: `{} {}`, want: []string{"more than one JSON value"}},
		{name: "bad proxy", args: []string{"--trusted-proxies", "10.0.0.0/8,proxy.local"}, want: []string{`setting trusted-proxies is "proxy.local": not a CIDR or an IP address`}, hint: "10.0.0.0/8"},
		{name: "zero shutdown timeout", file: `{"shutdown-timeout": "0s"}`, want: []string{`setting shutdown-timeout is "0s": must be a positive duration`}},
		{name: "tls key without cert", args: []string{"--tls-key", "k.pem"}, want: []string{"setting tls-cert: is not set while tls-key is"}, hint: "together"},
		{name: "concurrency", env: map[string]string{"CMK_VAULT_CONCURRENCY": "0"}, want: []string{`setting vault-concurrency is "0": must be at least 1`}},
		{name: "lease too short", env: map[string]string{"CMK_LEASE": "500ms"}, want: []string{`setting lease is "500ms": must be from 1s to 10m0s`}, hint: "30s"},
		{name: "lease too long", file: `{"lease": "1h"}`, want: []string{`setting lease is "1h0m0s": must be from 1s to 10m0s`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := run(t, c.env, c.file, c.args...)
			wantError(t, c.name, err, c.want...)
			if c.hint != "" && !strings.Contains(HintOf(err), c.hint) {
				t.Errorf("hint = %q, want it to contain %q", HintOf(err), c.hint)
			}
			if err != nil && HintOf(err) == "" {
				t.Errorf("error %v has no hint", err)
			}
		})
	}
	_, _, err := run(t, nil, "", "--config", filepath.Join(t.TempDir(), "none.json"))
	wantError(t, "missing file", err, "setting config", "cannot be read: no such file or directory")
}

func wantError(t *testing.T, what string, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want one containing %q", what, want)
		return
	}
	all := err.Error() + "\n" + HintOf(err)
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("%s: error %q (hint %q), want it to contain %q", what, err, HintOf(err), w)
		}
	}
}

// TestPrintConfig: every setting with its value and source, secrets and
// DSNs redacted, and the service does not start.
func TestPrintConfig(t *testing.T) {
	env := map[string]string{"CMK_AZURE_CLIENT_SECRET": "very-secret", "CMK_DATABASE_DSN": "postgres://u:pw@db/cmk", "CMK_GRACE": "5m"}
	_, out, err := run(t, env, `{"app-name": "filed"}`, "--print-config", "--workers", "7")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`app-name = "filed"  (file; CMK_APP_NAME)`,
		`workers = "7"  (flag; CMK_WORKERS)`,
		`grace = "5m0s"  (env; CMK_GRACE)`,
		`addr = "127.0.0.1:8080"  (default; CMK_ADDR)`,
		`azure-client-secret = "(redacted)"  (env; CMK_AZURE_CLIENT_SECRET)`,
		`database = "(redacted)"  (env; CMK_DATABASE_DSN)`,
		`dev-token-issuer = "false"  (default; flag only)`,
		"# configuration file: ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("--print-config output lacks %q:\n%s", want, out)
		}
	}
	for _, secret := range []string{"very-secret", "pw@db"} {
		if strings.Contains(out, secret) {
			t.Errorf("--print-config shows %q:\n%s", secret, out)
		}
	}
}
