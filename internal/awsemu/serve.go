package awsemu

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"time"
)

// Server is an emulator listening on a loopback address.
type Server struct {
	URL   string // http://127.0.0.1:port or https://127.0.0.1:port
	CAPEM []byte // the certificate authority of the TLS certificate; nil without TLS
	srv   *http.Server
	ln    net.Listener
}

// Serve listens on addr (a loopback address such as 127.0.0.1:0) and
// serves the emulator, over TLS when useTLS is set, with a certificate for
// 127.0.0.1, ::1 and localhost from a certificate authority made for this
// server (trust Server.CAPEM: AWS_CA_BUNDLE for awscli and boto3, an
// http.Client's RootCAs for Go).
func (e *Emulator) Serve(addr string, useTLS bool) (*Server, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("listen address %q is not loopback: the emulator serves this machine only", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	// Handshake errors from clients that do not trust the CA are the
	// client's to report; the server stays quiet.
	quiet := log.New(io.Discard, "", 0)
	s := &Server{ln: ln, srv: &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second, ErrorLog: quiet}}
	if !useTLS {
		s.URL = "http://" + ln.Addr().String()
		go func() { _ = s.srv.Serve(ln) }()
		return s, nil
	}
	leaf, caPEM, err := selfSignedTLS()
	if err != nil {
		ln.Close()
		return nil, err
	}
	s.CAPEM = caPEM
	s.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tls.VersionTLS12}
	s.URL = "https://" + ln.Addr().String()
	go func() { _ = s.srv.ServeTLS(ln, "", "") }()
	return s, nil
}

// Close stops the server.
func (s *Server) Close() error {
	err := s.srv.Close()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// HTTPClient trusts the server's certificate authority (when it has one).
func (s *Server) HTTPClient() *http.Client {
	if s.CAPEM == nil {
		return &http.Client{}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CAPEM)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}

// selfSignedTLS makes a certificate authority and a leaf certificate for
// the loopback names, valid for a day.
func selfSignedTLS() (tls.Certificate, []byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "awsemu local CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	ca, err = x509.ParseCertificate(caDER)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}, caPEM, nil
}
