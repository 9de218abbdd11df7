package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/google/uuid"

	"github.com/cmk-project/cmk/internal/keyhealth"
)

// Episode is the stored form of a key-health episode.
type Episode = keyhealth.Episode

// execer is a db or a txn.
type execer interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
}

// SaveHealthStep is SaveHealth and, in the same transaction, the step of
// the org's episode history the check decided: written only while owner
// holds the org's check lease, so a replica whose lease was lost writes
// neither.
func (s *Store) SaveHealthStep(ctx context.Context, h *Health, owner string, step keyhealth.EpisodeStep) error {
	if step.Empty() {
		return s.SaveHealth(ctx, h, owner)
	}
	return s.tx(ctx, func(tx txn) error {
		if err := s.saveHealth(ctx, tx, h, owner); err != nil {
			return err
		}
		if err := applyStep(ctx, tx, h.OrgID, step); err != nil {
			return fmt.Errorf("key history of %s: %w", h.OrgID, err)
		}
		return nil
	})
}

const episodeCols = `id, org_id, started_at, ended_at, worst, key_ref, causes, blocked_from, blocked_until, blocked_at, blocked_ms`

func scanEpisode(sc scanner) (*Episode, error) {
	var e Episode
	var start, end, bf, bu, ba, bms int64
	var causes string
	if err := sc.Scan(&e.ID, &e.OrgID, &start, &end, &e.Worst, &e.KeyRef, &causes, &bf, &bu, &ba, &bms); err != nil {
		return nil, err
	}
	e.Start, e.End, e.BlockedFrom, e.BlockedUntil, e.BlockedAt = fromMS(start), fromMS(end), fromMS(bf), fromMS(bu), fromMS(ba)
	e.Blocked = time.Duration(bms) * time.Millisecond
	if err := decodeJSON(causes, &e.Causes); err != nil {
		return nil, fmt.Errorf("key episode %s: causes: %w", e.ID, err)
	}
	return &e, nil
}

// applyStep writes one check's step into the org's open episode, opening
// one first when the step leaves HEALTHY. Applying a step twice changes
// nothing more than applying it once, but for a repeated cause.
func applyStep(ctx context.Context, tx txn, org string, st keyhealth.EpisodeStep) error {
	e, err := scanEpisode(tx.QueryRowContext(ctx, `SELECT `+episodeCols+` FROM key_episodes WHERE org_id = ? AND ended_at = 0`, org))
	if errors.Is(err, sql.ErrNoRows) {
		if !st.Open {
			return nil // nothing open to change (history began after this episode did)
		}
		e = &Episode{ID: uuid.NewString(), OrgID: org, Start: st.At, Worst: st.Worst, KeyRef: st.KeyRef}
		if _, err := tx.ExecContext(ctx, `INSERT INTO key_episodes (id, org_id, started_at, worst, key_ref) VALUES (?, ?, ?, ?, ?)`,
			e.ID, org, ms(e.Start), e.Worst, e.KeyRef); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if keyhealth.Severity(st.Worst) > keyhealth.Severity(e.Worst) {
		e.Worst = st.Worst
	}
	if st.Cause != nil {
		e.Causes = append(e.Causes, *st.Cause)
		// A flapping key could add causes without end: keep the first and
		// the latest ones.
		if n := len(e.Causes); n > maxEpisodeCauses {
			e.Causes = append(e.Causes[:maxEpisodeCauses/2], e.Causes[n-maxEpisodeCauses/2:]...)
		}
	}
	if !st.Block.IsZero() && e.BlockedAt.IsZero() {
		e.BlockedAt = st.Block
		if e.BlockedFrom.IsZero() {
			e.BlockedFrom = st.Block
		}
	}
	if !st.Unblock.IsZero() && !e.BlockedAt.IsZero() {
		e.Blocked += max(st.Unblock.Sub(e.BlockedAt), 0)
		e.BlockedUntil, e.BlockedAt = st.Unblock, time.Time{}
	}
	if st.Close {
		e.End = st.At
	}
	causes, err := encodeJSON(e.Causes)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE key_episodes SET ended_at = ?, worst = ?, causes = ?, blocked_from = ?, blocked_until = ?, blocked_at = ?, blocked_ms = ? WHERE id = ?`,
		ms(e.End), e.Worst, causes, ms(e.BlockedFrom), ms(e.BlockedUntil), ms(e.BlockedAt), e.Blocked.Milliseconds(), e.ID)
	return err
}

// clockSlack is how far a replica's clock may run behind the one that
// stamped an episode's start (replicas keep their clocks in sync, as the
// gate's sync assumes) for its counts to still land in that episode.
const clockSlack = 5 * time.Second

// maxEpisodeCauses bounds the causes kept per episode.
const maxEpisodeCauses = 64

// AddStoreUses adds a replica's counts of refused and resumed requests to
// each org's open episode, or else to its last one (a resume, or refusals
// flushed just after the episode ended). Counts of an org without any
// episode are dropped: its data was never refused by a check's decision.
func (s *Store) AddStoreUses(ctx context.Context, replica string, uses []keyhealth.StoreUse) error {
	return s.tx(ctx, func(tx txn) error {
		for _, u := range uses {
			// The episode that had started when the counting began (a
			// refusal, else the resume), allowing for replicas' clocks;
			// else the org's open or newest one.
			at := u.FirstRefused
			if at.IsZero() {
				at = u.Resumed
			}
			var id string
			err := tx.QueryRowContext(ctx, `SELECT id FROM key_episodes WHERE org_id = ? AND started_at <= ? ORDER BY started_at DESC LIMIT 1`, u.Org, ms(at.Add(clockSlack))).Scan(&id)
			if errors.Is(err, sql.ErrNoRows) {
				err = tx.QueryRowContext(ctx, `SELECT id FROM key_episodes WHERE org_id = ? ORDER BY ended_at = 0 DESC, started_at DESC LIMIT 1`, u.Org).Scan(&id)
			}
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO key_episode_stores (episode_id, store, replica, first_refused, last_refused, refused, resumed_at)
				VALUES (?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT (episode_id, store, replica) DO UPDATE SET
					first_refused = CASE WHEN key_episode_stores.first_refused = 0 OR (excluded.first_refused <> 0 AND excluded.first_refused < key_episode_stores.first_refused) THEN excluded.first_refused ELSE key_episode_stores.first_refused END,
					last_refused = CASE WHEN excluded.last_refused > key_episode_stores.last_refused THEN excluded.last_refused ELSE key_episode_stores.last_refused END,
					refused = key_episode_stores.refused + excluded.refused,
					resumed_at = CASE WHEN excluded.refused > 0 THEN excluded.resumed_at WHEN key_episode_stores.resumed_at = 0 THEN excluded.resumed_at ELSE key_episode_stores.resumed_at END`,
				id, u.Store, replica, ms(u.FirstRefused), ms(u.LastRefused), u.Refused, ms(u.Resumed))
			if err != nil {
				return fmt.Errorf("add refusals of %s to its key history: %w", u.Org, err)
			}
		}
		return nil
	})
}

// Episodes lists an org's episodes that overlap [since, until) (zero
// bounds: open), newest first, at most limit, each with its stores.
func (s *Store) Episodes(ctx context.Context, org string, since, until time.Time, limit int) ([]*Episode, error) {
	q := `SELECT ` + episodeCols + ` FROM key_episodes WHERE org_id = ? AND (ended_at = 0 OR ended_at >= ?)`
	args := []any{org, ms(since)}
	if !until.IsZero() {
		q += ` AND started_at < ?`
		args = append(args, ms(until))
	}
	q += ` ORDER BY started_at DESC, id LIMIT ?`
	args = append(args, limit)
	eps, err := queryAll(ctx, s.db, scanEpisode, q, args...)
	if err != nil {
		return nil, err
	}
	for _, e := range eps {
		if e.Stores, err = s.episodeStores(ctx, e.ID); err != nil {
			return nil, err
		}
	}
	return eps, nil
}

// episodeStores sums the replicas' rows of an episode per store: counts
// added, the earliest first and the latest last refusal, and as resumed the
// earliest resume that came after every replica's last refusal (a replica
// that was still refusing had not resumed).
func (s *Store) episodeStores(ctx context.Context, id string) ([]keyhealth.StoreUse, error) {
	type row struct {
		store                     string
		first, last, n, resumedAt int64
	}
	rows, err := queryAll(ctx, s.db, func(sc scanner) (row, error) {
		var r row
		err := sc.Scan(&r.store, &r.first, &r.last, &r.n, &r.resumedAt)
		return r, err
	}, `SELECT store, first_refused, last_refused, refused, resumed_at FROM key_episode_stores WHERE episode_id = ?`, id)
	if err != nil {
		return nil, err
	}
	by := map[string]*keyhealth.StoreUse{}
	resumes := map[string][]int64{}
	for _, r := range rows {
		u := by[r.store]
		if u == nil {
			u = &keyhealth.StoreUse{Store: r.store}
			by[r.store] = u
		}
		if r.first != 0 && (u.FirstRefused.IsZero() || fromMS(r.first).Before(u.FirstRefused)) {
			u.FirstRefused = fromMS(r.first)
		}
		if fromMS(r.last).After(u.LastRefused) {
			u.LastRefused = fromMS(r.last)
		}
		u.Refused += r.n
		if r.resumedAt != 0 {
			resumes[r.store] = append(resumes[r.store], r.resumedAt)
		}
	}
	out := make([]keyhealth.StoreUse, 0, len(by))
	for name, u := range by {
		for _, at := range resumes[name] {
			t := fromMS(at)
			if t.Before(u.LastRefused) {
				continue
			}
			if u.Resumed.IsZero() || t.Before(u.Resumed) {
				u.Resumed = t
			}
		}
		out = append(out, *u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Store < out[j].Store })
	return out, nil
}
