package monitor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/store"
)

// errTargetMoved stops a rotation when the key gained yet another version:
// the next check retargets it.
var errTargetMoved = errors.New("key gained a newer version during rotation")

// RunRotations re-wraps data keys to new key versions until ctx ends. Data
// keys keep their bytes, so cached keys and reads of data stay valid
// throughout; each data key's wrapping is swapped in one row update after
// the new wrapping exists, so a crash loses nothing and the next worker
// continues.
func (m *Monitor) RunRotations(ctx context.Context) {
	m.defaults()
	poll := min(m.Interval/2, time.Second)
	failures := map[string]int{}
	for ctx.Err() == nil {
		h, err := m.Store.ClaimRotation(ctx, m.Owner, 2*m.Lease)
		if err == nil {
			if err := m.rotate(ctx, h); err != nil && ctx.Err() == nil {
				// Keep the lease through a backoff so a failing rotation
				// does not hammer the vault; any replica resumes it after.
				failures[h.OrgID]++
				wait := min(time.Second<<min(failures[h.OrgID]-1, 6), time.Minute)
				m.Log.Warn("key rotation paused", "org", h.OrgID, "to", h.RotateTo, "retry_in", wait, "err", err)
				m.Store.DeferRotation(context.WithoutCancel(ctx), h.OrgID, m.Owner, m.Now().Add(wait))
			} else {
				delete(failures, h.OrgID)
			}
			continue
		}
		if !errors.Is(err, store.ErrNotFound) && ctx.Err() == nil {
			m.Log.Error("claim rotation", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(poll):
		case <-m.nudge.kick: // a check found a new version just now
		}
	}
}

func (m *Monitor) rotate(ctx context.Context, h *keyhealth.Health) error {
	m.defaults()
	ctx = audit.WithOrg(ctx, h.OrgID)
	org, err := m.Store.Org(ctx, h.OrgID)
	if err != nil {
		return err
	}
	ref := keyring.CustomerRef(org)
	target := h.RotateTo
	var done int
	for {
		keys, err := m.Store.CustomerKeysNotAt(ctx, h.OrgID, target, "", 100)
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			break
		}
		if err := m.Store.RenewRotation(ctx, h.OrgID, m.Owner, 2*m.Lease); err != nil {
			return err
		}
		// Before every page (so on start and on resume too): is the target
		// still the newest version, and one that can unwrap what it wraps?
		if err := m.checkTarget(ctx, ref, target); err != nil {
			return err
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		sem := make(chan struct{}, 4)
		for _, dk := range keys {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				err := m.rewrapToNewest(ctx, ref, dk, target)
				mu.Lock()
				defer mu.Unlock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if err == nil {
					done++
				}
			}()
		}
		wg.Wait()
		if firstErr != nil {
			return firstErr
		}
		if m.Metrics != nil {
			m.Metrics.RewrappedKeys.WithLabelValues("rotation").Add(float64(len(keys)))
		}
	}
	if err := m.Store.FinishRotation(ctx, h.OrgID, m.Owner, target); err != nil {
		return err
	}
	m.Audit.Record(ctx, "rotation", ref, target, "ok", "every data key is wrapped by the new version")
	m.Log.Info("key rotation finished", "org", h.OrgID, "version", target, "rewrapped", done)
	return nil
}

func (m *Monitor) rewrapToNewest(ctx context.Context, ref kms.KeyRef, dk store.DataKey, target string) error {
	dek, err := m.Keyring.Unwrap(ctx, dk)
	if err != nil {
		return err
	}
	defer clear(dek)
	var next store.DataKey
	err = m.paced(ctx, func() error {
		var err error
		next, err = m.Keyring.WrapCustomer(ctx, ref, dk, dek)
		return err
	})
	if err != nil {
		return err
	}
	if next.KEKVersion != target {
		return errTargetMoved
	}
	// The proof: the new wrapping must unwrap to the data key before the
	// old one is replaced (Key Vault wraps under a disabled key too).
	err = m.paced(ctx, func() error { return m.Keyring.ProveCustomer(ctx, ref, next, dek) })
	if err != nil {
		return fmt.Errorf("prove the new wrapping of data key %s: %w", dk.ID, err)
	}
	err = m.Store.ReplaceVersion(ctx, dk.ID, dk.KEKVersion, next)
	if errors.Is(err, store.ErrWrappingChanged) {
		return nil // someone else moved it
	}
	return err
}

// checkTarget reads the key and returns why data keys must not be
// re-wrapped to target now: a newer version (errTargetMoved), or a newest
// version that is disabled, outside its dates, without wrapKey or unwrapKey,
// or not RSA of at least kms.MinRSABits bits.
func (m *Monitor) checkTarget(ctx context.Context, ref kms.KeyRef, target string) error {
	var info kms.KeyInfo
	err := m.paced(ctx, func() error {
		var err error
		info, err = m.Provider.Describe(ctx, ref)
		return err
	})
	if err != nil {
		return err
	}
	if info.Version != target {
		return errTargetMoved
	}
	if err := kms.CheckUsable(ref, info, m.Now()); err != nil {
		return err
	}
	if (info.KeyType != "RSA" && info.KeyType != "RSA-HSM") || info.Bits < kms.MinRSABits {
		return fmt.Errorf("key %s version %s is %s of %d bits; an RSA key of at least %d bits is required", ref, info.Version, info.KeyType, info.Bits, kms.MinRSABits)
	}
	return nil
}

// paced runs call again while the vault throttles it, after the vault's
// Retry-After or, when it gave none, Key Vault's documented backoff of 1, 2,
// 4, 8, 16 s (then 16 s). It ends with ctx.
func (m *Monitor) paced(ctx context.Context, call func() error) error {
	for tries := 0; ; tries++ {
		err := call()
		var ke *kms.Error
		if !errors.As(err, &ke) || ke.Kind != kms.KindThrottled {
			return err
		}
		wait := ke.RetryAfter
		if wait <= 0 {
			wait = time.Second << min(tries, 4)
		}
		if err := m.Sleep(ctx, wait); err != nil {
			return err
		}
	}
}
