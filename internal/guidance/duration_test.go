package guidance

import (
	"testing"
	"time"
)

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0 milliseconds"},
		{250 * time.Millisecond, "250 milliseconds"},
		{time.Second, "1 second"},
		{30 * time.Second, "30 seconds"},
		{90 * time.Second, "1 minute 30 seconds"},
		{10 * time.Minute, "10 minutes"},
		{10*time.Minute + 500*time.Millisecond, "10 minutes"},
		{time.Hour + 30*time.Minute + 10*time.Second, "1 hour 30 minutes"},
		{time.Hour + 5*time.Second, "1 hour"},
		{48 * time.Hour, "2 days"},
		{-2 * time.Minute, "2 minutes"},
	} {
		if got := Duration(tc.d); got != tc.want {
			t.Errorf("Duration(%s) = %q, want %q", tc.d, got, tc.want)
		}
	}
}
