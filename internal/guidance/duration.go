package guidance

import (
	"fmt"
	"strings"
	"time"
)

// Duration writes d for a person: "30 seconds", "10 minutes", "1 hour 30
// minutes", "2 days". It keeps the two largest units and drops the rest
// (a grace of 10m0.5s reads "10 minutes"); below a second it writes
// milliseconds.
func Duration(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	if d < time.Second {
		return plural(int64(d/time.Millisecond), "millisecond")
	}
	units := []struct {
		size time.Duration
		name string
	}{{24 * time.Hour, "day"}, {time.Hour, "hour"}, {time.Minute, "minute"}, {time.Second, "second"}}
	var parts []string
	for _, u := range units {
		if n := int64(d / u.size); n > 0 {
			parts = append(parts, plural(n, u.name))
			d -= time.Duration(n) * u.size
		} else if len(parts) > 0 {
			break // "1 hour 5 seconds" would hide that minutes were zero; stop at the gap
		}
		if len(parts) == 2 {
			break
		}
	}
	return strings.Join(parts, " ")
}

func plural(n int64, unit string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", unit)
	}
	return fmt.Sprintf("%d %ss", n, unit)
}
