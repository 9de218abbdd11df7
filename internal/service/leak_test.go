package service

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine they started is
// still running after the last one: a leak on a long-running server.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestCloseEndsUnusedConnections: a connection a client opened and never
// sent a request on (an HTTP client dials one ahead and keeps it) is closed
// by Close, with its goroutine, rather than left for the header timeout.
func TestCloseEndsUnusedConnections(t *testing.T) {
	s, _ := startLimited(t, Config{})
	conn, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s.Close()
	// Well within the 10 s header timeout that would close it otherwise.
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("reading an unused connection after Close: %v, want EOF (closed by the service)", err)
	}
}
