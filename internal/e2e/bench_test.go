package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/devenv"
)

// BenchmarkEnable1000Sandboxes enables CMK for an org with 1,000 sandboxes
// (2 stores each, so 2,000 data keys to re-wrap) against the emulator set to
// throttle at 1,000 key operations per 10 s, like a busy Key Vault.
//
// It reports the wall time of the job, the throttle's lower bound for the
// key operations the job made (a fixed 10-s window admits 1,000 of them, so
// N operations need at least floor((N-1)/1000) full windows), their ratio,
// and the share of calls answered 429.
//
//	go test -run '^$' -bench Enable1000 -benchtime 1x ./internal/e2e/
func BenchmarkEnable1000Sandboxes(b *testing.B) {
	const (
		sandboxes = 1000
		limit     = 1000
		window    = 10 * time.Second
	)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		var names []string
		for j := range sandboxes {
			names = append(names, fmt.Sprintf("sb%04d", j))
		}
		env, err := devenv.Start(context.Background(), devenv.Options{DataDir: b.TempDir(), Sandboxes: names, Poll: 10 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		env.Emu.SetThrottle(devenv.Vault, limit, window)
		c := &client{t: &testing.T{}, base: env.Svc.URL(), token: env.Token, key: env.APIKey, org: env.Org}
		before := env.Emu.Stats().Vaults[devenv.Vault]

		b.StartTimer()
		start := time.Now()
		if code, body := c.do("POST", configPath, configBody(env.Org, "Bench", env.KeyIdentifier)); code != 201 {
			b.Fatalf("POST config = %d %v", code, body)
		}
		var status string
		for {
			_, st := c.do("GET", configPath+"/Bench?configType=BYOK_CONFIG", nil)
			status = st["status"].(string)
			if status == "COMPLETED" || status == "FAILED" {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		wall := time.Since(start)
		b.StopTimer()
		if status != "COMPLETED" {
			b.Fatalf("job ended %s", status)
		}
		after := env.Emu.Stats().Vaults[devenv.Vault]
		ops := (after.Get + after.Wrap + after.Unwrap) - (before.Get + before.Wrap + before.Unwrap)
		throttled := after.Throttled - before.Throttled
		bound := time.Duration((ops-1)/limit) * window
		b.ReportMetric(wall.Seconds(), "wall-s")
		b.ReportMetric(bound.Seconds(), "bound-s")
		b.ReportMetric(wall.Seconds()/bound.Seconds(), "ratio")
		b.ReportMetric(float64(ops), "key-ops")
		b.ReportMetric(float64(throttled), "429s")
		b.ReportMetric(100*float64(throttled)/float64(ops+throttled), "429-%")
		env.Close()
	}
}
