package blob_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/lake/blob"
)

// crashDirEnv, when set, makes TestFSKillDuringPut act as the child: it
// opens the store in that directory and starts a Put that never ends.
const crashDirEnv = "CMK_BLOB_CRASH_CHILD_DIR"

const (
	crashKey     = "org/sandbox/ds/part-0"
	crashStarted = "PUT-IN-PROGRESS"
	// crashWritten is how much the child writes before telling the parent
	// to kill it: several of Put's chunks, so the temp file is non-empty.
	crashWritten = 8 << 20
)

// TestFSKillDuringPut SIGKILLs a process in the middle of a Put, then opens
// the store again and checks that the partial object is invisible, the
// object it was replacing is intact, and the temp file is gone.
func TestFSKillDuringPut(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(dir)
		return
	}
	dir := t.TempDir()
	ctx := context.Background()
	prior := bytes.Repeat([]byte("prior "), 1000)
	b := newFS(t, dir, blob.DefaultFSOptions())
	for _, k := range []string{crashKey, "org/sandbox/ds/other"} {
		if _, err := b.Put(ctx, k, bytes.NewReader(prior)); err != nil {
			t.Fatal(err)
		}
	}
	b.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestFSKillDuringPut$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == crashStarted {
				started <- nil
				return
			}
		}
		started <- fmt.Errorf("child ended its output without %q", crashStarted)
	}()
	select {
	case err := <-started:
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("%v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child did not start its Put within 30s; stderr:\n%s", stderr.String())
	}

	// The Put is mid-way: its temp file exists and holds data.
	tmps, _ := filepath.Glob(filepath.Join(dir, "staging", "*"))
	if len(tmps) != 1 {
		t.Fatalf("staging holds %q mid-Put, want one temp file", tmps)
	}
	st, err := os.Stat(tmps[0])
	if err != nil || st.Size() == 0 {
		t.Fatalf("temp file mid-Put: %v, %v; want a non-empty file", st, err)
	}
	t.Logf("killing the child with %d bytes in its temp file", st.Size())

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed by SIGKILL; stderr:\n%s", err, stderr.String())
	}

	b = newFS(t, dir, blob.DefaultFSOptions())
	rc, size, err := b.Get(ctx, crashKey)
	if err != nil {
		t.Fatalf("Get(%q) after the crash: %v", crashKey, err)
	}
	got := make([]byte, size+1)
	n, _ := rc.Read(got)
	rc.Close()
	if !bytes.Equal(got[:n], prior) {
		t.Fatalf("Get(%q) after the crash = %d bytes, want the %d bytes from before it", crashKey, n, len(prior))
	}
	objs, err := b.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].Key != "org/sandbox/ds/other" || objs[1].Key != crashKey || objs[1].Size != int64(len(prior)) {
		t.Fatalf("List after the crash = %+v, want only the two objects from before it", objs)
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, "staging", "*")); len(tmps) != 0 {
		t.Fatalf("staging holds %q after reopening, want nothing", tmps)
	}
}

// crashChild runs in the child process: it Puts an endless stream and
// announces on stdout once crashWritten bytes are in. It never returns;
// the parent kills it.
func crashChild(dir string) {
	b, err := blob.NewFS(dir, blob.DefaultFSOptions())
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: NewFS:", err)
		os.Exit(2)
	}
	_, err = b.Put(context.Background(), crashKey, &slowReader{})
	fmt.Fprintln(os.Stderr, "child: Put returned:", err)
	os.Exit(2)
}

// slowReader yields bytes in 64 KiB pieces; after crashWritten of them it
// says so and slows to a trickle, so that Put is surely mid-way when the
// parent kills the process.
type slowReader struct{ n int }

func (r *slowReader) Read(p []byte) (int, error) {
	if r.n >= crashWritten {
		if r.n == crashWritten {
			fmt.Println(crashStarted)
		}
		time.Sleep(10 * time.Millisecond)
	}
	p = p[:min(len(p), 64<<10)]
	for i := range p {
		p[i] = 'x'
	}
	r.n += len(p)
	return len(p), nil
}
