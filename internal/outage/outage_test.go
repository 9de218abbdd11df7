package outage_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	_ "modernc.org/sqlite"

	"github.com/cmk-project/cmk/internal/outage"
)

func TestOf(t *testing.T) {
	netErr := &net.OpError{Op: "read", Net: "tcp", Err: io.ErrUnexpectedEOF}
	tests := []struct {
		name string
		err  error
		want outage.Kind
	}{
		{"nil", nil, outage.None},
		{"plain", errors.New("no space left on device"), outage.None}, // text alone says nothing
		{"ENOSPC in a path error", fmt.Errorf("put: %w", &fs.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}), outage.Full},
		{"EDQUOT", &os.SyscallError{Syscall: "write", Err: syscall.EDQUOT}, outage.Full},
		{"EIO", &fs.PathError{Op: "sync", Path: "/x", Err: syscall.EIO}, outage.None},
		{"postgres disk_full", fmt.Errorf("insert: %w", &pgconn.PgError{Code: "53100"}), outage.Full},
		{"postgres admin_shutdown", &pgconn.PgError{Code: "57P01"}, outage.Unavailable},
		{"postgres cannot_connect_now", &pgconn.PgError{Code: "57P03"}, outage.Unavailable},
		{"postgres connection_failure", &pgconn.PgError{Code: "08006"}, outage.Unavailable},
		{"postgres unique_violation", &pgconn.PgError{Code: "23505"}, outage.None},
		{"postgres syntax error", &pgconn.PgError{Code: "42601"}, outage.None},
		{"conn closed", fmt.Errorf("query: %w", pgconn.ErrConnClosed), outage.Unavailable},
		{"bad conn", driver.ErrBadConn, outage.Unavailable},
		{"conn done", sql.ErrConnDone, outage.Unavailable},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}, outage.Unavailable},
		{"reset", &os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}, outage.Unavailable},
		{"connection cut short", netErr, outage.Unavailable},
		{"truncated file", fmt.Errorf("open record: %w", io.ErrUnexpectedEOF), outage.None},
		{"cancelled", fmt.Errorf("query: %w: %w", context.Canceled, pgconn.ErrConnClosed), outage.None},
		{"deadline", context.DeadlineExceeded, outage.None},
	}
	for _, tt := range tests {
		if got := outage.Of(tt.err); got != tt.want {
			t.Errorf("Of(%s: %v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

// TestOfRealErrors classifies errors as the drivers return them: SQLite
// refusing a write past its size limit, and pgx finding nobody listening.
func TestOfRealErrors(t *testing.T) {
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "full.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, "CREATE TABLE t (b BLOB)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "PRAGMA max_page_count = 4"); err != nil {
		t.Fatal(err)
	}
	_, err = db.ExecContext(ctx, "INSERT INTO t VALUES (?)", make([]byte, 64<<10))
	if err == nil {
		t.Fatal("INSERT of 64 KiB into a database limited to 4 pages succeeded")
	}
	if got := outage.Of(fmt.Errorf("save: %w", err)); got != outage.Full {
		t.Errorf("Of(SQLite %v) = %v, want full", err, got)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nobody listens there now
	host, port, _ := strings.Cut(addr, ":")
	_, err = pgx.Connect(ctx, "postgres://u@"+host+":"+port+"/db?sslmode=disable&connect_timeout=5")
	if err == nil {
		t.Fatalf("connect to %s succeeded with nothing listening", addr)
	}
	if got := outage.Of(err); got != outage.Unavailable {
		t.Errorf("Of(pgx connect %v) = %v, want unavailable", err, got)
	}
}
