package testsvc

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// SmallFS mounts a tmpfs of size bytes on a new directory and returns the
// directory; it is unmounted when t ends. Tests use it to run out of disk
// space for real: writes past its size fail with ENOSPC.
//
// Mounting needs root (or CAP_SYS_ADMIN). Without it the test is skipped
// loudly, or fails when CI is set or CMK_REQUIRE_SERVERS=1.
func SmallFS(t testing.TB, size int64) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+strconv.FormatInt(size, 10)+",mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		if serversRequired() {
			t.Fatalf("a small file system is required (CI or CMK_REQUIRE_SERVERS=1 is set) but mount -t tmpfs failed: %v: %s\n"+
				"To fix: run the tests as root, or in a container with CAP_SYS_ADMIN.", err, out)
		}
		t.Skipf("SKIPPED: cannot mount a tmpfs on %s (run as root to test a full disk): %v: %s", dir, err, out)
	}
	t.Cleanup(func() {
		// Lazy: a server the test started may still hold files open here
		// until its own cleanup, which can run after this one.
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// Fill writes a file in dir until the file system holding it is full
// (ENOSPC), and returns a function that deletes the file again. It fails
// the test if dir's file system never fills up (fillLimit bytes).
func Fill(t testing.TB, dir string) (free func()) {
	t.Helper()
	f, err := os.CreateTemp(dir, "fill-*")
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return func() {}
		}
		t.Fatalf("fill %s: %v", dir, err)
	}
	name := f.Name()
	buf := make([]byte, 64<<10)
	var written int64
	for {
		n, err := f.Write(buf)
		written += int64(n)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			f.Close()
			t.Fatalf("fill %s: %v", dir, err)
		}
		if written > fillLimit {
			f.Close()
			os.Remove(name)
			t.Fatalf("fill %s: wrote %d bytes and it is not full; use a SmallFS", dir, written)
		}
	}
	// Smaller writes take the last partial page.
	for n := len(buf) / 2; n > 0; n /= 2 {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
	f.Close()
	return func() {
		if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("free %s: %v", filepath.Base(name), err)
		}
	}
}

// fillLimit keeps Fill from filling a real disk by mistake.
const fillLimit = 1 << 30

// FreeBytes is the space left for an unprivileged writer on dir's file
// system.
func FreeBytes(t testing.TB, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatalf("statfs %s: %v", dir, err)
	}
	return int64(st.Bavail) * st.Bsize
}
