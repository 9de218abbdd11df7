package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cmk-project/cmk/internal/cmkapi"
)

// TestOutageAnswers checks that a database or disk outage, however deep in
// an operation's error, is answered as such and says nothing of its cause,
// while any other failure stays a 500.
func TestOutageAnswers(t *testing.T) {
	s := &Server{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, tc := range []struct {
		err        error
		status     int
		code       string
		retryAfter string
	}{
		{fmt.Errorf("ensure org: %w", &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}), 503, cmkapi.CodeServiceUnavailable, "5"},
		{fmt.Errorf("load data key: %w", &pgconn.ConnectError{Config: &pgconn.Config{Host: "db.internal"}}), 503, cmkapi.CodeServiceUnavailable, "5"},
		{fmt.Errorf("put: %w", &fs.PathError{Op: "write", Path: "/srv/lake/staging/put-1", Err: syscall.ENOSPC}), 507, cmkapi.CodeStorageFull, ""},
		{&pgconn.PgError{Code: "53100", Message: "could not extend file"}, 507, cmkapi.CodeStorageFull, ""},
		{errors.New("something else"), 500, cmkapi.CodeInternalError, ""},
	} {
		w := httptest.NewRecorder()
		s.internal(w, httptest.NewRequest("GET", "/data/profiles/p", nil), tc.err)
		var e cmkapi.Error
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
			t.Fatalf("internal(%v) answered %s: %v", tc.err, w.Body.Bytes(), err)
		}
		if w.Code != tc.status || e.ErrorCode != tc.code || e.Status != tc.status {
			t.Errorf("internal(%v) = %d %s, want %d %s", tc.err, w.Code, e.ErrorCode, tc.status, tc.code)
		}
		if got := w.Header().Get("Retry-After"); got != tc.retryAfter {
			t.Errorf("internal(%v) Retry-After = %q, want %q", tc.err, got, tc.retryAfter)
		}
		for _, secret := range []string{"db.internal", "/srv/lake", "administrator command", "extend file"} {
			if strings.Contains(w.Body.String(), secret) {
				t.Errorf("internal(%v) answer tells %q: %s", tc.err, secret, w.Body.Bytes())
			}
		}
	}
}
