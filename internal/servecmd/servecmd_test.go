package servecmd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/service"
)

// TestHooksSeeTheConfigAndCanStopTheStart checks that the hooks run in
// order with the configuration built from flags and environment, and that a
// hook's error stops the command before the service is created.
func TestHooksSeeTheConfigAndCanStopTheStart(t *testing.T) {
	t.Setenv("CMK_AZURE_CLIENT_SECRET", "s3cret")
	t.Setenv("CMK_APP_NAME", "from-env")
	dataDir := filepath.Join(t.TempDir(), "data")
	var order []string
	var seen service.Config
	stop := errors.New("stop here")
	cmd := New("cmkd",
		func(cmd *cobra.Command, cfg *service.Config) error {
			order = append(order, "first")
			if cfg.Log == nil {
				t.Error("cfg.Log is not set when the hooks run")
			}
			cfg.AppURI = "set-by-first"
			return nil
		},
		func(cmd *cobra.Command, cfg *service.Config) error {
			order = append(order, "second")
			seen = *cfg
			return stop
		})
	cmd.SetArgs([]string{"--addr", "127.0.0.1:0", "--data-dir", dataDir, "--workers", "3", "--idle-timeout", "42s", "--body-read-timeout", "7s", "--min-transfer-bytes", "4096"})
	if err := cmd.Execute(); !errors.Is(err, stop) {
		t.Fatalf("Execute() = %v, want the hook's error", err)
	}
	if got := strings.Join(order, ","); got != "first,second" {
		t.Errorf("hooks ran as %q, want first,second", got)
	}
	for _, c := range []struct{ name, got, want string }{
		{"Addr", seen.Addr, "127.0.0.1:0"},
		{"DataDir", seen.DataDir, dataDir},
		{"ClientSecret", seen.ClientSecret, "s3cret"},
		{"AppName", seen.AppName, "from-env"},
		{"AppURI", seen.AppURI, "set-by-first"},
		{"TokenIssuer", seen.TokenIssuer, service.DevIssuer},
		{"Workers", fmt.Sprint(seen.Workers), "3"},
		{"IdleTimeout", seen.IdleTimeout.String(), "42s"},
		{"BodyReadTimeout", seen.BodyReadTimeout.String(), "7s"},
		{"MinTransferBytes", fmt.Sprint(seen.MinTransferBytes), "4096"},
		{"ReadHeaderTimeout", seen.ReadHeaderTimeout.String(), service.DefaultReadHeaderTimeout.String()},
		{"WriteTimeout", seen.WriteTimeout.String(), service.DefaultWriteTimeout.String()},
	} {
		if c.got != c.want {
			t.Errorf("cfg.%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the data directory exists after a hook failed (stat: %v): the service started", err)
	}
}

func TestUseAndExamples(t *testing.T) {
	for path, use := range map[string]string{"cmkd": "cmkd", "cmk serve": "serve"} {
		cmd := New(path)
		if cmd.Use != use {
			t.Errorf("New(%q).Use = %q, want %q", path, cmd.Use, use)
		}
		if want := "CMK_AZURE_CLIENT_SECRET=... " + path + " --azure-tenant-id"; !strings.Contains(cmd.Example, want) {
			t.Errorf("New(%q).Example = %q, want it to contain %q", path, cmd.Example, want)
		}
		if f := cmd.Flags().Lookup("emulator"); f != nil {
			t.Errorf("New(%q) has an --emulator flag; only cmd/cmk adds it", path)
		}
	}
}

func TestHintOf(t *testing.T) {
	base := errors.New("no file")
	for _, c := range []struct {
		err  error
		want string
	}{
		{base, ""},
		{WithHint(base, "create it"), "create it"},
		{fmt.Errorf("read: %w", WithHint(base, "create it")), "create it"},
	} {
		if got := HintOf(c.err); got != c.want {
			t.Errorf("HintOf(%v) = %q, want %q", c.err, got, c.want)
		}
	}
	if err := WithHint(base, "h"); !errors.Is(err, base) || err.Error() != "no file" {
		t.Errorf("WithHint(base, h) = %v, want base's text and base in its chain", err)
	}
}

// TestEventGridFlags: the Event Grid flags reach the configuration, and a
// partial set stops the start with the missing flag named.
func TestEventGridFlags(t *testing.T) {
	var seen service.Config
	stop := errors.New("stop here")
	cmd := New("cmkd", func(cmd *cobra.Command, cfg *service.Config) error { seen = *cfg; return stop })
	cmd.SetArgs([]string{"--data-dir", t.TempDir(), "--eventgrid-issuer", "https://sts.windows.net/t/", "--eventgrid-jwks-url", "https://login.example/t/keys", "--eventgrid-audience", "api://cmk"})
	if err := cmd.Execute(); !errors.Is(err, stop) {
		t.Fatalf("Execute() = %v", err)
	}
	if seen.EventGridIssuer != "https://sts.windows.net/t/" || seen.EventGridJWKSURL != "https://login.example/t/keys" || seen.EventGridAudience != "api://cmk" || seen.EventGridAppID != service.EventGridAppID {
		t.Errorf("Event Grid settings = %q %q %q %q", seen.EventGridIssuer, seen.EventGridJWKSURL, seen.EventGridAudience, seen.EventGridAppID)
	}

	cmd = New("cmkd")
	cmd.SetArgs([]string{"--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--dev-token-issuer", "--eventgrid-issuer", "https://sts.windows.net/t/"})
	cmd.SetErr(io.Discard)
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "--eventgrid-jwks-url") {
		t.Errorf("Execute() with only --eventgrid-issuer = %v, want an error naming --eventgrid-jwks-url", err)
	}
}
