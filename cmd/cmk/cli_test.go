package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/monitor"
	"github.com/cmk-project/cmk/internal/ratelimit"
	"github.com/cmk-project/cmk/internal/testsvc"
)

// TestMain lets the scripts run "cmk": the test binary, re-executed under
// that name, runs the real root command.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"cmk": func() { os.Exit(run(os.Args[1:])) },
	})
}

// TestScripts runs the CLI scripts in testdata/script. Besides the standard
// commands they have:
//
//	cmkdev                   start a local cmk + Azure emulator for this script
//	exitcode N PROG ARGS...  run PROG and require exit status N (stdout and
//	                         stderr are kept for the next stdout/stderr checks)
//	jsonget [-set VAR] [-cut N] FILE PATH [WANT]
//	                         parse FILE (stdout: the last command's output) as
//	                         JSON, find PATH (dotted keys and indexes, e.g.
//	                         alerts.0.id), keep its first N characters (-cut),
//	                         compare it with WANT and/or store it in $VAR
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"cmkdev":   cmdCmkdev,
			"exitcode": cmdExitcode,
			"jsonget":  cmdJSONGet,
		},
		// [postgres]: PostgreSQL is installed, for scripts whose cmk
		// starts it (the replica benchmarks); missing, it is an error
		// where servers are required.
		Condition: func(cond string) (bool, error) {
			if cond != "postgres" {
				return false, fmt.Errorf("unknown condition %q", cond)
			}
			ok, required := testsvc.PostgresInstalled()
			if !ok && required {
				return false, errors.New("PostgreSQL is required (CI or CMK_REQUIRE_SERVERS=1 is set) but was not found; run scripts/install-postgres.sh or set CMK_PG_BIN")
			}
			return ok, nil
		},
	})
}

// cmdCmkdev starts devenv in the test process, stopped when the script
// ends. It writes $WORK/info.json (as 'cmk dev --info' does) and
// $WORK/emulator-ca.pem, and sets:
//
//	KEY_ID           the demo key's identifier
//	VAULT, KEY       the demo vault and key names
//	VAULT_URL        the demo vault's URL
//	DEV_URL, DEV_TOKEN, DEV_ORG   the connection settings
//	PRINCIPAL        the platform app's service principal in the customer tenant
//	CMK_EMULATOR_URL, CMK_EMULATOR_CA   for 'cmk azure-emulator' subcommands
//	AWS_ORG, AWS_TOKEN, AWS_KEY_ARN     the org whose key is in the local AWS KMS
//	CMK_AWS_EMULATOR_URL, CMK_AWS_OWNER_*  for 'cmk aws-emulator' subcommands
func cmdCmkdev(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: cmkdev")
	}
	env, err := devenv.Start(context.Background(), devenv.Options{
		DataDir: ts.MkAbs("cmkdev-data"),
		Poll:    50 * time.Millisecond,
		Monitor: monitor.Config{Interval: time.Second, WrapEvery: 1},
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		// The scripts run doctor and recheck back to back; the limits
		// themselves are tested in internal/ratelimit and internal/service.
		RateLimits: ratelimit.Policy{Preflight: lots, Recheck: lots, Config: lots, Sandbox: lots, Vault: lots},
		AWS:        true,
	})
	ts.Check(err)
	ts.Defer(env.Close)
	info := env.Info()
	b, err := json.MarshalIndent(info, "", "  ")
	ts.Check(err)
	ts.Check(os.WriteFile(ts.MkAbs("info.json"), b, 0o600))
	ca := ts.MkAbs("emulator-ca.pem")
	ts.Check(os.WriteFile(ca, env.Emu.CAPEM(), 0o600))
	for k, v := range map[string]string{
		"KEY_ID": info.KeyIdentifier, "VAULT": devenv.Vault, "KEY": devenv.KeyName, "VAULT_URL": info.VaultURL,
		"DEV_URL": info.BaseURL, "DEV_TOKEN": info.Token, "DEV_ORG": info.OrgID,
		"PRINCIPAL":        info.ServicePrincipal,
		"CMK_EMULATOR_URL": info.EmulatorURL, "CMK_EMULATOR_CA": ca,
		"AWS_ORG": info.AWS.OrgID, "AWS_TOKEN": info.AWS.Token, "AWS_KEY_ARN": info.AWS.KeyARN,
		envAWSEmulatorURL: info.AWS.EmulatorURL, envAWSOwnerKeyID: info.AWS.OwnerAccessKey, envAWSOwnerSecretKey: info.AWS.OwnerSecretKey,
	} {
		ts.Setenv(k, v)
	}
}

var lots = ratelimit.Limit{N: 1_000_000, Per: time.Second}

func cmdExitcode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exitcode N PROG [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		got = ee.ExitCode()
	case err != nil:
		ts.Fatalf("%s: %v", args[1], err)
	}
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d", filepath.Base(args[1]), got, want)
	}
}

func cmdJSONGet(ts *testscript.TestScript, neg bool, args []string) {
	setVar, cut := "", 0
	for len(args) >= 2 && strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "-set":
			setVar = args[1]
		case "-cut":
			n, err := strconv.Atoi(args[1])
			if err != nil || n <= 0 {
				ts.Fatalf("jsonget: -cut %q is not a positive length", args[1])
			}
			cut = n
		default:
			ts.Fatalf("jsonget: unknown option %s", args[0])
		}
		args = args[2:]
	}
	if len(args) < 2 || len(args) > 3 || (neg && len(args) != 3) {
		ts.Fatalf("usage: jsonget [-set VAR] [-cut N] FILE PATH [WANT]")
	}
	var v any
	if err := json.Unmarshal([]byte(ts.ReadFile(args[0])), &v); err != nil {
		ts.Fatalf("%s is not JSON: %v", args[0], err)
	}
	for _, part := range strings.Split(args[1], ".") {
		switch x := v.(type) {
		case map[string]any:
			next, ok := x[part]
			if !ok {
				ts.Fatalf("%s: no key %q in %s", args[0], part, args[1])
			}
			v = next
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(x) {
				ts.Fatalf("%s: no element %q in %s (length %d)", args[0], part, args[1], len(x))
			}
			v = x[i]
		default:
			ts.Fatalf("%s: %s reaches a %T before %q", args[0], args[1], v, part)
		}
	}
	got := fmt.Sprint(v)
	if cut > 0 && cut < len(got) {
		got = got[:cut]
	}
	if len(args) == 3 && (got == args[2]) == neg {
		if neg {
			ts.Fatalf("%s: %s = %s, want anything else", args[0], args[1], got)
		}
		ts.Fatalf("%s: %s = %s, want %s", args[0], args[1], got, args[2])
	}
	if setVar != "" {
		ts.Setenv(setVar, got)
	}
}

// TestProgressBarPlain checks the output for pipes and logs: a line per
// phase and per quarter of the way, nothing repeated.
func TestProgressBarPlain(t *testing.T) {
	var b strings.Builder
	p := newProgressBar(&b)
	p.indent = "  "
	p.Phase("RUNNING")
	p.Phase("RUNNING")
	for done := 0; done <= 8; done++ {
		p.Set("re-wrapping", done, 8)
	}
	p.Note("a note")
	p.Set("re-wrapping", 8, 8)
	p.Phase("COMPLETED")
	p.Done()
	want := `  RUNNING
  re-wrapping 0/8 (0%)
  re-wrapping 2/8 (25%)
  re-wrapping 4/8 (50%)
  re-wrapping 6/8 (75%)
  re-wrapping 8/8 (100%)
a note
  COMPLETED
`
	if got := b.String(); got != want {
		t.Errorf("progress output =\n%s\nwant\n%s", got, want)
	}
}

func TestOneLineIsInert(t *testing.T) {
	for in, want := range map[string]string{
		"a  b\n\tc":                      "a b c",
		"x\x1b[2K\x1b[1Afake system row": "x\ufffd[2K\ufffd[1Afake system row",
		"abc\u202edef":                   "abc\ufffddef",
		"\x9b31m":                        "\ufffd31m",
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}
