package control

import (
	"context"
	"strings"
)

// Key Vault event types cmk acts on (Event Grid's names). Every other type
// is accepted and ignored.
const (
	EventKeyNewVersionCreated     = "Microsoft.KeyVault.KeyNewVersionCreated"
	EventKeyNearExpiry            = "Microsoft.KeyVault.KeyNearExpiry"
	EventKeyExpired               = "Microsoft.KeyVault.KeyExpired"
	EventVaultAccessPolicyChanged = "Microsoft.KeyVault.VaultAccessPolicyChanged"
)

// KeyEvent is a Key Vault event whose sender was verified, reduced to what
// cmk uses: its type and the key it is about, parsed with the host
// allowlist (package keyid). KeyName is "" for an event about the vault.
type KeyEvent struct {
	Type     string
	VaultURL string
	KeyName  string
}

// Acts reports whether cmk acts on events of type typ.
func Acts(typ string) bool {
	switch typ {
	case EventKeyNewVersionCreated, EventKeyNearExpiry, EventKeyExpired, EventVaultAccessPolicyChanged:
		return true
	}
	return false
}

// KeyEvents asks the monitor to check now every org using a key the events
// are about. An event only triggers: the check finds out what changed and
// decides, exactly as a scheduled one (a new version starts its re-wrap at
// once). The monitor coalesces and spaces the checks of an org, so a burst
// of events costs the vault a bounded number of calls. The answer is the
// same whether or not any org uses the key: only a failure of the state
// store is an error.
func (s *Service) KeyEvents(ctx context.Context, events []KeyEvent) error {
	seen := map[string]bool{}
	for _, ev := range events {
		if !Acts(ev.Type) {
			continue
		}
		k := strings.ToLower(ev.VaultURL + "/" + ev.KeyName)
		if seen[k] {
			continue
		}
		seen[k] = true
		orgs, err := s.Store.OrgsUsingKey(ctx, ev.VaultURL, ev.KeyName)
		if err != nil {
			return err
		}
		for _, org := range orgs {
			s.Monitor.Nudge(org)
		}
	}
	return nil
}
