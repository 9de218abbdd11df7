package control

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/store"
)

// OperatorFilter selects orgs for the operator's view.
type OperatorFilter struct {
	State      string // a key state or SYSTEM_MANAGED; "" = all
	ActiveJobs bool   // only orgs with an unfinished enablement job
	After      string // orgs with an id after this one (paging)
	Limit      int    // 1 to MaxOperatorLimit
}

// Operator page sizes: a page of a fleet of 10,000 orgs stays a few
// megabytes at most.
const (
	DefaultOperatorLimit = 500
	MaxOperatorLimit     = 5000
)

// OperatorOrg is one org of the operator's view.
type OperatorOrg struct {
	OrgID         string
	Health        *keyhealth.Health // nil for an org on system-managed keys
	CoastingUntil time.Time         // while COASTING: since + grace
	Job           *store.Config     // the unfinished enablement job, if any
	Key           string            // the key in use or being enabled: vault URL (or ARN) and name
}

// State is the org's key state, or SYSTEM_MANAGED.
func (o OperatorOrg) State() string {
	if o.Health == nil {
		return cmkapi.StateSystemManaged
	}
	return o.Health.State
}

// OperatorOrgs is the platform operator's view across orgs: every org on
// its own key with its health, and every org with an unfinished enablement
// job, sorted by org id, with the count per state over all of them. Orgs
// that never started enabling are not listed (a fleet has many). It is for
// the operator listener only: it reads every org.
func (s *Service) OperatorOrgs(ctx context.Context, f OperatorFilter) (counts map[string]int, page []OperatorOrg, next string, err error) {
	if f.Limit < 1 || f.Limit > MaxOperatorLimit {
		return nil, nil, "", problem(ErrInvalidField, "Invalid limit", fmt.Sprintf("limit is %d; use a number from 1 to %d.", f.Limit, MaxOperatorLimit), "")
	}
	switch f.State {
	case "", keyhealth.Healthy, keyhealth.Degraded, keyhealth.Coasting, keyhealth.Revoked, cmkapi.StateSystemManaged:
	default:
		return nil, nil, "", problem(ErrInvalidField, "Invalid state", fmt.Sprintf("state is %q; use HEALTHY, DEGRADED, COASTING, REVOKED or SYSTEM_MANAGED.", f.State), "")
	}
	all, err := s.Store.AllHealth(ctx)
	if err != nil {
		return nil, nil, "", err
	}
	jobs, err := s.Store.UnfinishedJobs(ctx)
	if err != nil {
		return nil, nil, "", err
	}
	orgs, err := s.Store.CustomerOrgs(ctx)
	if err != nil {
		return nil, nil, "", err
	}
	keys := make(map[string]string, len(orgs))
	for _, o := range orgs {
		keys[o.ID] = o.VaultURL + "/keys/" + o.KeyName
	}
	byOrg := map[string]*OperatorOrg{}
	for _, h := range all {
		o := &OperatorOrg{OrgID: h.OrgID, Health: h, Key: keys[h.OrgID]}
		if h.State == keyhealth.Coasting && !h.Since.IsZero() && s.Monitor != nil && s.Monitor.Grace > 0 {
			o.CoastingUntil = h.Since.Add(s.Monitor.Grace)
		}
		byOrg[h.OrgID] = o
	}
	for _, j := range jobs {
		o := byOrg[j.OrgID]
		if o == nil {
			o = &OperatorOrg{OrgID: j.OrgID}
			byOrg[j.OrgID] = o
		}
		if o.Job == nil {
			o.Job = j // oldest first: an org has at most one unfinished job
			if o.Key == "" {
				o.Key = j.VaultURL + "/keys/" + j.KeyName
			}
		}
	}
	counts = map[string]int{keyhealth.Healthy: 0, keyhealth.Degraded: 0, keyhealth.Coasting: 0, keyhealth.Revoked: 0, cmkapi.StateSystemManaged: 0}
	ids := make([]string, 0, len(byOrg))
	for id, o := range byOrg {
		counts[o.State()]++
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		o := byOrg[id]
		if id <= f.After || (f.State != "" && o.State() != f.State) || (f.ActiveJobs && o.Job == nil) {
			continue
		}
		if len(page) == f.Limit {
			next = page[len(page)-1].OrgID
			break
		}
		page = append(page, *o)
	}
	return counts, page, next, nil
}
