package main

import (
	"context"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
)

// TestDevAddr checks that 'cmk dev' listens where --addr says, on loopback
// by default, and beyond it only with --allow-remote, which warns.
func TestDevAddr(t *testing.T) {
	for _, c := range []struct {
		name     string
		args     []string
		loopback bool
		warn     bool
	}{
		{"loopback", []string{"--addr", "127.0.0.1:0"}, true, false},
		{"remote allowed", []string{"--addr", "0.0.0.0:0", "--allow-remote"}, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			info := filepath.Join(t.TempDir(), "info.json")
			cmd := newDevCmd()
			cmd.SetArgs(append(c.args, "--info", info, "--data-dir", t.TempDir()))
			var stdout, stderr lockedBuffer
			cmd.SetOut(&stdout)
			cmd.SetErr(&stderr)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- cmd.ExecuteContext(ctx) }()
			deadline := time.After(60 * time.Second)
			for !strings.Contains(stdout.String(), "Press Ctrl-C to stop.") {
				select {
				case err := <-done:
					t.Fatalf("cmk dev %v ended before it was ready: %v; stderr:\n%s", c.args, err, stderr.String())
				case <-deadline:
					t.Fatalf("cmk dev %v was not ready within 60s", c.args)
				case <-time.After(20 * time.Millisecond):
				}
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("cmk dev stopped with %v", err)
			}
			b, err := os.ReadFile(info)
			if err != nil {
				t.Fatal(err)
			}
			var in cmkapi.Info
			if err := json.Unmarshal(b, &in); err != nil {
				t.Fatal(err)
			}
			u, err := url.Parse(in.BaseURL)
			if err != nil {
				t.Fatal(err)
			}
			if ip := net.ParseIP(u.Hostname()); ip == nil || ip.IsLoopback() != c.loopback {
				t.Errorf("cmk dev %v listened at %q, want a loopback address: %v", c.args, in.BaseURL, c.loopback)
			}
			// The banner: the token once (in the export line), links unescaped.
			if n := strings.Count(stdout.String(), in.Token); n != 1 {
				t.Errorf("the banner shows the token %d times, want once (in the export line)", n)
			}
			if !strings.Contains(stdout.String(), "export CMK_URL="+in.BaseURL+" CMK_ORG="+in.OrgID+" ") {
				t.Errorf("the banner has no export line pointing the CLI at %s:\n%s", in.BaseURL, stdout.String())
			}
			if in.AWS == nil || in.AWS.KeyARN == "" || !strings.Contains(stdout.String(), "export CMK_URL="+in.BaseURL+" CMK_ORG="+in.AWS.OrgID+" ") ||
				!strings.Contains(stdout.String(), "cmk config create --name AwsConfig --key-id "+in.AWS.KeyARN) {
				t.Errorf("the banner does not present the AWS demo org (info %+v):\n%s", in.AWS, stdout.String())
			}
			if strings.Contains(stdout.String(), `\u0026`) {
				t.Errorf("the banner holds an escaped link")
			}
			if got := strings.Contains(stderr.String(), "WARNING: development mode: cmk dev listens on"); got != c.warn {
				t.Errorf("cmk dev %v warned about listening beyond loopback: %v, want %v; stderr:\n%s", c.args, got, c.warn, stderr.String())
			}
		})
	}
}
