package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/alerts"
	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/guidance"
	"github.com/cmk-project/cmk/internal/monitor"
)

// The demo's monitor checks the key every half second and proves wrap on
// every check, so revocation and recovery show within a second or two; a
// real deployment checks far less often.
var demoMonitor = monitor.Config{Interval: 500 * time.Millisecond, WrapEvery: 1}

// Deadlines of the demo's waits: generous multiples of the monitor interval,
// so a slow machine passes and a broken build still fails in seconds.
const (
	demoReactDeadline  = 15 * time.Second // revocation or recovery to show in reads
	demoAlertDeadline  = 10 * time.Second // an alert to open or resolve
	demoRotateDeadline = 20 * time.Second // all data keys re-wrapped to a new version
	demoEnableDeadline = 30 * time.Second // the enablement job to finish
	demoPoll           = 25 * time.Millisecond
	demoRequestTimeout = 10 * time.Second // one request, all local: anything slower is a hang
)

// demoSandbox holds the sample data.
const demoSandbox = "prod"

func newDemoCmd() *cobra.Command {
	var keep, step, withAWS bool
	var pause time.Duration
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Walk through enabling, revoking, restoring and rotating a customer key, in-process",
		Long: `Run a narrated walkthrough of customer-managed keys on the embedded defaults:
an Azure emulator and a cmk service start in this process (nothing to set up,
nothing left behind), and the demo drives them over the same HTTP API a
customer uses.

  1. ingest sample files into the data lake and records into the profile store
  2. enable CMK with the customer's key and read everything back unchanged
  3. disable the key in the vault: reads are refused within seconds, an alert opens
  4. enable the key again: reads return on their own, nothing lost, alert resolved
  5. rotate the key: every data key is re-wrapped in the background, reads never stop

Each step says what it proves and ends with PASS or FAIL; a summary follows.
It takes a few seconds; to narrate it, slow it down with --pause (a wait
before each step) or --step (wait for Enter before each step). With --aws the
org's key is in a local AWS KMS instead (step 5 then shows that an AWS
rotation keeps every data key as it is). With --keep
the service, the emulator and the Encryption page stay up afterwards, with the
export line that points the CLI at them, until Ctrl-C.

Exit status:
  0  every step passed
  1  a step failed (the demo stops there)
  2  bad flags, or the demo environment could not start`,
		Example: `  cmk demo
  cmk demo --step            # press Enter before each step, to narrate
  cmk demo --pause 5s --keep # 5 s before each step; leave the service and page up afterwards
  cmk demo --aws             # the org's key in AWS KMS: disable, enable, rotate it there`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			dir, err := os.MkdirTemp("", "cmk-demo-")
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			if pause < 0 || pause > 10*time.Minute {
				return usageError(fmt.Errorf("--pause %s is out of range", pause), "use a duration from 0 to 10m, e.g. --pause 5s")
			}
			if keep {
				fmt.Fprintf(cmd.OutOrStdout(), "Data directory (kept): %s\n", dir)
			} else {
				defer os.RemoveAll(dir)
			}
			env, err := devenv.Start(ctx, devenv.Options{
				DataDir: dir, Poll: 50 * time.Millisecond, Monitor: demoMonitor,
				Log: slog.New(slog.NewTextHandler(io.Discard, nil)), AWS: withAWS,
			})
			if err != nil {
				return &exitError{code: exitUsage, err: withHint(fmt.Errorf("start the demo environment: %w", err), "is the temporary directory writable? run with a TMPDIR that is")}
			}
			defer env.Close()
			c := newClient(settings{url: env.Svc.URL(), token: env.Token, org: env.Org, apiKey: env.APIKey})
			if withAWS {
				c = newClient(settings{url: env.Svc.URL(), token: env.AWS.Token, org: env.AWS.Org, apiKey: env.APIKey})
			}
			c.HTTP.Timeout = demoRequestTimeout
			d := &demo{w: cmd.OutOrStdout(), env: env, dir: dir, c: c, pause: pause}
			if withAWS {
				d.aws = env.AWS
			}
			if step {
				d.enter = bufio.NewReader(cmd.InOrStdin())
			}
			ok := d.run(ctx)
			if keep && ctx.Err() == nil {
				caFile := filepath.Join(dir, "emulator-ca.pem")
				if err := os.WriteFile(caFile, env.Emu.CAPEM(), 0o600); err != nil {
					return err
				}
				in := env.Info()
				fmt.Fprintf(d.w, "\nThe service stays up (Ctrl-C to stop). Encryption page: %s/ui/ (select \"Dev login\"). Point the CLI at it with:\n\n", in.BaseURL)
				fmt.Fprintf(d.w, "export CMK_URL=%s CMK_ORG=%s CMK_API_KEY=%s CMK_TOKEN=%s CMK_EMULATOR_URL=%s CMK_EMULATOR_CA=%s\n",
					in.BaseURL, in.OrgID, in.APIKey, in.Token, in.EmulatorURL, caFile)
				<-ctx.Done()
			}
			if !ok {
				return problem()
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "leave the service, emulator and page up afterwards, and keep the data directory, until Ctrl-C")
	cmd.Flags().DurationVar(&pause, "pause", 0, "wait this long before each step, to narrate (e.g. 5s)")
	cmd.Flags().BoolVar(&step, "step", false, "wait for Enter before each step, to narrate")
	cmd.Flags().BoolVar(&withAWS, "aws", false, "the same walkthrough with an org whose key is in a local AWS KMS")
	flagErrors(cmd)
	return cmd
}

// demo is one walkthrough.
type demo struct {
	w   io.Writer
	env *devenv.Env
	dir string
	c   *client
	aws *devenv.AWS // with --aws: the org and key in the local AWS KMS

	pause time.Duration // before each step
	enter *bufio.Reader // with --step: wait for a line before each step

	files    []demoFile
	profiles []demoProfile
	alertID  string
	notes    []string // one line per step for the summary
}

type demoFile struct {
	dataset, name string
	body          []byte
}

type demoProfile struct {
	id  string
	doc []byte
}

type demoStep struct {
	title  string
	proves string
	run    func(ctx context.Context) (note string, err error)
}

func (d *demo) run(ctx context.Context) bool {
	in := d.env.Info()
	rotate := demoStep{"Rotate: add a new key version", "A new version in the vault is picked up and every data key is re-wrapped to it in the background, while reads go on unchanged.", d.rotate}
	if d.aws != nil {
		fmt.Fprintf(d.w, "cmk demo: customer-managed keys end to end, on a local AWS KMS\n\n")
		fmt.Fprintf(d.w, "  service   %s   org %s, sandboxes prod and dev\n", in.BaseURL, d.aws.Org)
		fmt.Fprintf(d.w, "  key       %s\n            (symmetric; its key policy holds the org's statements: Encrypt/Decrypt only with the org's encryption context)\n", d.aws.KeyARN)
		rotate = demoStep{"Rotate: new key material in AWS KMS", "AWS rotates the material behind the same ARN and keeps the old one to decrypt: the platform re-wraps nothing, and every read goes on unchanged.", d.rotateAWS}
	} else {
		fmt.Fprintf(d.w, "cmk demo: customer-managed keys end to end, on a local Azure emulator\n\n")
		fmt.Fprintf(d.w, "  service   %s   org %s, sandboxes prod and dev\n", in.BaseURL, in.OrgID)
		fmt.Fprintf(d.w, "  vault     %s (soft-delete and purge protection on)\n", in.VaultURL)
		fmt.Fprintf(d.w, "  key       %s (RSA 3072, role granted to the platform's app)\n", in.KeyIdentifier)
	}
	fmt.Fprintf(d.w, "  monitor   checks the key every %s\n", demoMonitor.Interval)

	steps := []demoStep{
		{"Ingest sample data", "Data written through the API is encrypted at rest (for now with the platform's system key) and reads back byte for byte.", d.ingest},
		{"Enable customer-managed keys", "Enabling re-wraps every existing data key with the customer's key, with no downtime and no re-ingesting; the data is unchanged.", d.enable},
		{"Revoke: disable the key in the vault", "When the customer disables the key, every read and write of the org's data is refused within seconds, caches included, and an alert says why and what to do.", d.revoke},
		{"Restore: enable the key again", "When access returns, reads work again on their own within seconds, nothing is lost, and the alert is resolved.", d.restore},
		rotate,
	}
	type outcome struct {
		took time.Duration
		err  error
		ran  bool
	}
	results := make([]outcome, len(steps))
	start := time.Now()
	failed := false
	for i, s := range steps {
		if failed {
			break
		}
		fmt.Fprintf(d.w, "\nStep %d of %d: %s\n", i+1, len(steps), s.title)
		fmt.Fprintf(d.w, "  Proves: %s\n", s.proves)
		if !d.wait(ctx) {
			return false
		}
		t0 := time.Now()
		note, err := s.run(ctx)
		results[i] = outcome{took: time.Since(t0), err: err, ran: true}
		d.notes = append(d.notes, note)
		if err != nil {
			failed = true
			fmt.Fprintf(d.w, "  FAIL  step %d (%s): %v\n", i+1, seconds(results[i].took), err)
			continue
		}
		fmt.Fprintf(d.w, "  PASS  step %d (%s)\n", i+1, seconds(results[i].took))
	}

	fmt.Fprintf(d.w, "\nSummary\n")
	passed := 0
	for i, s := range steps {
		r := results[i]
		switch {
		case !r.ran:
			fmt.Fprintf(d.w, "  %d. %-38s NOT RUN\n", i+1, s.title)
		case r.err != nil:
			fmt.Fprintf(d.w, "  %d. %-38s FAIL  %6s  %v\n", i+1, s.title, seconds(r.took), r.err)
		default:
			passed++
			fmt.Fprintf(d.w, "  %d. %-38s PASS  %6s  %s\n", i+1, s.title, seconds(r.took), d.notes[i])
		}
	}
	if passed == len(steps) {
		fmt.Fprintf(d.w, "\nAll %d steps passed in %s.\n", len(steps), seconds(time.Since(start)))
		return true
	}
	fmt.Fprintf(d.w, "\n%d of %d steps passed; the demo stopped at the first failure.\n", passed, len(steps))
	return false
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

// ---- step 1 ----

// Markers that appear only in the plaintext of the sample data, to look for
// in the data directory.
const (
	demoMarkerLake    = "Ada-Lovelace-visit-record"
	demoMarkerProfile = "grace.hopper@example.com"
)

func (d *demo) sampleData() {
	rng := rand.New(rand.NewChaCha8([32]byte{'c', 'm', 'k'}))
	big := make([]byte, 3<<20+517) // several chunks, not a whole number of them
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	var csv strings.Builder
	csv.WriteString("patient,visit,date,notes\n")
	for i := range 200 {
		fmt.Fprintf(&csv, "P%04d,V%05d,2026-01-%02d,%s follow-up %d\n", i, 1000+i, 1+i%28, demoMarkerLake, i)
	}
	d.files = []demoFile{
		{"patients", "visits.csv", []byte(csv.String())},
		{"patients", "summary.json", []byte(`{"patients": 200, "source": "` + demoMarkerLake + `"}`)},
		{"claims", "claims-2026-01.bin", big},
	}
	d.profiles = []demoProfile{
		{"p-1001", []byte(`{"name": "Grace Hopper", "email": "` + demoMarkerProfile + `", "tier": "gold"}`)},
		{"p-1002", []byte(`{"name": "Alan Turing", "email": "alan.turing@example.com", "consents": {"email": true, "sms": false}}`)},
		{"p-1003", []byte(`{"name": "Katherine Johnson", "email": "katherine.johnson@example.com", "visits": [3, 5, 8]}`)},
	}
}

// lakeFile reads (body nil) or writes one sample lake file.
func (d *demo) lakeFile(ctx context.Context, rt cmkapi.Route, f demoFile, body []byte) ([]byte, error) {
	return d.c.Call(ctx, cmkapi.Request{Route: rt, Args: []string{f.dataset, f.name}, Sandbox: demoSandbox, Body: bodyOf(body), ContentType: "application/octet-stream"})
}

// profileDoc reads (body nil) or writes one sample profile.
func (d *demo) profileDoc(ctx context.Context, rt cmkapi.Route, id string, body []byte) ([]byte, error) {
	return d.c.Call(ctx, cmkapi.Request{Route: rt, Args: []string{id}, Sandbox: demoSandbox, Body: bodyOf(body)})
}

func bodyOf(b []byte) io.Reader {
	if b == nil {
		return nil
	}
	return bytes.NewReader(b)
}

func (d *demo) ingest(ctx context.Context) (string, error) {
	d.sampleData()
	total := 0
	for _, f := range d.files {
		if _, err := d.lakeFile(ctx, cmkapi.PutLakeFile, f, f.body); err != nil {
			return "", fmt.Errorf("write lake file %s/%s: %w", f.dataset, f.name, err)
		}
		total += len(f.body)
		fmt.Fprintf(d.w, "  · lake     %-34s %9s\n", demoSandbox+"/"+f.dataset+"/"+f.name, size(len(f.body)))
	}
	for _, p := range d.profiles {
		if _, err := d.profileDoc(ctx, cmkapi.PutProfile, p.id, p.doc); err != nil {
			return "", fmt.Errorf("write profile %s: %w", p.id, err)
		}
		fmt.Fprintf(d.w, "  · profile  %-34s %9s\n", demoSandbox+"/"+p.id, size(len(p.doc)))
	}
	if err := d.readAll(ctx); err != nil {
		return "", err
	}
	fmt.Fprintf(d.w, "  All %d objects read back identical.\n", len(d.files)+len(d.profiles))
	scanned, err := d.scanForPlaintext()
	if err != nil {
		return "", err
	}
	fmt.Fprintf(d.w, "  Scanned %d files under the data directory: the sample plaintext appears in none of them.\n", scanned)
	return fmt.Sprintf("%d objects (%s) stored encrypted", len(d.files)+len(d.profiles), size(total)), nil
}

// scanForPlaintext looks for the sample data's markers in every file the
// service wrote.
func (d *demo) scanForPlaintext() (int, error) {
	n := 0
	err := filepath.WalkDir(d.dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n++
		for _, m := range []string{demoMarkerLake, demoMarkerProfile} {
			if bytes.Contains(b, []byte(m)) {
				return fmt.Errorf("plaintext %q found in %s", m, path)
			}
		}
		return nil
	})
	return n, err
}

func size(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// readAll reads every sample object and compares it with what was written.
// A refused read returns the *apiError; different content returns
// errDemoMismatch.
func (d *demo) readAll(ctx context.Context) error {
	for _, f := range d.files {
		got, err := d.lakeFile(ctx, cmkapi.GetLakeFile, f, nil)
		if err != nil {
			return fmt.Errorf("read lake file %s/%s: %w", f.dataset, f.name, err)
		}
		if !bytes.Equal(got, f.body) {
			return fmt.Errorf("%w: lake file %s/%s (%d bytes back, %d written)", errDemoMismatch, f.dataset, f.name, len(got), len(f.body))
		}
	}
	for _, p := range d.profiles {
		got, err := d.profileDoc(ctx, cmkapi.GetProfile, p.id, nil)
		if err != nil {
			return fmt.Errorf("read profile %s: %w", p.id, err)
		}
		if !sameJSON(got, p.doc) {
			return fmt.Errorf("%w: profile %s is %s, wrote %s", errDemoMismatch, p.id, got, p.doc)
		}
	}
	return nil
}

var errDemoMismatch = errors.New("data read back differs from what was written")

func sameJSON(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

// ---- step 2 ----

func (d *demo) enable(ctx context.Context) (string, error) {
	name := "Config1"
	if _, _, err := d.c.SubmitConfig(ctx, name, d.keyID()); err != nil {
		return "", fmt.Errorf("submit the configuration: %w", err)
	}
	fmt.Fprintf(d.w, "  POST %s with the key identifier -> job created; following it:\n", cmkapi.CreateConfig.Path)
	wctx, cancel := context.WithTimeout(ctx, demoEnableDeadline)
	defer cancel()
	bar := newProgressBar(d.w)
	bar.indent = "    "
	v, _, err := waitConfig(wctx, d.c, name, bar)
	if err != nil {
		return "", fmt.Errorf("follow the job: %w", err)
	}
	if v.Status != jobCompleted {
		msg := "job ended " + v.Status
		if v.Failure != nil {
			msg += ": " + v.Failure.Message
		}
		return "", errors.New(msg)
	}
	h, err := d.health(ctx)
	if err != nil {
		return "", err
	}
	if h.State != stateHealthy {
		return "", fmt.Errorf("key health is %s (%s), want %s", h.State, h.Message, stateHealthy)
	}
	if d.aws != nil {
		fmt.Fprintf(d.w, "  Key health %s; every key call carries the org's encryption context.\n", h.State)
	} else {
		fmt.Fprintf(d.w, "  Key health %s on version %s.\n", h.State, h.KeyVersion)
	}
	if err := d.readAll(ctx); err != nil {
		return "", err
	}
	fmt.Fprintf(d.w, "  All %d objects read back identical under the customer's key.\n", len(d.files)+len(d.profiles))
	return fmt.Sprintf("%d data keys re-wrapped to the customer key", v.Progress.DataKeysTotal), nil
}

func (d *demo) health(ctx context.Context) (*cmkapi.Health, error) {
	h, _, err := d.c.Health(ctx)
	if err != nil {
		return nil, fmt.Errorf("read key health: %w", err)
	}
	return h, nil
}

// ---- step 3 ----

func (d *demo) setKeyEnabled(on bool) error {
	if d.aws != nil {
		return d.aws.Emu.SetKeyEnabled(d.aws.KeyARN, on)
	}
	return d.env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &on})
}

// keyID is the key the demo enables: the Key Vault key identifier, or
// with --aws the key ARN.
func (d *demo) keyID() string {
	if d.aws != nil {
		return d.aws.KeyARN
	}
	return d.env.KeyIdentifier
}

// keyWhere names the key and where it is, for the narration.
func (d *demo) keyWhere() string {
	if d.aws != nil {
		return "Key " + d.aws.KeyARN + " (AWS KMS)"
	}
	return "Key " + devenv.Vault + "/" + devenv.KeyName + " (Key Vault)"
}

// revokedErr reports whether err is a read refused because the key is
// revoked.
func revokedErr(err error) (*cmkapi.Error, bool) {
	var ae *cmkapi.Error
	ok := errors.As(err, &ae) && ae.Status == http.StatusForbidden && ae.ErrorCode == cmkapi.CodeCMKKeyRevoked
	return ae, ok
}

// until calls f every demoPoll until it returns true or an error, or the
// deadline passes.
func until(ctx context.Context, deadline time.Duration, f func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	for {
		done, err := f()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up after %s", deadline)
		case <-time.After(demoPoll):
		}
	}
}

func (d *demo) revoke(ctx context.Context) (string, error) {
	if err := d.setKeyEnabled(false); err != nil {
		return "", fmt.Errorf("disable the key in the emulator: %w", err)
	}
	t0 := time.Now()
	fmt.Fprintf(d.w, "  %s disabled; reading profile %s until it is refused...\n", d.keyWhere(), d.profiles[0].id)
	var refusal *cmkapi.Error
	err := until(ctx, demoReactDeadline, func() (bool, error) {
		_, err := d.profileDoc(ctx, cmkapi.GetProfile, d.profiles[0].id, nil)
		ae, ok := revokedErr(err)
		refusal = ae
		return ok, nil
	})
	if err != nil {
		return "", fmt.Errorf("reads were still served: %w", err)
	}
	took := time.Since(t0)
	fmt.Fprintf(d.w, "  Refused after %s: HTTP %d %s\n", seconds(took), refusal.Status, refusal.ErrorCode)
	fmt.Fprintf(d.w, "    %s\n", refusal.Detail)

	// Every object, and a write, must be refused the same way.
	refused := 0
	for _, f := range d.files {
		if _, err := d.lakeFile(ctx, cmkapi.GetLakeFile, f, nil); err != nil {
			if _, ok := revokedErr(err); !ok {
				return "", fmt.Errorf("lake file %s/%s: want a CMK_KEY_REVOKED refusal, got %v", f.dataset, f.name, err)
			}
			refused++
			continue
		}
		return "", fmt.Errorf("lake file %s/%s was still served", f.dataset, f.name)
	}
	for _, p := range d.profiles {
		if _, err := d.profileDoc(ctx, cmkapi.GetProfile, p.id, nil); err != nil {
			if _, ok := revokedErr(err); !ok {
				return "", fmt.Errorf("profile %s: want a CMK_KEY_REVOKED refusal, got %v", p.id, err)
			}
			refused++
			continue
		}
		return "", fmt.Errorf("profile %s was still served (from a cache?)", p.id)
	}
	_, err = d.profileDoc(ctx, cmkapi.PutProfile, "p-9999", []byte(`{"name": "new"}`))
	if _, ok := revokedErr(err); !ok {
		return "", fmt.Errorf("a write during revocation: want a CMK_KEY_REVOKED refusal, got %v", err)
	}
	fmt.Fprintf(d.w, "  All %d reads and a new write refused (lake, profile store and its cache).\n", refused)

	var a *cmkapi.Alert
	err = until(ctx, demoAlertDeadline, func() (bool, error) {
		list, _, err := d.c.Alerts(ctx, cmkapi.AlertOpen)
		if err != nil {
			return false, err
		}
		for i := range list.Alerts {
			if list.Alerts[i].Kind == alerts.KindAccessDisabled {
				a = &list.Alerts[i]
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return "", fmt.Errorf("no open %q alert: %w", guidance.AlertTitle(alerts.KindAccessDisabled), err)
	}
	d.alertID = a.ID
	fmt.Fprintf(d.w, "  Open alert %q (cause %s):\n", kindTitle(*a), a.Cause)
	fmt.Fprintf(d.w, "    %s\n", a.Summary)
	printSteps(d.w, "    ", a.Steps)
	return fmt.Sprintf("data refused %s after the key was disabled", seconds(took)), nil
}

// ---- step 4 ----

func (d *demo) restore(ctx context.Context) (string, error) {
	if err := d.setKeyEnabled(true); err != nil {
		return "", fmt.Errorf("enable the key in the emulator: %w", err)
	}
	t0 := time.Now()
	fmt.Fprintf(d.w, "  %s enabled again; reading everything until it is served (no re-check asked for)...\n", d.keyWhere())
	err := until(ctx, demoReactDeadline, func() (bool, error) {
		err := d.readAll(ctx)
		if errors.Is(err, errDemoMismatch) {
			return false, err
		}
		return err == nil, nil
	})
	if err != nil {
		return "", fmt.Errorf("data not back: %w", err)
	}
	took := time.Since(t0)
	fmt.Fprintf(d.w, "  Served again after %s; all %d objects identical to what was written.\n", seconds(took), len(d.files)+len(d.profiles))

	var a cmkapi.Alert
	err = until(ctx, demoAlertDeadline, func() (bool, error) {
		got, _, err := d.c.Alert(ctx, d.alertID)
		if err != nil {
			return false, err
		}
		a = *got
		return a.Status == cmkapi.AlertResolved, nil
	})
	if err != nil {
		return "", fmt.Errorf("alert %s still %s: %w", d.alertID, a.Status, err)
	}
	resolved := ""
	if a.ResolvedAt != nil {
		resolved = " at " + clock(*a.ResolvedAt)
	}
	fmt.Fprintf(d.w, "  Alert %q is RESOLVED%s after %d occurrence(s).\n", kindTitle(a), resolved, a.Occurrences)
	h, err := d.health(ctx)
	if err != nil {
		return "", err
	}
	if h.State != stateHealthy {
		return "", fmt.Errorf("key health is %s, want %s", h.State, stateHealthy)
	}
	fmt.Fprintf(d.w, "  Key health %s.\n", h.State)
	return fmt.Sprintf("data back %s after the key was enabled", seconds(took)), nil
}

// ---- step 5 ----

func (d *demo) rotate(ctx context.Context) (string, error) {
	before, err := d.health(ctx)
	if err != nil {
		return "", err
	}
	newVersion, err := d.env.Emu.RotateKey(devenv.Vault, devenv.KeyName)
	if err != nil {
		return "", fmt.Errorf("rotate the key in the emulator: %w", err)
	}
	fmt.Fprintf(d.w, "  New key version %s added in the vault (was %s); reading everything while the platform catches up...\n", newVersion, before.KeyVersion)
	bar := newProgressBar(d.w)
	bar.indent = "    "
	reads, total, label := 0, 0, ""
	err = until(ctx, demoRotateDeadline, func() (bool, error) {
		if err := d.readAll(ctx); err != nil {
			return false, fmt.Errorf("a read during rotation failed: %w", err)
		}
		reads++
		h, err := d.health(ctx)
		if err != nil {
			return false, err
		}
		if r := h.Rotation; r != nil {
			total = max(total, r.DataKeysTotal)
			label = "re-wrapping data keys to version " + r.TargetVersion
			bar.Set(label, r.DataKeysRewrapped, r.DataKeysTotal)
		}
		done := h.KeyVersion == newVersion && h.Rotation == nil
		if done && total > 0 {
			// The re-wrap finished between two looks: the bar ends full.
			bar.Set(label, total, total)
		}
		return done, nil
	})
	bar.Done()
	if err != nil {
		return "", err
	}
	fmt.Fprintf(d.w, "  Key health reports version %s with no rotation pending: every data key is re-wrapped.\n", newVersion)
	fmt.Fprintf(d.w, "  %d full read-backs during the rotation, all identical.\n", reads)
	note := fmt.Sprintf("on version %s, %d read-backs identical", short(newVersion), reads)
	if total > 0 {
		note = fmt.Sprintf("%d data keys re-wrapped to %s, %d read-backs identical", total, short(newVersion), reads)
	}
	return note, nil
}

// rotateAWS rotates the AWS key's material and shows that nothing is
// re-wrapped: the same wrapped data keys still open, through AWS KMS, with
// every read identical.
func (d *demo) rotateAWS(ctx context.Context) (string, error) {
	org := d.aws.Org
	before, err := d.env.Svc.Store.DataKeys(ctx, org)
	if err != nil {
		return "", err
	}
	if err := d.aws.Emu.RotateKey(d.aws.KeyARN); err != nil {
		return "", fmt.Errorf("rotate the key in the emulator: %w", err)
	}
	fmt.Fprintf(d.w, "  New key material behind %s; re-checking the key and dropping the unwrapped data keys held in memory...\n", d.aws.KeyARN)
	h, _, err := d.c.Recheck(ctx)
	if err != nil {
		return "", fmt.Errorf("re-check: %w", err)
	}
	if h.State != stateHealthy || h.Rotation != nil {
		return "", fmt.Errorf("key health after rotation is %s (rotation %+v), want %s with nothing to re-wrap", h.State, h.Rotation, stateHealthy)
	}
	d.env.Svc.Cache.WipeOrg(org)
	if err := d.readAll(ctx); err != nil {
		return "", fmt.Errorf("reads after rotation: %w", err)
	}
	after, err := d.env.Svc.Store.DataKeys(ctx, org)
	if err != nil {
		return "", err
	}
	same := len(after) == len(before)
	for i := 0; same && i < len(after); i++ {
		same = string(after[i].Wrapped) == string(before[i].Wrapped)
	}
	if !same {
		return "", errors.New("data keys changed after an AWS rotation; none should be re-wrapped")
	}
	if h.AWS != nil && h.AWS.KeyMaterialID != "" {
		fmt.Fprintf(d.w, "  Key health %s on key material %s; %s\n", h.State, short(h.AWS.KeyMaterialID), h.AWS.Rotation)
	}
	fmt.Fprintf(d.w, "  All %d data keys unchanged, opened again through AWS KMS; all %d objects identical.\n", len(after), len(d.files)+len(d.profiles))
	return fmt.Sprintf("%d data keys unchanged and still opening after the rotation", len(after)), nil
}

func short(version string) string {
	if len(version) > 8 {
		return version[:8] + "…"
	}
	return version
}

// wait holds the demo before a step, for narration: --pause, then --step's
// Enter. It reports false when the demo was stopped meanwhile.
func (d *demo) wait(ctx context.Context) bool {
	if d.pause > 0 {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d.pause):
		}
	}
	if d.enter != nil {
		fmt.Fprint(d.w, "  (press Enter to run this step)")
		line := make(chan error, 1)
		go func() { _, err := d.enter.ReadString('\n'); line <- err }()
		select {
		case <-ctx.Done():
			return false
		case err := <-line:
			fmt.Fprintln(d.w)
			if err != nil && err != io.EOF {
				return false
			}
		}
	}
	return ctx.Err() == nil
}
