package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
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
	case errors.As(err, new(*lake.LimitError)):
		s.lakeLimit(w, r, err)
	case errors.As(err, new(*profile.LimitError)):
		s.profileLimit(w, r, err)
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
	// A declared length past the quota is refused before the body is read
	// (a client sending Expect: 100-continue then sends nothing).
	n, err := s.Lake.PutSized(r.Context(), orgOf(r), sandboxOf(r), r.PathValue("dataset"), r.PathValue("file"), body, r.ContentLength)
	if err != nil {
		if body.err != nil && errors.Is(err, body.err) {
			status := 400
			if errors.Is(body.err, os.ErrDeadlineExceeded) { // the server's minimum transfer rate
				status = http.StatusRequestTimeout
			}
			writeError(w, r, status, cmkapi.CodeRequestBodyUnreadable, "Upload interrupted", "The request body could not be read to the end: "+body.err.Error()+". Nothing was stored.", "Send the file again.")
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

// lakeLimit answers an upload refused by the lake's quota.
func (s *Server) lakeLimit(w http.ResponseWriter, r *http.Request, err error) {
	var le *lake.LimitError
	errors.As(err, &le)
	if errors.Is(err, lake.ErrOrgFull) {
		writeError(w, r, 507, cmkapi.CodeLakeQuotaExceeded, "Lake quota reached",
			fmt.Sprintf("Your org's lake files may take at most %s over all its sandboxes; they take %s, and this upload would pass the quota. Nothing was stored.", sizeText(le.Limit), sizeText(le.Used)),
			"Delete files your org no longer needs (DELETE /data/lake/datasets/{dataset}/files/{file}), in any sandbox; the room counts within a second. Or ask the platform operator to raise your org's lake quota.")
		return
	}
	what := "this upload passed that"
	if le.Declared >= 0 {
		what = fmt.Sprintf("this upload declares %s", sizeText(le.Declared))
	}
	writeError(w, r, 413, cmkapi.CodeFileTooLarge, "File too large",
		fmt.Sprintf("A lake file may be at most %s; %s. Nothing was stored.", sizeText(le.Limit), what),
		fmt.Sprintf("Split the data into files of at most %s each.", sizeText(le.Limit)))
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
	max := int64(s.Profiles.Limits.WithDefaults().RecordBytes)
	if r.ContentLength > max {
		s.dataError(w, r, "profile", &profile.LimitError{Err: profile.ErrTooLarge, Limit: max})
		return
	}
	// One byte more than the limit is enough for Upsert to refuse it.
	body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		writeError(w, r, 400, cmkapi.CodeMalformedRequestBody, "Unreadable body", err.Error(), "")
		return
	}
	if err := s.Profiles.Upsert(r.Context(), orgOf(r), sandboxOf(r), r.PathValue("id"), body); err != nil {
		s.dataError(w, r, "profile", err)
		return
	}
	writeJSON(w, 200, cmkapi.ProfileSaved{ID: r.PathValue("id")})
}

// profileLimit answers a record refused by one of the profile store's
// limits.
func (s *Server) profileLimit(w http.ResponseWriter, r *http.Request, err error) {
	var le *profile.LimitError
	errors.As(err, &le)
	const free = "Delete records your org no longer needs (DELETE /data/profiles/{id}), in any sandbox; the room counts within a second. Or ask the platform operator to raise your org's profile quota."
	switch {
	case errors.Is(err, profile.ErrOrgRecords):
		writeError(w, r, 507, cmkapi.CodeProfileQuotaExceeded, "Profile quota reached",
			fmt.Sprintf("Your org may keep at most %d profile records over all its sandboxes, and keeps %d. Nothing was stored.", le.Limit, le.Used), free)
	case errors.Is(err, profile.ErrOrgBytes):
		writeError(w, r, 507, cmkapi.CodeProfileQuotaExceeded, "Profile quota reached",
			fmt.Sprintf("Your org's profile records may take at most %s over all its sandboxes; they take %s, and this one would pass the quota. Nothing was stored.", sizeText(le.Limit), sizeText(le.Used)), free)
	case errors.Is(err, profile.ErrTooDeep):
		writeError(w, r, 400, cmkapi.CodeRecordTooDeep, "Record nested too deeply",
			fmt.Sprintf("A profile record's arrays and objects may nest at most %d levels deep; this one nests deeper. Nothing was stored.", le.Limit),
			fmt.Sprintf("Keep the record's structure at most %d levels deep, for example by storing a deep part as a string or as a file in the data lake.", le.Limit))
	default:
		writeError(w, r, 413, cmkapi.CodeRecordTooLarge, "Record too large",
			fmt.Sprintf("A profile record may be at most %s of JSON; this one is larger. Nothing was stored.", sizeText(le.Limit)),
			"Store large content as a file in the data lake (PUT /data/lake/datasets/{dataset}/files/{file}) and keep its name in the record.")
	}
}

// sizeText names a byte count for a person: "1 MiB (1048576 bytes)".
func sizeText(n int64) string {
	if n < 1<<10 {
		return fmt.Sprintf("%d bytes", n)
	}
	v, unit := float64(n), ""
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		if v < 1<<10 {
			break
		}
		v, unit = v/(1<<10), u
	}
	return fmt.Sprintf("%.4g %s (%d bytes)", v, unit, n)
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
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(200)
	if err := writeProfilePage(w, recs, next); err != nil {
		s.Log.Debug("profile list answer cut short", "org", orgOf(r), "err", err)
	}
}

// writeProfilePage writes a page as the JSON of cmkapi.ProfileList, each
// record's bytes as stored. The page is not given to an encoder: it would
// re-format every record, and re-indenting a deeply nested record
// multiplies its size (three records of 54 KB once made a 486 MB answer).
// This way the answer is the stored bytes plus a few bytes per record,
// written as they are, without a second copy of the page.
func writeProfilePage(w io.Writer, recs []profile.Record, next string) error {
	ew := &errWriter{w: w}
	ew.write([]byte(`{"records":[`))
	for i, rec := range recs {
		if i > 0 {
			ew.write([]byte(","))
		}
		id, _ := json.Marshal(rec.ID) // a string always encodes
		ew.write([]byte(`{"id":`))
		ew.write(id)
		ew.write([]byte(`,"record":`))
		ew.write(rec.Doc)
		ew.write([]byte("}"))
	}
	nextJSON, _ := json.Marshal(next)
	ew.write([]byte(`],"next":`))
	ew.write(nextJSON)
	ew.write([]byte("}\n"))
	return ew.err
}

// errWriter keeps the first write error and skips the writes after it.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) write(p []byte) {
	if e.err == nil {
		_, e.err = e.w.Write(p)
	}
}
