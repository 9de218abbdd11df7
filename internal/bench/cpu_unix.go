//go:build unix

package bench

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// flushDirty asks the kernel to write back dirty pages and commit its
// journal now (which also frees, and on a file system mounted with
// discard trims, the blocks of files deleted before), so that this work
// does not land in a later measurement.
func flushDirty() { syscall.Sync() }
