package azemu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Event Grid: Key Vault publishes events about its keys to the event
// subscriptions of the vault. The emulator keeps the subscriptions in
// memory (they are not persisted), validates each endpoint with the
// subscription-validation handshake, and delivers events in the Event Grid
// schema with a Microsoft Entra bearer token, as Event Grid does for a
// webhook protected by an Entra application.

// Event types of Key Vault the emulator publishes (names as Azure's).
const (
	EventKeyNewVersionCreated     = "Microsoft.KeyVault.KeyNewVersionCreated"
	EventKeyNearExpiry            = "Microsoft.KeyVault.KeyNearExpiry"
	EventKeyExpired               = "Microsoft.KeyVault.KeyExpired"
	EventVaultAccessPolicyChanged = "Microsoft.KeyVault.VaultAccessPolicyChanged"
	// EventSubscriptionValidation is the event of the validation handshake.
	EventSubscriptionValidation = "Microsoft.EventGrid.SubscriptionValidationEvent"
)

// Webhook delivery header and its values.
const (
	HeaderEventType          = "aeg-event-type"
	EventTypeValidation      = "SubscriptionValidation"
	EventTypeNotification    = "Notification"
	subscriptionStateOK      = "Succeeded"
	subscriptionStateWaiting = "AwaitingManualAction"
)

// EventGridAppID is the application id of Event Grid's first-party app, the
// appid of the tokens it sends to an Entra-protected webhook.
const EventGridAppID = "4962773b-9cdb-44cf-a8bf-237846a00ab7"

// eventGridObjectID is the object id of Event Grid's service principal in
// the receiving tenant (fixed in the emulator).
const eventGridObjectID = "5a0e8e5f-6f3c-4c57-9d1a-0e5c7c1f9a11"

// NearExpiryWindow is how long before a key's expiry KeyNearExpiry is
// published (Key Vault: 30 days).
const NearExpiryWindow = 30 * 24 * time.Hour

// Delivery policy. Event Grid retries a failed delivery on a schedule of
// minutes to hours for a day; the emulator retries a few times quickly so
// tests finish, and says so.
const (
	defaultDeliveryAttempts  = 4
	defaultDeliveryBackoff   = 100 * time.Millisecond
	deliveryTimeout          = 5 * time.Second
	eventQueueSize           = 1024
	maxSubscriptionsPerVault = 16
)

// EventSubscription is a webhook subscription to a vault's events.
type EventSubscription struct {
	Name string `json:"name"`
	// Endpoint is the webhook URL (http or https).
	Endpoint string `json:"endpoint"`
	// Audience is the aud of the delivery tokens: the receiving app's
	// application id or URI.
	Audience string `json:"audience"`
	// TenantID is the tenant that issues the delivery tokens (the receiving
	// app's tenant): the tokens' iss is https://sts.windows.net/{TenantID}/.
	TenantID string `json:"tenantId"`
	// EventTypes filters the events delivered (empty = all).
	EventTypes []string `json:"eventTypes,omitempty"`

	// Set by the emulator.
	Vault             string `json:"vault,omitempty"`
	ProvisioningState string `json:"provisioningState,omitempty"` // Succeeded or AwaitingManualAction
	ValidationURL     string `json:"validationUrl,omitempty"`
}

// Validated reports whether the endpoint proved it wants the events.
func (s EventSubscription) Validated() bool { return s.ProvisioningState == subscriptionStateOK }

// EventDelivery switches deliveries: Stopped drops every event (counted in
// EventStats.Dropped), Delay holds each delivery that long first.
type EventDelivery struct {
	Stopped bool  `json:"stopped"`
	DelayMs int64 `json:"delayMs,omitempty"`
}

// EventStats counts published events and delivery attempts since Start.
type EventStats struct {
	Published   int `json:"published"`   // events raised by the vaults
	Delivered   int `json:"delivered"`   // deliveries the endpoint answered 2xx
	Failed      int `json:"failed"`      // deliveries given up after every attempt
	Attempts    int `json:"attempts"`    // HTTP requests made
	Dropped     int `json:"dropped"`     // not delivered: stopped, queue full, or no validated subscription
	Validated   int `json:"validated"`   // handshakes completed
	Unvalidated int `json:"unvalidated"` // events not sent to an unvalidated subscription
}

// GridEvent is one event in the Event Grid schema.
type GridEvent struct {
	ID              string          `json:"id"`
	Topic           string          `json:"topic"`
	Subject         string          `json:"subject"`
	EventType       string          `json:"eventType"`
	EventTime       string          `json:"eventTime"`
	Data            json.RawMessage `json:"data"`
	DataVersion     string          `json:"dataVersion"`
	MetadataVersion string          `json:"metadataVersion"`
}

// KeyEventData is the data of a Key Vault key event.
type KeyEventData struct {
	ID         string `json:"Id"`
	VaultName  string `json:"VaultName"`
	ObjectType string `json:"ObjectType"`
	ObjectName string `json:"ObjectName"`
	Version    string `json:"Version"`
	NBF        *int64 `json:"NBF"`
	EXP        *int64 `json:"EXP"`
}

// ValidationEventData is the data of the subscription-validation event.
type ValidationEventData struct {
	ValidationCode string `json:"validationCode"`
	ValidationURL  string `json:"validationUrl"`
}

type subscription struct {
	EventSubscription
	code string // the validation code sent in the handshake
}

type queued struct {
	vault string
	ev    GridEvent
}

// eventHub holds a vault's subscriptions and delivers events.
type eventHub struct {
	e      *Emulator
	client *http.Client

	mu       sync.Mutex
	subs     map[string][]*subscription // by vault
	delivery EventDelivery
	stats    EventStats
	seen     map[string]bool // expiry events already published, by version and kind
	attempts int
	backoff  time.Duration

	queue     chan queued
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func newEventHub(e *Emulator) *eventHub {
	return &eventHub{e: e, client: &http.Client{Timeout: deliveryTimeout, Transport: &http.Transport{Proxy: nil}},
		subs: map[string][]*subscription{}, seen: map[string]bool{},
		attempts: defaultDeliveryAttempts, backoff: defaultDeliveryBackoff,
		queue: make(chan queued, eventQueueSize), stop: make(chan struct{}), done: make(chan struct{})}
}

// run delivers queued events, one at a time in order, and scans for keys
// near or past their expiry every second, until close.
func (h *eventHub) run() {
	defer close(h.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-h.stop:
			return
		case q := <-h.queue:
			h.deliver(q)
		case <-tick.C:
			h.e.ScanKeyExpiry()
		}
	}
}

func (h *eventHub) close() {
	h.closeOnce.Do(func() { close(h.stop) })
	<-h.done
}

// publish queues ev for the subscriptions of vault. It never blocks.
func (h *eventHub) publish(vault string, ev GridEvent) {
	h.mu.Lock()
	h.stats.Published++
	h.mu.Unlock()
	select {
	case h.queue <- queued{vault, ev}:
	default:
		h.mu.Lock()
		h.stats.Dropped++
		h.mu.Unlock()
	}
}

func (h *eventHub) deliver(q queued) {
	h.mu.Lock()
	mode := h.delivery
	var targets []EventSubscription
	for _, s := range h.subs[q.vault] {
		if len(s.EventTypes) > 0 && !slices.Contains(s.EventTypes, q.ev.EventType) {
			continue
		}
		if !s.Validated() {
			h.stats.Unvalidated++
			continue
		}
		targets = append(targets, s.EventSubscription)
	}
	if mode.Stopped || len(targets) == 0 {
		h.stats.Dropped++
		h.mu.Unlock()
		return
	}
	attempts, backoff := h.attempts, h.backoff
	h.mu.Unlock()
	if mode.DelayMs > 0 {
		if !h.sleep(time.Duration(mode.DelayMs) * time.Millisecond) {
			return
		}
	}
	body, _ := json.Marshal([]GridEvent{q.ev})
	for _, s := range targets {
		ok := false
		for i := range attempts {
			if i > 0 && !h.sleep(backoff<<(i-1)) {
				return
			}
			status, _, err := h.post(s, EventTypeNotification, body)
			h.mu.Lock()
			h.stats.Attempts++
			h.mu.Unlock()
			if err == nil && status >= 200 && status < 300 {
				ok = true
				break
			}
		}
		h.mu.Lock()
		if ok {
			h.stats.Delivered++
		} else {
			h.stats.Failed++
		}
		h.mu.Unlock()
	}
}

// sleep waits d unless the hub closes first.
func (h *eventHub) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-h.stop:
		return false
	case <-t.C:
		return true
	}
}

// post sends one delivery with a fresh Entra token for the subscription.
func (h *eventHub) post(s EventSubscription, kind string, body []byte) (int, []byte, error) {
	tok, err := h.e.DeliveryToken(s.TenantID, s.Audience, h.e.now())
	if err != nil {
		return 0, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), deliveryTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.Endpoint, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderEventType, kind)
	req.Header.Set("aeg-subscription-name", strings.ToUpper(s.Name))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, b, nil
}

// DeliveryToken mints the token Event Grid presents to an Entra-protected
// webhook: issued by tenant, for audience, to Event Grid's app.
func (e *Emulator) DeliveryToken(tenant, audience string, now time.Time) (string, error) {
	return e.issueToken(tenant, EventGridAppID, eventGridObjectID, audience, now)
}

// ---- subscriptions ----

// CreateEventSubscription subscribes an endpoint to the vault's events. As
// Event Grid does, it first sends the endpoint a SubscriptionValidation
// event; the subscription is validated (Succeeded) when the endpoint
// answers 200 with {"validationResponse": code}, or later when someone
// GETs its validationUrl; until then (AwaitingManualAction) nothing is
// delivered to it. A subscription of the same name is replaced.
func (e *Emulator) CreateEventSubscription(vault string, s EventSubscription) (EventSubscription, error) {
	vault = strings.ToLower(vault)
	if !e.VaultResolves(vault) {
		return EventSubscription{}, fmt.Errorf("%w: vault %q", ErrNotFound, vault)
	}
	if s.Name == "" || len(s.Name) > 64 || strings.ContainsAny(s.Name, "/ ?#") {
		return EventSubscription{}, fmt.Errorf("%w: subscription name %q (1-64 characters, no '/', spaces, '?' or '#')", ErrInvalid, s.Name)
	}
	u, err := url.Parse(s.Endpoint)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return EventSubscription{}, fmt.Errorf("%w: endpoint %q must be an absolute http(s) URL", ErrInvalid, s.Endpoint)
	}
	if s.Audience == "" || e.tenant(s.TenantID) == nil {
		return EventSubscription{}, fmt.Errorf("%w: a subscription needs the audience of its delivery tokens and an existing tenant to issue them (tenant %q)", ErrInvalid, s.TenantID)
	}
	s.Vault = vault
	s.ProvisioningState = subscriptionStateWaiting
	sub := &subscription{EventSubscription: s, code: newID()}
	sub.ValidationURL = e.url + "/admin/eventgrid/validate/" + url.PathEscape(vault) + "/" + url.PathEscape(s.Name) + "?code=" + url.QueryEscape(sub.code)
	h := e.events
	h.mu.Lock()
	list := slices.DeleteFunc(h.subs[vault], func(x *subscription) bool { return x.Name == s.Name })
	if len(list) >= maxSubscriptionsPerVault {
		h.mu.Unlock()
		return EventSubscription{}, fmt.Errorf("%w: vault %s has %d event subscriptions, the emulator's limit", ErrConflict, vault, maxSubscriptionsPerVault)
	}
	h.subs[vault] = append(list, sub)
	h.mu.Unlock()

	// The handshake.
	data, _ := json.Marshal(ValidationEventData{ValidationCode: sub.code, ValidationURL: sub.ValidationURL})
	ev := GridEvent{ID: newID(), Topic: e.vaultTopic(vault), Subject: "", EventType: EventSubscriptionValidation,
		EventTime: e.now().UTC().Format(time.RFC3339Nano), Data: data, DataVersion: "1", MetadataVersion: "1"}
	body, _ := json.Marshal([]GridEvent{ev})
	status, answer, err := h.post(sub.EventSubscription, EventTypeValidation, body)
	var echo struct {
		ValidationResponse string `json:"validationResponse"`
	}
	if err == nil && status == http.StatusOK && json.Unmarshal(answer, &echo) == nil && echo.ValidationResponse == sub.code {
		h.validate(vault, s.Name, sub.code)
	}
	return e.EventSubscription(vault, s.Name)
}

// validate marks a subscription validated when code is its code.
func (h *eventHub) validate(vault, name, code string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.subs[vault] {
		if s.Name == name && code != "" && s.code == code {
			if !s.Validated() {
				h.stats.Validated++
			}
			s.ProvisioningState = subscriptionStateOK
			return true
		}
	}
	return false
}

// EventSubscription returns one subscription of a vault.
func (e *Emulator) EventSubscription(vault, name string) (EventSubscription, error) {
	h := e.events
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.subs[strings.ToLower(vault)] {
		if s.Name == name {
			return s.EventSubscription, nil
		}
	}
	return EventSubscription{}, fmt.Errorf("%w: event subscription %q of vault %q", ErrNotFound, name, vault)
}

// EventSubscriptions lists a vault's subscriptions.
func (e *Emulator) EventSubscriptions(vault string) []EventSubscription {
	h := e.events
	h.mu.Lock()
	defer h.mu.Unlock()
	out := []EventSubscription{}
	for _, s := range h.subs[strings.ToLower(vault)] {
		out = append(out, s.EventSubscription)
	}
	return out
}

// DeleteEventSubscription removes a subscription.
func (e *Emulator) DeleteEventSubscription(vault, name string) error {
	h := e.events
	h.mu.Lock()
	defer h.mu.Unlock()
	vault = strings.ToLower(vault)
	n := len(h.subs[vault])
	h.subs[vault] = slices.DeleteFunc(h.subs[vault], func(x *subscription) bool { return x.Name == name })
	if len(h.subs[vault]) == n {
		return fmt.Errorf("%w: event subscription %q of vault %q", ErrNotFound, name, vault)
	}
	return nil
}

// SetEventDelivery stops, delays or resumes deliveries (tests of polling as
// the backstop).
func (e *Emulator) SetEventDelivery(d EventDelivery) {
	e.events.mu.Lock()
	defer e.events.mu.Unlock()
	e.events.delivery = d
}

// SetEventRetries sets how often a failed delivery is tried and the first
// pause between tries (doubling after each); zero values keep the default
// (4 attempts, 100 ms).
func (e *Emulator) SetEventRetries(attempts int, backoff time.Duration) {
	e.events.mu.Lock()
	defer e.events.mu.Unlock()
	if attempts <= 0 {
		attempts = defaultDeliveryAttempts
	}
	if backoff <= 0 {
		backoff = defaultDeliveryBackoff
	}
	e.events.attempts, e.events.backoff = min(attempts, 20), backoff
}

// EventStats returns the event counters.
func (e *Emulator) EventStats() EventStats {
	e.events.mu.Lock()
	defer e.events.mu.Unlock()
	return e.events.stats
}

// ---- publishing ----

func (e *Emulator) vaultTopic(vault string) string {
	return "/subscriptions/" + subscriptionID + "/resourceGroups/" + resourceGroup + "/providers/Microsoft.KeyVault/vaults/" + vault
}

func unixOf(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	u := t.Unix()
	return &u
}

// keyEvent builds a key event of vault/key at version ver.
func (e *Emulator) keyEvent(typ, vault, key string, ver *keyVersion) GridEvent {
	data, _ := json.Marshal(KeyEventData{ID: e.vaultURLFor(vault) + "/keys/" + key + "/" + ver.ID, VaultName: vault,
		ObjectType: "Key", ObjectName: key, Version: ver.ID, NBF: unixOf(ver.NotBefore), EXP: unixOf(ver.Expires)})
	return GridEvent{ID: newID(), Topic: e.vaultTopic(vault), Subject: key, EventType: typ,
		EventTime: e.now().UTC().Format(time.RFC3339Nano), Data: data, DataVersion: "1", MetadataVersion: "1"}
}

// keyVersionCreatedLocked publishes KeyNewVersionCreated (a new key's first
// version counts too). The caller holds e.mu.
func (e *Emulator) keyVersionCreatedLocked(vault, key string, ver *keyVersion) {
	if e.events == nil {
		return
	}
	e.events.publish(vault, e.keyEvent(EventKeyNewVersionCreated, vault, key, ver))
}

// accessChangedLocked publishes VaultAccessPolicyChanged. The caller holds e.mu.
func (e *Emulator) accessChangedLocked(vault string) {
	if e.events == nil {
		return
	}
	data, _ := json.Marshal(KeyEventData{ID: e.vaultURLFor(vault) + "/", VaultName: vault, ObjectType: "Vault", ObjectName: vault})
	e.events.publish(vault, GridEvent{ID: newID(), Topic: e.vaultTopic(vault), Subject: vault, EventType: EventVaultAccessPolicyChanged,
		EventTime: e.now().UTC().Format(time.RFC3339Nano), Data: data, DataVersion: "1", MetadataVersion: "1"})
}

// ScanKeyExpiry publishes, on the emulator's clock, KeyNearExpiry for the
// newest version of each key within NearExpiryWindow of its expiry and
// KeyExpired once it is past it, each once per version and expiry date. It
// runs every second; tests that move the clock call it directly.
func (e *Emulator) ScanKeyExpiry() {
	if e.events == nil {
		return
	}
	type pending struct {
		vault string
		ev    GridEvent
	}
	var out []pending
	e.mu.Lock()
	now := e.now()
	h := e.events
	for vname, vs := range e.st.Vaults {
		if vs.Deleted {
			continue
		}
		for _, k := range vs.Keys {
			if len(k.Versions) == 0 {
				continue
			}
			ver := k.newest()
			if ver.Expires == nil {
				continue
			}
			exp := *ver.Expires
			typ := ""
			switch {
			case !now.Before(exp):
				typ = EventKeyExpired
			case !now.Before(exp.Add(-NearExpiryWindow)):
				typ = EventKeyNearExpiry
			default:
				continue
			}
			mark := vname + "/" + k.Name + "/" + ver.ID + "/" + exp.Format(time.RFC3339) + "/" + typ
			h.mu.Lock()
			fresh := !h.seen[mark]
			h.seen[mark] = true
			h.mu.Unlock()
			if fresh {
				out = append(out, pending{vname, e.keyEvent(typ, vname, k.Name, ver)})
			}
		}
	}
	e.mu.Unlock()
	for _, p := range out {
		h.publish(p.vault, p.ev)
	}
}

// ---- admin API ----

type deliveryReq = EventDelivery

func (e *Emulator) eventRoutes(m *http.ServeMux) {
	h := func(pattern string, f adminFunc) { m.Handle(pattern, adminHandler(f)) }
	h("POST /admin/vaults/{vault}/eventSubscriptions", func(r *http.Request) (any, error) {
		var s EventSubscription
		if err := readJSON(r, &s); err != nil {
			return nil, err
		}
		return e.CreateEventSubscription(r.PathValue("vault"), s)
	})
	h("GET /admin/vaults/{vault}/eventSubscriptions", func(r *http.Request) (any, error) {
		return e.EventSubscriptions(r.PathValue("vault")), nil
	})
	h("GET /admin/vaults/{vault}/eventSubscriptions/{name}", func(r *http.Request) (any, error) {
		return e.EventSubscription(r.PathValue("vault"), r.PathValue("name"))
	})
	h("DELETE /admin/vaults/{vault}/eventSubscriptions/{name}", func(r *http.Request) (any, error) {
		return nil, e.DeleteEventSubscription(r.PathValue("vault"), r.PathValue("name"))
	})
	h("GET /admin/eventgrid/validate/{vault}/{name}", func(r *http.Request) (any, error) {
		if !e.events.validate(strings.ToLower(r.PathValue("vault")), r.PathValue("name"), r.URL.Query().Get("code")) {
			return nil, fmt.Errorf("%w: no subscription with that name and validation code", ErrNotFound)
		}
		return e.EventSubscription(r.PathValue("vault"), r.PathValue("name"))
	})
	h("PUT /admin/eventgrid/delivery", func(r *http.Request) (any, error) {
		var d deliveryReq
		if err := readJSON(r, &d); err != nil {
			return nil, err
		}
		if d.DelayMs < 0 {
			return nil, fmt.Errorf("%w: delayMs %d must not be negative", ErrInvalid, d.DelayMs)
		}
		e.SetEventDelivery(d)
		return nil, nil
	})
	h("POST /admin/eventgrid/scan", func(r *http.Request) (any, error) { e.ScanKeyExpiry(); return nil, nil })
	h("GET /admin/eventgrid/stats", func(r *http.Request) (any, error) { return e.EventStats(), nil })
}

// ---- AdminClient ----

// CreateEventSubscription mirrors Emulator.CreateEventSubscription.
func (c *AdminClient) CreateEventSubscription(vault string, s EventSubscription) (EventSubscription, error) {
	var out EventSubscription
	err := c.do(bg(), http.MethodPost, "/admin/vaults"+p(vault)+"/eventSubscriptions", s, &out)
	return out, err
}

// EventSubscriptions mirrors Emulator.EventSubscriptions.
func (c *AdminClient) EventSubscriptions(vault string) ([]EventSubscription, error) {
	var out []EventSubscription
	err := c.do(bg(), http.MethodGet, "/admin/vaults"+p(vault)+"/eventSubscriptions", nil, &out)
	return out, err
}

// DeleteEventSubscription mirrors Emulator.DeleteEventSubscription.
func (c *AdminClient) DeleteEventSubscription(vault, name string) error {
	return c.do(bg(), http.MethodDelete, "/admin/vaults"+p(vault, "eventSubscriptions", name), nil, nil)
}

// SetEventDelivery mirrors Emulator.SetEventDelivery.
func (c *AdminClient) SetEventDelivery(d EventDelivery) error {
	return c.do(bg(), http.MethodPut, "/admin/eventgrid/delivery", d, nil)
}

// ScanKeyExpiry mirrors Emulator.ScanKeyExpiry.
func (c *AdminClient) ScanKeyExpiry() error {
	return c.do(bg(), http.MethodPost, "/admin/eventgrid/scan", nil, nil)
}

// EventStats mirrors Emulator.EventStats.
func (c *AdminClient) EventStats() (EventStats, error) {
	var out EventStats
	err := c.do(bg(), http.MethodGet, "/admin/eventgrid/stats", nil, &out)
	return out, err
}
