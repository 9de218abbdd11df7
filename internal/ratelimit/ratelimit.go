// Package ratelimit keeps one org from spending another customer's Key
// Vault throttle budget.
//
// Every API call that reaches a vault on demand — a preflight, a re-check, a
// config submission, a new sandbox — is charged to its org in a token bucket
// for its class of route (cmkapi.Route.Limit). The vault calls made for
// those requests are charged as well, across all orgs, to a bucket per vault
// host (Limits.Vaults). A call over either limit is refused before it
// reaches the vault with an *Exceeded that names the limit and says when to
// try again.
//
// The public consent callback (Limits.Consent), whose every call that gets
// past its cheap checks costs a request to Microsoft Entra ID's token
// endpoint, is limited per org named in its verified state, per client
// address, and in how many redemptions run at once.
//
// The background work — the monitor's scheduled key checks and the
// enablement jobs — has its own pacing and is not charged: only vault calls
// made with a context from Metered count towards the vault cap.
//
// Guarantees:
//   - Memory is bounded: each limiter keeps at most Policy.MaxKeys buckets.
//     A bucket that has refilled is dropped, which loses nothing (a new bucket
//     starts full). When the table is full of busy buckets the least recently
//     used one goes, which at worst gives that org or vault one fresh burst.
//   - Limits hold per process: R replicas behind one load balancer admit up
//     to R times the rates of the policy.
//   - Time comes from Policy.Now, so tests step a fake clock.
package ratelimit

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
)

// Limit is a token bucket: on average N calls per Per, at most Burst at
// once.
type Limit struct {
	N     int
	Per   time.Duration
	Burst int // 0 = N
}

func (l Limit) burst() int {
	if l.Burst <= 0 {
		return l.N
	}
	return l.Burst
}

// String reads like "6 per minute (burst 3)".
func (l Limit) String() string {
	per := "per " + l.Per.String()
	switch l.Per {
	case time.Second:
		per = "per second"
	case time.Minute:
		per = "per minute"
	case time.Hour:
		per = "per hour"
	}
	return fmt.Sprintf("%d %s (burst %d)", l.N, per, l.burst())
}

// Policy sets the limits. Zero fields take the values of Defaults.
type Policy struct {
	// Per org, by route class (cmkapi.Route.Limit).
	Preflight, Recheck, Config, Sandbox, WebhookTest Limit
	// Vault caps the calls to one vault host made for those routes, summed
	// over every org.
	Vault Limit
	// ConsentPerOrg and ConsentPerClient limit the consent callbacks that
	// redeem a code, per org of the link's state and per client address;
	// ConsentConcurrency caps the redemptions in flight.
	ConsentPerOrg, ConsentPerClient Limit
	ConsentConcurrency              int
	// MaxKeys bounds the buckets each limit keeps (orgs, or vault hosts).
	MaxKeys int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Defaults returns the default policy.
//
// What the limits are measured against: a preflight makes at most three
// vault calls (describe, wrap, unwrap), and so does a re-check; a new sandbox
// wraps one data key per store (two calls); an accepted config submission
// starts a job that validates the key and re-wraps every data key of the org.
func Defaults() Policy {
	return Policy{
		// A person fixing a key runs a preflight by hand (the Encryption
		// page, `cmk doctor`): three in a row, then one every ten seconds, is
		// more than anyone clicks. At most 18 vault calls a minute per org.
		Preflight: Limit{N: 6, Per: time.Minute, Burst: 3},
		// A re-check is asked for after changing something in the vault, to
		// see it take effect before the next scheduled check (every 30 s by
		// default). At most 36 vault calls a minute per org.
		Recheck: Limit{N: 12, Per: time.Minute, Burst: 4},
		// Submissions are rare — the first, and one after a failed
		// validation — but each accepted one re-wraps every data key of the
		// org, hundreds of vault calls. Five in a row leave room to correct a
		// rejected body.
		Config: Limit{N: 10, Per: time.Hour, Burst: 5},
		// Sandboxes are made by hand or by a setup script, a few at a time;
		// each costs two wraps under the org's key.
		Sandbox: Limit{N: 30, Per: time.Hour, Burst: 10},
		// A webhook is tested by hand after adding it or fixing its
		// receiver; each test is one call to a URL the org chose (checked
		// like every webhook URL), so a few a minute is plenty and keeps
		// the platform from being used to hammer a receiver.
		WebhookTest: Limit{N: 6, Per: time.Minute, Burst: 3},
		// One org using the limits above to the full makes about 55 vault
		// calls a minute (18 + 36 + 1); the cap admits that much per vault,
		// so many orgs together get no more from one vault than one org
		// could. That is far below Key Vault's own limits (thousands of calls
		// per 10 s), which the vault's owner also spends, so cmk's on-demand
		// calls cannot get a vault throttled. Thirty at once lets ten
		// preflights from different orgs run together.
		Vault: Limit{N: 60, Per: time.Minute, Burst: 30},
		// An administrator accepts an org's link once; declining, signing
		// in with the wrong account or a lost page make a few more. Anyone
		// holding one of the org's links (it is in the browser history of
		// whoever opened it) can call the callback with it, so the org's
		// allowance is what one link can cost: 5 at once, 10 an hour.
		ConsentPerOrg: Limit{N: 10, Per: time.Hour, Burst: 5},
		// Consents come from administrators' browsers, a few a day; behind
		// a gateway every browser has the gateway's address, so this is
		// generous for a person and small for a script.
		ConsentPerClient: Limit{N: 30, Per: time.Minute, Burst: 20},
		// Each redemption waits on Entra ID (up to the vault timeout); four
		// at once keep a burst of callbacks from holding many connections
		// and goroutines while leaving room for real administrators.
		ConsentConcurrency: 4,
		// Ten thousand buckets of ~150 bytes is under 2 MB per limit, and
		// more orgs than call these routes within any refill period.
		MaxKeys: 10_000,
	}
}

func (p Policy) withDefaults() Policy {
	d := Defaults()
	for _, f := range []struct{ l, def *Limit }{
		{&p.Preflight, &d.Preflight}, {&p.Recheck, &d.Recheck}, {&p.Config, &d.Config}, {&p.Sandbox, &d.Sandbox}, {&p.WebhookTest, &d.WebhookTest}, {&p.Vault, &d.Vault},
		{&p.ConsentPerOrg, &d.ConsentPerOrg}, {&p.ConsentPerClient, &d.ConsentPerClient},
	} {
		if f.l.N <= 0 || f.l.Per <= 0 {
			*f.l = *f.def
		}
	}
	if p.MaxKeys <= 0 {
		p.MaxKeys = d.MaxKeys
	}
	if p.ConsentConcurrency <= 0 {
		p.ConsentConcurrency = d.ConsentConcurrency
	}
	if p.Now == nil {
		p.Now = time.Now
	}
	return p
}

// Errors an *Exceeded wraps: which kind of limit refused.
var (
	ErrOrgLimit   = errors.New("per-org rate limit exceeded")
	ErrVaultLimit = errors.New("per-vault rate limit exceeded")
	// ErrConsentLimit refuses a consent callback (per org, per client
	// address, or too many at once).
	ErrConsentLimit = errors.New("consent callback rate limit exceeded")
)

// Exceeded is a call refused by a limit: which one, and when to try again.
type Exceeded struct {
	// Scope names the limit: "preflight per org", or "calls to vault
	// kv1.vault.azure.net across orgs".
	Scope      string
	Limit      Limit
	RetryAfter time.Duration // until the limit admits the call
	err        error         // ErrOrgLimit or ErrVaultLimit
}

func (e *Exceeded) Error() string {
	return fmt.Sprintf("rate limit of %s exceeded: %s; retry after %s", e.Scope, e.Limit, e.RetryAfter)
}

func (e *Exceeded) Unwrap() error { return e.err }

// Limits are the running limiters of a Policy. They are safe for
// concurrent use.
type Limits struct {
	perOrg map[string]*Limiter // by route class
	vault  *Limiter

	consentOrg, consentClient *Limiter
	redeeming                 chan struct{} // a slot per redemption in flight
}

// New starts the limiters of p.
func New(p Policy) *Limits {
	p = p.withDefaults()
	l := &Limits{perOrg: map[string]*Limiter{}, vault: NewLimiter(p.Vault, p.MaxKeys, p.Now),
		consentOrg: NewLimiter(p.ConsentPerOrg, p.MaxKeys, p.Now), consentClient: NewLimiter(p.ConsentPerClient, p.MaxKeys, p.Now),
		redeeming: make(chan struct{}, p.ConsentConcurrency)}
	for class, lim := range map[string]Limit{
		cmkapi.LimitPreflight: p.Preflight, cmkapi.LimitRecheck: p.Recheck,
		cmkapi.LimitConfig: p.Config, cmkapi.LimitSandbox: p.Sandbox, cmkapi.LimitWebhookTest: p.WebhookTest,
	} {
		l.perOrg[class] = NewLimiter(lim, p.MaxKeys, p.Now)
	}
	return l
}

// Org charges org for one call of a route class (cmkapi.Route.Limit). It
// returns nil, or an *Exceeded wrapping ErrOrgLimit when the org has used up
// its allowance. A class the policy does not know is an error.
func (l *Limits) Org(class, org string) error {
	lim := l.perOrg[class]
	if lim == nil {
		return fmt.Errorf("rate limit class %q is not in the policy", class)
	}
	if wait, ok := lim.Take(org, 1); !ok {
		return &Exceeded{Scope: class + " per org", Limit: lim.Limit(), RetryAfter: wait, err: ErrOrgLimit}
	}
	return nil
}

// consentBusyRetry is the Retry-After of a callback refused because every
// redemption slot is taken: a redemption takes about a second.
const consentBusyRetry = time.Second

// Consent admits one consent callback that is about to redeem a code: it
// charges the client address, then the org of the callback's (verified)
// state, and takes a redemption slot. It returns the function that frees
// the slot, or an *Exceeded wrapping ErrConsentLimit. A refused callback is
// charged to the client only, so callbacks with other orgs' states cannot
// spend an org's allowance once their address is over its limit.
func (l *Limits) Consent(org, client string) (release func(), err error) {
	if wait, ok := l.consentClient.Take(client, 1); !ok {
		return nil, &Exceeded{Scope: "consent callbacks per client address", Limit: l.consentClient.Limit(), RetryAfter: wait, err: ErrConsentLimit}
	}
	if wait, ok := l.consentOrg.Take(org, 1); !ok {
		return nil, &Exceeded{Scope: "consent callbacks per org", Limit: l.consentOrg.Limit(), RetryAfter: wait, err: ErrConsentLimit}
	}
	select {
	case l.redeeming <- struct{}{}:
	default:
		return nil, &Exceeded{Scope: "consent redemptions in flight", Limit: Limit{N: cap(l.redeeming), Per: consentBusyRetry}, RetryAfter: consentBusyRetry, err: ErrConsentLimit}
	}
	var once sync.Once
	return func() { once.Do(func() { <-l.redeeming }) }, nil
}
