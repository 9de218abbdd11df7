// Package outage tells apart the errors that mean "the database or the disk
// cannot take this request now" from every other failure, so that the API
// can answer them as what they are (the service is unavailable, or storage
// is full) rather than as an internal error.
//
// Classification is by error type, errno and SQLSTATE, never by the text of
// a message:
//
//	Kind         errors
//	Full         ENOSPC, EDQUOT; SQLite SQLITE_FULL (13);
//	             PostgreSQL 53100 disk_full
//	Unavailable  *pgconn.ConnectError, pgconn.ErrConnClosed, driver.ErrBadConn,
//	             sql.ErrConnDone; PostgreSQL class 08 (connection exception),
//	             57P01 admin_shutdown, 57P02 crash_shutdown,
//	             57P03 cannot_connect_now, 53300 too_many_connections;
//	             ECONNREFUSED, ECONNRESET, EPIPE, and a connection cut short
//	             (io.ErrUnexpectedEOF) inside a *net.OpError or a pgconn error
//	None         anything else, including a cancelled or expired context
//
// A Kind is only ever a reason to say "try again later": nothing may treat
// it as a verdict about an org's key.
package outage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
)

// Kind is what an error says about the storage behind a request.
type Kind int

const (
	// None: not an outage; the error means what it says.
	None Kind = iota
	// Unavailable: the database could not be reached, or went away
	// mid-request. Nothing the request meant to write was committed unless
	// the backend says so; the same request may be sent again later.
	Unavailable
	// Full: the file system or the database's disk has no room left. The
	// write was not made; it may succeed once space is freed.
	Full
)

func (k Kind) String() string {
	switch k {
	case Unavailable:
		return "unavailable"
	case Full:
		return "full"
	}
	return "none"
}

// SQLite's primary result code for a full disk or database
// (https://www.sqlite.org/rescode.html#full); extended codes carry it in
// their low byte.
const sqliteFull = 13

// Of classifies err. A cancelled or expired context is None even when the
// database is gone: the caller gave up, and its own error says so.
func Of(err error) Kind {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return None
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return Full
	}
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code()&0xff == sqliteFull {
		return Full
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return ofSQLState(pe.Code)
	}
	var ce *pgconn.ConnectError
	switch {
	case errors.As(err, &ce),
		errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, driver.ErrBadConn),
		errors.Is(err, sql.ErrConnDone),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE):
		return Unavailable
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		// A connection that ended mid-answer. Only when a network or
		// PostgreSQL error carries it: an EOF from a truncated file or
		// request body is not an outage.
		var oe *net.OpError
		if errors.As(err, &oe) || errors.As(err, new(interface{ SafeToRetry() bool })) {
			return Unavailable
		}
	}
	return None
}

// ofSQLState classifies a PostgreSQL error by its SQLSTATE
// (https://www.postgresql.org/docs/current/errcodes-appendix.html).
func ofSQLState(code string) Kind {
	switch {
	case code == "53100": // disk_full
		return Full
	case len(code) == 5 && code[:2] == "08", // connection_exception
		code == "57P01", // admin_shutdown: pg_ctl stop, fast or smart
		code == "57P02", // crash_shutdown: another backend crashed
		code == "57P03", // cannot_connect_now: starting up or shutting down
		code == "53300": // too_many_connections
		return Unavailable
	}
	return None
}
