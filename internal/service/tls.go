package service

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// DefaultTLSReloadInterval is how often, at most, a handshake looks at the
// certificate and key files for a change: a renewed certificate is served
// within a minute, and the files are not read on every handshake.
const DefaultTLSReloadInterval = time.Minute

// certReloader serves the certificate pair of two files and loads it again
// when either file changes. A pair that does not load (half written, a key
// that does not match) is logged and the previous pair kept, so a botched
// renewal never takes the service off the air.
type certReloader struct {
	certFile, keyFile string
	every             time.Duration
	log               *slog.Logger
	now               func() time.Time

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string // the files' sizes and modification times when loaded
	checked time.Time
}

func newCertReloader(certFile, keyFile string, every time.Duration, log *slog.Logger) (*certReloader, error) {
	if every == 0 {
		every = DefaultTLSReloadInterval
	}
	c := &certReloader{certFile: certFile, keyFile: keyFile, every: every, log: log, now: time.Now}
	stamp, err := c.fileStamp()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	c.cert, c.stamp, c.checked = &cert, stamp, c.now()
	return c, nil
}

func (c *certReloader) fileStamp() (string, error) {
	stamp := ""
	for _, f := range []string{c.certFile, c.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", fmt.Errorf("TLS file: %w", err)
		}
		stamp += fmt.Sprintf("%s:%d:%d;", f, fi.Size(), fi.ModTime().UnixNano())
	}
	return stamp, nil
}

// get is tls.Config.GetCertificate.
func (c *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); c.every < 0 || now.Sub(c.checked) >= c.every {
		c.checked = now
		stamp, err := c.fileStamp()
		switch {
		case err != nil:
			c.log.Error("TLS certificate files unreadable; serving the previous certificate", "err", err)
		case stamp != c.stamp:
			cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
			if err != nil {
				c.log.Error("new TLS certificate does not load; serving the previous one", "cert", c.certFile, "key", c.keyFile, "err", err)
				break
			}
			c.cert, c.stamp = &cert, stamp
			c.log.Info("TLS certificate reloaded", "cert", c.certFile)
		}
	}
	return c.cert, nil
}

// tlsConfig is the server's TLS: 1.2 or later, HTTP/2 then HTTP/1.1.
func (c *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.get, NextProtos: []string{"h2", "http/1.1"}}
}

// serve serves HTTP on ln, over TLS when a certificate is configured.
func (s *Service) serve(ln net.Listener) error {
	// The server's own complaints (failed handshakes, bad requests) go to
	// the service's log, not to stderr.
	s.srv.ErrorLog = slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelWarn)
	if s.life.certs == nil {
		return s.srv.Serve(ln)
	}
	s.srv.TLSConfig = s.life.certs.tlsConfig()
	return s.srv.ServeTLS(ln, "", "")
}

func (s *Service) scheme() string {
	if s.life.certs != nil {
		return "https"
	}
	return "http"
}
