// Package profile is the profile store: JSON records per sandbox, each
// sealed with the envelope format under the profile store's data key and
// bound to its org, sandbox and id, with a transient read cache in front.
//
// A record is returned byte for byte as it was written, never re-encoded.
// Limits bound a record's size and nesting, the bytes of one page of a
// listing, and an org's records and their bytes; a write refused by a
// limit writes nothing.
package profile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cmk-project/cmk/internal/envelope"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/orgkeys"
	"github.com/cmk-project/cmk/internal/profile/records"
)

// StoreKind is the data-key store of profiles.
const StoreKind = "profile"

// Errors callers branch on.
var (
	ErrNotFound   = errors.New("record not found")
	ErrInvalidDoc = errors.New("record is not a JSON object")
)

// Store serves profile records.
type Store struct {
	Backend records.Backend
	Keys    *orgkeys.Resolver
	// Cache is the transient read cache (nil = none). It is per process, so
	// it is only for a profile store no other process writes to.
	Cache *ReadCache
	// Limits bound records, pages and what an org stores; zero fields take
	// the defaults. Set them before the store is used.
	Limits Limits

	usage usageTracker
}

// Record is a decrypted record.
type Record struct {
	ID  string          `json:"id"`
	Doc json.RawMessage `json:"record"`
}

func binding(org, sandbox, id string) envelope.Binding {
	return envelope.Binding{Org: org, Sandbox: sandbox, Store: StoreKind, Object: id}
}

// CheckDoc returns doc without surrounding white space if it is one JSON
// object, or ErrInvalidDoc.
func CheckDoc(doc []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(doc)
	if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(trimmed) {
		return nil, ErrInvalidDoc
	}
	return trimmed, nil
}

// Upsert validates, seals and stores a record. A record over a limit, or
// one that would take the org past its quota, is refused with a
// *LimitError and nothing is written.
func (s *Store) Upsert(ctx context.Context, org, sandbox, id string, doc []byte) error {
	l := s.Limits.WithDefaults()
	if err := l.checkSize(doc); err != nil {
		return err
	}
	trimmed, err := CheckDoc(doc)
	if err != nil {
		return err
	}
	sealed, err := s.Keys.SealRecord(ctx, org, sandbox, StoreKind, binding(org, sandbox, id), trimmed)
	if err != nil {
		return err
	}
	done, err := s.usage.reserve(ctx, s.Backend, org, records.Usage{Records: 1, Bytes: int64(len(sealed))}, l)
	if errors.As(err, new(*LimitError)) {
		// A write is first taken for a new record. At the quota, that is
		// checked: an overwrite adds no record, and only the difference
		// in size. (A delete racing this leaves the figure one record
		// low until the next count.)
		if old, gerr := s.Backend.Get(ctx, org, sandbox, id); gerr == nil {
			done, err = s.usage.reserve(ctx, s.Backend, org, records.Usage{Bytes: int64(len(sealed) - len(old.Value))}, l)
		}
	}
	if err != nil {
		return err
	}
	err = s.Backend.Upsert(ctx, org, sandbox, id, sealed)
	done(err == nil)
	if err != nil {
		return err
	}
	if s.Cache != nil {
		// Drop rather than cache what this request wrote: a concurrent
		// write may have landed after it, and the next read fills the
		// cache from the store.
		s.Cache.Drop(org, sandbox, id)
	}
	return nil
}

// Get returns a record's JSON.
func (s *Store) Get(ctx context.Context, org, sandbox, id string) ([]byte, error) {
	var sealed []byte
	if s.Cache != nil {
		if c, ok := s.Cache.Get(org, sandbox, id); ok {
			sealed = c
		}
	}
	// The cache holds records sealed, so looking first opens nothing; a
	// refusal is then told apart by where the record would have come from.
	from := keyhealth.StoreProfile
	if sealed != nil {
		from = keyhealth.StoreProfileCache
	}
	if err := s.Keys.AllowStore(org, from); err != nil {
		return nil, err
	}
	if sealed == nil {
		var gen uint64
		if s.Cache != nil {
			gen = s.Cache.Gen(org, sandbox, id)
		}
		rec, err := s.Backend.Get(ctx, org, sandbox, id)
		if errors.Is(err, records.ErrNotFound) {
			return nil, ErrNotFound
		}
		if err != nil {
			return nil, err
		}
		sealed = rec.Value
		if s.Cache != nil {
			s.Cache.Fill(org, sandbox, id, gen, bytes.Clone(sealed))
		}
	}
	return s.open(ctx, org, sandbox, id, sealed)
}

func (s *Store) open(ctx context.Context, org, sandbox, id string, sealed []byte) ([]byte, error) {
	doc, err := s.Keys.OpenRecord(ctx, org, sandbox, StoreKind, binding(org, sandbox, id), sealed)
	if errors.Is(err, envelope.ErrFormat) {
		return nil, fmt.Errorf("record %s: %w", id, err)
	}
	return doc, err
}

// Delete removes a record.
func (s *Store) Delete(ctx context.Context, org, sandbox, id string) error {
	if err := s.Keys.AllowStore(org, keyhealth.StoreProfile); err != nil {
		return err
	}
	err := s.Backend.Delete(ctx, org, sandbox, id)
	if s.Cache != nil {
		s.Cache.Drop(org, sandbox, id)
	}
	if errors.Is(err, records.ErrNotFound) {
		return ErrNotFound
	}
	return err
}

// List returns one page of decrypted records in id order: at most limit
// records, and no more stored bytes than Limits.PageBytes (but at least
// one record), so a listing's memory and answer are bounded whatever the
// records. Each Doc is the record as written.
func (s *Store) List(ctx context.Context, org, sandbox, cursor string, limit int) ([]Record, string, error) {
	if err := s.Keys.AllowStore(org, keyhealth.StoreProfile); err != nil {
		return nil, "", err
	}
	page, err := s.Backend.List(ctx, org, sandbox, cursor, limit, s.Limits.WithDefaults().PageBytes)
	if err != nil {
		return nil, "", err
	}
	out := make([]Record, 0, len(page.Records))
	for _, r := range page.Records {
		doc, err := s.open(ctx, org, sandbox, r.ID, r.Value)
		if err != nil {
			return nil, "", err
		}
		out = append(out, Record{ID: r.ID, Doc: doc})
	}
	return out, page.Next, nil
}
