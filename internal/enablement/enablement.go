// Package enablement runs the CMK enablement job of seed 001: NEW →
// RUNNING (validation) → UPDATE_EXISTING_RESOURCES (re-wrap every data key
// of every store of every sandbox under the customer key) → COMPLETED, or
// FAILED with the check that failed and what to do.
//
// Jobs live in the database and are coordinated by leases there, so any
// number of workers (in one process or many) can run; a worker that dies
// loses its lease and another resumes the job where it stopped. Re-wrapping
// is idempotent: each data key swaps its wrapping in one row update, after
// the new wrapping exists, so a crash at any point loses no data key.
//
// # Waiting out propagation
//
// A role assignment or an admin consent takes a while to apply in Azure, so
// a refusal right after it (403 from RBAC or an access policy, AADSTS700016)
// may be a grant on its way. Validation then keeps the job RUNNING, with a
// message saying what it waits for and when it checks again, and re-checks
// with backoff (1, 2, 4 ... 60 s) until Runner.PropagationWait
// (DefaultPropagationWait, ten minutes) after the configuration was
// submitted; only then does the job fail, with the usual steps.
//
// Key Vault throttling is respected: re-wrap calls run with bounded
// concurrency, and a 429 pauses every worker of the job for the Retry-After
// the vault gave (or 1, 2, 4, 8, 16 s when it gave none).
//
// # Never under a key that cannot unwrap
//
// Key Vault still wraps under a disabled key (it refuses only unwrap), so a
// wrap that works proves nothing. Before re-wrapping starts or resumes, and
// before each page of data keys, the job reads the key (Describe) and
// re-wraps only while its newest version is enabled, within its nbf/exp
// dates, permits wrapKey and unwrapKey, and is RSA of at least
// kms.MinRSABits bits. And each new wrapping is proved before the old one is
// dropped: the vault unwraps it and the result must equal the data key
// (compared in constant time). A key found unusable, or a proof that fails,
// stops the job where it stands with the reason (KEY_DISABLED, ...) on the
// job: nothing more is re-wrapped, no data key loses its wrapping, and the
// job resumes on its own once the key is usable again.
package enablement

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/guidance"
	"github.com/cmk-project/cmk/internal/keyid"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/preflight"
	"github.com/cmk-project/cmk/internal/store"
)

// Defaults. The lease is long enough to ride out a slow vault call and short
// enough that a crashed worker's job resumes within half a minute.
const (
	DefaultLease       = 30 * time.Second
	DefaultPoll        = 500 * time.Millisecond
	DefaultConcurrency = 4
	// DefaultPageSize data keys are re-wrapped between two reads of the
	// key's attributes: one Describe per 200 re-wraps bounds how many
	// wrappings a disable can race with at a cost of half a percent more
	// calls.
	DefaultPageSize = 200
	// DefaultProgressEvery is how often the progress of a page being
	// re-wrapped is written to the job, besides at the end of each page: a
	// page of a slow vault takes minutes, and an operator (or a replica
	// watching for a failed-over job) should see it move meanwhile. One
	// count and one row update a second per job.
	DefaultProgressEvery = time.Second
	// A job whose validation cannot get a definite answer (throttling,
	// timeouts) is retried this many times before it fails, about 10 minutes.
	maxValidationAttempts = 12
	maxBackoff            = 60 * time.Second

	// DefaultPropagationWait is how long after a configuration is submitted
	// validation keeps re-checking a refusal that may only be a grant not yet
	// in effect. Microsoft documents that a Key Vault role assignment can
	// take up to ten minutes to apply (the Key Vault RBAC guide's role
	// assignment latency) and says the same of access-policy and role
	// changes generally; the 403 itself says "please observe propagation
	// time". A newly consented app's service principal replicates through
	// Entra ID within minutes too, so one bound serves both.
	DefaultPropagationWait = 10 * time.Minute
)

// Runner claims and runs enablement jobs.
type Runner struct {
	Store       Store
	Keyring     *keyring.Keyring
	Provider    kms.Provider
	Policy      keyid.Policy
	Env         guidance.Env
	Owner       string        // unique per worker, e.g. hostname/pid/random
	Lease       time.Duration // default DefaultLease
	Poll        time.Duration // default DefaultPoll
	Concurrency int           // concurrent vault calls per job, default DefaultConcurrency
	PageSize    int           // data keys re-wrapped between two checks of the key, default DefaultPageSize
	// ProgressEvery is how often progress is written during a page,
	// default DefaultProgressEvery.
	ProgressEvery time.Duration
	// PropagationWait bounds how long, counted from the configuration's
	// submission, validation waits for a role assignment or an admin
	// consent to take effect before the job fails; 0 means
	// DefaultPropagationWait, a negative value not to wait.
	PropagationWait time.Duration
	Log             *slog.Logger
	Now             func() time.Time
	Sleep           func(ctx context.Context, d time.Duration) error
	// Tenants finds the Azure tenant of a key's vault for the key_owner
	// check (nil: the check cannot pass).
	Tenants preflight.TenantFinder

	// AfterRewrap, when set, is called after each data key's wrapping is
	// replaced; an error stops the worker where it stands, without releasing
	// the lease, as a crash would (fault-injection tests).
	AfterRewrap func(n int64) error
	// Stop, when closed, drains the runner: it claims no new job, a job
	// being re-wrapped finishes the data keys already under way and then
	// gives its lease up so another replica resumes at once, and Run
	// returns. Cancelling Run's ctx instead stops at once and leaves the
	// lease to expire (as a crash would).
	Stop <-chan struct{}
	// throttled counts 429 answers seen (benchmarks).
	throttled atomic.Int64
}

func (r *Runner) defaults() {
	if r.Lease == 0 {
		r.Lease = DefaultLease
	}
	if r.Poll == 0 {
		r.Poll = DefaultPoll
	}
	if r.Concurrency == 0 {
		r.Concurrency = DefaultConcurrency
	}
	if r.PageSize == 0 {
		r.PageSize = DefaultPageSize
	}
	if r.ProgressEvery == 0 {
		r.ProgressEvery = DefaultProgressEvery
	}
	if r.PropagationWait == 0 {
		r.PropagationWait = DefaultPropagationWait
	}
	if r.Log == nil {
		r.Log = slog.Default()
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Sleep == nil {
		r.Sleep = sleepCtx
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Throttled returns how many 429 answers the runner has seen.
func (r *Runner) Throttled() int64 { return r.throttled.Load() }

// Run claims and runs jobs until ctx ends.
func (r *Runner) Run(ctx context.Context) {
	r.defaults()
	for ctx.Err() == nil && !r.stopping() {
		ran, err := r.RunOnce(ctx)
		if err != nil && ctx.Err() == nil {
			r.Log.Warn("enablement job error", "err", err)
		}
		if !ran {
			select {
			case <-r.Stop:
				return
			default:
			}
			if r.Sleep(ctx, r.Poll) != nil {
				return
			}
		}
	}
}

// stopping reports whether Stop is closed.
func (r *Runner) stopping() bool {
	select {
	case <-r.Stop:
		return true
	default:
		return false
	}
}

// yield gives the job's lease up for a drain, due at once so another
// replica takes it over without waiting for the lease to expire.
func (r *Runner) yield(ctx context.Context, job *store.Config, log *slog.Logger) error {
	log.Info("enablement job handed over: this worker is draining")
	return r.update(ctx, job, store.JobUpdate{NextAttemptAt: ptr(r.Now()), Release: true})
}

// RunOnce claims one due job and works on it until it finishes, must wait,
// or loses its lease. It reports whether a job was claimed.
func (r *Runner) RunOnce(ctx context.Context) (bool, error) {
	r.defaults()
	if r.stopping() {
		return false, nil
	}
	job, err := r.Store.ClaimJob(ctx, r.Owner, r.Lease)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if job.ColumnErr != nil {
		r.Log.Warn("enablement job has an unreadable stored field; it is left empty", "org", job.OrgID, "job", job.ID, "err", job.ColumnErr)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.keepLease(ctx, cancel, job.ID) }()
	err = r.work(ctx, job)
	cancel()
	wg.Wait()
	return true, err
}

// keepLease renews the lease until ctx ends; losing it cancels the job.
func (r *Runner) keepLease(ctx context.Context, cancel context.CancelFunc, id string) {
	for {
		if r.Sleep(ctx, r.Lease/3) != nil {
			return
		}
		until := r.Now().Add(r.Lease)
		if err := r.Store.UpdateJob(ctx, id, r.Owner, store.JobUpdate{LeaseUntil: &until}); err != nil {
			if ctx.Err() == nil {
				r.Log.Warn("enablement job lease lost", "job", id, "err", err)
			}
			cancel()
			return
		}
	}
}

func (r *Runner) update(ctx context.Context, job *store.Config, u store.JobUpdate) error {
	return r.Store.UpdateJob(ctx, job.ID, r.Owner, u)
}

func ptr[T any](v T) *T { return &v }

func (r *Runner) work(ctx context.Context, job *store.Config) error {
	log := r.Log.With("job", job.ID, "org", job.OrgID, "config", job.Name)
	for {
		if r.stopping() {
			return r.yield(ctx, job, log)
		}
		switch job.Status {
		case store.StatusNew:
			if err := r.update(ctx, job, store.JobUpdate{Status: ptr(store.StatusRunning)}); err != nil {
				return err
			}
			job.Status = store.StatusRunning
			log.Info("enablement job validating key", "vault", job.VaultURL, "key", job.KeyName)
		case store.StatusRunning:
			next, err := r.validate(ctx, job, log)
			if err != nil || next == "" {
				return err
			}
			job.Status = next
		case store.StatusUpdating:
			return r.rewrap(ctx, job, log)
		default:
			return r.update(ctx, job, store.JobUpdate{Release: true})
		}
	}
}

// validate runs the preflight checks. It returns the next status, or ""
// when the job stopped (failed or waits for a retry).
func (r *Runner) validate(ctx context.Context, job *store.Config, log *slog.Logger) (string, error) {
	// Defensive: an org already switched to this key only needs re-wrapping;
	// validating again could fail the job and strand system-wrapped keys.
	if org, err := r.Store.Org(ctx, job.OrgID); err != nil {
		return "", err
	} else if org.KEKMode == store.ModeCustomer && org.VaultURL == job.VaultURL && org.KeyName == job.KeyName {
		return store.StatusUpdating, r.update(ctx, job, store.JobUpdate{Status: ptr(store.StatusUpdating)})
	}
	// The steps of a failure are stored with the job: they name the org's
	// consent link by where to get it, never the link itself, whose state
	// is the org's credential while it lives (docs/security.md).
	env := r.Env
	bound, err := r.Store.OrgTenants(ctx, job.OrgID)
	if err != nil {
		return "", err
	}
	owner := preflight.Owner{Org: job.OrgID, Tenants: bound, Finder: r.Tenants, AsOtherOrg: func(ctx context.Context) context.Context { return audit.WithOrg(ctx, audit.BindingProbeOrg) }}
	rep := preflight.Run(audit.WithOrg(ctx, job.OrgID), r.Provider, r.Policy, job.KeyIdentifier, env, owner)
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if rep.Passed {
		version := ""
		if rep.Key != nil {
			version = rep.Key.Version
		}
		// From here on every new data key of the org is wrapped by the
		// customer key, the org never goes back to the system key, and the
		// key's health is watched: one transaction, under the job's lease.
		err := r.Store.BeginCustomerKEK(ctx, job.ID, r.Owner, job, version, rep.VaultTenant, rep.Results)
		if errors.Is(err, store.ErrKeyInUse) {
			// Another org enabled the same key while this job validated.
			// This org passed the ownership check, so it is bound to the
			// vault's tenant and may be told.
			f := &cmkapi.Failure{Check: preflight.CheckKeyIdentifier, Title: preflight.Title(preflight.CheckKeyIdentifier), Code: cmkapi.CodeKeyInUse,
				Message: guidance.Cause(cmkapi.CodeKeyInUse), Remedy: guidance.Steps(cmkapi.CodeKeyInUse, r.Env, kms.KeyRef{VaultURL: job.VaultURL, Name: job.KeyName})}
			log.Warn("enablement job failed: key in use by another org")
			return "", r.update(ctx, job, store.JobUpdate{Status: ptr(store.StatusFailed), Checks: rep.Results, Failure: f, ClearLastError: true, Release: true})
		}
		if err != nil {
			return "", err
		}
		log.Info("enablement job validated key; re-wrapping data keys", "key_version", version)
		return store.StatusUpdating, nil
	}
	p := rep.FirstProblem()
	if rep.Retryable && job.Attempts < maxValidationAttempts {
		wait := backoff(job.Attempts, rep.RetryAfter)
		log.Warn("enablement job validation inconclusive; will retry", "code", p.Code, "retry_in", wait)
		return "", r.update(ctx, job, store.JobUpdate{Checks: rep.Results, LastError: r.problem(p.Code, p.Message, p.Remedy, wait),
			NextAttemptAt: ptr(r.Now().Add(wait)), Release: true})
	}
	pw, ok := propagating[kms.Kind(p.Code)]
	if ok && preflight.IsAWSKey(job.KeyIdentifier) {
		pw.what, pw.who = "the key policy change to take effect", "AWS KMS"
	}
	if ok {
		// Maybe only a grant not yet in effect: re-check with backoff until
		// the bound, counted from the submission, then fail as usual.
		now := r.Now()
		if deadline := job.CreatedAt.Add(r.PropagationWait); now.Before(deadline) {
			wait := min(backoff(job.Attempts, 0), deadline.Sub(now))
			msg := fmt.Sprintf("Waiting for %s: %s can take up to %s to apply it. %s The check runs again at %s; if the refusal is still there at %s, the job fails with the steps to fix it.",
				pw.what, pw.who, humanDuration(r.PropagationWait), p.Message, now.Add(wait).UTC().Format(time.RFC3339), deadline.UTC().Format(time.RFC3339))
			log.Info("enablement job waiting for a grant to take effect", "code", p.Code, "retry_in", wait, "until", deadline)
			return "", r.update(ctx, job, store.JobUpdate{Checks: rep.Results, LastError: r.problem(p.Code, msg, p.Remedy, wait),
				NextAttemptAt: ptr(now.Add(wait)), Release: true})
		}
	}
	f := &cmkapi.Failure{Check: p.Check, Title: p.Title, Code: p.Code, Message: p.Message, Remedy: p.Remedy}
	log.Warn("enablement job failed validation", "check", p.Check, "code", p.Code)
	return "", r.update(ctx, job, store.JobUpdate{Status: ptr(store.StatusFailed), Checks: rep.Results, Failure: f, ClearLastError: true, Release: true})
}

// propagating names, for each refusal that may only be a grant not yet in
// effect, what validation waits for: a 403 from RBAC or an access policy
// just after the role was granted, and AADSTS700016 (the app is not in the
// tenant) just after the admin consented.
var propagating = map[kms.Kind]struct{ what, who string }{
	kms.KindIdentityUnauthorized: {"the role assignment to take effect", "Azure"},
	kms.KindIdentityInvalid:      {"the admin consent to take effect", "Microsoft Entra ID"},
}

// humanDuration writes d as "10 minutes" or "90 seconds".
func humanDuration(d time.Duration) string {
	if d >= time.Minute && d%time.Minute == 0 {
		if d == time.Minute {
			return "1 minute"
		}
		return fmt.Sprintf("%d minutes", d/time.Minute)
	}
	return fmt.Sprintf("%d seconds", (d+time.Second-1)/time.Second)
}

func (r *Runner) problem(code, msg string, remedy []string, wait time.Duration) *cmkapi.Problem {
	now := r.Now()
	return &cmkapi.Problem{Code: code, Message: msg, Remedy: remedy, At: now.UTC(), RetryAt: now.Add(wait).UTC()}
}

// backoff returns 1, 2, 4, ... 60 s, or the vault's Retry-After if longer.
func backoff(attempt int, retryAfter time.Duration) time.Duration {
	d := time.Second << min(max(attempt-1, 0), 6)
	d = min(d, maxBackoff)
	return max(d, retryAfter)
}

// gate pauses every worker of a job while the vault throttles.
type gate struct {
	mu    sync.Mutex
	until time.Time
	tries int
}

func (g *gate) wait(ctx context.Context, r *Runner) error {
	g.mu.Lock()
	d := g.until.Sub(r.Now())
	g.mu.Unlock()
	if d > 0 {
		return r.Sleep(ctx, d)
	}
	return nil
}

func (g *gate) throttled(r *Runner, retryAfter time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := r.Now()
	if now.Before(g.until) {
		return // already pausing for this burst
	}
	g.tries++
	d := retryAfter
	if d <= 0 {
		d = time.Second << min(g.tries-1, 4) // 1, 2, 4, 8, 16 s
	}
	g.until = now.Add(d)
}

func (g *gate) ok() {
	g.mu.Lock()
	g.tries = 0
	g.mu.Unlock()
}

// rewrap moves every system-wrapped data key of the org to the customer key.
func (r *Runner) rewrap(ctx context.Context, job *store.Config, log *slog.Logger) error {
	// Every key call of the job is for its org (an AWS KMS key binds each
	// call to the org by its encryption context).
	ctx = audit.WithOrg(ctx, job.OrgID)
	org, err := r.Store.Org(ctx, job.OrgID)
	if err != nil {
		return err
	}
	ref := keyring.CustomerRef(org)
	total, done, err := r.Store.CountDataKeys(ctx, job.OrgID)
	if err != nil {
		return err
	}
	if err := r.update(ctx, job, store.JobUpdate{ProgressDone: &done, ProgressTotal: &total}); err != nil {
		return err
	}
	g := &gate{}
	var rewrapped atomic.Int64
	var firstErr error
	var errOnce sync.Once
	for {
		// New sandboxes created meanwhile are wrapped by the customer key
		// already, so this loop ends.
		keys, err := r.Store.DataKeysByKEK(ctx, job.OrgID, store.KEKSystem, "", r.PageSize)
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			break
		}
		// On start, on resume and before every page: is the key still one
		// that can unwrap what it wraps?
		if err := r.checkKey(ctx, g, ref); err != nil {
			return r.rewrapFailed(ctx, job, ref, err, log)
		}
		jobs := make(chan store.DataKey)
		var wg sync.WaitGroup
		wctx, stop := context.WithCancel(ctx)
		progressed := make(chan struct{})
		go func() { defer close(progressed); r.writeProgress(wctx, job, done) }()
		for range r.Concurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for dk := range jobs {
					if wctx.Err() != nil {
						continue // stopped: drain what the feeder had already sent
					}
					if err := r.rewrapOne(wctx, g, ref, dk); err != nil {
						errOnce.Do(func() { firstErr = err })
						stop()
						continue
					}
					n := rewrapped.Add(1)
					if r.AfterRewrap != nil {
						if err := r.AfterRewrap(n); err != nil {
							errOnce.Do(func() { firstErr = stopped{err} })
							stop()
						}
					}
				}
			}()
		}
	feed:
		for _, dk := range keys {
			select {
			case jobs <- dk:
			case <-wctx.Done():
				break feed
			case <-r.Stop:
				// Draining: the keys already handed out finish, no more.
				break feed
			}
		}
		close(jobs)
		wg.Wait()
		stop()
		<-progressed
		total, done, err = r.Store.CountDataKeys(ctx, job.OrgID)
		if err == nil {
			err = r.update(ctx, job, store.JobUpdate{ProgressDone: &done, ProgressTotal: &total})
		}
		if firstErr != nil {
			return r.rewrapFailed(ctx, job, ref, firstErr, log)
		}
		if err != nil {
			return err
		}
		if r.stopping() {
			return r.yield(ctx, job, log)
		}
	}
	log.Info("enablement job completed", "data_keys", total, "rewrapped", rewrapped.Load())
	return r.update(ctx, job, store.JobUpdate{Status: ptr(store.StatusCompleted), ClearLastError: true, Release: true})
}

// writeProgress writes the job's progress every ProgressEvery while a page
// is re-wrapped, when it has moved since done, until ctx ends. A failed
// write is left to the end of the page (a lost lease is keepLease's
// business). It runs on the wall clock, not r.Sleep: it decides nothing,
// and a test's fake clock must not be advanced by it.
func (r *Runner) writeProgress(ctx context.Context, job *store.Config, done int) {
	tick := time.NewTicker(r.ProgressEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		total, now, err := r.Store.CountDataKeys(ctx, job.OrgID)
		if err != nil || now == done {
			continue
		}
		if r.update(ctx, job, store.JobUpdate{ProgressDone: &now, ProgressTotal: &total}) == nil {
			done = now
		}
	}
}

func (r *Runner) rewrapOne(ctx context.Context, g *gate, ref kms.KeyRef, dk store.DataKey) error {
	dek, err := r.Keyring.Unwrap(ctx, dk)
	if err != nil {
		return fmt.Errorf("unwrap data key %s with the system key: %w", dk.ID, err)
	}
	defer clear(dek)
	var next store.DataKey
	err = r.paced(ctx, g, func() error {
		var err error
		next, err = r.Keyring.WrapCustomer(ctx, ref, dk, dek)
		return err
	})
	if err != nil {
		return err
	}
	// The proof: the new wrapping must unwrap to the data key before the
	// system key's wrapping is dropped.
	if err := r.paced(ctx, g, func() error { return r.Keyring.ProveCustomer(ctx, ref, next, dek) }); err != nil {
		return err
	}
	err = r.Store.ReplaceWrapping(ctx, dk.ID, store.KEKSystem, next)
	if errors.Is(err, store.ErrWrappingChanged) {
		return nil // another worker got there first
	}
	return err
}

// paced runs call, waiting out the vault's throttling: the job's pause while
// one is on, and another pause (Retry-After, or 1, 2, 4, 8, 16 s) for every
// 429 call gets. It ends with ctx (the lease's context).
func (r *Runner) paced(ctx context.Context, g *gate, call func() error) error {
	for {
		if err := g.wait(ctx, r); err != nil {
			return err
		}
		err := call()
		var ke *kms.Error
		if errors.As(err, &ke) && ke.Kind == kms.KindThrottled {
			r.throttled.Add(1)
			g.throttled(r, ke.RetryAfter)
			continue
		}
		if err == nil {
			g.ok()
		}
		return err
	}
}

// checkKey reads the key and returns why it must not be used to wrap data
// keys now (see the package doc), or nil.
func (r *Runner) checkKey(ctx context.Context, g *gate, ref kms.KeyRef) error {
	var info kms.KeyInfo
	err := r.paced(ctx, g, func() error {
		var err error
		info, err = r.Provider.Describe(ctx, ref)
		return err
	})
	if err != nil {
		return err
	}
	if err := kms.CheckUsable(ref, info, r.Now()); err != nil {
		return err
	}
	switch {
	case ref.AWS():
		// A symmetric AWS KMS key has no size to check; its spec was
		// checked by validation and cannot change.
		if info.KeyType != "SYMMETRIC_DEFAULT" {
			return &unsuitable{cmkapi.CodeKeyTypeUnsupported, fmt.Sprintf("key %s is of spec %s; a SYMMETRIC_DEFAULT key is required", ref, info.KeyType)}
		}
	case info.KeyType != "RSA" && info.KeyType != "RSA-HSM":
		return &unsuitable{cmkapi.CodeKeyTypeUnsupported, fmt.Sprintf("key %s version %s is of type %s; an RSA key is required", ref, info.Version, info.KeyType)}
	case info.Bits < kms.MinRSABits:
		return &unsuitable{cmkapi.CodeKeyTooSmall, fmt.Sprintf("key %s version %s is %d bits; at least %d are required", ref, info.Version, info.Bits, kms.MinRSABits)}
	}
	return nil
}

// unsuitable: the key's newest version is not of a type and size the
// platform can use.
type unsuitable struct{ code, why string }

func (u *unsuitable) Error() string { return u.why }

// stopped wraps an AfterRewrap error: the worker stops as if it crashed.
type stopped struct{ err error }

func (s stopped) Error() string { return s.err.Error() }

// rewrapFailed records why re-wrapping stopped and schedules a retry. The
// org already uses its customer key, so the job does not fail: it resumes on
// its own once the key is reachable again.
func (r *Runner) rewrapFailed(ctx context.Context, job *store.Config, ref kms.KeyRef, err error, log *slog.Logger) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var un *unsuitable
	if errors.As(err, &un) {
		code := un.code
		wait := backoff(job.Attempts, 0)
		log.Warn("enablement job re-wrap stopped: the key's newest version is unsuitable", "code", code, "retry_in", wait)
		return r.update(ctx, job, store.JobUpdate{
			LastError:     r.problem(code, "Re-wrapping stopped: "+un.why+".", guidance.Steps(code, r.Env, ref), wait),
			NextAttemptAt: ptr(r.Now().Add(wait)), Release: true,
		})
	}
	var ke *kms.Error
	if !errors.As(err, &ke) {
		var st stopped
		if errors.As(err, &st) {
			return st.err // like a crash: leave the job and its lease as they are
		}
		// Not the vault: our own failure (database, system key). Say so on
		// the job and retry with backoff rather than spinning silently.
		wait := backoff(job.Attempts, 0)
		log.Error("enablement job re-wrap failed; will retry", "err", err, "retry_in", wait)
		return r.update(ctx, job, store.JobUpdate{
			LastError:     r.problem(cmkapi.CodeInternalError, "The platform could not re-wrap a data key; it will retry on its own.", []string{"No action is needed from you; if this persists, contact the platform operator."}, wait),
			NextAttemptAt: ptr(r.Now().Add(wait)), Release: true,
		})
	}
	wait := backoff(job.Attempts, ke.RetryAfter)
	log.Warn("enablement job re-wrap interrupted; will retry", "code", ke.Kind, "retry_in", wait)
	return r.update(ctx, job, store.JobUpdate{
		LastError:     r.problem(string(ke.Kind), guidance.Describe(err), guidance.Steps(string(ke.Kind), r.Env, ref), wait),
		NextAttemptAt: ptr(r.Now().Add(wait)), Release: true,
	})
}
