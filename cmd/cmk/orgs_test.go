package main

import (
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
)

// TestLeaseText: `cmk orgs` says which worker holds a job and until when,
// that a lease left by a stopped worker has expired, and nothing for a job
// no worker holds.
func TestLeaseText(t *testing.T) {
	now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	later, earlier := now.Add(20*time.Second), now.Add(-3*time.Second)
	for _, c := range []struct {
		job  cmkapi.OperatorJob
		want string
	}{
		{cmkapi.OperatorJob{}, ""},
		{cmkapi.OperatorJob{LeaseHolder: "web-1/4242/0/ab12cd34", LeaseUntil: &later}, ", held by web-1/4242/0/ab12cd34 until " + clock(later)},
		{cmkapi.OperatorJob{LeaseHolder: "web-2/77/1/ffee0011", LeaseUntil: &earlier}, ", lease of web-2/77/1/ffee0011 expired " + clock(earlier)},
	} {
		if got := leaseText(&c.job, now); got != c.want {
			t.Errorf("leaseText(%+v) = %q, want %q", c.job, got, c.want)
		}
	}
}
