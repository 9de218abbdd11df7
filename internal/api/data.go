package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/cmk-project/cmk/internal/auth"
	"github.com/cmk-project/cmk/internal/envelope"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/lake"
	"github.com/cmk-project/cmk/internal/lake/blob"
	"github.com/cmk-project/cmk/internal/orgkeys"
	"github.com/cmk-project/cmk/internal/preflight"
	"github.com/cmk-project/cmk/internal/profile"
	"github.com/cmk-project/cmk/internal/profile/records"
	"github.com/cmk-project/cmk/internal/store"
)

// HeaderSandbox names the sandbox of a data-plane request.
const HeaderSandbox = "x-sandbox-name"

// maxProfileBytes bounds a profile record body.
const maxProfileBytes = 1 << 20

func (s *Server) dataRoutes(mux *http.ServeMux) {
	if s.Lake != nil {
		mux.Handle("GET /data/lake/files", s.sandboxed(auth.PermDataRead, "lake", s.lakeList))
		mux.Handle("GET /data/lake/datasets/{dataset}/files", s.sandboxed(auth.PermDataRead, "lake", s.lakeList))
		mux.Handle("PUT /data/lake/datasets/{dataset}/files/{file}", s.sandboxed(auth.PermDataWrite, "lake", s.lakePut))
		mux.Handle("GET /data/lake/datasets/{dataset}/files/{file}", s.sandboxed(auth.PermDataRead, "lake", s.lakeGet))
		mux.Handle("DELETE /data/lake/datasets/{dataset}/files/{file}", s.sandboxed(auth.PermDataWrite, "lake", s.lakeDelete))
	}
	if s.Profiles != nil {
		mux.Handle("GET /data/profiles", s.sandboxed(auth.PermDataRead, "profile", s.profileList))
		mux.Handle("PUT /data/profiles/{id}", s.sandboxed(auth.PermDataWrite, "profile", s.profilePut))
		mux.Handle("GET /data/profiles/{id}", s.sandboxed(auth.PermDataRead, "profile", s.profileGet))
		mux.Handle("DELETE /data/profiles/{id}", s.sandboxed(auth.PermDataWrite, "profile", s.profileDelete))
	}
}

type sbKey int

const ctxSandbox sbKey = 0

func sandboxOf(r *http.Request) string { return r.Context().Value(ctxSandbox).(string) }

// sandboxed authenticates like the control plane, then requires the
// x-sandbox-name header to name a sandbox of the org.
func (s *Server) sandboxed(perm, storeName string, h http.HandlerFunc) http.Handler {
	return s.authed(perm, func(w http.ResponseWriter, r *http.Request) {
		sb := r.Header.Get(HeaderSandbox)
		if sb == "" {
			writeError(w, r, 400, codeMissingSandbox, "Missing sandbox header", "The x-sandbox-name header is required for data requests.", "Send 'x-sandbox-name: prod' (or another sandbox of your org).")
			return
		}
		ok, err := s.Store.SandboxExists(r.Context(), orgOf(r), sb)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		if !ok {
			writeError(w, r, 404, codeSandboxNotFound, "Sandbox not found", fmt.Sprintf("Org %q has no sandbox %q.", orgOf(r), sb), "List sandboxes with GET /data/foundation/sandbox-management/sandboxes.")
			return
		}
		r = r.WithContext(withSandbox(r, sb))
		h(w, r)
		if s.Metrics != nil {
			s.Metrics.DataOps.WithLabelValues(storeName, r.Method).Inc()
		}
	})
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
		writeError(w, r, 503, codeKeyUnavailable, "Customer key unavailable", preflight.Describe(err), "Check the key's health (GET /data/infrastructure/manager/byok/health) and try again.")
	case errors.Is(err, lake.ErrNotFound), errors.Is(err, profile.ErrNotFound):
		writeError(w, r, 404, codeNotFound, "Not found", "No such "+storeName+" object in this sandbox.", "")
	case errors.Is(err, lake.ErrInvalidName), errors.Is(err, blob.ErrInvalidKey), errors.Is(err, records.ErrInvalid):
		writeError(w, r, 400, codeBadField, "Invalid name", err.Error(), "")
	case errors.Is(err, profile.ErrInvalidDoc):
		writeError(w, r, 400, codeBadField, "Invalid record", "A profile record must be a JSON object.", `Send a body like {"name": "Ada"}.`)
	case errors.Is(err, envelope.ErrAuth), errors.Is(err, envelope.ErrFormat), errors.Is(err, orgkeys.ErrWrongStore):
		s.Log.Error("stored data failed authentication", "org", orgOf(r), "store", storeName, "err", err)
		writeError(w, r, 500, codeCorrupt, "Stored data failed its integrity check", "The stored object was altered, truncated or moved; it was not served.", "Report the request id to the platform operator.")
	default:
		s.internal(w, r, err)
	}
}

func (s *Server) refused(w http.ResponseWriter, r *http.Request, ref *keyhealth.Refused) {
	o, _ := s.Store.Org(r.Context(), ref.Org)
	steps := preflight.Remedy(kms.Kind(ref.Cause), s.Env, kmsRef(o))
	hint := "An administrator of your org can see the cause and the steps to restore access on the Encryption page or with GET /data/infrastructure/manager/byok/health."
	if len(steps) > 0 {
		hint = strings.Join(numbered(steps), " ")
	}
	code := codeKeyRevoked
	if ref.Cause == string(kms.KindTransient) {
		code = codeKeyUnavailable
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

func kmsRef(o store.Org) kms.KeyRef { return kms.KeyRef{VaultURL: o.VaultURL, Name: o.KeyName} }

// ---- lake ----

func (s *Server) lakePut(w http.ResponseWriter, r *http.Request) {
	body := &bodyReader{r: r.Body}
	n, err := s.Lake.Put(r.Context(), orgOf(r), sandboxOf(r), r.PathValue("dataset"), r.PathValue("file"), body)
	if err != nil {
		if body.err != nil && errors.Is(err, body.err) {
			writeError(w, r, 400, codeBadBody, "Upload interrupted", "The request body could not be read to the end: "+body.err.Error()+". Nothing was stored.", "Send the file again.")
			return
		}
		s.dataError(w, r, "lake", err)
		return
	}
	writeJSON(w, 201, map[string]any{"dataset": r.PathValue("dataset"), "name": r.PathValue("file"), "size": n})
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
	writeJSON(w, 200, map[string]any{"files": files})
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
		writeError(w, r, 400, codeBadJSON, "Unreadable body", err.Error(), "")
		return
	}
	if len(body) > maxProfileBytes {
		writeError(w, r, 413, codeTooLarge, "Record too large", fmt.Sprintf("A profile record may be at most %d bytes.", maxProfileBytes), "")
		return
	}
	if err := s.Profiles.Upsert(r.Context(), orgOf(r), sandboxOf(r), r.PathValue("id"), body); err != nil {
		s.dataError(w, r, "profile", err)
		return
	}
	writeJSON(w, 200, map[string]string{"id": r.PathValue("id")})
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
			writeError(w, r, 400, codeBadField, "Invalid limit", fmt.Sprintf("limit is %q; use a number from 1 to %d.", v, records.MaxPageSize), "")
			return
		}
		limit = n
	}
	recs, next, err := s.Profiles.List(r.Context(), orgOf(r), sandboxOf(r), r.URL.Query().Get("cursor"), limit)
	if err != nil {
		s.dataError(w, r, "profile", err)
		return
	}
	writeJSON(w, 200, map[string]any{"records": recs, "next": next})
}
