package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/control"
)

// OperatorHandler serves the operator listener: cmkapi.OperatorRoutes, for
// the platform's operators, across orgs. Every request must carry
// "Authorization: Bearer <token>" with the operator token (compared in
// constant time); org tokens mean nothing here. It shares nothing with the
// API's handler, whose listener does not know these paths.
func (s *Server) OperatorHandler(token string) http.Handler {
	want := sha256.Sum256([]byte(token))
	mux := http.NewServeMux()
	mux.HandleFunc(cmkapi.OperatorListOrgs.Pattern(), s.operatorOrgs)
	if s.Metrics != nil && s.MetricsOnOperator {
		mux.Handle(cmkapi.OperatorMetrics.Pattern(), s.Metrics.Handler())
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(got))
		if !ok || token == "" || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="cmk-operator"`)
			writeError(w, r, 401, cmkapi.CodeInvalidToken, "Operator token required",
				"This listener serves the platform's operators only; send Authorization: Bearer with the operator token.", "")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (s *Server) operatorOrgs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := control.OperatorFilter{State: strings.ToUpper(q.Get("state")), After: q.Get("after"), Limit: control.DefaultOperatorLimit}
	switch q.Get("jobs") {
	case "", "all":
	case "active":
		f.ActiveJobs = true
	default:
		writeError(w, r, 400, cmkapi.CodeInvalidField, "Invalid jobs", fmt.Sprintf("jobs is %q; use active, or leave it out.", q.Get("jobs")), "")
		return
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			writeError(w, r, 400, cmkapi.CodeInvalidField, "Invalid limit", fmt.Sprintf("limit is %q; use a number from 1 to %d.", v, control.MaxOperatorLimit), "")
			return
		}
		f.Limit = n
	}
	counts, page, next, err := s.Control.OperatorOrgs(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := cmkapi.OperatorOrgList{GeneratedAt: time.Now().UTC(), Counts: counts, Orgs: []cmkapi.OperatorOrg{}, Next: next}
	for _, o := range page {
		v := cmkapi.OperatorOrg{OrgID: o.OrgID, State: o.State(), CoastingUntil: tp(o.CoastingUntil), Key: o.Key}
		if h := o.Health; h != nil {
			v.Cause, v.Message, v.KeyVersion, v.RotatingTo = h.Cause, h.Message, h.KeyVersion, h.RotateTo
			v.Since, v.LastCheck, v.LastOK = tp(h.Since), tp(h.LastCheck), tp(h.LastOK)
		}
		if j := o.Job; j != nil {
			v.Job = &cmkapi.OperatorJob{Name: j.Name, Status: j.Status, Done: j.ProgressDone, Total: j.ProgressTotal, Attempts: j.Attempts,
				CreatedAt: j.CreatedAt.UTC(), LastError: j.LastError}
			if j.LeaseOwner != "" {
				v.Job.LeaseHolder, v.Job.LeaseUntil = j.LeaseOwner, tp(j.LeaseUntil)
			}
		}
		out.Orgs = append(out.Orgs, v)
	}
	writeJSON(w, 200, out)
}
