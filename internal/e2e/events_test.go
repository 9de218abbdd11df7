package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/monitor"
	"github.com/cmk-project/cmk/internal/store"
)

// eventEnv starts the local world with the demo org on its key and the
// scheduled checks interval long enough that only an event (or the given
// interval) can pick up a change, and waits for the first check.
func eventEnv(t *testing.T, m monitor.Config) (*devenv.Env, *client) {
	t.Helper()
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: t.TempDir(), Poll: 50 * time.Millisecond, RateLimits: generousLimits, Monitor: m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	c := adminClient(t, env, env.Org)
	enable(t, env, c)
	waitFor(t, "the first key check", 10*time.Second, func() bool {
		h, err := env.Svc.Store.Health(context.Background(), env.Org)
		return err == nil && !h.LastCheck.IsZero() && h.RotateTo == ""
	})
	return env, c
}

// rewrapped reports whether every customer-wrapped data key of the org is at
// version.
func rewrapped(t *testing.T, env *devenv.Env, version string) bool {
	keys, err := env.Svc.Store.CustomerKeysNotAt(context.Background(), env.Org, version, "", 1)
	if err != nil {
		t.Fatal(err)
	}
	return len(keys) == 0
}

// TestRotationPickedUpByEvent: with scheduled checks ten minutes apart, a
// new key version is found and its re-wrap started within a second of the
// vault's event, and finished soon after.
func TestRotationPickedUpByEvent(t *testing.T) {
	env, _ := eventEnv(t, monitor.Config{Interval: 10 * time.Minute})
	ctx := context.Background()
	// The vault publishes the event as it adds the version, just before
	// RotateKey returns (after making the new key pair, which takes a
	// while): the second runs from there.
	version, err := env.Emu.RotateKey(devenv.Vault, devenv.KeyName)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var started time.Duration
	for deadline := start.Add(time.Second); ; {
		h, err := env.Svc.Store.Health(ctx, env.Org)
		if err != nil {
			t.Fatal(err)
		}
		if h.RotateTo == version || h.KeyVersion == version {
			started = time.Since(start)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rotation to %s was not picked up within 1 s of the event (events %+v)", version, env.Emu.EventStats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	waitFor(t, "every data key re-wrapped to the new version", 5*time.Second, func() bool { return rewrapped(t, env, version) })
	t.Logf("rotation picked up %s after the new version, every data key re-wrapped after %s", started.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if n, _ := env.Svc.Monitor.Nudged(); n < 1 {
		t.Errorf("the monitor was nudged %d times, want the event's", n)
	}
}

// TestPollingIsTheBackstop: with deliveries stopped, the scheduled checks
// still find the rotation.
func TestPollingIsTheBackstop(t *testing.T) {
	env, _ := eventEnv(t, monitor.Config{Interval: time.Second})
	env.Emu.SetEventDelivery(azemu.EventDelivery{Stopped: true})
	before := env.Emu.EventStats()
	version, err := env.Emu.RotateKey(devenv.Vault, devenv.KeyName)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the scheduled checks to find and finish the rotation", 15*time.Second, func() bool { return rewrapped(t, env, version) })
	if after := env.Emu.EventStats(); after.Delivered != before.Delivered || after.Dropped <= before.Dropped {
		t.Errorf("events while stopped: before %+v, after %+v; want none delivered, the rotation's dropped", before, after)
	}
	if n, _ := env.Svc.Monitor.Nudged(); n != 0 {
		t.Errorf("the monitor was nudged %d times with deliveries stopped", n)
	}
}

// postEvents delivers events to the service as Event Grid would, with token.
func postEvents(t *testing.T, env *devenv.Env, token, kind string, events ...azemu.GridEvent) (int, string) {
	t.Helper()
	body, _ := json.Marshal(events)
	req, _ := http.NewRequest("POST", env.Svc.URL()+cmkapi.KeyVaultEvents.Path, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("aeg-event-type", kind)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// keyEvent is a KeyNewVersionCreated event about key id (a full key
// identifier).
func keyEvent(vault, name, id string) azemu.GridEvent {
	data, _ := json.Marshal(azemu.KeyEventData{ID: id, VaultName: vault, ObjectType: "Key", ObjectName: name, Version: "0123456789abcdef0123456789abcdef"})
	return azemu.GridEvent{ID: "e1", Topic: "/subscriptions/x/resourceGroups/y/providers/Microsoft.KeyVault/vaults/" + vault, Subject: name,
		EventType: azemu.EventKeyNewVersionCreated, EventTime: time.Now().UTC().Format(time.RFC3339), Data: data, DataVersion: "1", MetadataVersion: "1"}
}

// TestForgedEventsRefused: deliveries whose token is not Event Grid's, for
// this service, from the platform's tenant, unexpired and correctly signed
// are refused before anything is looked up; a valid one is answered the
// same whether or not cmk knows the key; a key on a host outside the
// allowlist is refused and never contacted.
func TestForgedEventsRefused(t *testing.T) {
	env, _ := eventEnv(t, monitor.Config{Interval: 10 * time.Minute, NudgeGap: time.Hour})
	emu := env.Emu
	now := time.Now()
	known := keyEvent(devenv.Vault, devenv.KeyName, emu.VaultURL(devenv.Vault)+"/keys/"+devenv.KeyName+"/0123456789abcdef0123456789abcdef")
	good, err := emu.DeliveryToken(devenv.HomeTenant, devenv.EventsAudience, now)
	if err != nil {
		t.Fatal(err)
	}
	mintBy := func(tenant, app, aud string, at time.Time) string {
		tok, err := emu.IssueToken(tenant, app, "5a0e8e5f-6f3c-4c57-9d1a-0e5c7c1f9a11", aud, at)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	// The signature of another token: header and claims of a good one, the
	// signature of one with other claims.
	other := mintBy(devenv.HomeTenant, azemu.EventGridAppID, "https://elsewhere.example", now)
	parts, otherParts := strings.Split(good, "."), strings.Split(other, ".")
	badSig := parts[0] + "." + parts[1] + "." + otherParts[2]
	orgToken, err := env.Svc.MintDevToken("admin", env.Org, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, token string
		code        string
	}{
		{"no token", "", cmkapi.CodeMissingToken},
		{"bad signature", badSig, cmkapi.CodeInvalidToken},
		{"wrong audience", mintBy(devenv.HomeTenant, azemu.EventGridAppID, "https://elsewhere.example", now), cmkapi.CodeInvalidToken},
		{"Event Grid token of another tenant", mintBy(devenv.CustomerTenant, azemu.EventGridAppID, devenv.EventsAudience, now), cmkapi.CodeInvalidToken},
		{"expired", mintBy(devenv.HomeTenant, azemu.EventGridAppID, devenv.EventsAudience, now.Add(-2*time.Hour)), cmkapi.CodeTokenExpired},
		{"another app of the platform's tenant", mintBy(devenv.HomeTenant, devenv.ClientID, devenv.EventsAudience, now), cmkapi.CodeInvalidToken},
		{"a token for the org", orgToken, cmkapi.CodeInvalidToken},
	} {
		for _, kind := range []string{"Notification", "SubscriptionValidation"} {
			status, body := postEvents(t, env, tc.token, kind, known)
			if status != 401 || errorCode([]byte(body)) != tc.code {
				t.Errorf("%s (%s) = %d %s, want 401 %s", tc.name, kind, status, body, tc.code)
			}
		}
	}
	if n, _ := env.Svc.Monitor.Nudged(); n != 0 {
		t.Fatalf("forged deliveries nudged the monitor %d times", n)
	}

	// Well-formed but wrong: refused with 400, nothing nudged.
	evil := keyEvent("evil", "k", "https://evil.example.com/keys/k/0123456789abcdef0123456789abcdef")
	mismatch := known
	mismatch.Subject = "another-key"
	for _, tc := range []struct {
		name, kind string
		events     []azemu.GridEvent
	}{
		{"a host outside the allowlist", "Notification", []azemu.GridEvent{evil}},
		{"subject naming another key", "Notification", []azemu.GridEvent{mismatch}},
		{"an unknown delivery type", "Other", []azemu.GridEvent{known}},
		{"a validation without its event", "SubscriptionValidation", []azemu.GridEvent{known}},
	} {
		if status, body := postEvents(t, env, good, tc.kind, tc.events...); status != 400 {
			t.Errorf("%s = %d %s, want 400", tc.name, status, body)
		}
	}
	if n, _ := env.Svc.Monitor.Nudged(); n != 0 {
		t.Fatalf("malformed deliveries nudged the monitor %d times", n)
	}

	// Valid deliveries: the same answer for a key cmk does not know, a
	// vault it does not know, an event type it ignores, and its own key.
	unknownKey := keyEvent(devenv.Vault, "nope", emu.VaultURL(devenv.Vault)+"/keys/nope/0123456789abcdef0123456789abcdef")
	unknownVault := keyEvent("novault", "k", "https://novault."+emu.VaultSuffix()+"/keys/k/0123456789abcdef0123456789abcdef")
	ignored := known
	ignored.EventType = "Microsoft.KeyVault.SecretNewVersionCreated"
	var answers []string
	for _, ev := range []azemu.GridEvent{unknownKey, unknownVault, ignored, known} {
		status, body := postEvents(t, env, good, "Notification", ev)
		answers = append(answers, strings.TrimSpace(body))
		if status != 200 || answers[len(answers)-1] != answers[0] {
			t.Errorf("event %s for %s = %d %q, want 200 and the same answer as every other (%q)", ev.EventType, ev.Subject, status, body, answers[0])
		}
	}
	if n, _ := env.Svc.Monitor.Nudged(); n != 1 {
		t.Errorf("nudges after one event about a known key = %d, want 1", n)
	}
}

// TestEventFloodIsBounded: hundreds of valid events about one org's key
// cost its vault one check's calls: the rest wait for the org's gap.
func TestEventFloodIsBounded(t *testing.T) {
	env, _ := eventEnv(t, monitor.Config{Interval: 10 * time.Minute, NudgeGap: time.Hour})
	emu := env.Emu
	good, err := emu.DeliveryToken(devenv.HomeTenant, devenv.EventsAudience, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ev := keyEvent(devenv.Vault, devenv.KeyName, emu.VaultURL(devenv.Vault)+"/keys/"+devenv.KeyName+"/0123456789abcdef0123456789abcdef")
	before := emu.Stats().Vaults[devenv.Vault].Requests
	h0, err := env.Svc.Store.Health(context.Background(), env.Org)
	if err != nil {
		t.Fatal(err)
	}
	batch := make([]azemu.GridEvent, 10)
	for i := range batch {
		batch[i] = ev
	}
	const requests = 50
	for range requests {
		if status, body := postEvents(t, env, good, "Notification", batch...); status != 200 {
			t.Fatalf("a valid delivery = %d %s", status, body)
		}
	}
	nudges, _ := env.Svc.Monitor.Nudged()
	if nudges != requests {
		t.Errorf("nudges = %d, want one per delivery (%d): events of one delivery about one key are one", nudges, requests)
	}
	waitFor(t, "the first nudged check", 5*time.Second, func() bool {
		_, checks := env.Svc.Monitor.Nudged()
		h, err := env.Svc.Store.Health(context.Background(), env.Org)
		return checks == 1 && err == nil && h.Memo.Checks == h0.Memo.Checks+1 // saved: its calls are made
	})
	// One check is a describe, an unwrap and at times a wrap.
	if calls := emu.Stats().Vaults[devenv.Vault].Requests - before; calls > 3 {
		t.Errorf("%d events made %d vault calls, want at most one check's 3", requests*len(batch), calls)
	}
	if _, checks := env.Svc.Monitor.Nudged(); checks != 1 {
		t.Errorf("nudged checks = %d, want 1 within the gap", checks)
	}
}

// TestExpiryWarningFromEvent: a key's expiry date five days away reaches
// cmk as the vault's KeyNearExpiry event, whose check raises the 7-day
// warning once; a new date closes it.
func TestExpiryWarningFromEvent(t *testing.T) {
	env, c := eventEnv(t, monitor.Config{Interval: 10 * time.Minute})
	ctx := context.Background()
	exp := time.Now().Add(5 * 24 * time.Hour)
	if err := env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Expires: &exp}); err != nil {
		t.Fatal(err)
	}
	env.Emu.ScanKeyExpiry()
	var warning *store.Alert
	waitFor(t, "the expiry warning", 5*time.Second, func() bool {
		as, err := env.Svc.Store.Alerts(ctx, env.Org, store.AlertOpen)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			if a.Cause == cmkapi.CauseKeyNearExpiry {
				warning = a
				return true
			}
		}
		return false
	})
	if warning.Kind != cmkapi.AlertNotification || !strings.Contains(warning.Detail.Message, "less than 7 days") {
		t.Errorf("warning = %s %+v", warning.Kind, warning.Detail)
	}
	// Re-checks see the same date: no second warning.
	for range 3 {
		if code, body := c.do("POST", cmkapi.RecheckKey.Path, nil); code != 200 {
			t.Fatalf("re-check = %d %v", code, body)
		}
	}
	all, err := env.Svc.Store.Alerts(ctx, env.Org, "")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range all {
		if a.Cause == cmkapi.CauseKeyNearExpiry {
			n++
		}
	}
	if n != 1 {
		t.Errorf("expiry alerts after re-checks = %d, want 1", n)
	}
	// Rotating gives the key a version without the date: the event's check
	// closes the warning.
	if _, err := env.Emu.RotateKey(devenv.Vault, devenv.KeyName); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the warning to close", 5*time.Second, func() bool {
		a, err := env.Svc.Store.Alert(ctx, env.Org, warning.ID)
		return err == nil && a.Status == store.AlertResolved
	})
}

// TestUnvalidatedSubscriptionDeliversNothing: a subscription whose tokens
// cmk refuses (here: another audience) fails the validation handshake, stays
// unvalidated, and its vault's events never reach cmk.
func TestUnvalidatedSubscriptionDeliversNothing(t *testing.T) {
	env, _ := eventEnv(t, monitor.Config{Interval: 10 * time.Minute})
	if err := env.Emu.DeleteEventSubscription(devenv.Vault, devenv.EventSubscription); err != nil {
		t.Fatal(err)
	}
	s, err := env.Emu.CreateEventSubscription(devenv.Vault, azemu.EventSubscription{Name: "wrong-audience",
		Endpoint: env.Svc.URL() + cmkapi.KeyVaultEvents.Path, Audience: "https://elsewhere.example", TenantID: devenv.HomeTenant})
	if err != nil {
		t.Fatal(err)
	}
	if s.Validated() {
		t.Fatalf("a subscription with another audience was validated: %+v", s)
	}
	before := env.Emu.EventStats()
	if _, err := env.Emu.RotateKey(devenv.Vault, devenv.KeyName); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rotation's event to be held back", 5*time.Second, func() bool {
		return env.Emu.EventStats().Unvalidated > before.Unvalidated
	})
	if after := env.Emu.EventStats(); after.Attempts != before.Attempts {
		t.Errorf("deliveries attempted to an unvalidated subscription: before %+v, after %+v", before, after)
	}
	if n, _ := env.Svc.Monitor.Nudged(); n != 0 {
		t.Errorf("the monitor was nudged %d times", n)
	}
}
