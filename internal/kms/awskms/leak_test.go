package awskms

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine they started is
// still running after the last one: a leak on a long-running server.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
