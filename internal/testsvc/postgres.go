package testsvc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres returns the DSN of a fresh, empty database on a PostgreSQL server
// private to this test binary. The database is dropped when t ends.
//
// The server is started on first use (initdb takes seconds, so all tests of
// the binary share it) on 127.0.0.1 and a free port, with its data under
// /tmp. It is stopped (pg_ctl stop -m immediate) and its directory removed
// once the test binary exits, however it exits: a small watchdog process
// waits for that, since no test can tell it is the last one.
//
// When PostgreSQL is not installed the test is skipped with a loud reason;
// if the environment variable CI is set or CMK_REQUIRE_SERVERS=1, it fails
// instead, so nothing is silently skipped in CI. The binaries are looked up
// in $CMK_PG_BIN, then the newest /usr/lib/postgresql/*/bin, then PATH.
func Postgres(t testing.TB) string {
	t.Helper()
	pgShared.once.Do(func() { pgShared.srv, pgShared.err = pgStart(pgSettings) })
	if err := pgShared.err; err != nil {
		if errors.Is(err, errPGMissing) {
			if pgRequired() {
				t.Fatalf("PostgreSQL is required (CI or CMK_REQUIRE_SERVERS=1 is set) but was not found: %v\n"+
					"To fix:\n  1. run scripts/install-postgres.sh (installs Debian's postgresql package), or\n"+
					"  2. set CMK_PG_BIN to the directory holding initdb and pg_ctl.", err)
			}
			t.Skip("SKIPPED: PostgreSQL not found; run scripts/install-postgres.sh or make test")
		}
		t.Fatalf("start PostgreSQL for tests: %v", err)
	}
	dsn, err := pgShared.srv.createDB(t)
	if err != nil {
		t.Fatalf("create test database: %v", err)
	}
	return dsn
}

var pgShared struct {
	once sync.Once
	srv  *pgServer
	err  error
}

var errPGMissing = errors.New("initdb and pg_ctl not found in $CMK_PG_BIN, /usr/lib/postgresql/*/bin or PATH")

// pgSettings tune the throwaway server. Commits do not wait for the WAL
// flush: a crash may lose the last commits, which no test cares about, and
// each commit saves an fsync. Everything else is PostgreSQL's default so
// tests and benchmarks see the planner and locking production sees.
const pgSettings = "-c synchronous_commit=off -c max_connections=200"

type pgServer struct {
	port int
	// How to run the cluster's tools again (PostgresCluster's Start, Stop
	// and Kill).
	bin, root, data, logFile, opts string
	cred                           *syscall.Credential
}

func pgRequired() bool {
	return os.Getenv("CI") != "" || os.Getenv("CMK_REQUIRE_SERVERS") == "1"
}

// pgStart creates a cluster and starts it with the server settings given.
// The directory layout is ROOT/data (the cluster), ROOT/log (server log)
// and the socket in ROOT.
func pgStart(settings string) (*pgServer, error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}

	// initdb refuses to run as root; as root, the cluster is owned by and
	// run as the postgres OS user, so its directory must sit where that
	// user can reach it: under /tmp, not under a private $TMPDIR or /root.
	var cred *syscall.Credential
	base := os.TempDir()
	if os.Geteuid() == 0 {
		cred, err = pgUserCredential()
		if err != nil {
			return nil, err
		}
		base = "/tmp"
	}
	root, err := os.MkdirTemp(base, "cmk-pg-")
	if err != nil {
		return nil, fmt.Errorf("create PostgreSQL directory: %w", err)
	}
	if cred != nil {
		if err := os.Chown(root, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(root)
			return nil, fmt.Errorf("hand %s to the postgres user: %w", root, err)
		}
	}
	data := filepath.Join(root, "data")
	logFile := filepath.Join(root, "log")

	// Start the watchdog before the server, so that whatever happens from
	// here on, the server is stopped and the directory removed when this
	// process exits.
	if err := pgWatchdog(bin, data, root, cred); err != nil {
		os.RemoveAll(root)
		return nil, err
	}

	// --no-sync: the cluster is thrown away, so skip flushing its files.
	if out, err := pgRun(cred, root, filepath.Join(bin, "initdb"), "-D", data, "--auth=trust", "-U", "postgres",
		"--encoding=UTF8", "--no-locale", "--no-sync"); err != nil {
		return nil, fmt.Errorf("initdb -D %s: %w\n%s", data, err, out)
	}

	// The free port can be taken between probing and listening; retry.
	var lastErr error
	for range 3 {
		port, err := pgFreePort()
		if err != nil {
			return nil, err
		}
		opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s %s", port, root, settings)
		out, err := pgRun(cred, root, filepath.Join(bin, "pg_ctl"), "-D", data, "-o", opts, "-l", logFile, "-w", "-t", "60", "start")
		if err == nil {
			return &pgServer{port: port, bin: bin, root: root, data: data, logFile: logFile, opts: opts, cred: cred}, nil
		}
		log, _ := os.ReadFile(logFile)
		lastErr = fmt.Errorf("pg_ctl start on port %d: %w\n%s\nserver log:\n%s", port, err, out, pgTail(log, 2000))
	}
	return nil, lastErr
}

// pgBinDir finds the directory holding initdb and pg_ctl.
func pgBinDir() (string, error) {
	has := func(dir string) bool {
		for _, name := range []string{"initdb", "pg_ctl"} {
			if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv("CMK_PG_BIN"); dir != "" {
		if !has(dir) {
			return "", fmt.Errorf("CMK_PG_BIN=%s does not hold initdb and pg_ctl", dir)
		}
		return dir, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Newest major version first: "15" sorts after "9" numerically only.
	version := func(dir string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
		return v
	}
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, dir := range dirs {
		if has(dir) {
			return dir, nil
		}
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if p, err = filepath.EvalSymlinks(p); err == nil && has(filepath.Dir(p)) {
			return filepath.Dir(p), nil
		}
	}
	return "", errPGMissing
}

func pgUserCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and initdb refuses root, but there is no postgres OS user to run it as (%w); "+
			"run scripts/install-postgres.sh, which creates it, or run the tests as a non-root user", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("postgres OS user has non-numeric uid %q or gid %q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// pgRun runs a PostgreSQL tool, as the postgres user when cred is set, in
// dir (the tools complain when they cannot read their working directory).
func pgRun(cred *syscall.Credential, dir, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	// Own session: a Ctrl-C aimed at go test must not reach the server
	// before the watchdog stops it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: cred}
	return cmd.CombinedOutput()
}

// pgWatchdog starts a detached shell that waits for this process to exit,
// then stops the server and removes root. It runs as the server's user so
// it may stop the server and delete its files; "kill -0" cannot probe a
// root process from another user, hence the /proc check as well.
func pgWatchdog(bin, data, root string, cred *syscall.Credential) error {
	const script = `while kill -0 "$1" 2>/dev/null || [ -d "/proc/$1" ]; do sleep 1; done
"$2/pg_ctl" -D "$3" stop -m immediate >/dev/null 2>&1
rm -rf "$4"`
	cmd := exec.Command("/bin/sh", "-c", script, "cmk-pg-watchdog", strconv.Itoa(os.Getpid()), bin, data, root)
	cmd.Dir = root
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: cred}
	// No stdio: go test waits for every holder of its output pipes.
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start PostgreSQL watchdog: %w", err)
	}
	go cmd.Wait() // reap it should it die first
	return nil
}

func pgFreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func pgTail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

func (s *pgServer) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// createDB creates a database for t and drops it when t ends.
func (s *pgServer) createDB(t scope) (string, error) {
	var b [8]byte
	rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])
	if err := s.admin("CREATE DATABASE " + name); err != nil {
		return "", err
	}
	t.Cleanup(func() {
		// FORCE ends sessions a test left open. Errors only waste space on
		// a server that is thrown away anyway, so they are logged, not fatal.
		if err := s.admin("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)"); err != nil {
			t.Logf("drop test database %s: %v", name, err)
		}
	})
	return s.dsn(name), nil
}

func (s *pgServer) admin(stmt string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.dsn("postgres"))
	if err != nil {
		return fmt.Errorf("connect to test server on port %d: %w", s.port, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("%s: %w", stmt, err)
	}
	return nil
}

// PostgresInstalled reports whether PostgreSQL's binaries are found (see
// Postgres), for tests whose server is started by another process (a
// script running a program that calls PostgresIn), and whether a missing
// server must fail them rather than skip (CI or CMK_REQUIRE_SERVERS=1).
func PostgresInstalled() (ok, required bool) {
	_, err := pgBinDir()
	return err == nil, pgRequired()
}
