package testsvc

import (
	"context"
	"errors"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestScope starts both servers for a program and checks that Close stops
// Azurite and drops the database.
func TestScope(t *testing.T) {
	var s Scope
	defer s.Close()
	az, err := AzuriteIn(&s)
	if errors.Is(err, ErrMissing) && !serversRequired() {
		t.Skip("SKIPPED: " + err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	dsn, err := PostgresIn(&s)
	if errors.Is(err, ErrMissing) && !serversRequired() {
		t.Skip("SKIPPED: " + err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(az.ServiceURL)
	if c, err := net.DialTimeout("tcp", u.Host, 2*time.Second); err != nil {
		t.Fatalf("Azurite at %s: %v", u.Host, err)
	} else {
		c.Close()
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to %s: %v", dsn, err)
	}
	conn.Close(ctx)

	s.Close()
	if c, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
		c.Close()
		t.Errorf("Azurite still listens on %s after Close", u.Host)
	}
	if conn, err := pgx.Connect(ctx, dsn); err == nil {
		conn.Close(ctx)
		t.Errorf("database %s still exists after Close", dsn)
	}
}
