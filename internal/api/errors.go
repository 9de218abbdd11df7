package api

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/control"
	"github.com/cmk-project/cmk/internal/orgkeys"
)

// problemStatus is the one table from the control plane's errors to HTTP
// statuses and stable error codes.
var problemStatus = []struct {
	err    error
	status int
	code   string
}{
	{control.ErrMalformed, 400, cmkapi.CodeMalformedRequestBody},
	{control.ErrInvalidField, 400, cmkapi.CodeInvalidField},
	{control.ErrOrgMismatch, 400, cmkapi.CodeOrgMismatch},
	{control.ErrInvalidConfigType, 400, cmkapi.CodeInvalidConfigType},
	{control.ErrUnsupportedProvider, 400, cmkapi.CodeUnsupportedProviderType},
	{control.ErrInvalidKeyID, 400, cmkapi.CodeInvalidKeyIdentifier},
	{control.ErrConfirmation, 400, cmkapi.CodeConfirmationRequired},
	{control.ErrNotFound, 404, cmkapi.CodeNotFound},
	{control.ErrNameTaken, 409, cmkapi.CodeConfigNameTaken},
	{control.ErrJobActive, 409, cmkapi.CodeConfigJobInProgress},
	{control.ErrIrreversible, 409, cmkapi.CodeCMKIrreversible},
	{control.ErrKeyInUse, 409, cmkapi.CodeKeyInUse},
	{control.ErrNotEnabled, 409, cmkapi.CodeCMKNotEnabled},
	{control.ErrSandboxExists, 409, cmkapi.CodeSandboxExists},
	{control.ErrLimitReached, 409, cmkapi.CodeLimitReached},
	{control.ErrKeyUnavailable, 503, cmkapi.CodeServiceUnavailable},
}

// fail answers an operation's error: a *control.Problem by the table, a
// locked org with the cause and steps, anything else as an internal error
// (logged, never shown).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var p *control.Problem
	if errors.As(err, &p) {
		for _, e := range problemStatus {
			if errors.Is(p.Err, e.err) {
				writeError(w, r, e.status, e.code, p.Title, p.Detail, p.Hint)
				return
			}
		}
	}
	if ref, ok := orgkeys.Refused(err); ok {
		s.refused(w, r, ref)
		return
	}
	s.internal(w, r, err)
}

func (s *Server) internal(w http.ResponseWriter, r *http.Request, err error) {
	s.Log.Error("request failed", "method", r.Method, "path", r.URL.Path, "request_id", w.Header().Get(cmkapi.HeaderRequestID), "err", err)
	writeError(w, r, 500, cmkapi.CodeInternalError, "Internal error", "The request failed on the server; nothing was changed.", "Try again; if it persists, give the operator the request id.")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, r *http.Request, status int, code, title, detail, hint string) {
	writeJSON(w, status, cmkapi.Error{
		Type:      cmkapi.ErrorTypeBase + code,
		Status:    status,
		ErrorCode: code,
		Title:     title,
		Detail:    detail,
		Hint:      hint,
		RequestID: w.Header().Get(cmkapi.HeaderRequestID),
	})
}
