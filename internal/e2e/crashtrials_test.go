package e2e

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/bench"
	"github.com/cmk-project/cmk/internal/cluster"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/lake/blob"
	"github.com/cmk-project/cmk/internal/testsvc"
)

// TestCrashTrials runs the crash harness of 'cmk bench crash' on both
// backends: 'cmk serve' as a process, SIGKILLed at seeded random moments of
// lake uploads, profile writes, an enablement job and a key rotation, and
// restarted; after each kill every acknowledged write must read back byte
// for byte, nothing partial be listed, every data key unwrap, the jobs end
// and the key stay HEALTHY (bench.Crash).
//
// Ten trials per backend by default; CMK_CRASH_TRIALS sets another count
// and CMK_CRASH_SEED the seed (random otherwise, and logged: a failed trial
// is replayed with 'cmk bench crash --crash-seed <its seed> --crash-trials 1').
func TestCrashTrials(t *testing.T) {
	trials := 10
	if v := os.Getenv("CMK_CRASH_TRIALS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("CMK_CRASH_TRIALS=%q: want a whole number of at least 1", v)
		}
		trials = n
	}
	seed := rand.Uint64() >> 1
	if v := os.Getenv("CMK_CRASH_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			t.Fatalf("CMK_CRASH_SEED=%q: want a whole number above 0", v)
		}
		seed = n
	}
	t.Logf("seed %d (CMK_CRASH_SEED=%d reproduces the run's workloads and kill times)", seed, seed)
	ctx := context.Background()
	bin, err := cluster.Build(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, cfg bench.CrashConfig) {
		cfg.Common = bench.Common{Dir: t.TempDir(), Progress: testWriter{t}}
		cfg.Trials, cfg.Seed, cfg.Bin = trials, seed, bin
		// A short lease and window keep a trial near two seconds.
		cfg.Lease, cfg.Window = time.Second, 1200*time.Millisecond
		res, err := bench.Crash(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if res.Failed != 0 || len(res.Runs) != trials {
			t.Fatalf("%d trials failed, %d ran; want 0 and %d", res.Failed, len(res.Runs), trials)
		}
		if res.Acked == 0 || res.ObjectsRead == 0 || res.KeysChecked == 0 {
			t.Fatalf("the trials checked nothing: %d writes acknowledged, %d objects read, %d data keys unwrapped", res.Acked, res.ObjectsRead, res.KeysChecked)
		}
		t.Logf("\n%s", res)
	}
	t.Run("sqlite", func(t *testing.T) {
		run(t, bench.CrashConfig{Backend: bench.CrashSQLite})
	})
	t.Run("postgres", func(t *testing.T) {
		az := testsvc.Azurite(t)
		run(t, bench.CrashConfig{Backend: bench.CrashPostgres, DatabaseDSN: testsvc.Postgres(t), ProfilesDSN: testsvc.Postgres(t),
			Lake: &blob.AzureConfig{ServiceURL: az.ServiceURL, AccountName: az.AccountName, AccountKey: az.AccountKey, Container: "crash"}})
	})
}

// TestCrashHarnessCatchesDamage shows the harness's checks fail when the
// state is damaged: a lake file no write made, planted in the demo org's
// dataset while the process is down, must be reported.
func TestCrashHarnessCatchesDamage(t *testing.T) {
	ctx := context.Background()
	bin, err := cluster.Build(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	plant := func(dataDir string) error {
		dir := filepath.Join(dataDir, "lake", "objects", devenv.DemoOrg+".d", "prod.d", "crash.d")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, "planted.f"), bytes.Repeat([]byte{7}, 1000), 0o600)
	}
	res, err := bench.Crash(ctx, bench.CrashConfig{Common: bench.Common{Dir: t.TempDir(), Progress: testWriter{t}},
		Trials: 1, Seed: 1, Bin: bin, Lease: time.Second, AfterKill: plant})
	if !errors.Is(err, bench.ErrCrashInconsistent) || !strings.Contains(err.Error(), "planted") {
		t.Fatalf("Crash with a planted file = %v, want %v naming the file", err, bench.ErrCrashInconsistent)
	}
	if res == nil || res.Failed == 0 {
		t.Fatalf("result %+v, want a failed trial", res)
	}
}

// testWriter sends progress lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-min(len(p), 1)]))
	return len(p), nil
}
