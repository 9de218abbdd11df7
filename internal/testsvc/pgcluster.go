package testsvc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PGCluster is a PostgreSQL server private to one test, which the test may
// stop, kill and start again: to show what cmk does while its database is
// gone. It listens on the same port after every start.
type PGCluster struct {
	t   testing.TB
	srv *pgServer
}

// pgClusterSettings are the production defaults that matter to a test of
// lost writes: unlike the shared server's, commits wait for the WAL flush,
// so an acknowledged commit survives a killed server.
const pgClusterSettings = "-c max_connections=200"

// PostgresCluster starts a private PostgreSQL server (initdb and start:
// seconds) and removes it when t ends. Skips or fails as Postgres does when
// PostgreSQL is not installed.
func PostgresCluster(t testing.TB) *PGCluster {
	t.Helper()
	srv, err := pgStart(pgClusterSettings)
	if err != nil {
		if errors.Is(err, errPGMissing) {
			if pgRequired() {
				t.Fatalf("PostgreSQL is required (CI or CMK_REQUIRE_SERVERS=1 is set) but was not found: %v", err)
			}
			t.Skip("SKIPPED: PostgreSQL not found; run scripts/install-postgres.sh or make test")
		}
		t.Fatalf("start a private PostgreSQL: %v", err)
	}
	c := &PGCluster{t: t, srv: srv}
	t.Cleanup(func() {
		pgRun(srv.cred, srv.root, filepath.Join(srv.bin, "pg_ctl"), "-D", srv.data, "stop", "-m", "immediate", "-w")
		os.RemoveAll(srv.root)
	})
	return c
}

// DSN creates a fresh database on the cluster and returns its DSN; it is
// dropped when t ends (if the server is up then).
func (c *PGCluster) DSN(t testing.TB) string {
	t.Helper()
	dsn, err := c.srv.createDB(t)
	if err != nil {
		t.Fatalf("create test database: %v", err)
	}
	return dsn
}

// Port is where the server listens, before and after a restart.
func (c *PGCluster) Port() int { return c.srv.port }

// Stop shuts the server down as pg_ctl stop -m fast does: sessions are
// ended (57P01 admin_shutdown) and the server exits cleanly.
func (c *PGCluster) Stop() {
	c.t.Helper()
	if out, err := c.ctl("stop", "-m", "fast", "-w", "-t", "60"); err != nil {
		c.t.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}

// Kill sends SIGKILL to the postmaster, as a crash or an OOM kill would.
// Its backends notice and exit on their own; the next Start recovers from
// the WAL.
func (c *PGCluster) Kill() {
	c.t.Helper()
	raw, err := os.ReadFile(filepath.Join(c.srv.data, "postmaster.pid"))
	if err != nil {
		c.t.Fatalf("kill PostgreSQL: %v", err)
	}
	first, _, _ := strings.Cut(string(raw), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 1 {
		c.t.Fatalf("kill PostgreSQL: postmaster.pid starts with %q", first)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		c.t.Fatalf("kill -9 %d (postmaster): %v", pid, err)
	}
	// Wait for the postmaster to be gone, so a Start does not find it.
	for deadline := time.Now().Add(10 * time.Second); syscall.Kill(pid, 0) == nil; {
		if time.Now().After(deadline) {
			c.t.Fatalf("postmaster %d still alive 10 s after SIGKILL", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Start starts the stopped or killed server again on the same port. After
// a kill, the old backends may hold the shared memory a little longer;
// Start tries again until they are gone (pgRestartTimeout).
func (c *PGCluster) Start() {
	c.t.Helper()
	deadline := time.Now().Add(pgRestartTimeout)
	for {
		out, err := c.ctl("-o", c.srv.opts, "-l", c.srv.logFile, "-w", "-t", "60", "start")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(c.srv.logFile)
			c.t.Fatalf("pg_ctl start: %v\n%s\nserver log:\n%s", err, out, pgTail(log, 2000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// pgRestartTimeout bounds how long Start retries: backends of a killed
// postmaster exit within a second or so of noticing.
const pgRestartTimeout = 30 * time.Second

func (c *PGCluster) ctl(args ...string) ([]byte, error) {
	out, err := pgRun(c.srv.cred, c.srv.root, filepath.Join(c.srv.bin, "pg_ctl"), append([]string{"-D", c.srv.data}, args...)...)
	if err != nil {
		return out, fmt.Errorf("pg_ctl %s: %w", args[len(args)-1], err)
	}
	return out, nil
}
