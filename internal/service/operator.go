package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
)

// MinOperatorTokenLen is the shortest operator token accepted: it is the
// only thing between the network and every org's key state.
const MinOperatorTokenLen = 32

// checkOperator validates the operator listener's settings.
func (c Config) checkOperator() error {
	if c.OperatorAddr == "" {
		return nil
	}
	if len(c.OperatorToken) < MinOperatorTokenLen {
		return fmt.Errorf("the operator listener (%s) needs an operator token of at least %d characters (CMK_OPERATOR_TOKEN or --operator-token-file)", c.OperatorAddr, MinOperatorTokenLen)
	}
	if c.OperatorAddr == c.Addr && !strings.HasSuffix(c.Addr, ":0") { // port 0: two different ports
		return errors.New("the operator listener must not share the API's address: tenants reach the API")
	}
	return nil
}

// startOperator serves the operator routes on their own listener, when one
// is configured: over TLS with the API's certificate when the API has one,
// so the operator token never crosses the network in the clear.
func (s *Service) startOperator() error {
	if s.cfg.OperatorAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.OperatorAddr)
	if err != nil {
		return fmt.Errorf("listen on %s (operator): %w", s.cfg.OperatorAddr, err)
	}
	s.opLn = ln
	s.opSrv = &http.Server{Handler: s.API.OperatorHandler(s.cfg.OperatorToken), ReadHeaderTimeout: s.cfg.ReadHeaderTimeout, IdleTimeout: s.cfg.IdleTimeout,
		ErrorLog: slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelWarn)}
	serve := func() error { return s.opSrv.Serve(ln) }
	if s.life.certs != nil {
		s.opSrv.TLSConfig = s.life.certs.tlsConfig()
		serve = func() error { return s.opSrv.ServeTLS(ln, "", "") }
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.Log.Error("operator server stopped", "err", err)
		}
	}()
	s.cfg.Log.Info("cmk operator listener", "url", s.OperatorURL())
	return nil
}

// OperatorURL is the operator listener's base URL, "" when there is none.
func (s *Service) OperatorURL() string {
	if s.opLn == nil {
		return ""
	}
	return s.scheme() + "://" + s.opLn.Addr().String()
}

func (s *Service) closeOperator() {
	if s.opSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.opSrv.Shutdown(ctx)
		cancel()
		s.opSrv.Close() // connections that never sent a request, as in Close
	}
}
