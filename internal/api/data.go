package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/envelope"
	"github.com/cmk-project/cmk/internal/guidance"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/lake"
	"github.com/cmk-project/cmk/internal/lake/blob"
	"github.com/cmk-project/cmk/internal/orgkeys"
	"github.com/cmk-project/cmk/internal/profile"
	"github.com/cmk-project/cmk/internal/profile/records"
)

// maxProfileBytes bounds a profile record body.
const maxProfileBytes = 1 << 20

// sandboxed authenticates like the control plane, then requires the
// x-sandbox-name header to name a sandbox of the org, and counts the
// operation.
func (s *Server) sandboxed(rt cmkapi.Route, h http.Handler) http.Handler {
	return s.authed(rt.Permission, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sb := r.Header.Get(cmkapi.HeaderSandbox)
		if sb == "" {
			writeError(w, r, 400, cmkapi.CodeMissingSandboxHeader, "Missing sandbox header", "The x-sandbox-name header is required for data requests.", "Send 'x-sandbox-name: prod' (or another sandbox of your org).")
			return
		}
		ok, err := s.Control.SandboxExists(r.Context(), orgOf(r), sb)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		if !ok {
			writeError(w, r, 404, cmkapi.CodeSandboxNotFound, "Sandbox not found", fmt.Sprintf("Org %q has no sandbox %q.", orgOf(r), sb), "List sandboxes with GET /data/foundation/sandbox-management/sandboxes.")
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), ctxSandbox, sb))
		h.ServeHTTP(w, r)
		if s.Metrics != nil {
			s.Metrics.DataOps.WithLabelValues(rt.Store, r.Method).Inc()
		}
	}))
}

// dataError maps data-plane failures, above all a locked org, to responses.
func (s *Server) dataError(w http.ResponseWriter, r *http.Request, storeName string, err error) {
	if ref, ok := orgkeys.Refused(err); ok {
		if s.Metrics != nil {
			s.Metrics.DataRefused.WithLabelValues(storeName, ref.Cause).Inc()
		}
		s.refused(w, r, ref)
		return
	}
	var ke *kms.Error
	switch {
	case errors.As(err, &ke):
		writeError(w, r, 503, cmkapi.CodeCMKKeyUnavailable, "Customer key unavailable", guidance.Describe(err), "Check the key's health (GET /data/infrastructure/manager/byok/health) and try again.")
	case errors.Is(err, lake.ErrNotFound), errors.Is(err, profile.ErrNotFound):
		writeError(w, r, 404, cmkapi.CodeNotFound, "Not found", "No such "+storeName+" object in this sandbox.", "")
	case errors.Is(err, lake.ErrInvalidName), errors.Is(err, blob.ErrInvalidKey), errors.Is(err, records.ErrInvalid):
		writeError(w, r, 400, cmkapi.CodeInvalidField, "Invalid name", err.Error(), "")
	case errors.Is(err, profile.ErrInvalidDoc):
		writeError(w, r, 400, cmkapi.CodeInvalidField, "Invalid record", "A profile record must be a JSON object.", `Send a body like {"name": "Ada"}.`)
	case errors.Is(err, envelope.ErrAuth), errors.Is(err, envelope.ErrFormat), errors.Is(err, orgkeys.ErrWrongStore):
		s.Log.Error("stored data failed authentication", "org", orgOf(r), "store", storeName, "err", err)
		writeError(w, r, 500, cmkapi.CodeDataIntegrityFailure, "Stored data failed its integrity check", "The stored object was altered, truncated or moved; it was not served.", "Report the request id to the platform operator.")
	default:
		s.internal(w, r, err)
	}
}

func (s *Server) refused(w http.ResponseWriter, r *http.Request, ref *keyhealth.Refused) {
	steps := s.Control.Remedy(r.Context(), ref.Org, kms.Kind(ref.Cause))
	hint := "An administrator of your org can see the cause and the steps to restore access on the Encryption page or with GET /data/infrastructure/manager/byok/health."
	if len(steps) > 0 {
		hint = strings.Join(numbered(steps), " ")
	}
	code := cmkapi.CodeCMKKeyRevoked
	if ref.Cause == string(kms.KindTransient) {
		code = cmkapi.CodeCMKKeyUnavailable
	}
	writeError(w, r, 403, code, "Data locked: customer-managed key unusable",
		fmt.Sprintf("Your org's data is locked because its customer-managed key cannot be used (%s since %s): %s", ref.Cause, ref.Since.UTC().Format("2006-01-02T15:04:05Z"), ref.Message), hint)
}

func numbered(steps []string) []string {
	out := make([]string, len(steps))
	for i, s := range steps {
		out[i] = strconv.Itoa(i+1) + ". " + s
	}
	return out
}

// ---- lake ----

func (s *Server) lakePut(w http.ResponseWriter, r *http.Request) {
	body := &bodyReader{r: r.Body}
	n, err := s.Lake.Put(r.Context(), orgOf(r), sandboxOf(r), r.PathValue("dataset"), r.PathValue("file"), body)
	if err != nil {
		if body.err != nil && errors.Is(err, body.err) {
			writeError(w, r, 400, cmkapi.CodeRequestBodyUnreadable, "Upload interrupted", "The request body could not be read to the end: "+body.err.Error()+". Nothing was stored.", "Send the file again.")
			return
		}
		s.dataError(w, r, "lake", err)
		return
	}
	writeJSON(w, 201, cmkapi.LakeFile{Dataset: r.PathValue("dataset"), Name: r.PathValue("file"), Size: n})
}

func (s *Server) lakeGet(w http.ResponseWriter, r *http.Request) {
	rc, size, err := s.Lake.Open(r.Context(), orgOf(r), sandboxOf(r), r.PathValue("dataset"), r.PathValue("file"))
	if err != nil {
		s.dataError(w, r, "lake", err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	if _, err := io.Copy(w, rc); err != nil {
		// Headers are gone; cut the response short so the client sees a
		// truncated body rather than unverified data.
		s.Log.Error("lake read failed mid-stream", "org", orgOf(r), "err", err)
		panic(http.ErrAbortHandler)
	}
}

func (s *Server) lakeDelete(w http.ResponseWriter, r *http.Request) {
	if err := s.Lake.Delete(r.Context(), orgOf(r), sandboxOf(r), r.PathValue("dataset"), r.PathValue("file")); err != nil {
		s.dataError(w, r, "lake", err)
		return
	}
	w.WriteHeader(204)
}

func (s *Server) lakeList(w http.ResponseWriter, r *http.Request) {
	files, err := s.Lake.List(r.Context(), orgOf(r), sandboxOf(r), r.PathValue("dataset"))
	if err != nil {
		s.dataError(w, r, "lake", err)
		return
	}
	out := cmkapi.LakeFileList{Files: make([]cmkapi.LakeFile, 0, len(files))}
	for _, f := range files {
		out.Files = append(out.Files, cmkapi.LakeFile{Dataset: f.Dataset, Name: f.Name, Size: f.Size, Modified: f.Modified})
	}
	writeJSON(w, 200, out)
}

// bodyReader remembers a failure reading the client's body, so it is told
// apart from a failure of the store.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// ---- profiles ----

func (s *Server) profilePut(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxProfileBytes+1))
	if err != nil {
		writeError(w, r, 400, cmkapi.CodeMalformedRequestBody, "Unreadable body", err.Error(), "")
		return
	}
	if len(body) > maxProfileBytes {
		writeError(w, r, 413, cmkapi.CodeTooLarge, "Record too large", fmt.Sprintf("A profile record may be at most %d bytes.", maxProfileBytes), "")
		return
	}
	if err := s.Profiles.Upsert(r.Context(), orgOf(r), sandboxOf(r), r.PathValue("id"), body); err != nil {
		s.dataError(w, r, "profile", err)
		return
	}
	writeJSON(w, 200, cmkapi.ProfileSaved{ID: r.PathValue("id")})
}

func (s *Server) profileGet(w http.ResponseWriter, r *http.Request) {
	doc, err := s.Profiles.Get(r.Context(), orgOf(r), sandboxOf(r), r.PathValue("id"))
	if err != nil {
		s.dataError(w, r, "profile", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(doc)
}

func (s *Server) profileDelete(w http.ResponseWriter, r *http.Request) {
	if err := s.Profiles.Delete(r.Context(), orgOf(r), sandboxOf(r), r.PathValue("id")); err != nil {
		s.dataError(w, r, "profile", err)
		return
	}
	w.WriteHeader(204)
}

func (s *Server) profileList(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > records.MaxPageSize {
			writeError(w, r, 400, cmkapi.CodeInvalidField, "Invalid limit", fmt.Sprintf("limit is %q; use a number from 1 to %d.", v, records.MaxPageSize), "")
			return
		}
		limit = n
	}
	recs, next, err := s.Profiles.List(r.Context(), orgOf(r), sandboxOf(r), r.URL.Query().Get("cursor"), limit)
	if err != nil {
		s.dataError(w, r, "profile", err)
		return
	}
	out := cmkapi.ProfileList{Records: make([]cmkapi.ProfileRecord, 0, len(recs)), Next: next}
	for _, rec := range recs {
		out.Records = append(out.Records, cmkapi.ProfileRecord{ID: rec.ID, Record: rec.Doc})
	}
	writeJSON(w, 200, out)
}
