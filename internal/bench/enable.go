package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/cmk-project/cmk/internal/devenv"
)

// EnableConfig sizes the enablement measurement.
type EnableConfig struct {
	Common
	// Sandboxes of the org, each with two stores (lake and profile), so
	// two data keys to re-wrap per sandbox. Default 1000.
	Sandboxes int
	// The vault admits ThrottleLimit key operations per ThrottleWindow, a
	// fixed window, like a busy Key Vault. Default 1000 per 10 s.
	ThrottleLimit  int
	ThrottleWindow time.Duration
}

func (c *EnableConfig) defaults() {
	if c.Sandboxes == 0 {
		c.Sandboxes = 1000
	}
	if c.ThrottleLimit == 0 {
		c.ThrottleLimit = 1000
	}
	if c.ThrottleWindow == 0 {
		c.ThrottleWindow = 10 * time.Second
	}
}

// EnableResult is one enablement job timed against the throttle.
type EnableResult struct {
	Sandboxes      int     `json:"sandboxes"`
	ThrottleLimit  int     `json:"throttleLimit"`
	ThrottleWindow float64 `json:"throttleWindowSeconds"`
	WallSeconds    float64 `json:"wallSeconds"`
	// BoundSeconds is the least time the throttle allows for the key
	// operations the job made: a fixed window admits ThrottleLimit of them,
	// so K operations need floor((K-1)/limit) full windows.
	BoundSeconds float64  `json:"boundSeconds"`
	Ratio        float64  `json:"ratio"` // wall / bound
	KeyOps       VaultOps `json:"keyOps"`
	// Throttled are the 429 answers and their share of all answers.
	Throttled      int     `json:"throttled"`
	ThrottledShare float64 `json:"throttledShare"`
	SetupSeconds   float64 `json:"setupSeconds"` // creating the org and sandboxes, not timed
}

// Enable enables CMK for an org with cfg.Sandboxes sandboxes against a
// throttled vault and times the job from the POST to COMPLETED.
func Enable(ctx context.Context, cfg EnableConfig) (*EnableResult, error) {
	cfg.defaults()
	dir, cleanup, err := cfg.workDir("enable")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	names := make([]string, cfg.Sandboxes)
	for i := range names {
		names[i] = fmt.Sprintf("sb%04d", i)
	}
	cfg.progress("enable: creating an org with %d sandboxes", cfg.Sandboxes)
	setup := time.Now()
	w, err := startWorld(ctx, cfg.Common, dir, devenv.Options{Sandboxes: names, NoMonitor: true,
		// Pick the job up at once. Other measurements keep the default
		// poll: a fast one costs about 5% of a core in the background.
		Poll: 10 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	defer w.close()
	res := &EnableResult{Sandboxes: cfg.Sandboxes, ThrottleLimit: cfg.ThrottleLimit, ThrottleWindow: cfg.ThrottleWindow.Seconds(),
		SetupSeconds: time.Since(setup).Seconds()}

	w.env.Emu.SetThrottle(devenv.Vault, cfg.ThrottleLimit, cfg.ThrottleWindow)
	before := vaultOps(w.env.Emu)
	cfg.progress("enable: enabling CMK (vault throttled at %d ops per %s)", cfg.ThrottleLimit, cfg.ThrottleWindow)
	start := time.Now()
	if err := w.startEnable(ctx, "", "Bench", ""); err != nil {
		return nil, err
	}
	if err := w.waitEnabled(ctx, "", "Bench", 10*time.Millisecond); err != nil {
		return nil, err
	}
	wall := time.Since(start)
	ops := vaultOps(w.env.Emu).sub(before)
	res.KeyOps = ops
	res.WallSeconds = wall.Seconds()
	res.BoundSeconds = throttleBound(ops.Total(), cfg.ThrottleLimit, cfg.ThrottleWindow).Seconds()
	if res.BoundSeconds > 0 {
		res.Ratio = res.WallSeconds / res.BoundSeconds
	}
	res.Throttled = ops.Throttled
	if n := ops.Total() + ops.Throttled; n > 0 {
		res.ThrottledShare = float64(ops.Throttled) / float64(n)
	}
	return res, nil
}

// throttleBound is the least time a fixed window of limit operations per
// window needs to admit ops operations: the first window starts with the
// first operation, so only the windows after it count.
func throttleBound(ops, limit int, window time.Duration) time.Duration {
	if ops <= 0 {
		return 0
	}
	return time.Duration((ops-1)/limit) * window
}

func (r *EnableResult) String() string {
	t := newTable(fmt.Sprintf("enable: org with %d sandboxes (%d data keys), vault throttled at %d key ops per %.0f s",
		r.Sandboxes, 2*r.Sandboxes, r.ThrottleLimit, r.ThrottleWindow))
	t.row("wall time", fmt.Sprintf("%.2f s", r.WallSeconds))
	t.row("throttle lower bound", fmt.Sprintf("%.2f s", r.BoundSeconds), "floor((K-1)/L)·W with K = key ops")
	t.row("ratio wall / bound", fmt.Sprintf("%.3f", r.Ratio))
	t.row("key ops (K)", r.KeyOps.String())
	t.row("429 answers", fmt.Sprintf("%d (%.1f%% of answers)", r.Throttled, 100*r.ThrottledShare))
	t.row("setup (not timed)", fmt.Sprintf("%.1f s", r.SetupSeconds))
	return t.String()
}
