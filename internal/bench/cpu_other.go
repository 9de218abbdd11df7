//go:build !unix

package bench

import "time"

// processCPU is not measured on this platform.
func processCPU() time.Duration { return 0 }

// flushDirty does nothing on this platform.
func flushDirty() {}
