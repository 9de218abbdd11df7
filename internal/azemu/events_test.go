package azemu

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// receiver is a webhook endpoint that checks every delivery's token the way
// an Entra-protected endpoint would, answers the validation handshake when
// echo is set, and records the notifications.
type receiver struct {
	t    *testing.T
	emu  *Emulator
	echo bool
	fail int // answer 500 to this many notifications first

	mu     sync.Mutex
	events []GridEvent
	claims []jwt.MapClaims
	got    chan GridEvent
}

func newReceiver(t *testing.T, emu *Emulator, echo bool) (*receiver, string) {
	r := &receiver{t: t, emu: emu, echo: echo, got: make(chan GridEvent, 64)}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv.URL + "/events"
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	raw := req.Header.Get("Authorization")
	var claims jwt.MapClaims
	_, err := jwt.ParseWithClaims(raw[len("Bearer "):], &claims, func(*jwt.Token) (any, error) { return rc.emu.TokenSigningKey(), nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithTimeFunc(rc.emu.now))
	if err != nil {
		rc.t.Errorf("delivery token does not verify: %v", err)
		w.WriteHeader(401)
		return
	}
	body, _ := io.ReadAll(req.Body)
	var evs []GridEvent
	if err := json.Unmarshal(body, &evs); err != nil || len(evs) != 1 {
		rc.t.Errorf("delivery body = %s, want one event in an array", body)
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.claims = append(rc.claims, claims)
	switch req.Header.Get(HeaderEventType) {
	case EventTypeValidation:
		var d ValidationEventData
		_ = json.Unmarshal(evs[0].Data, &d)
		if evs[0].EventType != EventSubscriptionValidation || d.ValidationCode == "" {
			rc.t.Errorf("validation event = %+v", evs[0])
		}
		if rc.echo {
			writeJSON(w, 200, map[string]string{"validationResponse": d.ValidationCode})
			return
		}
		w.WriteHeader(200)
	case EventTypeNotification:
		if rc.fail > 0 {
			rc.fail--
			w.WriteHeader(500)
			return
		}
		rc.events = append(rc.events, evs[0])
		rc.got <- evs[0]
	default:
		rc.t.Errorf("aeg-event-type = %q", req.Header.Get(HeaderEventType))
	}
}

func (rc *receiver) next(t *testing.T) GridEvent {
	t.Helper()
	select {
	case ev := <-rc.got:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event delivered within 5 s")
	}
	return GridEvent{}
}

func subscribe(t *testing.T, f *fixture, name, endpoint string) EventSubscription {
	t.Helper()
	s, err := f.emu.CreateEventSubscription("v1", EventSubscription{Name: name, Endpoint: endpoint, Audience: "api://cmk-events", TenantID: platformTenant})
	must(t, err)
	return s
}

func TestEventSubscriptionDeliversKeyEvents(t *testing.T) {
	f := newFixture(t)
	rc, endpoint := newReceiver(t, f.emu, true)
	s := subscribe(t, f, "cmk", endpoint)
	if !s.Validated() {
		t.Fatalf("subscription after an echoed handshake = %+v, want validated", s)
	}
	ver, err := f.emu.RotateKey("v1", "cmk")
	must(t, err)
	ev := rc.next(t)
	var d KeyEventData
	must(t, json.Unmarshal(ev.Data, &d))
	if ev.EventType != EventKeyNewVersionCreated || ev.Subject != "cmk" || d.Version != ver || d.ObjectName != "cmk" || d.VaultName != "v1" ||
		d.ObjectType != "Key" || d.ID != f.emu.VaultURL("v1")+"/keys/cmk/"+ver || ev.Topic != f.emu.vaultTopic("v1") || ev.MetadataVersion != "1" {
		t.Errorf("event = %+v data %+v", ev, d)
	}
	rc.mu.Lock()
	c := rc.claims[len(rc.claims)-1]
	rc.mu.Unlock()
	if c["aud"] != "api://cmk-events" || c["iss"] != stsIssuer(platformTenant) || c["tid"] != platformTenant || c["appid"] != EventGridAppID {
		t.Errorf("delivery token claims = %v", c)
	}

	// A role change is an access-policy change of the vault.
	must(t, f.emu.AssignRole("v1", f.oid, RoleReader))
	if ev := rc.next(t); ev.EventType != EventVaultAccessPolicyChanged || ev.Subject != "v1" {
		t.Errorf("after a role change: %+v", ev)
	}
}

func TestUnvalidatedSubscriptionGetsNothing(t *testing.T) {
	f := newFixture(t)
	rc, endpoint := newReceiver(t, f.emu, false)
	s := subscribe(t, f, "silent", endpoint)
	if s.Validated() || s.ProvisioningState != subscriptionStateWaiting || s.ValidationURL == "" {
		t.Fatalf("subscription without an echo = %+v, want awaiting manual validation", s)
	}
	_, err := f.emu.RotateKey("v1", "cmk")
	must(t, err)
	waitStats(t, f.emu, func(st EventStats) bool { return st.Unvalidated >= 1 })
	rc.mu.Lock()
	n := len(rc.events)
	rc.mu.Unlock()
	if n != 0 {
		t.Fatalf("an unvalidated subscription received %d events", n)
	}
	// The validation URL completes it; a wrong code does not.
	if f.emu.events.validate("v1", "silent", "wrong") {
		t.Fatal("a wrong validation code validated the subscription")
	}
	resp, err := f.emu.HTTPClient().Get(s.ValidationURL)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET validationUrl = %d", resp.StatusCode)
	}
	_, err = f.emu.RotateKey("v1", "cmk")
	must(t, err)
	if ev := rc.next(t); ev.EventType != EventKeyNewVersionCreated {
		t.Errorf("after manual validation: %+v", ev)
	}
}

func waitStats(t *testing.T, emu *Emulator, ok func(EventStats) bool) EventStats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := emu.EventStats()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("event stats %+v never reached the expected state", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEventDeliveryRetriesAndStops(t *testing.T) {
	f := newFixture(t)
	f.emu.SetEventRetries(3, time.Millisecond)
	rc, endpoint := newReceiver(t, f.emu, true)
	subscribe(t, f, "cmk", endpoint)
	rc.mu.Lock()
	rc.fail = 2
	rc.mu.Unlock()
	_, err := f.emu.RotateKey("v1", "cmk")
	must(t, err)
	rc.next(t)
	if st := waitStats(t, f.emu, func(st EventStats) bool { return st.Delivered == 1 }); st.Attempts != 3 {
		t.Errorf("after two failures and a success: %+v, want 3 attempts, 1 delivered", st)
	}
	// Failing every attempt gives up after the bounded number of tries.
	rc.mu.Lock()
	rc.fail = 100
	rc.mu.Unlock()
	_, err = f.emu.RotateKey("v1", "cmk")
	must(t, err)
	st := waitStats(t, f.emu, func(st EventStats) bool { return st.Failed == 1 })
	if st.Attempts != 6 {
		t.Errorf("attempts after a failed delivery = %d, want 6", st.Attempts)
	}
	rc.mu.Lock()
	rc.fail = 0
	rc.mu.Unlock()

	// Stopped: events are dropped, nothing reaches the endpoint.
	f.emu.SetEventDelivery(EventDelivery{Stopped: true})
	dropped := f.emu.EventStats().Dropped
	_, err = f.emu.RotateKey("v1", "cmk")
	must(t, err)
	waitStats(t, f.emu, func(st EventStats) bool { return st.Dropped == dropped+1 })
	if st := f.emu.EventStats(); st.Attempts != 6 {
		t.Errorf("attempts while stopped = %d, want still 6", st.Attempts)
	}
	f.emu.SetEventDelivery(EventDelivery{})
	_, err = f.emu.RotateKey("v1", "cmk")
	must(t, err)
	rc.next(t)
}

func TestExpiryEventsOnTheEmulatorClock(t *testing.T) {
	f := newFixture(t)
	rc, endpoint := newReceiver(t, f.emu, true)
	exp := f.clock.Now().Add(40 * 24 * time.Hour)
	must(t, f.emu.UpdateKey("v1", "cmk", KeyUpdate{Expires: &exp}))
	subscribe(t, f, "cmk", endpoint)
	before := f.emu.EventStats().Published
	f.emu.ScanKeyExpiry()
	f.clock.Advance(11 * 24 * time.Hour) // 29 days left
	f.emu.ScanKeyExpiry()
	f.emu.ScanKeyExpiry() // once per version and expiry
	if ev := rc.next(t); ev.EventType != EventKeyNearExpiry {
		t.Fatalf("29 days before expiry: %+v", ev)
	}
	f.clock.Advance(30 * 24 * time.Hour)
	f.emu.ScanKeyExpiry()
	if ev := rc.next(t); ev.EventType != EventKeyExpired {
		t.Fatalf("after expiry: %+v", ev)
	}
	f.emu.ScanKeyExpiry()
	if st := f.emu.EventStats(); st.Published-before != 2 {
		t.Errorf("published = %d, want 2 (one near expiry, one expired)", st.Published-before)
	}
}

func TestEventSubscriptionAdminAPI(t *testing.T) {
	f := newFixture(t)
	_, endpoint := newReceiver(t, f.emu, true)
	c := NewAdminClient(f.emu.URL(), f.emu.HTTPClient())
	s, err := c.CreateEventSubscription("v1", EventSubscription{Name: "cmk", Endpoint: endpoint, Audience: "api://x", TenantID: platformTenant})
	must(t, err)
	if !s.Validated() {
		t.Fatalf("created over the admin API: %+v", s)
	}
	list, err := c.EventSubscriptions("v1")
	must(t, err)
	if len(list) != 1 || list[0].Name != "cmk" {
		t.Errorf("list = %+v", list)
	}
	if _, err := c.CreateEventSubscription("v1", EventSubscription{Name: "bad", Endpoint: "ftp://x", Audience: "a", TenantID: platformTenant}); err == nil {
		t.Error("an ftp endpoint was accepted")
	}
	if _, err := c.CreateEventSubscription("nope", EventSubscription{Name: "x", Endpoint: endpoint, Audience: "a", TenantID: platformTenant}); err == nil {
		t.Error("a subscription to a missing vault was accepted")
	}
	must(t, c.SetEventDelivery(EventDelivery{Stopped: true}))
	must(t, c.ScanKeyExpiry())
	if _, err := c.EventStats(); err != nil {
		t.Error(err)
	}
	must(t, c.DeleteEventSubscription("v1", "cmk"))
	if err := c.DeleteEventSubscription("v1", "cmk"); err == nil {
		t.Error("deleting twice succeeded")
	}
}
