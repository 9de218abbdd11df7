package testsvc

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestPostgresCluster stops and kills a private server and starts it again
// on the same port, and checks that committed rows are still there.
func TestPostgresCluster(t *testing.T) {
	c := PostgresCluster(t)
	dsn := c.DSN(t)
	ctx := context.Background()
	exec := func(q string) error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(cctx, dsn)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(cctx, q)
		return err
	}
	if err := exec("CREATE TABLE t (n int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	port := c.Port()
	for _, down := range []struct {
		name string
		do   func()
	}{{"stop", c.Stop}, {"kill", c.Kill}} {
		down.do()
		if err := exec("SELECT 1"); err == nil {
			t.Fatalf("after %s, a query succeeded", down.name)
		}
		c.Start()
		if c.Port() != port {
			t.Errorf("after %s and start, port = %d, want %d", down.name, c.Port(), port)
		}
		if err := exec("INSERT INTO t SELECT count(*) + 1 FROM t"); err != nil {
			t.Errorf("after %s and start: %v", down.name, err)
		}
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n, sum int
	if err := conn.QueryRow(ctx, "SELECT count(*), sum(n) FROM t").Scan(&n, &sum); err != nil {
		t.Fatal(err)
	}
	if n != 3 || sum != 1+2+3 {
		t.Errorf("rows after a stop and a kill = %d summing to %d, want 3 summing to 6 (every commit kept)", n, sum)
	}
}
