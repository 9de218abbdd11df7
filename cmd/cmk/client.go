package main

// The HTTP client behind the commands that talk to a running cmk (doctor,
// config, alerts, health, recheck), their shared connection flags, and the
// exit-status contract they share.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/cmkapi"
)

// Exit statuses of the client commands. 0 means the answer is "yes": the
// checks passed, the job completed, the key is healthy.
const (
	// exitProblem: the command ran and the answer is "no" (a check failed,
	// the job FAILED, the key is not healthy).
	exitProblem = 1
	// exitUsage: no answer was obtained (bad arguments or flags, cmk
	// unreachable, the request was refused).
	exitUsage = 2
)

// exitHelp documents the exit statuses at the end of a command's long
// help: ok says when it exits 0, problem when 1 ("" when it never does).
func exitHelp(ok, problem string) string {
	s := "\nExit status:\n  0  " + ok + "\n"
	if problem != "" {
		s += "  1  " + problem + "\n"
	}
	return s + "  2  no answer: bad arguments or flags, cmk unreachable, or the request refused"
}

// Connection defaults.
const (
	defaultURL    = "http://127.0.0.1:8080"
	defaultAPIKey = "acp_provisioning"
)

// exitError carries the process exit status for main. A nil err means the
// command has already printed everything worth saying.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// exitCode returns the status a command error should end the process with.
func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

// usageError is a bad argument or flag: exit status 2, with a hint.
func usageError(err error, hint string) error {
	return &exitError{code: exitUsage, err: withHint(err, hint)}
}

// problem ends a command with exit status 1 after it printed its findings.
func problem() error { return &exitError{code: exitProblem} }

// clientRun wraps the RunE of a client command: it checks --output (when
// out is not nil), connects, and gives errors the command did not classify
// itself (the API refused, cmk unreachable) exit status 2 and what the
// server said.
func clientRun(conn *connFlags, out *outputFlag, f func(cmd *cobra.Command, c *client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if out != nil {
			if err := out.check(); err != nil {
				return err
			}
		}
		c, err := conn.client(cmd)
		if err != nil {
			return err
		}
		err = f(cmd, c, args)
		if err == nil {
			return nil
		}
		var ee *exitError
		if errors.As(err, &ee) {
			return err
		}
		return &exitError{code: exitUsage, err: c.explain(err)}
	}
}

// flagErrors gives flag errors of cmd and its subcommands a hint and exit
// status 2.
func flagErrors(cmd *cobra.Command) {
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError(err, fmt.Sprintf("see '%s --help' for the flags and examples", c.CommandPath()))
	})
}

// exactArgs requires n positional arguments, named in the hint.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == n {
			return nil
		}
		if n == 0 {
			return usageError(fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), args), fmt.Sprintf("see '%s --help'", cmd.CommandPath()))
		}
		return usageError(fmt.Errorf("%s needs %s, got %d argument(s)", cmd.CommandPath(), names, len(args)),
			fmt.Sprintf("usage: %s; see '%s --help' for examples", cmd.UseLine(), cmd.CommandPath()))
	}
}

// connFlags are the connection settings of every client command.
type connFlags struct {
	url, token, org, apiKey, info string
}

func (c *connFlags) register(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&c.url, "url", "", "base URL of cmk (env CMK_URL; default "+defaultURL+")")
	pf.StringVar(&c.token, "token", "", "access token (env CMK_TOKEN; mint one with 'cmk token')")
	pf.StringVar(&c.org, "org", "", "org id, sent as x-gw-ims-org-id (env CMK_ORG)")
	pf.StringVar(&c.apiKey, "api-key", "", "API key, sent as x-api-key (env CMK_API_KEY; default "+defaultAPIKey+")")
	pf.StringVar(&c.info, "info", "", "JSON file written by 'cmk dev --info FILE' holding url, token, org and API key (env CMK_INFO)")
}

// resolve fills the settings: a flag on the command line beats the --info
// file, which beats the CMK_* variables, which beat the defaults.
func (c *connFlags) resolve(cmd *cobra.Command) (settings, error) {
	var s settings
	infoFile := c.info
	if !cmd.Flags().Changed("info") {
		infoFile = os.Getenv("CMK_INFO")
	}
	var in cmkapi.Info
	if infoFile != "" {
		b, err := os.ReadFile(infoFile)
		if err != nil {
			return s, usageError(fmt.Errorf("read --info file: %w", err), "pass the file 'cmk dev --info FILE' wrote, or drop --info/CMK_INFO and set --url, --token and --org")
		}
		if err := json.Unmarshal(b, &in); err != nil {
			return s, usageError(fmt.Errorf("--info file %s is not the JSON 'cmk dev --info' writes: %w", infoFile, err), "regenerate it with 'cmk dev --info FILE'")
		}
	}
	pick := func(flag, fromFlag, fromInfo, env, def string) string {
		switch {
		case cmd.Flags().Changed(flag):
			return fromFlag
		case fromInfo != "":
			return fromInfo
		case os.Getenv(env) != "":
			return os.Getenv(env)
		}
		return def
	}
	s.url = strings.TrimRight(pick("url", c.url, in.BaseURL, "CMK_URL", defaultURL), "/")
	s.token = pick("token", c.token, in.Token, "CMK_TOKEN", "")
	s.org = pick("org", c.org, in.OrgID, "CMK_ORG", "")
	s.apiKey = pick("api-key", c.apiKey, in.APIKey, "CMK_API_KEY", defaultAPIKey)
	s.keyIdentifier = in.KeyIdentifier

	if u, err := url.Parse(s.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return s, usageError(fmt.Errorf("--url %q is not an http(s) URL", s.url), "pass the base URL of cmk, e.g. --url http://127.0.0.1:8080")
	}
	if s.token == "" {
		return s, usageError(errors.New("no access token"),
			"pass --info FILE (written by 'cmk dev --info FILE'), or --token / CMK_TOKEN (for a local cmk: cmk token --org <org>)")
	}
	if s.org == "" {
		return s, usageError(errors.New("no org id"), "pass --org or set CMK_ORG to the org the token holds, e.g. --org MYORG@CmkOrg")
	}
	return s, nil
}

// settings are resolved connection settings.
type settings struct {
	url, token, org, apiKey string
	keyIdentifier           string // from the --info file, if any
}

func (c *connFlags) client(cmd *cobra.Command) (*client, error) {
	s, err := c.resolve(cmd)
	if err != nil {
		return nil, err
	}
	return newClient(s), nil
}

// client calls cmk's HTTP API through the typed client, as one org.
type client struct {
	*cmkapi.Client
	org           string
	keyIdentifier string // from the --info file, if any
}

func newClient(s settings) *client {
	return &client{
		Client:        &cmkapi.Client{BaseURL: s.url, Token: s.token, OrgID: s.org, APIKey: s.apiKey, HTTP: &http.Client{Timeout: 2 * time.Minute}},
		org:           s.org,
		keyIdentifier: s.keyIdentifier,
	}
}

// explain turns an API or connection error into one for a person, with the
// server's hint (or ours) on its own line.
func (c *client) explain(err error) error {
	var ae *cmkapi.Error
	var ce *cmkapi.ConnError
	switch {
	case errors.As(err, &ae):
		hint := ae.Hint
		if hint == "" {
			hint = "see the detail above"
		}
		if ae.RequestID != "" {
			hint += " (request id " + ae.RequestID + ")"
		}
		return withHint(err, hint)
	case errors.As(err, &ce):
		return withHint(err, "is cmk running there? start one with 'cmk dev --info cmk.json' and pass --info cmk.json, or point --url / CMK_URL at it")
	}
	return err
}

// ---- output ----

// outputFlag is --output text|json.
type outputFlag struct{ format string }

func (o *outputFlag) register(cmd *cobra.Command, persistent bool) {
	fs := cmd.Flags()
	if persistent {
		fs = cmd.PersistentFlags()
	}
	fs.StringVarP(&o.format, "output", "o", "text", "output format: text or json")
}

func (o *outputFlag) check() error {
	switch o.format {
	case "text", "json":
		return nil
	}
	return usageError(fmt.Errorf("--output %q is not a known format", o.format), "use --output text (the default) or --output json")
}

func (o *outputFlag) json() bool { return o.format == "json" }

// show prints an answer: its raw JSON, indented, with --output json, or
// what human prints.
func (o *outputFlag) show(w io.Writer, raw []byte, human func(io.Writer)) error {
	if o.json() {
		return printRaw(w, raw)
	}
	human(w)
	return nil
}

// printRaw writes a JSON answer of the server, indented, as it came.
func printRaw(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		_, err = w.Write(raw)
		return err
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// printSteps writes numbered steps, indented.
func printSteps(w io.Writer, indent string, steps []string) {
	for i, s := range steps {
		fmt.Fprintf(w, "%s%d. %s\n", indent, i+1, s)
	}
}

// clock formats a time for a person: ISO 8601 in local time, to the
// second, with its zone offset (Z for UTC), so a time read from a terminal
// in one zone means the same in another.
func clock(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}
