// Package cluster runs 'cmk serve' as separate operating-system processes, so
// that tests and benchmarks can do to a replica what happens to one in
// production: kill it with SIGKILL at any moment, stop it with SIGTERM,
// start it again on the same state, and run several at once on one
// database.
//
// It is a development tool: the production binary never imports it.
package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Build compiles the cmk command into dir and returns the binary's path.
// It runs the go tool, so it only works from within the module.
func Build(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "cmk")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/cmk-project/cmk/cmd/cmk")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build cmd/cmk: %w\n%s", err, out)
	}
	return bin, nil
}

// StartTimeout is how long a process may take to say it listens: a cold
// start opens the database and runs its migrations, which takes a few
// seconds on a loaded two-core machine.
const StartTimeout = 60 * time.Second

// logLimit bounds the log kept per process; older lines are dropped.
const logLimit = 8 << 20

// Proc is one 'cmk serve' process. Its command line and environment are
// kept, so Restart starts the same replica again on the same state.
type Proc struct {
	Name string
	bin  string
	args []string
	env  []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	url    string
	logs   []byte
	exited chan struct{}
	err    error // the last process's exit status, once exited is closed
}

// Start runs bin with args (the 'serve' subcommand and its flags; the
// listen address must be given, 127.0.0.1:0 picks a free port) and the
// environment variables in env added to this process's, and waits until it
// listens (its "cmk listening" log line, which carries the URL).
func Start(name, bin string, env []string, args ...string) (*Proc, error) {
	p := &Proc{Name: name, bin: bin, args: args, env: env}
	if err := p.start(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Proc) start() error {
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout = io.Discard
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	exited := make(chan struct{})
	urlCh := make(chan string, 1)
	scanned := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.url, p.exited = cmd, "", exited
	p.mu.Unlock()
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.appendLog(line)
			var rec struct{ Msg, URL string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "cmk listening" && rec.URL != "" {
				select {
				case urlCh <- rec.URL:
				default:
				}
			}
		}
	}()
	go func() {
		<-scanned // Wait must not close the pipe before its last line is read
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(exited)
	}()
	select {
	case u := <-urlCh:
		p.mu.Lock()
		p.url = u
		p.mu.Unlock()
		return nil
	case <-exited:
		return fmt.Errorf("%s exited before it listened (%v); its log:\n%s", p.Name, p.ExitErr(), p.Tail(40))
	case <-time.After(StartTimeout):
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%s did not listen within %s; its log:\n%s", p.Name, StartTimeout, p.Tail(40))
	}
}

func (p *Proc) appendLog(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.logs = append(p.logs, line...)
	p.logs = append(p.logs, '\n')
	if len(p.logs) > logLimit {
		cut := len(p.logs) - logLimit/2
		if i := strings.IndexByte(string(p.logs[cut:]), '\n'); i >= 0 {
			cut += i + 1
		}
		p.logs = append([]byte(nil), p.logs[cut:]...)
	}
}

// URL is the base URL the running process serves on (empty while stopped).
func (p *Proc) URL() string { p.mu.Lock(); defer p.mu.Unlock(); return p.url }

// PID is the running (or last) process's id.
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process has not exited.
func (p *Proc) Running() bool {
	p.mu.Lock()
	ch := p.exited
	p.mu.Unlock()
	select {
	case <-ch:
		return false
	default:
		return true
	}
}

// Exited is closed when the current process exits.
func (p *Proc) Exited() <-chan struct{} { p.mu.Lock(); defer p.mu.Unlock(); return p.exited }

// ExitErr is the exit status of the last process that exited (nil for
// status 0).
func (p *Proc) ExitErr() error { p.mu.Lock(); defer p.mu.Unlock(); return p.err }

// Log is everything the process and its predecessors (before a Restart)
// wrote to standard error, up to a bound.
func (p *Proc) Log() string { p.mu.Lock(); defer p.mu.Unlock(); return string(p.logs) }

// Tail is the last n lines of Log.
func (p *Proc) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Kill sends SIGKILL and waits for the process to be gone: nothing it had
// not written by then is written.
func (p *Proc) Kill() error {
	return p.signal(syscall.SIGKILL, 10*time.Second)
}

// Stop sends SIGTERM and waits up to timeout for the process to exit; it
// is killed if it does not, and that is an error.
func (p *Proc) Stop(timeout time.Duration) error {
	if err := p.signal(syscall.SIGTERM, timeout); err != nil {
		p.Kill()
		return err
	}
	var ee *exec.ExitError
	if err := p.ExitErr(); err != nil && !errors.As(err, &ee) {
		return err
	} else if ee != nil {
		return fmt.Errorf("%s exited with %v after SIGTERM; its log:\n%s", p.Name, ee, p.Tail(20))
	}
	return nil
}

func (p *Proc) signal(sig syscall.Signal, wait time.Duration) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil || !p.Running() {
		return nil
	}
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", p.Name, err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(wait):
		return fmt.Errorf("%s still running %s after %v", p.Name, wait, sig)
	}
}

// Restart starts the process again with the same command line and
// environment, after killing it if it still runs.
func (p *Proc) Restart() error {
	if err := p.Kill(); err != nil {
		return err
	}
	p.appendLog(fmt.Sprintf(`{"msg":"--- %s restarted ---"}`, p.Name))
	return p.start()
}

// Cluster is a set of replicas of one service.
type Cluster struct {
	Procs []*Proc
}

// StartN starts n replicas; args(i) gives replica i's arguments. On an
// error the replicas already started are killed.
func StartN(n int, bin string, env []string, args func(i int) []string) (*Cluster, error) {
	c := &Cluster{}
	for i := range n {
		p, err := Start(fmt.Sprintf("replica-%d", i), bin, env, args(i)...)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.Procs = append(c.Procs, p)
	}
	return c, nil
}

// Close kills every replica.
func (c *Cluster) Close() {
	for _, p := range c.Procs {
		p.Kill()
	}
}

// ByOwner finds the replica whose process holds a lease or check named by
// owner: the service names its workers "<host>/<pid>/...". It returns nil
// when no running replica has that process id.
func (c *Cluster) ByOwner(owner string) *Proc {
	parts := strings.Split(owner, "/")
	if len(parts) < 2 {
		return nil
	}
	pid, err := strconv.Atoi(parts[1])
	if err != nil {
		return nil
	}
	for _, p := range c.Procs {
		if p.Running() && p.PID() == pid {
			return p
		}
	}
	return nil
}
