//go:build !unix

package blob

import "os"

// lockDir opens path without locking it: on this platform nothing stops
// two FS backends from sharing a directory.
func lockDir(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}

func isNotDir(error) bool { return false }
