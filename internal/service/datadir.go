package service

import "fmt"

// UnsafeDataDirError is why New refuses to start: the data directory is
// owned by another user, or it, or something directly in it, is open to
// other users. cmk does not repair modes itself: whatever was open may
// have been read already, and the operator must know that.
type UnsafeDataDirError struct {
	Dir    string
	Reason string // what is wrong
	Fix    string // the commands that put it right
}

func (e *UnsafeDataDirError) Error() string {
	return fmt.Sprintf("data directory %s: %s; cmk keeps its state (database, system key, token key, lake) readable by its own user only and will not start", e.Dir, e.Reason)
}

// Hint is the operator's next step (printed as "hint:" by the serve command).
func (e *UnsafeDataDirError) Hint() string { return e.Fix }
