package main

import (
	"os"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets the scripts run "cmkd": the test binary, re-executed under
// that name, runs the real command.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"cmkd": func() { os.Exit(run(os.Args[1:])) },
	})
}

// TestScripts runs the scripts in testdata/script.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{Dir: "testdata/script", RequireExplicitExec: true})
}
