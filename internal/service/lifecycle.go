package service

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/lake/blob"
	"github.com/cmk-project/cmk/internal/profile/records"
)

// DefaultShutdownTimeout bounds a graceful shutdown: long enough for an
// in-flight request and a worker's current data key to finish against a
// slow vault (each vault call is bounded by the 10 s VaultTimeout), short
// enough to fit the 30 s an orchestrator such as Kubernetes allows by
// default between SIGTERM and SIGKILL.
const DefaultShutdownTimeout = 20 * time.Second

// readyCheckTimeout bounds each readiness check, so a probe never hangs on a
// database or store that does not answer.
const readyCheckTimeout = 2 * time.Second

// Serving configures how the service meets the network: TLS, the proxies
// whose forwarding headers it believes, and the drain on shutdown.
type Serving struct {
	// TLSCertFile and TLSKeyFile, both or neither, serve HTTPS (TLS 1.2 or
	// later, HTTP/2 offered). The pair is read again when either file
	// changes (checked at most every TLSReloadInterval, on a handshake); a
	// new pair that does not load is logged and the previous one kept.
	TLSCertFile, TLSKeyFile string
	TLSReloadInterval       time.Duration // default DefaultTLSReloadInterval; negative: every handshake
	// TrustedProxies are the peers whose X-Forwarded-For and
	// X-Forwarded-Proto are believed; from anyone else those headers are
	// removed before the request is handled.
	TrustedProxies []netip.Prefix
	// ShutdownTimeout bounds Shutdown (default DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
}

// lifecycle is the state of the drain.
type lifecycle struct {
	stop     chan struct{} // closed when draining begins
	draining atomic.Bool
	drained  []func(context.Context) // loops that stop on stop, not on cancel
	dwg      sync.WaitGroup          // those loops
	once     sync.Once
	certs    *certReloader
	ready    []readyCheck
}

type readyCheck struct {
	name, failure string
	check         func(context.Context) error
}

// prepareServing sets up the drain, the readiness checks and TLS.
func (s *Service) prepareServing(lake blob.Backend, recs records.Backend) error {
	s.life.stop = make(chan struct{})
	for _, r := range s.Runners {
		r.Stop = s.life.stop
	}
	s.Monitor.Stop = s.life.stop
	s.cfg.ShutdownTimeout = orDefault(s.cfg.ShutdownTimeout, DefaultShutdownTimeout)
	s.life.ready = []readyCheck{
		{"database", "the database does not answer", s.Store.Ping},
		{"storage", "the data lake or the profile store does not answer", func(ctx context.Context) error {
			// A key that never exists: not found is the healthy answer.
			if _, _, err := lake.Get(ctx, "readyz/probe"); err != nil && !errors.Is(err, blob.ErrNotFound) {
				return err
			}
			if _, err := recs.Get(ctx, "readyz", "readyz", "probe"); err != nil && !errors.Is(err, records.ErrNotFound) {
				return err
			}
			return nil
		}},
		{"platform_key", "the platform's system key is not loaded", func(context.Context) error {
			if s.PlatformKey == nil || s.PlatformKey.Current() == nil {
				return errors.New("no system key")
			}
			return s.PlatformKey.Err()
		}},
	}
	s.API.Ready = s.Readiness
	if s.cfg.TLSCertFile != "" || s.cfg.TLSKeyFile != "" {
		if s.cfg.TLSCertFile == "" || s.cfg.TLSKeyFile == "" {
			return errors.New("serving TLS needs both a certificate file and a key file (--tls-cert and --tls-key)")
		}
		c, err := newCertReloader(s.cfg.TLSCertFile, s.cfg.TLSKeyFile, s.cfg.TLSReloadInterval, s.cfg.Log)
		if err != nil {
			return err
		}
		s.life.certs = c
	}
	return nil
}

// Readiness runs the readiness checks: ready only when every one passes and
// the service is not draining. A failed check is logged with its error; the
// answer names only the check.
func (s *Service) Readiness(ctx context.Context) cmkapi.Readiness {
	rd := cmkapi.Readiness{Status: "ready"}
	if s.life.draining.Load() {
		rd.Status = "not ready"
		rd.Checks = append(rd.Checks, cmkapi.ReadyCheck{Name: "draining", OK: false, Detail: "the service is shutting down"})
	}
	for _, c := range s.life.ready {
		cctx, cancel := context.WithTimeout(ctx, readyCheckTimeout)
		err := c.check(cctx)
		cancel()
		rc := cmkapi.ReadyCheck{Name: c.name, OK: err == nil}
		if err != nil {
			rd.Status = "not ready"
			rc.Detail = c.failure
			s.cfg.Log.Warn("readiness check failed", "check", c.name, "err", err)
		}
		rd.Checks = append(rd.Checks, rc)
	}
	return rd
}

// startDrained starts the loops that a drain stops gently: the enablement
// workers and the key monitor.
func (s *Service) startDrained(ctx context.Context) {
	for _, loop := range s.life.drained {
		s.life.dwg.Add(1)
		go func() { defer s.life.dwg.Done(); loop(ctx) }()
	}
}

// Draining reports whether Shutdown has begun.
func (s *Service) Draining() bool { return s.life.draining.Load() }

// Shutdown drains the service and closes it, within ShutdownTimeout:
// /readyz answers 503 at once; no new connection is accepted and idle ones
// are closed; in-flight requests run to their end; the enablement workers
// take no new job, finish the data keys under way and give their leases up
// so another replica resumes at once; the monitor finishes the checks it
// started. What is still running when the time is up is cancelled. It
// returns context.DeadlineExceeded when the time ran out, after closing
// everything all the same.
func (s *Service) Shutdown() error {
	timeout := s.cfg.ShutdownTimeout
	if timeout <= 0 {
		timeout = DefaultShutdownTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var drainErr error
	s.life.once.Do(func() {
		s.life.draining.Store(true)
		s.cfg.Log.Info("draining: no new connections or jobs; finishing requests, current data keys and checks", "timeout", timeout)
		if s.life.stop != nil {
			close(s.life.stop)
		}
		var wg sync.WaitGroup
		var httpErr error
		if s.srv != nil {
			wg.Add(1)
			go func() { defer wg.Done(); httpErr = s.srv.Shutdown(ctx) }()
		}
		workers := make(chan struct{})
		go func() { s.life.dwg.Wait(); close(workers) }()
		select {
		case <-workers:
		case <-ctx.Done():
		}
		wg.Wait()
		if httpErr != nil || ctx.Err() != nil {
			drainErr = context.DeadlineExceeded
			s.cfg.Log.Warn("drain timed out; cancelling what is left", "timeout", timeout)
		} else {
			s.cfg.Log.Info("drained")
		}
	})
	return errors.Join(drainErr, s.Close())
}

// withProxies makes a request's client address and scheme those its
// trusted proxy reports, and drops forwarding headers anyone else sent.
func (s *Service) withProxies(h http.Handler) http.Handler {
	trusted := s.cfg.TrustedProxies
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if client, ok := ForwardedClient(r, trusted); ok {
			r.RemoteAddr = net.JoinHostPort(client.String(), "0")
		} else {
			r.Header.Del("X-Forwarded-For")
			r.Header.Del("X-Forwarded-Proto")
		}
		h.ServeHTTP(w, r)
	})
}

// ForwardedClient returns the client address a trusted proxy reports for r:
// the right-most address of X-Forwarded-For that is not itself a trusted
// proxy (the left-most ones can be forged by the client). ok is false when
// r's peer is not a trusted proxy or sent no usable header.
func ForwardedClient(r *http.Request, trusted []netip.Prefix) (netip.Addr, bool) {
	peer, ok := addrOf(r.RemoteAddr)
	if !ok || !contains(trusted, peer) {
		return netip.Addr{}, false
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		for _, part := range strings.Split(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				hops = append(hops, part)
			}
		}
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(hops[i])
		if err != nil {
			return netip.Addr{}, false // a malformed chain: believe none of it
		}
		a = a.Unmap()
		if i == 0 || !contains(trusted, a) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func addrOf(remote string) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	return a.Unmap(), err == nil
}

func contains(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
