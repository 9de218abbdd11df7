package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/cluster"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/lake/blob"
	"github.com/cmk-project/cmk/internal/ratelimit"
	"github.com/cmk-project/cmk/internal/service"
	"github.com/cmk-project/cmk/internal/store"
	"github.com/cmk-project/cmk/internal/testsvc"
)

// Shape of the three-replica world: enough orgs and sandboxes that every
// replica holds jobs at once, small enough for make test.
const (
	replicaCount   = 3
	replicaOrgs    = 8
	replicaSboxes  = 24
	replicaLease   = 2 * time.Second
	replicaCheck   = 300 * time.Millisecond
	replicaTarget  = 5 * time.Second // revocation and recovery seen by every replica
	replicaSlowKey = 40 * time.Millisecond
)

// TestThreeReplicaProcesses runs three 'cmk serve' processes on one
// PostgreSQL state database, one PostgreSQL profile store and one data lake
// in Azurite, against the Azure emulator. Eight orgs of 24 sandboxes each
// write data through one replica and enable their customer keys on a slow
// vault; the replica holding a job's lease (found in the operator's view)
// is killed with SIGKILL mid re-wrap, and the others must finish every job,
// every data key then reading back through a replica other than the one
// that wrote it. The killed replica comes back; a key disabled and enabled
// again is refused and then served by every replica within the target, the
// other orgs served throughout; and the org's webhook gets each alert event
// once, though three monitors watch the key.
func TestThreeReplicaProcesses(t *testing.T) {
	ctx := context.Background()
	began, last := time.Now(), time.Now()
	var phases []string
	phase := func(name string) {
		phases = append(phases, fmt.Sprintf("%s %s", name, time.Since(last).Round(10*time.Millisecond)))
		last = time.Now()
	}
	defer func() {
		t.Logf("phases: %s; total %s", strings.Join(phases, ", "), time.Since(began).Round(10*time.Millisecond))
	}()
	// The binary builds while the world is set up.
	type built struct {
		bin string
		err error
	}
	binCh := make(chan built, 1)
	binDir := t.TempDir()
	go func() { bin, err := cluster.Build(ctx, binDir); binCh <- built{bin, err} }()
	az := testsvc.Azurite(t)
	dbDSN, profilesDSN := testsvc.Postgres(t), testsvc.Postgres(t)
	lakeCfg := &blob.AzureConfig{ServiceURL: az.ServiceURL, AccountName: az.AccountName, AccountKey: az.AccountKey, Container: "lake"}
	dir := t.TempDir()
	var sandboxes []string
	for i := range replicaSboxes {
		sandboxes = append(sandboxes, fmt.Sprintf("sb%02d", i))
	}

	// The world, set up in process and then closed: the emulator, the
	// orgs bound to the customer tenant with a key each, their sandboxes
	// and data keys, the system key and the token key in dir.
	env, err := devenv.Start(ctx, devenv.Options{DataDir: dir, Sandboxes: sandboxes, Workers: -1, NoMonitor: true, NoEvents: true,
		DatabaseDSN: dbDSN, ProfilesDSN: profilesDSN, LakeAzure: lakeCfg,
		// Every org is bound from this one address, several at once.
		RateLimits: ratelimit.Policy{ConsentPerClient: lots, ConsentPerOrg: lots, ConsentConcurrency: replicaOrgs}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Emu.Close() })
	orgs := []*devenv.Org{{ID: env.Org, Token: env.Token, KeyIdentifier: env.KeyIdentifier}}
	added := make([]*devenv.Org, replicaOrgs-1)
	errs := make([]error, len(added))
	var wg sync.WaitGroup
	for i := range added {
		wg.Add(1)
		go func() {
			defer wg.Done()
			added[i], errs[i] = env.AddOrg(ctx, fmt.Sprintf("REPLICA%02d@CmkOrg", i+1), fmt.Sprintf("replica-key-%02d", i+1), sandboxes)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
		orgs = append(orgs, added[i])
	}
	if err := env.Svc.Close(); err != nil {
		t.Fatal(err)
	}
	phase("world")
	st, err := store.OpenPostgres(ctx, dbDSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })

	b := <-binCh
	if b.err != nil {
		t.Fatal(b.err)
	}
	bin := b.bin
	emuArgs, emuEnv, err := env.ServeFlags(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opToken := randomHex(t, 24)
	procEnv := append(emuEnv, "CMK_DATABASE_DSN="+dbDSN, "CMK_PROFILES_DSN="+profilesDSN,
		"CMK_LAKE_AZURE_ACCOUNT_KEY="+az.AccountKey, "CMK_OPERATOR_TOKEN="+opToken)
	cl, err := cluster.StartN(replicaCount, bin, procEnv, func(int) []string {
		args := []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dir, "--dev-token-issuer", "--operator-addr", "127.0.0.1:0",
			"--lake-azure-url", az.ServiceURL, "--lake-azure-account", az.AccountName, "--lake-azure-container", "lake",
			"--workers", "2", "--vault-concurrency", "2", "--check-interval", replicaCheck.String(), "--lease", replicaLease.String(),
			"--webhook-allow-http", "--webhook-allow-private"}
		return append(args, emuArgs...)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	phase("build and start")
	dump := func() string {
		var b strings.Builder
		for _, p := range cl.Procs {
			fmt.Fprintf(&b, "--- %s (last lines) ---\n%s\n", p.Name, p.Tail(30))
		}
		return b.String()
	}

	// Data in every sandbox of every org, a profile record and a lake file,
	// each written through one replica and read below through another.
	record := func(o, s int) string { return fmt.Sprintf(`{"org":%d,"sandbox":%d}`, o, s) }
	file := func(o, s int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("org %d sandbox %d\n", o, s)), 200) }
	each(t, len(orgs), len(sandboxes), func(o, s int) error {
		p := cl.Procs[(o+s)%replicaCount]
		if err := expect(p, orgs[o], sandboxes[s], "PUT", "/data/profiles/r", []byte(record(o, s)), 200, nil); err != nil {
			return err
		}
		return expect(p, orgs[o], sandboxes[s], "PUT", "/data/lake/datasets/d/files/f.txt", file(o, s), 201, nil)
	})

	phase("write")
	// Every org enables its key, through the replicas in turn, on a vault
	// slow enough that the jobs are mid-way when a holder is killed.
	env.Emu.SetVaultFault(devenv.Vault, 0, replicaSlowKey)
	for i, o := range orgs {
		body, _ := json.Marshal(configBody(o.ID, "Replicas", o.KeyIdentifier))
		if err := expect(cl.Procs[i%replicaCount], o, "", "POST", configPath, body, 201, nil); err != nil {
			t.Fatal(err)
		}
	}

	// A job a few keys into its re-wrap, and its holder as the operator's
	// view shows it: the same owner as the lease row, a lease not over.
	var victimOrg *devenv.Org
	var victim *cluster.Proc
	var holder string
	waitFor(t, "a job mid re-wrap", 30*time.Second, func() bool {
		for _, o := range orgs {
			cfg, err := st.ConfigByName(ctx, o.ID, "Replicas")
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Status == store.StatusUpdating && cfg.LeaseOwner != "" && customerWrapped(t, st, o.ID) >= 4 {
				victimOrg, holder = o, cfg.LeaseOwner
				return true
			}
		}
		return false
	})
	// (A lease renewal delayed on a loaded machine may hand the job to
	// another worker between two reads: the view must agree with the row
	// read just after it, within a few tries.)
	var view *cmkapi.OperatorJob
	for try := 0; ; try++ {
		view = operatorJob(t, cl.Procs[0], opToken, victimOrg.ID)
		if view == nil || view.LeaseHolder == "" || view.LeaseUntil == nil {
			t.Fatalf("operator view of %s's job = %+v, want its lease holder and lease end", victimOrg.ID, view)
		}
		cfg, err := st.ConfigByName(ctx, victimOrg.ID, "Replicas")
		if err != nil {
			t.Fatal(err)
		}
		holder = cfg.LeaseOwner
		if view.LeaseHolder == holder && view.LeaseUntil.Equal(cfg.LeaseUntil.UTC()) {
			break
		}
		if try == 5 {
			t.Fatalf("operator view: lease of %s until %s; the job's row: %s until %s", view.LeaseHolder, view.LeaseUntil, holder, cfg.LeaseUntil)
		}
	}
	victim = cl.ByOwner(view.LeaseHolder)
	if victim == nil {
		t.Fatalf("no replica has the process of lease holder %q", view.LeaseHolder)
	}
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	atKill := customerWrapped(t, st, victimOrg.ID)
	env.Emu.SetVaultFault(devenv.Vault, 0, 0)

	// Another replica takes the job over and it moves again.
	var moved time.Duration
	waitFor(t, "the killed replica's job to move on another replica", 30*time.Second, func() bool {
		cfg, err := st.ConfigByName(ctx, victimOrg.ID, "Replicas")
		if err != nil {
			t.Fatal(err)
		}
		if cl.ByOwner(cfg.LeaseOwner) != nil && customerWrapped(t, st, victimOrg.ID) > atKill || cfg.Status == store.StatusCompleted {
			moved = time.Since(killed)
			return true
		}
		return false
	})
	// Every job completes, and no data key is left under the system key.
	waitFor(t, "every job to complete", 45*time.Second, func() bool {
		for _, o := range orgs {
			cfg, err := st.ConfigByName(ctx, o.ID, "Replicas")
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Status == store.StatusFailed {
				t.Fatalf("job of %s FAILED: %+v\n%s", o.ID, cfg.Failure, dump())
			}
			if cfg.Status != store.StatusCompleted {
				return false
			}
		}
		return true
	})
	for _, o := range orgs {
		if n := customerWrapped(t, st, o.ID); n != 2*len(sandboxes) {
			t.Errorf("%s: %d data keys under the customer key, want %d", o.ID, n, 2*len(sandboxes))
		}
	}
	phase("enable and fail over")
	if err := victim.Restart(); err != nil {
		t.Fatal(err)
	}
	phase("restart")

	// Every data key unwraps: each sandbox's record and file read back
	// through a replica other than the one that wrote it.
	each(t, len(orgs), len(sandboxes), func(o, s int) error {
		p := cl.Procs[(o+s+1)%replicaCount]
		if err := expect(p, orgs[o], sandboxes[s], "GET", "/data/profiles/r", nil, 200, []byte(record(o, s))); err != nil {
			return err
		}
		return expect(p, orgs[o], sandboxes[s], "GET", "/data/lake/datasets/d/files/f.txt", nil, 200, file(o, s))
	})

	phase("read")
	// The demo org's webhook, then its key disabled: every replica refuses
	// its data within the target while another org is served, and serves
	// it again within the target once the key is enabled.
	rv := &receiver{ids: map[string]int{}}
	subscribe(t, &client{t: t, base: cl.Procs[1].URL(), token: orgs[0].Token, key: env.APIKey, org: orgs[0].ID}, rv)
	no, yes := false, true
	refusedBy := func(p *cluster.Proc) bool {
		err := expect(p, orgs[0], sandboxes[0], "GET", "/data/profiles/r", nil, 200, nil)
		var ae *answerError
		return errors.As(err, &ae) && ae.status == 403 && errorCode(ae.body) == "CMK_KEY_REVOKED"
	}
	servedBy := func(p *cluster.Proc) bool {
		return expect(p, orgs[0], sandboxes[0], "GET", "/data/profiles/r", nil, 200, []byte(record(0, 0))) == nil
	}
	for _, step := range []struct {
		what   string
		update azemu.KeyUpdate
		seen   func(*cluster.Proc) bool
	}{{"refuse the disabled key's org", azemu.KeyUpdate{Enabled: &no}, refusedBy}, {"serve it again", azemu.KeyUpdate{Enabled: &yes}, servedBy}} {
		if err := env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, step.update); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var took []string
		for _, p := range cl.Procs {
			waitFor(t, p.Name+" to "+step.what, replicaTarget-time.Since(start), func() bool { return step.seen(p) })
			took = append(took, fmt.Sprintf("%s %s", p.Name, time.Since(start).Round(time.Millisecond)))
			if err := expect(p, orgs[1], sandboxes[1], "GET", "/data/profiles/r", nil, 200, []byte(record(1, 1))); err != nil {
				t.Errorf("while %s's key changes, %s: %v", orgs[0].ID, p.Name, err)
			}
		}
		t.Logf("every replica did %s within %s: %s", step.what, replicaTarget, strings.Join(took, ", "))
	}

	phase("revoke and recover")
	// Each event once: one opened and one resolved alert, each id once,
	// though three monitors saw the key go and come back.
	waitFor(t, "alert.resolved delivered", 15*time.Second, func() bool {
		return rv.got(cmkapi.EventAlertResolved, cmkapi.AlertKeyAccessDisabled) >= 1
	})
	time.Sleep(2 * replicaCheck) // time for a duplicate to arrive, if one were sent
	rv.mu.Lock()
	for id, n := range rv.ids {
		if n != 1 {
			t.Errorf("webhook event %s delivered %d times, want once", id, n)
		}
	}
	rv.mu.Unlock()
	if o, r := rv.got(cmkapi.EventAlertOpened, cmkapi.AlertKeyAccessDisabled), rv.got(cmkapi.EventAlertResolved, cmkapi.AlertKeyAccessDisabled); o != 1 || r != 1 {
		t.Errorf("webhook got %d alert.opened and %d alert.resolved for %s, want one of each", o, r, cmkapi.AlertKeyAccessDisabled)
	}
	t.Logf("%d orgs × %d sandboxes on %d replicas; %s (holding %s's job at %d/%d keys) killed, the job moved on another replica %s later (lease %s; the jobs outnumber the workers left, so this includes waiting for a free one)",
		len(orgs), len(sandboxes), replicaCount, victim.Name, victimOrg.ID, atKill, 2*len(sandboxes), moved.Round(time.Millisecond), replicaLease)
}

// each runs f for every org and sandbox, a few at a time, and fails the
// test with the first error.
func each(t *testing.T, orgs, sandboxes int, f func(o, s int) error) {
	t.Helper()
	type pair struct{ o, s int }
	work := make(chan pair)
	errs := make(chan error, orgs*sandboxes)
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				if err := f(p.o, p.s); err != nil {
					errs <- err
				}
			}
		}()
	}
	for o := range orgs {
		for s := range sandboxes {
			work <- pair{o, s}
		}
	}
	close(work)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatalf("%v (and %d more errors)", err, len(errs))
	}
}

// expect makes a data-plane or control-plane call to p as org's admin and
// returns an error unless it answers status (and, when want is not nil,
// that body). It is safe from any goroutine.
func expect(p *cluster.Proc, org *devenv.Org, sandbox, method, path string, body []byte, status int, want []byte) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, p.URL()+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+org.Token)
	req.Header.Set(cmkapi.HeaderAPIKey, service.DevAPIKey)
	req.Header.Set(cmkapi.HeaderOrgID, org.ID)
	if sandbox != "" {
		req.Header.Set(cmkapi.HeaderSandbox, sandbox)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := replicaClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s %s via %s: %w", org.ID, method, path, p.Name, err)
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("%s %s %s via %s: read answer: %w", org.ID, method, path, p.Name, err)
	}
	if res.StatusCode != status || want != nil && !bytes.Equal(got, want) {
		return &answerError{fmt.Sprintf("%s %s %s (sandbox %s) via %s = %d %.200s, want %d %.200s", org.ID, method, path, sandbox, p.Name, res.StatusCode, got, status, want), res.StatusCode, got}
	}
	return nil
}

// replicaClient bounds each call, so a replica that hangs fails the test
// rather than stalling it.
var replicaClient = &http.Client{Timeout: 30 * time.Second}

// answerError is an answer other than the one expected.
type answerError struct {
	msg    string
	status int
	body   []byte
}

func (e *answerError) Error() string { return e.msg }

// operatorJob is org's unfinished job in the operator's view of p, or nil.
func operatorJob(t *testing.T, p *cluster.Proc, token, org string) *cmkapi.OperatorJob {
	t.Helper()
	op := &cmkapi.OperatorClient{BaseURL: operatorURL(t, p), Token: token}
	list, _, err := op.Orgs(context.Background(), cmkapi.OperatorParams{ActiveJobs: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range list.Orgs {
		if o.OrgID == org {
			return o.Job
		}
	}
	return nil
}

// operatorURL is the operator listener's URL that p logged last.
func operatorURL(t *testing.T, p *cluster.Proc) string {
	t.Helper()
	url := ""
	for _, line := range strings.Split(p.Log(), "\n") {
		var rec struct{ Msg, URL string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "cmk operator listener" {
			url = rec.URL
		}
	}
	if url == "" {
		t.Fatalf("%s logged no operator listener:\n%s", p.Name, p.Tail(20))
	}
	return url
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
