package api

import (
	"fmt"
	"net/http"
)

// deleteOrg deletes the org and all its data. It is allowed in every key
// state — including revoked, where it is one of the few things left to do —
// and needs the org id repeated in ?confirm= so it cannot happen by accident.
//
// The data keys go first: once they are gone every stored object of the org
// is unreadable, even if removing the objects themselves is interrupted.
func (s *Server) deleteOrg(w http.ResponseWriter, r *http.Request) {
	org := orgOf(r)
	if r.URL.Query().Get("confirm") != org {
		writeError(w, r, 400, codeConfirm, "Confirmation required", "Deleting an org destroys all of its data, in every sandbox, for good.",
			fmt.Sprintf("Repeat the org id to confirm: DELETE /data/infrastructure/manager/org?confirm=%s", org))
		return
	}
	ctx := r.Context()
	if err := s.Store.DeleteOrg(ctx, org); err != nil {
		s.internal(w, r, err)
		return
	}
	if s.Keys != nil {
		s.Keys.Cache.WipeOrg(org)
		s.Keys.ForgetOrg(org)
	}
	s.Gate.Forget(org)
	var lakeErr, profErr error
	if s.Lake != nil {
		lakeErr = s.Lake.DeleteOrg(ctx, org)
	}
	if s.Profiles != nil {
		profErr = s.Profiles.Backend.DeleteOrg(ctx, org)
	}
	if lakeErr != nil || profErr != nil {
		s.Log.Error("org deleted; stored objects not all removed", "org", org, "lake_err", lakeErr, "profile_err", profErr)
	}
	s.Log.Warn("org deleted", "org", org, "request_id", w.Header().Get("x-request-id"))
	writeJSON(w, 200, map[string]any{"orgId": org, "deleted": true,
		"note": "The org's data keys are destroyed, so none of its stored data can be read again."})
}
