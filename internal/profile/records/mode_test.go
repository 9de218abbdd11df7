//go:build unix

package records_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cmk-project/cmk/internal/profile/records"
)

// TestSQLiteFileModes: the database and its -wal and -shm files are created
// 0600 even with a umask that would let anyone read them.
func TestSQLiteFileModes(t *testing.T) {
	defer syscall.Umask(syscall.Umask(0))
	ctx := context.Background()
	dir := t.TempDir()
	b, err := records.OpenSQLite(ctx, filepath.Join(dir, "profiles.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Upsert(ctx, "o1", "prod", "r1", []byte("sealed")); err != nil { // a write: the WAL is in use
		t.Fatal(err)
	}
	for _, name := range []string{"profiles.db", "profiles.db-wal", "profiles.db-shm"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("stat %s: %v", name, err)
			continue
		}
		if got := st.Mode().Perm(); got != 0o600 {
			t.Errorf("mode of %s = %v, want -rw-------", name, got)
		}
	}
}
