package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/cluster"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/store"
)

// TestGracefulShutdownAsAProcess runs 'cmk serve' as its own process
// against the emulator, with a slow vault so that an enablement job is in
// the middle of its re-wrap, starts a lake upload, and sends SIGTERM. The
// process must let the upload finish, hand the job's lease over, and exit 0
// well within --shutdown-timeout; a second process must then take the job
// over at once (the lease is 30 s; a lease left to expire would hold it that
// long) and complete it, and the uploaded file must read back.
func TestGracefulShutdownAsAProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cmk as a process")
	}
	ctx := context.Background()
	dir := t.TempDir()
	var sandboxes []string
	for i := range 60 {
		sandboxes = append(sandboxes, fmt.Sprintf("sb%02d", i))
	}
	// The in-process service only sets the world up (emulator, org bound
	// to the customer tenant, sandboxes, token key) and is closed: the
	// processes below own the data directory.
	env, err := devenv.Start(ctx, devenv.Options{DataDir: dir, Sandboxes: sandboxes, Workers: -1, NoMonitor: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Emu.Close() })
	if err := env.Svc.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, filepath.Join(dir, "cmk.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })

	bin, err := cluster.Build(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	emuArgs, emuEnv, err := env.ServeFlags(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const shutdownTimeout = 15 * time.Second
	serve := func(name string) *cluster.Proc {
		args := append([]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dir, "--dev-token-issuer"}, emuArgs...)
		args = append(args, "--workers", "1", "--vault-concurrency", "2", "--check-interval", "1h", "--shutdown-timeout", shutdownTimeout.String())
		p, err := cluster.Start(name, bin, emuEnv, args...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Kill() })
		return p
	}
	first := serve("first")

	// Every vault call now takes 100 ms: the re-wrap of 120 data keys at
	// two at a time lasts several seconds.
	env.Emu.SetVaultFault(devenv.Vault, 0, 100*time.Millisecond)
	if code, body := call(t, first, env, "POST", configPath, configBody(env.Org, "Drain", env.KeyIdentifier)); code != 201 {
		t.Fatalf("POST config = %d %s", code, body)
	}
	// Wait until the job is re-wrapping, a few keys in.
	deadline := time.Now().Add(60 * time.Second)
	for {
		cfg, err := st.ConfigByName(ctx, env.Org, "Drain")
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Status == store.StatusUpdating && customerWrapped(t, st, env.Org) >= 4 {
			break
		}
		if cfg.Status == store.StatusCompleted || cfg.Status == store.StatusFailed || time.Now().After(deadline) {
			t.Fatalf("job is %s (%d/%d) before the drain could begin; stderr:\n%s", cfg.Status, cfg.ProgressDone, cfg.ProgressTotal, first.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// An upload in flight: headers sent, the server has asked for the body
	// (100 Continue), which follows only after SIGTERM.
	payload := bytes.Repeat([]byte("drain "), 1000)
	conn, err := net.Dial("tcp", strings.TrimPrefix(first.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /data/lake/datasets/ds/files/inflight.txt HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s: %s\r\n%s: %s\r\n%s: sb00\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n",
		env.Token, cmkapi.HeaderAPIKey, env.APIKey, cmkapi.HeaderOrgID, env.Org, cmkapi.HeaderSandbox, len(payload))
	br := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	interim, err := http.ReadResponse(br, nil)
	if err != nil || interim.StatusCode != http.StatusContinue {
		t.Fatalf("upload: want 100 Continue, got %v %v", interim, err)
	}

	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- first.Stop(shutdownTimeout + 10*time.Second) }()
	// The drain has begun once the process says so; the upload goes on.
	for !strings.Contains(first.Log(), "draining") {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("no drain logged after SIGTERM; stderr:\n%s", first.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := conn.Write(payload); err != nil {
		t.Fatalf("upload body after SIGTERM: %v", err)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("upload answer after SIGTERM: %v; stderr:\n%s", err, first.Log())
	}
	res.Body.Close()
	if res.StatusCode/100 != 2 {
		t.Errorf("the in-flight upload answered %d, want it to complete", res.StatusCode)
	}

	if err := <-stopped; err != nil {
		t.Fatalf("after SIGTERM: %v", err)
	}
	elapsed := time.Since(start)
	if elapsed >= shutdownTimeout {
		t.Errorf("shutdown took %s, want it within --shutdown-timeout %s", elapsed, shutdownTimeout)
	}
	if logs := first.Log(); !strings.Contains(logs, "enablement job handed over") || !strings.Contains(logs, `"msg":"drained"`) {
		t.Errorf("stderr lacks the hand-over and the end of the drain:\n%s", logs)
	}

	// The lease is free: the job is due now, owned by nobody.
	cfg, err := st.ConfigByName(ctx, env.Org, "Drain")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LeaseOwner != "" || cfg.Status != store.StatusUpdating {
		t.Fatalf("after the drain the job is %s with lease owner %q, want UPDATE_EXISTING_RESOURCES with none", cfg.Status, cfg.LeaseOwner)
	}
	handedAt := customerWrapped(t, st, env.Org)
	if handedAt >= len(sandboxes)*2 {
		t.Errorf("every data key was re-wrapped before the process exited; the drain did not stop the job")
	}

	// Another replica takes the job over at once: well before the 30 s a
	// lease left to expire would hold it.
	env.Emu.SetVaultFault(devenv.Vault, 0, 0)
	second := serve("second")
	takeover := time.Now()
	for {
		cfg, err = st.ConfigByName(ctx, env.Org, "Drain")
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Status == store.StatusCompleted {
			break
		}
		if time.Since(takeover) > 20*time.Second {
			t.Fatalf("the second process has not completed the job after %s (status %s, lease owner %q); stderr:\n%s", time.Since(takeover), cfg.Status, cfg.LeaseOwner, second.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body := call(t, second, env, "GET", "/data/lake/datasets/ds/files/inflight.txt", nil); code != 200 || body != string(payload) {
		t.Errorf("the upload made during the drain reads back as %d (%d bytes), want 200 with its %d bytes", code, len(body), len(payload))
	}
	if n := customerWrapped(t, st, env.Org); n != len(sandboxes)*2 {
		t.Errorf("%d data keys under the customer key, want %d", n, len(sandboxes)*2)
	}
	t.Logf("drained in %s, job handed over at %d/%d, completed by the second process %s after it started", elapsed, handedAt, cfg.ProgressTotal, time.Since(takeover))
}

// call makes an API call to p as the demo org's administrator.
func call(t *testing.T, p *cluster.Proc, env *devenv.Env, method, path string, body any) (int, string) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, p.URL()+path, r)
	req.Header.Set("Authorization", "Bearer "+env.Token)
	req.Header.Set(cmkapi.HeaderAPIKey, env.APIKey)
	req.Header.Set(cmkapi.HeaderOrgID, env.Org)
	req.Header.Set(cmkapi.HeaderSandbox, "sb00")
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// customerWrapped counts the org's data keys wrapped by its customer key.
func customerWrapped(t *testing.T, st *store.Store, org string) int {
	t.Helper()
	keys, err := st.DataKeys(context.Background(), org)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, dk := range keys {
		if dk.KEK == store.KEKCustomer {
			n++
		}
	}
	return n
}
