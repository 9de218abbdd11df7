package service

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/metrics"
	"github.com/cmk-project/cmk/internal/store"
)

func TestCountJobs(t *testing.T) {
	s := &Service{Metrics: metrics.New()}
	now := time.Unix(1_800_000_000, 0)
	s.countJobs([]*store.Config{
		{Status: cmkapi.StatusRunning, CreatedAt: now.Add(-2 * time.Hour)},
		{Status: cmkapi.StatusUpdating, ProgressDone: 30, ProgressTotal: 100, CreatedAt: now.Add(-time.Minute)},
		{Status: cmkapi.StatusUpdating, ProgressDone: 5, ProgressTotal: 10, CreatedAt: now},
	}, now)
	for _, c := range []struct {
		name string
		got  float64
		want float64
	}{
		{"jobs RUNNING", testutil.ToFloat64(s.Metrics.Jobs.WithLabelValues(cmkapi.StatusRunning)), 1},
		{"jobs UPDATE_EXISTING_RESOURCES", testutil.ToFloat64(s.Metrics.Jobs.WithLabelValues(cmkapi.StatusUpdating)), 2},
		{"jobs NEW", testutil.ToFloat64(s.Metrics.Jobs.WithLabelValues(cmkapi.StatusNew)), 0},
		{"data keys done", testutil.ToFloat64(s.Metrics.JobDataKeys.WithLabelValues("done")), 35},
		{"data keys total", testutil.ToFloat64(s.Metrics.JobDataKeys.WithLabelValues("total")), 110},
		{"oldest job", testutil.ToFloat64(s.Metrics.OldestJobSeconds), 7200},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	s.countJobs(nil, now)
	if v := testutil.ToFloat64(s.Metrics.Jobs.WithLabelValues(cmkapi.StatusRunning)); v != 0 {
		t.Errorf("jobs RUNNING after all finished = %v, want 0", v)
	}
	if v := testutil.ToFloat64(s.Metrics.OldestJobSeconds); v != 0 {
		t.Errorf("oldest job after all finished = %v, want 0", v)
	}
}
