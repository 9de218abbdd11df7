package alerts

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/store"
)

// Signature header: "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>".
// Receivers recompute it with their secret and reject stale timestamps, so a
// captured delivery cannot be replayed later.
const (
	HeaderSignature = "X-Cmk-Signature"
	HeaderEventID   = "X-Cmk-Event-Id"
	HeaderEventType = "X-Cmk-Event-Type"
)

// Sign returns the signature header value for body at time t.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "."))
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// ErrBadSignature is returned by Verify.
var ErrBadSignature = errors.New("webhook signature does not verify")

// Verify checks a signature header against body, accepting timestamps within
// tolerance of now.
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return fmt.Errorf("%w: malformed header", ErrBadSignature)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: timestamp outside %s", ErrBadSignature, tolerance)
	}
	want := Sign(secret, time.Unix(sec, 0), body)
	if !hmac.Equal([]byte(want), []byte("t="+ts+",v1="+sig)) {
		return ErrBadSignature
	}
	return nil
}

// URLPolicy says which webhook URLs tenants may register. By default only
// https URLs whose host resolves to public addresses are called, so a tenant
// cannot make the service reach into the platform's own network.
type URLPolicy struct {
	AllowHTTP            bool // allow http:// (development, tests)
	AllowPrivateNetworks bool // allow loopback and private addresses (development, tests)
}

// Check validates a webhook URL at registration.
func (p URLPolicy) Check(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return fmt.Errorf("webhook URL %q is not an absolute URL with a host", raw)
	}
	if u.Scheme != "https" && !(p.AllowHTTP && u.Scheme == "http") {
		return fmt.Errorf("webhook URL must use https, not %q", u.Scheme)
	}
	if u.User != nil {
		return errors.New("webhook URL must not carry credentials; use the signing secret to authenticate deliveries")
	}
	// Only the standard port: a webhook (and its on-demand test) must not
	// let an org probe arbitrary ports of hosts from the platform's network.
	if port := u.Port(); port != "" && !p.AllowPrivateNetworks && !(u.Scheme == "https" && port == "443") && !(u.Scheme == "http" && port == "80") {
		return fmt.Errorf("webhook URL has port %s; use the standard https port (443)", port)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); ip != nil {
		if !p.AllowPrivateNetworks && !public(ip) {
			return fmt.Errorf("webhook host %s is not a public address", ip)
		}
		return nil
	}
	// Browsers and some resolvers read a host whose last label is a number
	// (2130706433, 0x7f000001, 127.1) as an IPv4 address; accept only the
	// dotted form above, so the check sees the address that is dialled.
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	last := name[strings.LastIndexByte(name, '.')+1:]
	if numericLabel(last) {
		return fmt.Errorf("webhook host %q is an IP address in a non-standard notation; use a DNS name", host)
	}
	if !p.AllowPrivateNetworks && (name == "localhost" || strings.HasSuffix(name, ".localhost")) {
		return fmt.Errorf("webhook host %q is not a public address", host)
	}
	return nil
}

// numericLabel reports whether a DNS label reads as a number: decimal,
// octal or 0x-hex.
func numericLabel(l string) bool {
	if l == "" {
		return false
	}
	if rest, ok := strings.CutPrefix(l, "0x"); ok {
		for _, c := range rest {
			if !strings.ContainsRune("0123456789abcdef", c) {
				return false
			}
		}
		return true
	}
	for _, c := range l {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// nonPublic are ranges beyond Go's private/loopback/link-local tests that
// reach internal networks: shared address space (also used for cloud
// metadata), benchmarking, IETF protocol assignments, reserved space, and
// IPv6 forms that embed or translate IPv4 (NAT64, 6to4, Teredo,
// IPv4-compatible), plus deprecated site-local.
var nonPublic = func() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range []string{"0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
		"::/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32", "2001:db8::/32", "fec0::/10", "100::/64"} {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}()

func public(ip net.IP) bool {
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast() {
		return false
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	addr = addr.Unmap()
	for _, p := range nonPublic {
		if p.Contains(addr) {
			return false
		}
	}
	return true
}

// Client returns an HTTP client that enforces the policy at connection time
// (after DNS), so a public name pointing at a private address is refused too.
func (p URLPolicy) Client(timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, Control: func(network, address string, _ syscall.RawConn) error {
		if p.AllowPrivateNetworks {
			return nil
		}
		host, _, _ := net.SplitHostPort(address)
		if ip := net.ParseIP(host); ip == nil || !public(ip) {
			return fmt.Errorf("webhook delivery to %s refused: not a public address", host)
		}
		return nil
	}}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: d.DialContext, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// Deliverer sends queued events to webhooks: at least once, retried with
// exponential backoff, each with a stable event id for deduplication. It
// opens each webhook's sealed secret to sign, and never logs it.
type Deliverer struct {
	Store       DelivererStore
	Secrets     *SecretBox // required: opens each webhook's stored secret
	Client      *http.Client
	Log         *slog.Logger
	MaxAttempts int           // default 8
	Backoff     time.Duration // first retry delay, doubled each time; default 2s
	Poll        time.Duration // default 500ms
	OnResult    func(outcome string)
}

// Run seals any secrets still stored as plaintext, then delivers until ctx
// ends.
func (d *Deliverer) Run(ctx context.Context) {
	if d.Poll == 0 {
		d.Poll = 500 * time.Millisecond
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.Secrets == nil {
		d.Log.Error("webhook deliverer has no secret box; no webhook is delivered")
		return
	}
	if n, err := SealPlaintextSecrets(ctx, d.Store, d.Secrets); err != nil {
		d.Log.Error("webhook secrets stored in plaintext were not all sealed; they still sign, and the next start retries", "sealed", n, "err", err)
	} else if n > 0 {
		d.Log.Info("sealed webhook secrets stored in plaintext", "webhooks", n)
	}
	t := time.NewTicker(d.Poll)
	defer t.Stop()
	for {
		d.DeliverDue(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// DeliverDue attempts every due delivery once.
func (d *Deliverer) DeliverDue(ctx context.Context) {
	if d.MaxAttempts == 0 {
		d.MaxAttempts = 8
	}
	if d.Backoff == 0 {
		d.Backoff = 2 * time.Second
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.Secrets == nil {
		d.Log.Error("webhook deliverer has no secret box; no webhook is delivered")
		return
	}
	// A batch is sent by a few workers in parallel, each delivery bounded by
	// the client's timeout, and the lease covers the whole batch, so one
	// tenant's unresponsive receiver neither blocks the others for long nor
	// causes duplicate sends.
	due, err := d.Store.ClaimDeliveries(ctx, 2*time.Minute, 32)
	if err != nil {
		if ctx.Err() == nil {
			d.Log.Error("claim webhook deliveries", "err", err)
		}
		return
	}
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, dl := range due {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			d.deliver(ctx, dl)
		}()
	}
	wg.Wait()
}

func (d *Deliverer) deliver(ctx context.Context, dl store.Delivery) {
	secret, err := d.Secrets.Open(dl.OrgID, dl.WebhookID, dl.SealedSecret)
	if err != nil {
		// Retrying cannot make it open: give up on this delivery now.
		d.Log.Error("webhook delivery abandoned: its signing secret does not open", "org", dl.OrgID, "webhook", dl.WebhookID, "event", dl.EventID, "err", err)
		if ferr := d.Store.FinishDelivery(ctx, dl.ID, false, time.Time{}, err.Error()); ferr != nil {
			d.Log.Error("record webhook delivery", "err", ferr)
		}
		if d.OnResult != nil {
			d.OnResult("gave_up")
		}
		return
	}
	err = d.send(ctx, dl, secret)
	var next time.Time
	outcome, msg := "delivered", ""
	if err != nil {
		outcome, msg = "retry", err.Error()
		if dl.Attempts+1 >= d.MaxAttempts {
			outcome = "gave_up"
		} else {
			next = time.Now().Add(d.Backoff << min(dl.Attempts, 10))
		}
		d.Log.Warn("webhook delivery failed", "webhook", dl.WebhookID, "event", dl.EventID, "attempt", dl.Attempts+1, "err", err)
	}
	if ferr := d.Store.FinishDelivery(ctx, dl.ID, err == nil, next, msg); ferr != nil {
		d.Log.Error("record webhook delivery", "err", ferr)
	}
	if d.OnResult != nil {
		d.OnResult(outcome)
	}
}

// send posts one delivery signed with secret.
func (d *Deliverer) send(ctx context.Context, dl store.Delivery, secret string) error {
	body := []byte(dl.Payload)
	var ev struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(body, &ev) // the type header is informative only
	_, err := d.post(ctx, dl.URL, dl.EventID, ev.Type, body, secret)
	return err
}

// post sends one signed event and returns the receiver's status. Its
// errors never name the URL: a receiver's URL can carry its own credential
// (a token in the path or query), and the errors are logged and stored.
func (d *Deliverer) post(ctx context.Context, url_, eventID, eventType string, body []byte, secret string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url_, bytes.NewReader(body))
	if err != nil {
		return 0, errors.New("webhook URL does not parse")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderSignature, Sign(secret, time.Now(), body))
	req.Header.Set(HeaderEventID, eventID)
	req.Header.Set(HeaderEventType, eventType)
	client := d.Client
	if client == nil {
		client = URLPolicy{}.Client(10 * time.Second)
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return 0, fmt.Errorf("%s: %w", ue.Op, ue.Err) // without ue.URL
		}
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("receiver answered HTTP %d", resp.StatusCode)
	}
	return resp.StatusCode, nil
}

// TestResult is what happened to a test event.
type TestResult struct {
	EventID   string
	Delivered bool   // the receiver answered 2xx
	Status    int    // the receiver's HTTP status; 0 when none came
	Error     string // why it was not delivered; never the URL
	Took      time.Duration
}

// Test sends h one signed webhook.test event now, once, and says what
// happened. The event goes through the same client as every delivery (the
// URL policy is enforced again when it connects) and is not queued or
// retried: a person is waiting for the answer.
func (d *Deliverer) Test(ctx context.Context, h store.Webhook) (TestResult, error) {
	if d.Secrets == nil {
		return TestResult{}, errors.New("test webhook: the deliverer has no secret box")
	}
	secret, err := d.Secrets.Open(h.OrgID, h.ID, h.SealedSecret)
	if err != nil {
		return TestResult{}, fmt.Errorf("test webhook %s: its signing secret does not open: %w", h.ID, err)
	}
	id := "test:" + uuid.NewString()
	body, _ := json.Marshal(cmkapi.Event{ID: id, Type: cmkapi.EventWebhookTest, OrgID: h.OrgID, OccurredAt: time.Now().UTC()})
	start := time.Now()
	status, err := d.post(ctx, h.URL, id, cmkapi.EventWebhookTest, body, secret)
	res := TestResult{EventID: id, Status: status, Delivered: err == nil, Took: time.Since(start)}
	if err != nil {
		res.Error = testFailure(status, err)
	}
	return res, nil
}

// testFailure says why a test event was not delivered in one of a few fixed
// phrases. The network error itself is not shown: its text names resolved
// addresses, the platform's resolver and certificate names, which would
// make the test a probe of networks the org cannot see.
func testFailure(status int, err error) string {
	var dns *net.DNSError
	var ue interface{ Timeout() bool }
	switch msg := err.Error(); {
	case status != 0:
		return fmt.Sprintf("the receiver answered HTTP %d", status)
	case errors.As(err, &dns):
		return "the receiver's host name does not resolve"
	case strings.Contains(msg, "not a public address"):
		return "the receiver's address is not a public address"
	case errors.As(err, &ue) && ue.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return "the receiver did not answer in time"
	case strings.Contains(msg, "tls:"), strings.Contains(msg, "x509:"), strings.Contains(msg, "certificate"):
		return "the TLS handshake with the receiver failed (is its certificate valid for its name?)"
	default:
		return "could not connect to the receiver"
	}
}
