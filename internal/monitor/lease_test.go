package monitor

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/store"
)

// lostAnswer is a store whose first ClaimDueChecks commits its claim but
// fails, as when the database goes away between the commit and the answer.
type lostAnswer struct {
	*store.Store
	lost atomic.Bool
}

func (s *lostAnswer) ClaimDueChecks(ctx context.Context, owner string, lease time.Duration, limit int) ([]*store.Health, error) {
	due, err := s.Store.ClaimDueChecks(ctx, owner, lease, limit)
	if err == nil && !s.lost.Swap(true) {
		return nil, errors.New("read answer: connection reset by peer")
	}
	return due, err
}

// TestStrandedLeaseReleased: after a claim whose answer was lost, the
// monitor gives back the lease it may hold and checks the org at once,
// not when the lease (at least 30 s) runs out.
func TestStrandedLeaseReleased(t *testing.T) {
	e := newCheckEnv(t)
	st := &lostAnswer{Store: e.st}
	e.m.Store = st
	e.m.Interval = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { e.m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for {
		h, err := e.st.Health(context.Background(), e.org)
		if err != nil {
			t.Fatal(err)
		}
		if st.lost.Load() && !h.LastCheck.IsZero() {
			return
		}
		if ctx.Err() != nil {
			t.Fatal("no check saved within 5 s of a claim whose answer was lost")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
