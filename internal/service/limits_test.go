package service

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
)

const testOrg = "LIMITS0RG@CmkOrg"

// startLimited starts a service with the given connection limits and
// returns it with a token for testOrg.
func startLimited(t *testing.T, cfg Config) (*Service, string) {
	t.Helper()
	cfg.Addr, cfg.DataDir, cfg.DevTokenIssuer = "127.0.0.1:0", t.TempDir(), true
	cfg.Workers, cfg.NoMonitor = -1, true
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		s.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	tok, err := s.MintDevToken("limits-test", testOrg, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return s, tok
}

// dataHeaders are the headers of a data call for testOrg in sandbox prod.
func dataHeaders(tok string) string {
	return "Authorization: Bearer " + tok + "\r\nx-api-key: " + DevAPIKey + "\r\nx-gw-ims-org-id: " + testOrg + "\r\nx-sandbox-name: prod\r\n"
}

func dataRequest(t *testing.T, s *Service, tok, method, path string, body io.Reader) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, s.URL()+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set(cmkapi.HeaderAPIKey, DevAPIKey)
	req.Header.Set(cmkapi.HeaderOrgID, testOrg)
	req.Header.Set("x-sandbox-name", "prod")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

// TestSlowUploadIsCut trickles a lake upload one byte at a time: the
// service stops it with 408 once a window passes without the minimum, and
// stores nothing. An upload at ordinary speed passes the same limits.
func TestSlowUploadIsCut(t *testing.T) {
	s, tok := startLimited(t, Config{BodyReadTimeout: 300 * time.Millisecond, MinTransferBytes: 1024})

	conn, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /data/lake/datasets/d/files/slow.bin HTTP/1.1\r\nHost: %s\r\n%sContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n", s.ln.Addr(), dataHeaders(tok))
	start := time.Now()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if _, err := conn.Write([]byte{'x'}); err != nil {
					return
				}
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer to a trickled upload: %v (after %v)", err, time.Since(start))
	}
	b, _ := io.ReadAll(res.Body)
	elapsed := time.Since(start)
	var e cmkapi.Error
	json.Unmarshal(b, &e)
	if res.StatusCode != http.StatusRequestTimeout || e.ErrorCode != cmkapi.CodeRequestBodyUnreadable || !strings.Contains(e.Detail, "slower than 1024 bytes per 300ms") {
		t.Errorf("trickled upload = %d %s, want 408 %s saying it was too slow", res.StatusCode, b, cmkapi.CodeRequestBodyUnreadable)
	}
	if elapsed < 250*time.Millisecond || elapsed > 3*time.Second {
		t.Errorf("trickled upload was cut after %v, want about 300ms", elapsed)
	}
	if got := dataRequest(t, s, tok, "GET", "/data/lake/datasets/d/files/slow.bin", nil); got.StatusCode != 404 {
		t.Errorf("GET the trickled file = %d, want 404: nothing is stored", got.StatusCode)
	}

	// 4 MiB sent as fast as the client can: the same limits let it through.
	file := make([]byte, 4<<20)
	rand.Read(file)
	if res := dataRequest(t, s, tok, "PUT", "/data/lake/datasets/d/files/fast.bin", bytes.NewReader(file)); res.StatusCode != 201 {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("PUT at full speed = %d %s, want 201", res.StatusCode, b)
	}
	res = dataRequest(t, s, tok, "GET", "/data/lake/datasets/d/files/fast.bin", nil)
	if got, _ := io.ReadAll(res.Body); res.StatusCode != 200 || !bytes.Equal(got, file) {
		t.Errorf("GET the fast file = %d, %d bytes, want 200 and the %d bytes sent", res.StatusCode, len(got), len(file))
	}
}

// TestSlowBodyCountsOnlyWaiting checks that a body sent in bursts that each
// bring the minimum within the window passes, however long the whole takes.
func TestSlowBodyCountsOnlyWaiting(t *testing.T) {
	s, tok := startLimited(t, Config{BodyReadTimeout: 300 * time.Millisecond, MinTransferBytes: 1024})
	pr, pw := io.Pipe()
	go func() {
		chunk := bytes.Repeat([]byte{'y'}, 1024)
		for range 8 {
			time.Sleep(150 * time.Millisecond)
			pw.Write(chunk)
		}
		pw.Close()
	}()
	if res := dataRequest(t, s, tok, "PUT", "/data/lake/datasets/d/files/bursts.bin", pr); res.StatusCode != 201 {
		b, _ := io.ReadAll(res.Body)
		t.Errorf("PUT of 8 KiB at 1 KiB per 150ms (limit 1 KiB per 300ms) = %d %s, want 201", res.StatusCode, b)
	}
}

// TestIdleConnectionClosed checks that a keep-alive connection with no
// request on it is closed after the idle timeout, and one that never
// finishes its headers after the header timeout.
func TestIdleConnectionClosed(t *testing.T) {
	s, _ := startLimited(t, Config{IdleTimeout: 300 * time.Millisecond, ReadHeaderTimeout: 300 * time.Millisecond})

	conn, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", s.ln.Addr())
	r := bufio.NewReader(conn)
	res, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	if res.StatusCode != 200 || res.Close {
		t.Fatalf("GET /healthz = %d (close %v), want 200 on a kept-alive connection", res.StatusCode, res.Close)
	}
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("reading an idle connection: %v, want EOF (closed by the server)", err)
	}
	if elapsed := time.Since(start); elapsed < 250*time.Millisecond || elapsed > 3*time.Second {
		t.Errorf("idle connection closed after %v, want about 300ms", elapsed)
	}

	half, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	fmt.Fprintf(half, "GET /healthz HTTP/1.1\r\nHost: %s\r\n", s.ln.Addr()) // no blank line
	start = time.Now()
	half.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, half)
	if elapsed := time.Since(start); elapsed < 250*time.Millisecond || elapsed > 3*time.Second {
		t.Errorf("connection with unfinished headers closed after %v, want about 300ms", elapsed)
	}
}

// TestStalledDownloadIsCut checks that a client that stops taking a large
// answer has it cut off once the write timeout passes, instead of holding
// the connection for as long as it likes.
func TestStalledDownloadIsCut(t *testing.T) {
	s, tok := startLimited(t, Config{WriteTimeout: 300 * time.Millisecond, MinTransferBytes: 64 << 10})
	size := stalledSize()
	if res := dataRequest(t, s, tok, "PUT", "/data/lake/datasets/d/files/big.bin", io.LimitReader(rand.Reader, size)); res.StatusCode != 201 {
		t.Fatalf("PUT = %d, want 201", res.StatusCode)
	}
	conn, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /data/lake/datasets/d/files/big.bin HTTP/1.1\r\nHost: %s\r\n%s\r\n", s.ln.Addr(), dataHeaders(tok))
	time.Sleep(time.Second) // take nothing while the server writes
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, conn)
	t.Logf("a client that stalled for 1s received %d of %d bytes", n, size)
	if n >= size {
		t.Errorf("a stalled client received all %d bytes; want the answer cut off", n)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("reading the stalled answer timed out after %d bytes; want the server to have closed it", n)
	}
}

// TestStalledDownloadIsCutAtDefaultRate stalls a download under the default
// minimum (1 KiB per window): however large the handler's writes, a client
// that takes nothing is cut after one piece's allowance (8 windows), not
// after the allowance of the whole write.
func TestStalledDownloadIsCutAtDefaultRate(t *testing.T) {
	const window = 200 * time.Millisecond
	s, tok := startLimited(t, Config{WriteTimeout: window})
	size := stalledSize()
	if res := dataRequest(t, s, tok, "PUT", "/data/lake/datasets/d/files/big.bin", io.LimitReader(rand.Reader, size)); res.StatusCode != 201 {
		t.Fatalf("PUT = %d, want 201", res.StatusCode)
	}
	conn, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /data/lake/datasets/d/files/big.bin HTTP/1.1\r\nHost: %s\r\n%s\r\n", s.ln.Addr(), dataHeaders(tok))
	time.Sleep(15 * window) // take nothing for 15 windows
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, _ := io.Copy(io.Discard, conn)
	t.Logf("a client that stalled for 15 windows received %d of %d bytes", n, size)
	if n >= size {
		t.Errorf("a client that stalled 15 windows received the whole answer (%d bytes)", n)
	}
}

// stalledSize is a file size well beyond what the kernel's socket buffers
// (the server's send buffer and the client's receive buffer, at their
// largest) can hold, so a client that takes nothing blocks the server.
func stalledSize() int64 {
	size := int64(32 << 20)
	var sum int64
	for _, f := range []string{"/proc/sys/net/ipv4/tcp_rmem", "/proc/sys/net/ipv4/tcp_wmem"} {
		b, err := os.ReadFile(f)
		fields := strings.Fields(string(b))
		if err != nil || len(fields) != 3 {
			return size
		}
		n, err := strconv.ParseInt(fields[2], 10, 64)
		if err != nil {
			return size
		}
		sum += n
	}
	return min(max(size, 2*sum+(8<<20)), 256<<20)
}

// TestLimitsDefaultsAndChecks checks that zero limits take the documented
// defaults and negative ones are refused before anything is created.
func TestLimitsDefaultsAndChecks(t *testing.T) {
	s, _ := startLimited(t, Config{})
	c := s.Config()
	for _, l := range []struct {
		name      string
		got, want time.Duration
	}{
		{"ReadHeaderTimeout", c.ReadHeaderTimeout, DefaultReadHeaderTimeout},
		{"IdleTimeout", c.IdleTimeout, DefaultIdleTimeout},
		{"BodyReadTimeout", c.BodyReadTimeout, DefaultBodyReadTimeout},
		{"WriteTimeout", c.WriteTimeout, DefaultWriteTimeout},
	} {
		if l.got != l.want {
			t.Errorf("Config().%s = %v, want %v", l.name, l.got, l.want)
		}
	}
	if c.MinTransferBytes != DefaultMinTransferBytes || s.srv.IdleTimeout != DefaultIdleTimeout || s.srv.ReadHeaderTimeout != DefaultReadHeaderTimeout {
		t.Errorf("MinTransferBytes = %d, server idle %v, header %v; want the defaults", c.MinTransferBytes, s.srv.IdleTimeout, s.srv.ReadHeaderTimeout)
	}
	for _, cfg := range []Config{{IdleTimeout: -time.Second}, {WriteTimeout: -1}, {MinTransferBytes: -1}} {
		cfg.DataDir, cfg.DevTokenIssuer = t.TempDir()+"/data", true
		if _, err := New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "must be positive") {
			t.Errorf("New(%+v) error = %v, want one saying the limit must be positive", cfg, err)
		}
		if _, err := os.Stat(cfg.DataDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("New with a negative limit created its data directory")
		}
	}
}
