package control

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/store"
)

// History periods. Ninety days is what an auditor asks for most; the
// longest period matches the audit trail's retention, beyond which the
// report could not show the revocation and recovery entries.
const (
	DefaultHistoryPeriod = 90 * 24 * time.Hour
	MaxHistoryPeriod     = 400 * 24 * time.Hour
	// MaxEpisodes bounds one answer; a key flapping for a year is still
	// told by its newest thousand episodes.
	MaxEpisodes = 1000
)

// The audit operations of the monitor's revocations and recoveries, which
// the access report lists.
const (
	opRevocation = "revocation"
	opRecovery   = "recovery"
)

// Period is the time range of a history or report; zero fields take the
// defaults (the last DefaultHistoryPeriod up to now).
type Period struct{ Since, Until time.Time }

// HistoryView is an org's episodes in a period, newest first.
type HistoryView struct {
	Org      string
	Period   Period
	Now      time.Time
	Episodes []*keyhealth.Episode
}

// AccessReport is what the access report says of an org.
type AccessReport struct {
	HistoryView
	Keys    []string
	Blocked time.Duration // within the period
	Audit   []store.AuditEntry
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// period fills p's defaults and checks it.
func (s *Service) period(p Period) (Period, time.Time, error) {
	now := s.now()
	if p.Until.IsZero() {
		p.Until = now
	}
	if p.Since.IsZero() {
		p.Since = p.Until.Add(-DefaultHistoryPeriod)
	}
	if !p.Until.After(p.Since) {
		return p, now, problem(ErrInvalidField, "Invalid time range", fmt.Sprintf("until (%s) is not after since (%s).", p.Until.UTC().Format(time.RFC3339), p.Since.UTC().Format(time.RFC3339)),
			"Give an until later than since, or leave one of them out.")
	}
	if p.Until.Sub(p.Since) > MaxHistoryPeriod {
		return p, now, problem(ErrInvalidField, "Time range too long", fmt.Sprintf("since to until is %d days; at most %d are kept.", int(p.Until.Sub(p.Since).Hours()/24), int(MaxHistoryPeriod.Hours()/24)),
			"Ask for a shorter period, one report per quarter for example.")
	}
	return p, now, nil
}

// History lists the org's key-health episodes that overlap the period,
// newest first. Only the org's own: every query is by the caller's org.
func (s *Service) History(ctx context.Context, org string, p Period) (*HistoryView, error) {
	p, now, err := s.period(p)
	if err != nil {
		return nil, err
	}
	if _, err := s.Store.Org(ctx, org); err != nil {
		return nil, err
	}
	eps, err := s.Store.Episodes(ctx, org, p.Since, p.Until, MaxEpisodes)
	if err != nil {
		return nil, err
	}
	return &HistoryView{Org: org, Period: p, Now: now, Episodes: eps}, nil
}

// Report is the org's access report over the period: its episodes, the
// time its data was refused, its keys and the audit entries of revocation
// and recovery.
func (s *Service) Report(ctx context.Context, org string, p Period) (*AccessReport, error) {
	h, err := s.History(ctx, org, p)
	if err != nil {
		return nil, err
	}
	r := &AccessReport{HistoryView: *h}
	keys := map[string]bool{}
	for _, e := range h.Episodes {
		if e.KeyRef != "" {
			keys[e.KeyRef] = true
		}
		r.Blocked += BlockedWithin(e, h.Period, h.Now)
	}
	if o, err := s.Store.Org(ctx, org); err == nil && o.KEKMode == store.ModeCustomer {
		keys[keyring.CustomerRef(o).String()] = true
	}
	for k := range keys {
		r.Keys = append(r.Keys, k)
	}
	sort.Strings(r.Keys)
	for _, op := range []string{opRevocation, opRecovery} {
		entries, err := s.Store.AuditQuery(ctx, org, store.AuditFilter{Op: op, Since: h.Period.Since, Until: h.Period.Until, Limit: MaxAuditLimit})
		if err != nil {
			return nil, err
		}
		r.Audit = append(r.Audit, entries...)
	}
	sort.SliceStable(r.Audit, func(i, j int) bool { return r.Audit[i].At.After(r.Audit[j].At) })
	return r, nil
}

// Blocked is the total time an episode refused data up to now, counting a
// span still open.
func Blocked(e *keyhealth.Episode, now time.Time) time.Duration {
	d := e.Blocked
	if !e.BlockedAt.IsZero() && now.After(e.BlockedAt) {
		d += now.Sub(e.BlockedAt)
	}
	return d
}

// BlockedWithin is the part of an episode's refused time that falls in the
// period: the span from its first refusal to its last opening (or now),
// cut to the period, and never more than Blocked.
func BlockedWithin(e *keyhealth.Episode, p Period, now time.Time) time.Duration {
	total := Blocked(e, now)
	if e.BlockedFrom.IsZero() || total == 0 {
		return 0
	}
	from, to := e.BlockedFrom, e.BlockedUntil
	if !e.BlockedAt.IsZero() || to.IsZero() {
		to = now
	}
	from, to = maxTime(from, p.Since), minTime(to, p.Until)
	if !to.After(from) {
		return 0
	}
	return min(to.Sub(from), total)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
