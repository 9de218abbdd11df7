package testsvc

import (
	"errors"
	"fmt"
	"os"
	"sync"
)

// scope is what a server needs of its owner: a directory for its data, a
// way to be stopped when the owner is done, and a place to say what went
// wrong while stopping. testing.TB is one; Scope is one for programs.
type scope interface {
	TempDir() string
	Cleanup(func())
	Logf(format string, args ...any)
}

// Scope owns servers started outside a test, for the benchmarks: Close
// stops them, last started first, and removes their directories.
type Scope struct {
	mu       sync.Mutex
	dirs     []string
	cleanups []func()
	closed   bool
}

// TempDir makes a directory removed by Close. It panics if none can be
// made, as testing.TB.TempDir fails the test.
func (s *Scope) TempDir() string {
	dir, err := os.MkdirTemp("", "cmk-scope-")
	if err != nil {
		panic(fmt.Sprintf("testsvc: make a temporary directory: %v", err))
	}
	s.mu.Lock()
	s.dirs = append(s.dirs, dir)
	s.mu.Unlock()
	return dir
}

// Cleanup registers f to run at Close.
func (s *Scope) Cleanup(f func()) {
	s.mu.Lock()
	s.cleanups = append(s.cleanups, f)
	s.mu.Unlock()
}

// Logf writes to standard error.
func (s *Scope) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

// Close runs the cleanups in reverse order and removes the directories.
func (s *Scope) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	cleanups, dirs := s.cleanups, s.dirs
	s.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	for _, d := range dirs {
		os.RemoveAll(d)
	}
}

// ErrMissing is returned by the Scope variants when a server is not
// installed.
var ErrMissing = errors.New("server not installed")

// AzuriteIn starts Azurite for s (see Azurite), stopped by s.Close.
func AzuriteIn(s *Scope) (AzuriteInfo, error) {
	bin, err := azuriteBinary()
	if err != nil {
		return AzuriteInfo{}, fmt.Errorf("%w: %v (run scripts/install-azurite.sh or set CMK_AZURITE)", ErrMissing, err)
	}
	var errs []error
	for range azuriteStartTries {
		info, err := azuriteStart(s, bin)
		if err == nil {
			return info, nil
		}
		errs = append(errs, err)
	}
	return AzuriteInfo{}, fmt.Errorf("start Azurite (%s): %w", bin, errors.Join(errs...))
}

// PostgresIn makes a database on the shared test PostgreSQL server (see
// Postgres) for s, dropped by s.Close, and returns its DSN.
func PostgresIn(s *Scope) (string, error) {
	pgShared.once.Do(func() { pgShared.srv, pgShared.err = pgStart(pgSettings) })
	if err := pgShared.err; err != nil {
		if errors.Is(err, errPGMissing) {
			return "", fmt.Errorf("%w: %v (run scripts/install-postgres.sh or set CMK_PG_BIN)", ErrMissing, err)
		}
		return "", fmt.Errorf("start PostgreSQL: %w", err)
	}
	return pgShared.srv.createDB(s)
}
