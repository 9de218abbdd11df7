package cluster

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for 'cmk serve': with
// CLUSTER_FAKE_SERVE set it listens, logs the line Start waits for, and on
// SIGTERM exits with the status that variable names.
func TestMain(m *testing.M) {
	if code := os.Getenv("CLUSTER_FAKE_SERVE"); code != "" {
		fakeServe(code)
		return
	}
	os.Exit(m.Run())
}

func fakeServe(code string) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.Exit(3)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d", os.Getpid())
	}))
	fmt.Fprintf(os.Stderr, `{"msg":"cmk listening","url":"http://%s","args":%q}`+"\n", ln.Addr(), strings.Join(os.Args[1:], " "))
	<-sig
	fmt.Fprintln(os.Stderr, `{"msg":"drained"}`)
	if code == "0" {
		os.Exit(0)
	}
	os.Exit(1)
}

func get(t *testing.T, p *Proc) string {
	t.Helper()
	res, err := http.Get(p.URL())
	if err != nil {
		t.Fatalf("GET %s: %v", p.Name, err)
	}
	defer res.Body.Close()
	var b strings.Builder
	fmt.Fprint(&b, res.StatusCode, " ")
	buf := make([]byte, 64)
	n, _ := res.Body.Read(buf)
	b.Write(buf[:n])
	return b.String()
}

func TestKillRestartStop(t *testing.T) {
	c, err := StartN(3, os.Args[0], []string{"CLUSTER_FAKE_SERVE=0"}, func(i int) []string { return []string{fmt.Sprintf("replica%d", i)} })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, p := range c.Procs {
		if got, want := get(t, p), fmt.Sprintf("200 %d", p.PID()); got != want {
			t.Errorf("replica %d answers %q, want %q", i, got, want)
		}
		if !strings.Contains(p.Log(), fmt.Sprintf(`replica%d`, i)) {
			t.Errorf("replica %d was not started with its own arguments; log:\n%s", i, p.Log())
		}
	}

	victim := c.Procs[1]
	owner := fmt.Sprintf("host/%d/0/abcd", victim.PID())
	if got := c.ByOwner(owner); got != victim {
		t.Fatalf("ByOwner(%q) = %v, want replica-1", owner, got)
	}
	oldPID, oldURL := victim.PID(), victim.URL()
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	if victim.Running() {
		t.Fatal("a killed replica still runs")
	}
	if c.ByOwner(owner) != nil {
		t.Error("ByOwner finds a killed replica")
	}
	if _, err := http.Get(oldURL); err == nil {
		t.Error("a killed replica still answers")
	}
	if err := victim.Restart(); err != nil {
		t.Fatal(err)
	}
	if victim.PID() == oldPID || !victim.Running() {
		t.Fatalf("restart kept pid %d or is not running", oldPID)
	}
	if got, want := get(t, victim), fmt.Sprintf("200 %d", victim.PID()); got != want {
		t.Errorf("restarted replica answers %q, want %q", got, want)
	}
	if n := strings.Count(victim.Log(), "cmk listening"); n != 2 {
		t.Errorf("the log keeps %d starts, want both", n)
	}

	start := time.Now()
	if err := c.Procs[0].Stop(10 * time.Second); err != nil {
		t.Errorf("Stop of a replica that exits 0: %v", err)
	}
	if time.Since(start) > 5*time.Second || !strings.Contains(c.Procs[0].Log(), "drained") {
		t.Errorf("Stop did not see the drain; log:\n%s", c.Procs[0].Log())
	}
}

func TestStopReportsABadExit(t *testing.T) {
	p, err := Start("bad", os.Args[0], []string{"CLUSTER_FAKE_SERVE=1"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	if err := p.Stop(10 * time.Second); err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Errorf("Stop = %v, want the exit status", err)
	}
}

func TestStartReportsAnEarlyExit(t *testing.T) {
	_, err := Start("none", "/bin/false", nil)
	if err == nil || !strings.Contains(err.Error(), "exited before it listened") {
		t.Errorf("Start(/bin/false) = %v, want an early-exit error", err)
	}
}
