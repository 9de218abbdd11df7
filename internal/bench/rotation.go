package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/monitor"
)

// RotationConfig sizes the rotation-detection measurement.
type RotationConfig struct {
	Common
	// Trials of each side. Default 20.
	Trials int
	// Interval between scheduled key checks. Default the monitor's
	// (monitor.DefaultInterval, 30 s), so the polling side is what a
	// deployment with events switched off sees.
	Interval time.Duration
	// Poll is the pause between two reads of the org's health. Default 2 ms.
	Poll time.Duration
	// Seed picks the moments of rotating within the check cycle; 0 = random.
	Seed uint64
}

func (c *RotationConfig) defaults() {
	if c.Trials == 0 {
		c.Trials = 20
	}
	if c.Interval == 0 {
		c.Interval = monitor.DefaultInterval
	}
	if c.Poll == 0 {
		c.Poll = 2 * time.Millisecond
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64()
	}
}

// RotationResult is the time from a new key version in the vault to the
// moment cmk has picked it up (the org's health names it as the version to
// re-wrap to), with Key Vault's events delivered and with them stopped.
type RotationResult struct {
	Trials          int     `json:"trials"`
	IntervalSeconds float64 `json:"intervalSeconds"`
	Event           Latency `json:"event"`
	Polling         Latency `json:"polling"`
	// Misses are trials not picked up within two intervals and 5 s.
	EventMisses   int     `json:"eventMisses"`
	PollingMisses int     `json:"pollingMisses"`
	Seconds       float64 `json:"seconds"`
	Seed          uint64  `json:"seed"`
}

// Rotation runs the monitor at cfg.Interval with the demo vault's events
// subscribed, and alternates trials: rotate the demo key with deliveries
// on, then with them stopped, each time timing the first read of the
// org's health that names the new version, and waiting for the re-wrap to
// finish before the next. Each rotation comes at a random moment of the
// check cycle (a trial with events just after a check would otherwise
// leave the next polling trial a whole interval to wait); trials with
// events start at least the monitor's nudge gap apart, so each measures a
// first event.
func Rotation(ctx context.Context, cfg RotationConfig) (*RotationResult, error) {
	cfg.defaults()
	w, _, done, err := enabledWorld(ctx, cfg.Common, "rotation", devenv.Options{Monitor: monitor.Config{Interval: cfg.Interval}})
	if err != nil {
		return nil, err
	}
	defer done()
	env := w.env
	wait := 2*cfg.Interval + 5*time.Second

	// pickedUp rotates the key and returns how long after the new version
	// the org's health named it (-1 when not within wait).
	pickedUp := func() (time.Duration, error) {
		version, err := env.Emu.RotateKey(devenv.Vault, devenv.KeyName)
		if err != nil {
			return 0, err
		}
		// The vault published the event as it added the version, just
		// before RotateKey returned.
		start := time.Now()
		for {
			h, err := env.Svc.Store.Health(ctx, env.Org)
			if err != nil {
				return 0, err
			}
			if h.RotateTo == version || h.KeyVersion == version {
				return time.Since(start), nil
			}
			if time.Since(start) > wait {
				return -1, nil
			}
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(cfg.Poll):
			}
		}
	}
	// finished waits for the re-wrap, so the next trial starts from rest.
	finished := func() error {
		deadline := time.Now().Add(wait)
		for {
			h, err := env.Svc.Store.Health(ctx, env.Org)
			if err != nil {
				return err
			}
			if h.RotateTo == "" {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("rotation: the re-wrap to %s did not finish within %s", h.RotateTo, wait)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
	}

	res := &RotationResult{Trials: cfg.Trials, IntervalSeconds: cfg.Interval.Seconds(), Seed: cfg.Seed}
	rng := rand.New(rand.NewPCG(cfg.Seed, 2))
	pause := func(least time.Duration) error {
		d := max(time.Duration(rng.Int64N(int64(cfg.Interval))), least)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	var event, polling []time.Duration
	var lastEvent time.Time
	start := time.Now()
	for trial := range cfg.Trials {
		if err := pause(time.Until(lastEvent.Add(monitor.DefaultNudgeGap))); err != nil {
			return nil, err
		}
		env.Emu.SetEventDelivery(azemu.EventDelivery{})
		de, err := pickedUp()
		if err != nil {
			return nil, err
		}
		lastEvent = time.Now()
		if de < 0 {
			res.EventMisses++
		} else {
			event = append(event, de)
		}
		if err := finished(); err != nil {
			return nil, err
		}

		if err := pause(0); err != nil {
			return nil, err
		}
		env.Emu.SetEventDelivery(azemu.EventDelivery{Stopped: true})
		d, err := pickedUp()
		if err != nil {
			return nil, err
		}
		if d < 0 {
			res.PollingMisses++
		} else {
			polling = append(polling, d)
		}
		if err := finished(); err != nil {
			return nil, err
		}
		cfg.progress("rotation: %d of %d trials (event %s, polling %s)", trial+1, cfg.Trials, de.Round(time.Millisecond), d.Round(time.Millisecond))
	}
	env.Emu.SetEventDelivery(azemu.EventDelivery{})
	res.Seconds = time.Since(start).Seconds()
	res.Event, res.Polling = latencyOf(event), latencyOf(polling)
	return res, nil
}

func (r *RotationResult) String() string {
	t := newTable(fmt.Sprintf("rotation detection: %d trials each, new key version → picked up; checks every %.0f s", r.Trials, r.IntervalSeconds))
	t.row("", "p50", "p99", "max", "missed")
	ms := func(us float64) string { return fmt.Sprintf("%.0f ms", us/1e3) }
	t.row("Key Vault event (Event Grid)", ms(r.Event.P50us), ms(r.Event.P99us), ms(r.Event.Maxus), fmt.Sprint(r.EventMisses))
	t.row("polling only (deliveries stopped)", ms(r.Polling.P50us), ms(r.Polling.P99us), ms(r.Polling.Maxus), fmt.Sprint(r.PollingMisses))
	return t.String()
}
