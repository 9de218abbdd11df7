package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/alerts"
	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/monitor"
	"github.com/cmk-project/cmk/internal/store"
)

// receiver is a webhook endpoint that checks signatures, fails the first
// attempts on purpose, and records what it accepted.
type receiver struct {
	secret    atomic.Value
	failFirst int32
	attempts  atomic.Int32
	badSig    atomic.Int32
	mu        sync.Mutex
	events    []cmkapi.Event
	ids       map[string]int
}

func (rv *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	n := rv.attempts.Add(1)
	secret, _ := rv.secret.Load().(string)
	if err := alerts.Verify(secret, r.Header.Get(alerts.HeaderSignature), body, time.Now(), 5*time.Minute); err != nil {
		rv.badSig.Add(1)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	if n <= rv.failFirst {
		http.Error(w, "not now", http.StatusInternalServerError)
		return
	}
	var ev cmkapi.Event
	json.Unmarshal(body, &ev)
	if ev.ID != r.Header.Get(alerts.HeaderEventID) {
		http.Error(w, "event id header mismatch", http.StatusBadRequest)
		return
	}
	rv.mu.Lock()
	rv.events = append(rv.events, ev)
	rv.ids[ev.ID]++
	rv.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (rv *receiver) got(typ, kind string) int {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	n := 0
	for _, e := range rv.events {
		if e.Type == typ && e.Alert != nil && e.Alert.Kind == kind {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func subscribe(t *testing.T, c *client, rv *receiver) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewServer(rv)
	t.Cleanup(srv.Close)
	code, body := c.do("POST", "/data/infrastructure/manager/byok/webhooks", map[string]string{"url": srv.URL + "/hook"})
	if code != 201 {
		t.Fatalf("create webhook = %d %v", code, body)
	}
	rv.secret.Store(body["secret"].(string))
	return srv, body["id"].(string)
}

// TestWebhookDelivery: an alert reaches a subscribed receiver signed, after
// retries, exactly once per event, and its resolution follows.
func TestWebhookDelivery(t *testing.T) {
	env := fastEnv(t, monitor.Config{FlapCount: 1000})
	c := adminClient(t, env, env.Org)
	enable(t, env, c)
	waitHealth(t, c, "HEALTHY", "", 5*time.Second)
	rv := &receiver{failFirst: 2, ids: map[string]int{}}
	subscribe(t, c, rv)

	if code, body := c.do("POST", "/data/infrastructure/manager/byok/webhooks", map[string]string{"url": "ftp://example.com/x"}); code != 400 {
		t.Errorf("webhook with ftp URL = %d %v, want 400", code, body)
	}

	no, yes := false, true
	if err := env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &no}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alert.opened delivered", 10*time.Second, func() bool { return rv.got(alerts.EventOpened, alerts.KindAccessDisabled) == 1 })
	if n := rv.attempts.Load(); n < 3 {
		t.Errorf("receiver saw %d attempts; the first two failures should have been retried", n)
	}
	// The alert stays open through many more checks: no further events.
	time.Sleep(1500 * time.Millisecond)
	if n := rv.got(alerts.EventOpened, alerts.KindAccessDisabled); n != 1 {
		t.Errorf("alert.opened delivered %d times, want 1", n)
	}
	if err := env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &yes}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alert.resolved delivered", 10*time.Second, func() bool { return rv.got(alerts.EventResolved, alerts.KindAccessDisabled) == 1 })
	rv.mu.Lock()
	for id, n := range rv.ids {
		if n != 1 {
			t.Errorf("event %s accepted %d times", id, n)
		}
	}
	rv.mu.Unlock()
	if rv.badSig.Load() != 0 {
		t.Errorf("%d deliveries had bad signatures", rv.badSig.Load())
	}
	// Alert list and acknowledgement through the API.
	code, body := c.do("GET", "/data/infrastructure/manager/byok/alerts?status=RESOLVED", nil)
	list, _ := body["alerts"].([]any)
	if code != 200 || len(list) != 1 {
		t.Fatalf("resolved alerts = %d %v", code, body)
	}
	id := list[0].(map[string]any)["id"].(string)
	if code, body := c.do("POST", "/data/infrastructure/manager/byok/alerts/"+id+"/acknowledge", nil); code != 200 || body["acknowledgedBy"] != "admin" {
		t.Errorf("acknowledge = %d %v", code, body)
	}
}

// TestWebhookGivesUp: a receiver that never accepts gets a bounded number of
// attempts, not an endless stream.
func TestWebhookGivesUp(t *testing.T) {
	env := fastEnv(t, monitor.Config{FlapCount: 1000})
	c := adminClient(t, env, env.Org)
	enable(t, env, c)
	rv := &receiver{failFirst: 1 << 30, ids: map[string]int{}}
	_, hookID := subscribe(t, c, rv)
	env.Svc.Webhooks.MaxAttempts = 3
	no := false
	env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &no})
	alertsOpen := openAlertsWait(t, c)
	eventID := alertsOpen[0].ID + ":" + alerts.EventOpened
	waitFor(t, "delivery given up", 10*time.Second, func() bool {
		st, _, _ := env.Svc.Store.DeliveryStatus(t.Context(), hookID, eventID)
		return st == store.DeliveryGaveUp
	})
	if n := rv.attempts.Load(); n != 3 {
		t.Errorf("attempts = %d, want 3", n)
	}
}

func openAlertsWait(t *testing.T, c *client) []cmkapi.Alert {
	t.Helper()
	var open []cmkapi.Alert
	waitFor(t, "an open alert", 10*time.Second, func() bool { open = openAlerts(c); return len(open) > 0 })
	return open
}

// TestFlappingMakesOneNotification: a key switched off and on repeatedly
// produces one Alert notification for the episode, and each time the data
// is refused a Key access disabled alert says why (resolved when the key
// comes back).
func TestFlappingMakesOneNotification(t *testing.T) {
	env := fastEnv(t, monitor.Config{FlapCount: 4, FlapWindow: time.Minute})
	c := adminClient(t, env, env.Org)
	enable(t, env, c)
	waitHealth(t, c, "HEALTHY", "", 5*time.Second)
	rv := &receiver{ids: map[string]int{}}
	subscribe(t, c, rv)
	yes, no := true, false
	for i := range 5 {
		env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &no})
		waitHealth(t, c, "REVOKED", "KEY_DISABLED", 8*time.Second)
		env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &yes})
		waitHealth(t, c, "HEALTHY", "", 8*time.Second)
		_ = i
	}
	time.Sleep(500 * time.Millisecond) // let deliveries drain
	code, body := c.do("GET", "/data/infrastructure/manager/byok/alerts", nil)
	raw, _ := json.Marshal(body["alerts"])
	var all []cmkapi.Alert
	json.Unmarshal(raw, &all)
	if code != 200 {
		t.Fatalf("alerts = %d", code)
	}
	var flapping, disabled int
	for _, a := range all {
		switch {
		case a.Kind == alerts.KindNotification && a.Cause == cmkapi.CauseFlapping:
			flapping++
		case a.Kind == alerts.KindAccessDisabled:
			disabled++
		}
	}
	if flapping != 1 {
		t.Errorf("flapping notifications = %d, want 1 (alerts: %+v)", flapping, all)
	}
	if disabled != 5 {
		t.Errorf("key-access-disabled alerts = %d over 5 flaps, want 5 (one per time the data was refused)", disabled)
	}
	waitFor(t, "webhook events delivered", 5*time.Second, func() bool {
		return rv.got(alerts.EventOpened, alerts.KindNotification) == 1 && rv.got(alerts.EventOpened, alerts.KindAccessDisabled) == 5
	})
	for _, a := range openAlerts(c) {
		if a.Kind != alerts.KindNotification || a.Cause != cmkapi.CauseFlapping {
			t.Errorf("open alert %s/%s with the key healthy, want only the flapping notification", a.Kind, a.Cause)
		}
	}
}

// TestFlappingThenDisabledNamesTheCause: after a key is disabled and enabled
// twice (flapping), healthy checks leave the flapping notification's count
// alone, and disabling the key again opens a Key access disabled alert
// naming KEY_DISABLED while the data is refused, beside the notification.
func TestFlappingThenDisabledNamesTheCause(t *testing.T) {
	env := fastEnv(t, monitor.Config{FlapCount: 4, FlapWindow: time.Minute})
	c := adminClient(t, env, env.Org)
	data := seed(t, c)
	enable(t, env, c)
	waitHealth(t, c, "HEALTHY", "", 5*time.Second)
	yes, no := true, false
	for range 2 {
		env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &no})
		waitHealth(t, c, "REVOKED", "KEY_DISABLED", 8*time.Second)
		env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &yes})
		waitHealth(t, c, "HEALTHY", "", 8*time.Second)
	}
	flapping := func() *cmkapi.Alert {
		for _, a := range openAlerts(c) {
			if a.Kind == alerts.KindNotification && a.Cause == cmkapi.CauseFlapping {
				return &a
			}
		}
		return nil
	}
	var before *cmkapi.Alert
	waitFor(t, "the flapping notification", 5*time.Second, func() bool { before = flapping(); return before != nil })

	// Several healthy checks, each seen by its own lastCheck.
	seen := map[time.Time]bool{}
	waitFor(t, "five healthy checks", 10*time.Second, func() bool {
		if h := getHealth(c); h.State == "HEALTHY" && h.LastCheck != nil {
			seen[*h.LastCheck] = true
		}
		return len(seen) >= 5
	})
	after := flapping()
	if after == nil || after.Occurrences != before.Occurrences {
		t.Fatalf("flapping notification after five healthy checks = %+v, want open with %d occurrences", after, before.Occurrences)
	}

	env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &no})
	waitHealth(t, c, "REVOKED", "KEY_DISABLED", 8*time.Second)
	if data.access(t, c) {
		t.Fatal("data served with the key disabled")
	}
	var named *cmkapi.Alert
	waitFor(t, "an open Key access disabled alert", 5*time.Second, func() bool {
		for _, a := range openAlerts(c) {
			if a.Kind == alerts.KindAccessDisabled && a.Cause == "KEY_DISABLED" {
				named = &a
				return true
			}
		}
		return false
	})
	if !named.DataBlocked {
		t.Errorf("Key access disabled alert dataBlocked = false while data is refused")
	}
	if f := flapping(); f == nil || f.Occurrences != before.Occurrences+1 {
		t.Errorf("flapping notification after disabling again = %+v, want open with %d occurrences", f, before.Occurrences+1)
	}
}

// TestRotationUnderLoad: a new key version is picked up and every data key
// re-wrapped to it while reads and writes go on, with no failed request.
func TestRotationUnderLoad(t *testing.T) {
	env := fastEnv(t, monitor.Config{FlapCount: 1000})
	c := adminClient(t, env, env.Org)
	for i := range 30 {
		env.Svc.Keyring.CreateSandbox(t.Context(), env.Org, fmt.Sprintf("sb%02d", i))
	}
	data := seed(t, c)
	enable(t, env, c)
	before := getHealth(c).KeyVersion

	stop := make(chan struct{})
	var failures, requests atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lc := &client{t: t, base: c.base, token: c.token, key: c.key, org: c.org}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var code int
				var body []byte
				switch i % 3 {
				case 0:
					code, body = lc.raw("GET", "/data/lake/datasets/ds/files/file1", "prod", nil)
				case 1:
					code, body = lc.raw("GET", "/data/profiles/p1", "prod", nil)
				case 2:
					code, body = lc.raw("PUT", fmt.Sprintf("/data/profiles/w%d-%d", w, i), fmt.Sprintf("sb%02d", i%30), strings.NewReader(`{"x":1}`))
				}
				requests.Add(1)
				if code != 200 && code != 201 {
					failures.Add(1)
					t.Logf("request failed during rotation: %d %.200s", code, body)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	newVersion, err := env.Emu.RotateKey(devenv.Vault, devenv.KeyName)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "rotation to finish", 30*time.Second, func() bool {
		h := getHealth(c)
		return h.KeyVersion == newVersion && h.Rotation == nil
	})
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failures.Load() != 0 {
		t.Errorf("%d of %d requests failed during rotation", failures.Load(), requests.Load())
	}
	if requests.Load() < 50 {
		t.Errorf("only %d requests ran during rotation", requests.Load())
	}
	keys, _ := env.Svc.Store.DataKeys(t.Context(), env.Org)
	for _, dk := range keys {
		if dk.KEKVersion != newVersion {
			t.Errorf("data key %s still at version %s (was %s, want %s)", dk.ID, dk.KEKVersion, before, newVersion)
		}
	}
	if !data.access(t, c) {
		t.Error("data not served after rotation")
	}
	// The audit trail tells the story, without key material.
	code, body := c.do("GET", "/data/infrastructure/manager/byok/audit?limit=1000", nil)
	if code != 200 {
		t.Fatalf("audit = %d %v", code, body)
	}
	ops := map[string]int{}
	for _, e := range body["entries"].([]any) {
		m := e.(map[string]any)
		ops[m["operation"].(string)]++
		if actor, _ := m["actor"].(string); actor != "system" && actor != "user:admin" && !strings.HasPrefix(actor, "tenant-admin:") {
			t.Errorf("audit entry %v has actor %q, want system, user:admin or the consenting tenant's administrator", m["operation"], actor)
		}
		if strings.Contains(m["operation"].(string), ".") {
			continue // an administrator's action (config.submit): no key call
		}
		if m["key"] != env.Emu.VaultURL(devenv.Vault)+"/keys/"+devenv.KeyName {
			t.Errorf("audit entry %v names key %v", m["operation"], m["key"])
		}
	}
	for _, op := range []string{"describe", "wrap", "unwrap", "rotation"} {
		if ops[op] == 0 {
			t.Errorf("audit has no %q entries: %v", op, ops)
		}
	}
}

// TestWebhookTestEvent: an admin sends one of the org's webhooks a signed
// webhook.test event on demand and learns what the receiver answered;
// another org cannot test it (not found), and the org's allowance of tests
// is rate limited.
func TestWebhookTestEvent(t *testing.T) {
	env := fastEnv(t, monitor.Config{FlapCount: 1000})
	c := adminClient(t, env, env.Org)
	rv := &receiver{ids: map[string]int{}}
	_, id := subscribe(t, c, rv)
	test := "/data/infrastructure/manager/byok/webhooks/" + id + "/test"

	code, body := c.do("POST", test, nil)
	if code != 200 || body["delivered"] != true || body["status"] != float64(204) || body["webhookId"] != id {
		t.Fatalf("test own webhook = %d %v, want 200 delivered with the receiver's 204", code, body)
	}
	rv.mu.Lock()
	if len(rv.events) != 1 || rv.events[0].Type != cmkapi.EventWebhookTest || rv.events[0].Alert != nil || rv.events[0].OrgID != env.Org || rv.events[0].ID != body["eventId"] {
		t.Errorf("receiver got %+v, want one signed webhook.test event of %s with no alert", rv.events, env.Org)
	}
	rv.mu.Unlock()
	if n := rv.badSig.Load(); n != 0 {
		t.Errorf("%d test events failed signature verification", n)
	}

	other := adminClient(t, env, "OTHER@CmkOrg")
	if code, body := other.do("POST", test, nil); code != 404 {
		t.Errorf("another org testing this org's webhook = %d %v, want 404", code, body)
	}
	if n := rv.attempts.Load(); n != 1 {
		t.Errorf("receiver saw %d requests after another org's attempt, want 1", n)
	}

	// A receiver that refuses: not delivered, with its status and no URL.
	rv.secret.Store("not-the-secret")
	code, body = c.do("POST", test, nil)
	if code != 200 || body["delivered"] != false || body["status"] != float64(401) || strings.Contains(fmt.Sprint(body["error"]), "127.0.0.1") {
		t.Errorf("test against a refusing receiver = %d %v, want 200, not delivered, status 401, no URL in the error", code, body)
	}

	// The org's allowance (burst 3) is used up by the third: 429.
	if code, body := c.do("POST", test, nil); code != 200 {
		t.Errorf("third test in a row = %d %v, want 200", code, body)
	}
	code, body = c.do("POST", test, nil)
	if code != 429 || body["errorCode"] != cmkapi.CodeRateLimited {
		t.Errorf("fourth test in a row = %d %v, want 429 RATE_LIMITED", code, body)
	}

	// The tests that ran are in the trail of the org that made them; the
	// other org's attempt is not.
	code, body = c.do("GET", "/data/infrastructure/manager/byok/audit?operation=webhook.test", nil)
	if n := len(body["entries"].([]any)); code != 200 || n != 3 {
		t.Errorf("org's webhook.test audit entries = %d (%d), want 3", n, code)
	}
}
