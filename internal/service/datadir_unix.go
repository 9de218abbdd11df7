//go:build unix

package service

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// checkDataDir refuses a data directory that another user owns, or that
// is open to group or others (any of the mode bits 077), or that holds a
// file or directory so open at its top level. Files are created 0600 and
// directories 0700, so a looser mode was set by someone else; the check
// does not descend further (a lake can hold many files), as a private
// data directory already keeps other users from everything below it.
//
// The one repair: an open directory that is still empty (made by mkdir, a
// fresh volume) is made 0700 and logged, as nothing in it can have been
// read.
func checkDataDir(dir string, log *slog.Logger) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("check data directory: %w", err)
	}
	if uid, mine := ownedByMe(st); !mine {
		return &UnsafeDataDirError{Dir: dir,
			Reason: fmt.Sprintf("it is owned by uid %d, and cmk runs as uid %d", uid, os.Geteuid()),
			Fix:    fmt.Sprintf("run cmk as the directory's owner, or give it to cmk's user: chown -R %d %s", os.Geteuid(), dir)}
	}
	var open, dirs, files []string
	note := func(path string, mode fs.FileMode) {
		if mode.Perm()&0o077 == 0 {
			return
		}
		open = append(open, fmt.Sprintf("%s (%v)", path, mode))
		if mode.IsDir() {
			dirs = append(dirs, path)
		} else {
			files = append(files, path)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("check data directory: %w", err)
	}
	if len(entries) == 0 && st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("make the empty data directory %s private: %w", dir, err)
		}
		log.Info("data directory was open to other users and empty; made it private", "dir", dir, "was", st.Mode().String(), "now", "drwx------")
		return nil
	}
	note(dir, st.Mode())
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		fi, err := os.Stat(path) // a symlink's target
		if err != nil || !(fi.Mode().IsRegular() || fi.IsDir()) {
			continue
		}
		note(path, fi.Mode())
	}
	if len(open) == 0 {
		return nil
	}
	var fix []string
	if len(dirs) > 0 {
		fix = append(fix, "chmod 700 "+strings.Join(dirs, " "))
	}
	if len(files) > 0 {
		fix = append(fix, "chmod 600 "+strings.Join(files, " "))
	}
	return &UnsafeDataDirError{Dir: dir,
		Reason: "other users may read " + strings.Join(open, ", "),
		Fix:    strings.Join(fix, " && ") + "; then consider whether anything in them was read while they were open"}
}

// ownedByMe reports the owner of st and whether it is the user cmk runs as
// (root, when cmk runs as root).
func ownedByMe(st fs.FileInfo) (uid int, mine bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return -1, true // no owner to compare
	}
	return int(sys.Uid), int(sys.Uid) == os.Geteuid()
}
