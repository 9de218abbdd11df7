package azemu

import (
	"fmt"
	"strings"
	"time"
)

// Throttle is a vault's request limit: at most Limit data-plane requests per
// fixed Window, the others answered 429 Throttled. Limit 0 turns it off.
//
// Key Vault's 429 was captured without a Retry-After header
// (azure-errors.md, Key Vault row 7), so none is sent by default and a
// client has to fall back to the documented 1, 2, 4, 8, 16 s backoff.
// RetryAfter adds the header (whole seconds until the window ends), for
// tests of a client that honours it.
type Throttle struct {
	Limit      int           `json:"limit"`
	Window     time.Duration `json:"window"`
	RetryAfter bool          `json:"retryAfter,omitempty"`
}

// SetVaultThrottle sets the vault's throttle and starts a new window.
func (e *Emulator) SetVaultThrottle(vault string, t Throttle) error {
	if t.Limit < 0 || t.Window < 0 {
		return fmt.Errorf("%w: throttle limit %d per %s: neither may be negative (limit 0 turns throttling off)", ErrInvalid, t.Limit, t.Window)
	}
	if t.Limit > 0 && t.Window == 0 {
		return fmt.Errorf("%w: throttle limit %d needs a window (e.g. 10s)", ErrInvalid, t.Limit)
	}
	return e.mutate(func() error {
		vs := e.st.Vaults[strings.ToLower(vault)]
		if vs == nil {
			return fmt.Errorf("%w: vault %q", ErrNotFound, vault)
		}
		if t.Limit == 0 {
			t = Throttle{}
		}
		vs.ThrottleLimit, vs.ThrottleWindow, vs.ThrottleRetryAfter = t.Limit, t.Window, t.RetryAfter
		delete(e.windows, vs.Name)
		return nil
	})
}
