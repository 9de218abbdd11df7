package azemu

import (
	"fmt"
	"strings"
	"time"
)

// Propagation delay. In Azure a role assignment, its removal, an admin
// consent and its revocation are written at once but reach Key Vault and the
// token service only minutes later: Key Vault's ForbiddenByRbac message asks
// the caller to "observe propagation time" (azure-errors.md, Key Vault
// row 3). With a delay set (Options.PropagationDelay, SetPropagationDelay),
// each such change takes effect for the data plane and the token endpoint
// only after the delay, in both directions; the admin API and GetVault /
// ServicePrincipal show the written state at once, like the portal. With
// no delay (the default) every change takes effect at once.
//
// Changes not yet in effect live in memory only; a restarted emulator
// applies them at once.

// propChange is one change of a setting: the value it had before, which
// stays in effect until at.
type propChange struct {
	before string
	at     time.Time
}

// recordChangeLocked notes that the setting key changes from before (now),
// to take effect after the propagation delay. e.mu must be held.
func (e *Emulator) recordChangeLocked(key, before, after string) {
	if e.propDelay <= 0 || before == after {
		return
	}
	now := e.now()
	e.pruneChangesLocked(key, now)
	e.pending[key] = append(e.pending[key], propChange{before: before, at: now.Add(e.propDelay)})
}

// effectiveLocked is the value of the setting key as the services see it at
// now: the value before the oldest change not yet in effect, or current.
// e.mu must be held.
func (e *Emulator) effectiveLocked(key, current string) string {
	now := e.now()
	e.pruneChangesLocked(key, now)
	if ch := e.pending[key]; len(ch) > 0 {
		return ch[0].before
	}
	return current
}

func (e *Emulator) pruneChangesLocked(key string, now time.Time) {
	ch := e.pending[key]
	i := 0
	for i < len(ch) && !now.Before(ch[i].at) {
		i++
	}
	if i == len(ch) {
		delete(e.pending, key)
		return
	}
	e.pending[key] = ch[i:]
}

// SetPropagationDelay sets how long role assignment and consent changes
// take to reach the data plane and the token endpoint; 0 makes them take
// effect at once, including those still on their way.
func (e *Emulator) SetPropagationDelay(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("%w: propagation delay %s is negative (0 switches it off)", ErrInvalid, d)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.propDelay = d
	if d == 0 {
		clear(e.pending)
	}
	return nil
}

// PropagationDelay returns the current propagation delay.
func (e *Emulator) PropagationDelay() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.propDelay
}

func roleKey(vault, oid, role string) string {
	return "role\x00" + strings.ToLower(vault) + "\x00" + strings.ToLower(oid) + "\x00" + role
}

func consentKey(tenant, clientID string) string {
	return "consent\x00" + strings.ToLower(tenant) + "\x00" + strings.ToLower(clientID)
}

// present is the value of a role assignment setting that exists.
const present = "assigned"

func presence(ok bool) string {
	if ok {
		return present
	}
	return ""
}

// effectiveServicePrincipalLocked is the object id of the app's service
// principal in the tenant as the token endpoint sees it ("" for none).
// e.mu must be held.
func (e *Emulator) effectiveServicePrincipalLocked(t *tenantState, clientID string) string {
	return e.effectiveLocked(consentKey(t.ID, clientID), t.ServicePrincipals[strings.ToLower(clientID)])
}
