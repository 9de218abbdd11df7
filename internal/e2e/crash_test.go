package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/enablement"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/store"
)

var errCrash = errors.New("simulated crash")

// TestEnablementSurvivesCrashes stops the job at random points of
// UPDATE_EXISTING_RESOURCES — after some re-wraps, or by cutting its context
// mid-call — re-opens the database as a restarted process would, and checks
// after every crash that every data key still unwraps. The job must then
// finish with every key under the customer key.
func TestEnablementSurvivesCrashes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var sandboxes []string
	for i := range 100 {
		sandboxes = append(sandboxes, fmt.Sprintf("sb%02d", i))
	}
	env, err := devenv.Start(ctx, devenv.Options{DataDir: dir, Sandboxes: sandboxes, Workers: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	c := adminClient(t, env, env.Org)
	if code, body := c.do("POST", configPath, configBody(env.Org, "Crashy", env.KeyIdentifier)); code != 201 {
		t.Fatalf("POST config = %d %v", code, body)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const lease = 150 * time.Millisecond

	var crashes int
	for round := 0; ; round++ {
		if round > 100 {
			t.Fatal("job did not finish after 100 restarts")
		}
		// A restarted process: its own database handle and worker identity.
		st, err := store.Open(ctx, filepath.Join(dir, "cmk.db"))
		if err != nil {
			t.Fatal(err)
		}
		kr := &keyring.Keyring{Store: st, System: env.Svc.Keyring.System, Customer: env.Svc.Provider}
		r := &enablement.Runner{Store: st, Keyring: kr, Provider: env.Svc.Provider, Policy: env.Svc.Policy, Tenants: env.Svc.Control.Ownership.Tenants,
			Owner: fmt.Sprintf("worker-%d", round), Lease: lease, Concurrency: 4}
		runCtx, cancel := context.WithCancel(ctx)
		switch {
		case round >= 20: // enough crashes: let it finish
		case round%2 == 0: // crash after a random number of re-wraps
			limit := int64(1 + rng.IntN(20))
			r.AfterRewrap = func(n int64) error {
				if n >= limit {
					return errCrash
				}
				return nil
			}
		default: // crash at a random instant, possibly mid-call
			time.AfterFunc(time.Duration(rng.IntN(40))*time.Millisecond, cancel)
		}
		ran, _ := r.RunOnce(runCtx)
		cancel()
		cfg, err := st.ConfigByName(ctx, env.Org, "Crashy")
		if err != nil {
			t.Fatal(err)
		}
		assertAllUnwrap(t, kr, st, env.Org)
		st.Close()
		if cfg.Status == store.StatusCompleted {
			break
		}
		if cfg.Status == store.StatusFailed {
			t.Fatalf("job FAILED: %s", cfg.Failure)
		}
		if ran {
			crashes++
		}
		time.Sleep(lease + 20*time.Millisecond) // the dead worker's lease runs out
	}
	if crashes < 8 {
		t.Errorf("only %d crashes happened; the test did not exercise resumption", crashes)
	}
	keys, _ := env.Svc.Store.DataKeys(ctx, env.Org)
	if len(keys) != 2*len(sandboxes) {
		t.Errorf("data keys = %d, want %d", len(keys), 2*len(sandboxes))
	}
	for _, dk := range keys {
		if dk.KEK != store.KEKCustomer {
			t.Errorf("data key %s still wrapped by %s", dk.ID, dk.KEK)
		}
	}
	t.Logf("job completed after %d crashes", crashes)
}

func assertAllUnwrap(t *testing.T, kr *keyring.Keyring, st *store.Store, org string) {
	t.Helper()
	keys, err := st.DataKeys(context.Background(), org)
	if err != nil {
		t.Fatal(err)
	}
	for _, dk := range keys {
		if _, err := kr.Unwrap(context.Background(), dk); err != nil {
			t.Fatalf("data key %s (%s) no longer unwraps: %v", dk.ID, dk.KEK, err)
		}
	}
}
