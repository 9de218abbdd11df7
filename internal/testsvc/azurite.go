package testsvc

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// AzuriteInfo says how to reach a running Azurite Blob service.
type AzuriteInfo struct {
	// ServiceURL is the Blob service endpoint of the account,
	// "http://127.0.0.1:PORT/devstoreaccount1".
	ServiceURL string
	// AccountName and AccountKey are Azurite's well-known development
	// account, for Shared Key authentication.
	AccountName, AccountKey string
}

// Azurite's built-in development account, published in its documentation.
// It exists in every Azurite instance and authenticates nothing else.
const (
	AzuriteAccountName = "devstoreaccount1"
	AzuriteAccountKey  = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq" +
		"/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Azurite starts a private azurite-blob on 127.0.0.1 and a free port, with
// its data in a temp directory, and stops it when t ends (SIGTERM, then
// SIGKILL after azuriteStopGrace). Each call starts its own instance —
// about a second — so call it once per top-level test and give each
// subtest its own container.
//
// The binary is $CMK_AZURITE, else azurite-blob on PATH, else
// <repo>/.tools/node_modules/.bin/azurite-blob as installed by
// scripts/install-azurite.sh. If none exists the test is skipped loudly,
// or fails when CI is set or CMK_REQUIRE_SERVERS=1.
func Azurite(t testing.TB) AzuriteInfo {
	t.Helper()
	bin, err := azuriteBinary()
	if err != nil {
		if serversRequired() {
			t.Fatalf("Azurite is required (CI or CMK_REQUIRE_SERVERS=1 is set) but was not found: %v\n"+
				"To fix:\n  1. run scripts/install-azurite.sh (npm installs azurite into .tools/), or\n"+
				"  2. set CMK_AZURITE to the path of an azurite-blob binary.", err)
		}
		t.Skip("SKIPPED: azurite-blob not found; run scripts/install-azurite.sh or make test")
	}

	// A port picked free may be taken before Azurite binds it; then Azurite
	// exits, and we try another.
	var errs []error
	for range azuriteStartTries {
		info, err := azuriteStart(t, bin)
		if err == nil {
			return info
		}
		errs = append(errs, err)
	}
	t.Fatalf("start Azurite (%s): %v", bin, errors.Join(errs...))
	return AzuriteInfo{}
}

const (
	// azuriteStartTries bounds the retries after losing a port race.
	azuriteStartTries = 3
	// azuriteStartTimeout is how long Azurite may take to listen; it takes
	// about a second, more on a loaded CI machine.
	azuriteStartTimeout = 30 * time.Second
	// azuriteStopGrace is how long Azurite may take to exit on SIGTERM
	// before it is killed; it holds nothing that needs a clean shutdown.
	azuriteStopGrace = 3 * time.Second
)

// serversRequired reports whether a missing server must fail the test
// rather than skip it.
func serversRequired() bool {
	return os.Getenv("CI") != "" || os.Getenv("CMK_REQUIRE_SERVERS") == "1"
}

func azuriteBinary() (string, error) {
	if p := os.Getenv("CMK_AZURITE"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("$CMK_AZURITE: %w", err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("azurite-blob"); err == nil {
		return p, nil
	}
	if root, err := repoRoot(); err == nil {
		p := filepath.Join(root, ".tools", "node_modules", ".bin", "azurite-blob")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("azurite-blob is not in $CMK_AZURITE, on PATH, or in <repo>/.tools/node_modules/.bin")
}

// repoRoot walks up from the working directory (a package directory under
// go test) to the directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

func azuriteStart(t scope, bin string) (AzuriteInfo, error) {
	port, err := azuriteFreePort()
	if err != nil {
		return AzuriteInfo{}, err
	}
	cmd := exec.Command(bin,
		"--blobHost", "127.0.0.1",
		"--blobPort", strconv.Itoa(port),
		"--location", t.TempDir(),
		// azblob v1.8.3 sends an API version newer than Azurite knows.
		"--skipApiVersionCheck",
		// Accept headers and parameters Azurite does not implement.
		"--loose",
		// No access log on stdout.
		"--silent",
	)
	var out lockedBuffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// Its own process group, so a ^C at the terminal reaches only us and
	// the cleanup below, not Azurite mid-test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return AzuriteInfo{}, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		select {
		case <-exited:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(azuriteStopGrace):
			cmd.Process.Kill()
			<-exited
		}
	}

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(azuriteStartTimeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			break
		}
		select {
		case <-exited:
			return AzuriteInfo{}, fmt.Errorf("azurite-blob exited before listening on %s: %s", addr, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return AzuriteInfo{}, fmt.Errorf("azurite-blob did not listen on %s within %v: %s", addr, azuriteStartTimeout, out.String())
		}
	}
	select {
	case <-exited:
		// Whatever answered on addr, it was not our Azurite.
		return AzuriteInfo{}, fmt.Errorf("azurite-blob exited after %s became reachable: %s", addr, out.String())
	default:
	}
	t.Cleanup(stop)
	return AzuriteInfo{
		ServiceURL:  "http://" + addr + "/" + AzuriteAccountName,
		AccountName: AzuriteAccountName,
		AccountKey:  AzuriteAccountKey,
	}, nil
}

func azuriteFreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lockedBuffer collects a child's output for error messages; the exec
// package writes to it from its own goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 64<<10 {
		return len(p), nil // enough to say what went wrong
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
