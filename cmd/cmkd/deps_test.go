package main

import (
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// forbidden are the packages the production server must not link, with
// everything under them: the local Azure and AWS emulators, the benchmarks (and the
// age library they compare against), the development world, the test
// service and the process harness. Tink, also a benchmark comparison, is refused by name below.
var forbidden = []string{
	"github.com/cmk-project/cmk/internal/azemu",
	"github.com/cmk-project/cmk/internal/awsemu",
	"github.com/cmk-project/cmk/internal/bench",
	"github.com/cmk-project/cmk/internal/devenv",
	"github.com/cmk-project/cmk/internal/testsvc",
	"github.com/cmk-project/cmk/internal/cluster",
	"filippo.io/age",
}

// refused says why cmkd must not link the package at path, or "".
func refused(path string) string {
	for _, p := range forbidden {
		if path == p || strings.HasPrefix(path, p+"/") {
			return "under " + p
		}
	}
	for _, elem := range strings.Split(path, "/") {
		if strings.HasPrefix(elem, "tink") { // github.com/tink-crypto/tink-go, github.com/google/tink
			return "a Tink package"
		}
	}
	return ""
}

// TestNoDevelopmentCodeLinked lists the packages cmkd links ('go list -deps')
// and fails on any of the development tools'.
func TestNoDevelopmentCodeLinked(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list -deps: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	// Guard against listing the wrong thing: cmkd links the service.
	if !slices.Contains(deps, "github.com/cmk-project/cmk/internal/service") {
		t.Fatalf("go list -deps does not list internal/service; got %d packages: %q", len(deps), deps)
	}
	for _, p := range deps {
		if why := refused(p); why != "" {
			t.Errorf("cmkd links %s (%s); the production server must not contain development code", p, why)
		}
	}
}

func TestRefused(t *testing.T) {
	for path, want := range map[string]bool{
		"github.com/cmk-project/cmk/internal/azemu":     true,
		"github.com/cmk-project/cmk/internal/azemu/sub": true,
		"github.com/cmk-project/cmk/internal/azemux":    false,
		"github.com/cmk-project/cmk/internal/awsemu":    true,
		"github.com/cmk-project/cmk/internal/bench":     true,
		"github.com/cmk-project/cmk/internal/devenv":    true,
		"github.com/cmk-project/cmk/internal/testsvc":   true,
		"github.com/cmk-project/cmk/internal/cluster":   true,
		"filippo.io/age":                                       true,
		"filippo.io/age/internal/format":                       true,
		"filippo.io/hpke":                                      false,
		"github.com/tink-crypto/tink-go/v2/aead":               true,
		"github.com/cmk-project/cmk/internal/service":          false,
		"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob": false,
	} {
		if got := refused(path) != ""; got != want {
			t.Errorf("refused(%q) = %q, want refused %v", path, refused(path), want)
		}
	}
}
