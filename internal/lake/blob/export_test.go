package blob

import "os"

// Faults make one of the calls a Put's durability rests on fail: each
// non-nil function is called in place of the operating system's.
type Faults struct {
	SyncFile func(*os.File) error
	Rename   func(oldpath, newpath string) error
	SyncDir  func(dir string) error
	Free     func(dir string) (int64, error)
}

// SetFaults replaces b's calls with those of f; zero fields keep the
// operating system's.
func SetFaults(b *FS, f Faults) {
	b.ops = osOps
	if f.SyncFile != nil {
		b.ops.syncFile = f.SyncFile
	}
	if f.Rename != nil {
		b.ops.rename = f.Rename
	}
	if f.SyncDir != nil {
		b.ops.syncDir = f.SyncDir
	}
	if f.Free != nil {
		b.ops.free = f.Free
	}
}
