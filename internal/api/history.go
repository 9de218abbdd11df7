package api

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/control"
	"github.com/cmk-project/cmk/internal/guidance"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/store"
)

// period reads since and until (RFC 3339) from the query.
func period(w http.ResponseWriter, r *http.Request) (control.Period, bool) {
	var p control.Period
	q := r.URL.Query()
	for _, f := range []struct {
		name string
		to   *time.Time
	}{{"since", &p.Since}, {"until", &p.Until}} {
		if v := q.Get(f.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				writeError(w, r, 400, cmkapi.CodeInvalidField, "Invalid "+f.name, fmt.Sprintf("%s is %q; use an RFC 3339 time such as 2026-01-02T15:04:05Z.", f.name, v), "")
				return p, false
			}
			*f.to = t
		}
	}
	return p, true
}

func (s *Server) getHistory(w http.ResponseWriter, r *http.Request) {
	p, ok := period(w, r)
	if !ok {
		return
	}
	h, err := s.Control.History(r.Context(), orgOf(r), p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, cmkapi.History{Org: h.Org, Since: h.Period.Since.UTC(), Until: h.Period.Until.UTC(), Episodes: episodeViews(h.Episodes, h.Now)})
}

func (s *Server) getAccessReport(w http.ResponseWriter, r *http.Request) {
	p, ok := period(w, r)
	if !ok {
		return
	}
	format := r.URL.Query().Get("format")
	if format != "" && format != "json" && format != "html" {
		writeError(w, r, 400, cmkapi.CodeInvalidField, "Invalid format", fmt.Sprintf("format is %q; use json (the default) or html.", format), "")
		return
	}
	rep, err := s.Control.Report(r.Context(), orgOf(r), p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	v := cmkapi.AccessReport{
		Org: rep.Org, GeneratedAt: rep.Now.UTC(), Since: rep.Period.Since.UTC(), Until: rep.Period.Until.UTC(),
		Keys: append([]string{}, rep.Keys...), BlockedSeconds: int64(rep.Blocked / time.Second),
		Episodes: episodeViews(rep.Episodes, rep.Now), Audit: []cmkapi.AuditEntry{},
	}
	for _, e := range rep.Audit {
		v.Audit = append(v.Audit, auditView(e))
	}
	if format != "html" {
		writeJSON(w, 200, v)
		return
	}
	var b bytes.Buffer
	if err := reportPage.Execute(&b, v); err != nil {
		s.fail(w, r, fmt.Errorf("render access report: %w", err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	// Self-contained and inert: no scripts, nothing loaded from anywhere,
	// inline styles only.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("Content-Disposition", `inline; filename="cmk-access-report.html"`)
	w.WriteHeader(200)
	w.Write(b.Bytes())
}

// seconds is a duration in whole seconds for people ("under a second"
// rather than "0 seconds").
func seconds(sec int64) string {
	if sec < 1 {
		return "under a second"
	}
	return guidance.Duration(time.Duration(sec) * time.Second)
}

func auditView(e store.AuditEntry) cmkapi.AuditEntry {
	return cmkapi.AuditEntry{ID: e.ID, At: e.At.UTC(), Operation: e.Op, Key: e.KeyRef, KeyVersion: e.KeyVersion, Outcome: e.Outcome, RequestID: e.RequestID, Detail: e.Detail, Actor: e.Actor}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func episodeViews(eps []*keyhealth.Episode, now time.Time) []cmkapi.Episode {
	out := []cmkapi.Episode{}
	for _, e := range eps {
		end := e.End
		if end.IsZero() {
			end = now
		}
		v := cmkapi.Episode{
			ID: e.ID, Start: e.Start.UTC(), End: timePtr(e.End), Ongoing: e.End.IsZero(),
			DurationSeconds: int64(max(end.Sub(e.Start), 0) / time.Second), WorstState: e.Worst, Key: e.KeyRef,
			Causes: []cmkapi.EpisodeCause{}, BlockedFrom: timePtr(e.BlockedFrom), Stores: []cmkapi.StoreUsage{},
			BlockedSeconds: int64(control.Blocked(e, now) / time.Second),
		}
		if e.BlockedAt.IsZero() {
			v.BlockedUntil = timePtr(e.BlockedUntil)
		}
		for _, c := range e.Causes {
			v.Causes = append(v.Causes, cmkapi.EpisodeCause{At: c.At.UTC(), State: c.State, Cause: c.Cause, Message: c.Message})
		}
		for _, u := range e.Stores {
			v.Stores = append(v.Stores, cmkapi.StoreUsage{Store: u.Store, FirstRefused: timePtr(u.FirstRefused), LastRefused: timePtr(u.LastRefused), Refused: u.Refused, Resumed: timePtr(u.Resumed)})
		}
		out = append(out, v)
	}
	return out
}

//go:embed report.html
var reportHTML string

// reportPage is the printable access report. html/template escapes every
// value by its context: org ids, key names, causes, messages and audit
// details are the org's or its vault's strings and are treated as hostile.
var reportPage = template.Must(template.New("report").Funcs(template.FuncMap{
	"when": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			return v.UTC().Format(time.RFC3339)
		case *time.Time:
			if v == nil {
				return "—"
			}
			return v.UTC().Format(time.RFC3339)
		}
		return ""
	},
	"dur": seconds,
}).Parse(reportHTML))
