package servecmd

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// Version is the release this binary was built as. Release builds set it
// with -ldflags "-X github.com/cmk-project/cmk/internal/servecmd.Version=v1.2.3";
// other builds report the module version the go command recorded, or
// "devel".
var Version = ""

// VersionLine is what '--version' prints: the program, its version, the
// commit it was built from (with "+dirty" when the work tree had changes)
// and the Go release, e.g. "cmk v1.2.3 (commit 1a2b3c4d5e6f, go1.26.8)".
func VersionLine(program string) string {
	version, commit := Version, ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version = bi.Main.Version
		}
		var dirty bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if len(commit) > 12 {
			commit = commit[:12]
		}
		if commit != "" && dirty {
			commit += "+dirty"
		}
	}
	if version == "" {
		version = "devel"
	}
	if commit == "" {
		commit = "unknown"
	}
	return strings.Join([]string{program, version, "(commit " + commit + ",", runtime.Version() + ")"}, " ")
}
