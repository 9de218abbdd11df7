package platformkey

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/store"
	"github.com/cmk-project/cmk/internal/systemkey"
)

// Rewrapper defaults.
const (
	// DefaultEvery is the pause between passes: how soon a replica takes a
	// generation another replica (or the rotate command) added, and how
	// soon the re-wrap after a rotation starts.
	DefaultEvery = 10 * time.Second
	// DefaultLease is how long a pass holds the re-wrap lease between
	// renewals (each page renews it); a crashed holder's work resumes on
	// another replica after it runs out.
	DefaultLease = time.Minute
	// DefaultPage is how many data keys one page re-wraps: one read, then
	// one compare-and-swap update per key.
	DefaultPage = 200
	// DescribeEvery is how often the platform key is described to find a
	// new version to re-wrap the generations under: one KMS call.
	DescribeEvery = 5 * time.Minute
	// CountEvery is how often the lease holder counts the data keys per
	// generation (the metric) when nothing moved: a scan of the index of
	// system-wrapped data keys, too much for every pass.
	CountEvery = time.Minute
)

// LeaseName is the re-wrap lease's name in the state store.
const LeaseName = "rewrap"

// Rewrapper moves system-managed data keys from older generations to the
// current one, and the generations to the platform key's newest version.
type Rewrapper struct {
	Ring  *Ring
	Owner string // this replica's lease owner id
	Every time.Duration
	Lease time.Duration
	Page  int
	// OnCounts, when set, gets the data keys per generation after each
	// pass (the metric).
	OnCounts func(map[string]int)

	lastDescribe, lastCount time.Time
}

// Run makes passes until ctx ends. Errors are logged; the next pass
// retries.
func (w *Rewrapper) Run(ctx context.Context) {
	every := w.Every
	if every <= 0 {
		every = DefaultEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := w.Pass(ctx); err != nil && ctx.Err() == nil {
			w.Ring.cfg.Log.Error("platform key: re-wrap pass", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Pass reloads the generations, and, when it gets the lease, re-wraps what
// is not under the current generation and retires the generations left
// empty. It reports how many data keys it re-wrapped.
func (w *Rewrapper) Pass(ctx context.Context) (int, error) {
	r := w.Ring
	if r.file != nil {
		return 0, nil
	}
	if err := r.Reload(ctx); err != nil {
		return 0, err
	}
	lease := w.Lease
	if lease <= 0 {
		lease = DefaultLease
	}
	held, err := r.cfg.Store.ClaimPlatformLease(ctx, LeaseName, w.Owner, lease)
	if err != nil || !held {
		return 0, err
	}
	defer r.cfg.Store.ReleasePlatformLease(context.WithoutCancel(ctx), LeaseName, w.Owner)
	if now := r.now(); now.Sub(w.lastDescribe) >= DescribeEvery {
		if _, err := r.RewrapGenerations(ctx); err != nil {
			r.cfg.Log.Error("platform key: re-wrap generations under the newest key version", "err", err)
		} else {
			w.lastDescribe = now
		}
	}
	cur := r.Current()
	total, retired := 0, false
	for _, g := range r.Generations() {
		if g.ID == cur.ID() {
			continue
		}
		// One indexed lookup per older generation: is anything left?
		left, err := r.cfg.Store.SystemKeysUnder(ctx, g.ID, "", 1)
		if err != nil {
			return total, err
		}
		if len(left) > 0 {
			n, err := w.drain(ctx, g.ID, lease)
			total += n
			if err != nil {
				return total, err
			}
			if left, err = r.cfg.Store.SystemKeysUnder(ctx, g.ID, "", 1); err != nil {
				return total, err
			}
		}
		if len(left) == 0 && g.RetiredAt.IsZero() {
			if err := r.cfg.Store.RetirePlatformGeneration(ctx, g.ID, r.now()); err != nil {
				return total, err
			}
			r.cfg.Log.Info("system key generation retired: no data key left under it", "generation", g.ID)
			retired = true
		}
	}
	if retired {
		if err := r.Reload(ctx); err != nil {
			return total, err
		}
	}
	if now := r.now(); total > 0 || retired || now.Sub(w.lastCount) >= CountEvery {
		w.lastCount = now
		return total, w.count(ctx)
	}
	return total, nil
}

// count counts the data keys per generation for OnCounts, and logs data
// keys under a system key that is no stored generation (a key file never
// imported: they cannot open).
func (w *Rewrapper) count(ctx context.Context) error {
	r := w.Ring
	counts, err := r.cfg.Store.CountSystemKeys(ctx)
	if err != nil {
		return err
	}
	for ref, n := range counts {
		if r.held(ref) == nil && n > 0 {
			r.cfg.Log.Error("platform key: data keys under a system key that is not a stored generation; import its key file with platform-key migrate --from-file", "system_key", ref, "data_keys", n)
		}
	}
	if w.OnCounts != nil {
		w.OnCounts(counts)
	}
	return nil
}

// drain re-wraps every data key under generation from to the current
// generation, page by page, renewing the lease before each page.
func (w *Rewrapper) drain(ctx context.Context, from string, lease time.Duration) (int, error) {
	r := w.Ring
	old, err := r.Key(ctx, from)
	if err != nil {
		return 0, err
	}
	cur := r.Current()
	page := w.Page
	if page <= 0 {
		page = DefaultPage
	}
	done, after := 0, ""
	for {
		if held, err := r.cfg.Store.ClaimPlatformLease(ctx, LeaseName, w.Owner, lease); err != nil {
			return done, err
		} else if !held {
			return done, errors.New("the re-wrap lease was lost")
		}
		keys, err := r.cfg.Store.SystemKeysUnder(ctx, from, after, page)
		if err != nil {
			return done, err
		}
		for _, dk := range keys {
			after = dk.ID
			n, err := rewrapOne(ctx, r.cfg.Store, old, cur, dk)
			if err != nil {
				return done, err
			}
			done += n
		}
		if len(keys) < page {
			if done > 0 {
				r.cfg.Log.Info("platform key: data keys re-wrapped", "from", from, "to", cur.ID(), "data_keys", done)
			}
			return done, nil
		}
	}
}

// rewrapOne moves one data key from generation old to cur.
func rewrapOne(ctx context.Context, st Store, old, cur *systemkey.Key, dk store.DataKey) (int, error) {
	dek, err := keyring.UnwrapUnder(old, dk)
	if err != nil {
		return 0, fmt.Errorf("data key %s under system key generation %s: %w", dk.ID, old.ID(), err)
	}
	defer clear(dek)
	to, err := keyring.WrapUnder(cur, dk, dek)
	if err != nil {
		return 0, err
	}
	err = st.ReplaceSystemWrapping(ctx, dk.ID, old.ID(), to)
	if errors.Is(err, store.ErrWrappingChanged) {
		return 0, nil // the org moved to its own key, or another holder did it
	}
	if err != nil {
		return 0, err
	}
	return 1, nil
}
