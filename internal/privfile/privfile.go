// Package privfile creates the files cmk keeps secrets in (its databases)
// private to the service's user, whatever the umask.
package privfile

import (
	"errors"
	"io/fs"
	"os"
	"runtime"
)

// Create creates an empty file at path with mode 0600 unless one exists.
// SQLite takes an empty file for a new database; left to itself, it would
// create the file 0644.
func Create(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := f.Chmod(0o600); err != nil && runtime.GOOS != "windows" { // a umask may have taken the owner's bits
		f.Close()
		return err
	}
	return f.Close()
}
