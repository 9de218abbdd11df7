package profile

import (
	"errors"
	"fmt"
	"time"

	"github.com/cmk-project/cmk/internal/profile/records"
)

// Limits bound what one record may be, what one page of a listing holds,
// and what one org may store. Zero fields take the defaults below.
type Limits struct {
	// RecordBytes bounds a record's JSON (DefaultRecordBytes; at most
	// records.MaxValueBytes less 1 KiB, which leaves room for sealing).
	RecordBytes int
	// Depth bounds how deeply a record's arrays and objects nest
	// (DefaultDepth): {"a": 1} is one level, {"a": [1]} two.
	Depth int
	// PageBytes bounds the stored bytes of one page of a listing
	// (DefaultPageBytes; at most records.MaxPageBytes); a page always
	// holds at least one record.
	PageBytes int
	// OrgRecords and OrgBytes bound an org's records and their stored
	// bytes, over all its sandboxes (DefaultOrgRecords, DefaultOrgBytes).
	OrgRecords int64
	OrgBytes   int64
	// UsageTTL is how long a count of what an org stores is trusted
	// (DefaultUsageTTL); see usageTracker.
	UsageTTL time.Duration
}

// Defaults of Limits.
const (
	// DefaultRecordBytes: profile records are small documents; 1 MiB is far
	// above a real one and keeps one record from filling a page.
	DefaultRecordBytes = 1 << 20
	// DefaultDepth: real profiles nest a handful of levels. 64 leaves room
	// for any of them and keeps every parser that reads a record (ours and
	// the clients') far from its recursion limit; a deeply nested record
	// is a way to make parsers and pretty-printers work hard.
	DefaultDepth = 64
	// DefaultPageBytes is the memory one listing holds (the page's sealed
	// records, opened in place) and about the most it answers: four records
	// of the largest size, or a thousand of 4 KiB.
	DefaultPageBytes = 4 << 20
	// DefaultOrgRecords and DefaultOrgBytes keep one org from filling the
	// database every org shares: a million records, 10 GiB of them.
	DefaultOrgRecords = 1_000_000
	DefaultOrgBytes   = 10 << 30
	// DefaultUsageTTL: an org's usage is counted again after a minute, so
	// other replicas' writes count against its quota within one.
	DefaultUsageTTL = time.Minute
)

// WithDefaults returns l with its zero fields set to the defaults.
func (l Limits) WithDefaults() Limits {
	if l.RecordBytes <= 0 {
		l.RecordBytes = DefaultRecordBytes
	}
	l.RecordBytes = min(l.RecordBytes, records.MaxValueBytes-1<<10)
	if l.Depth <= 0 {
		l.Depth = DefaultDepth
	}
	if l.PageBytes <= 0 {
		l.PageBytes = DefaultPageBytes
	}
	l.PageBytes = min(l.PageBytes, records.MaxPageBytes)
	if l.OrgRecords <= 0 {
		l.OrgRecords = DefaultOrgRecords
	}
	if l.OrgBytes <= 0 {
		l.OrgBytes = DefaultOrgBytes
	}
	if l.UsageTTL <= 0 {
		l.UsageTTL = DefaultUsageTTL
	}
	return l
}

// Errors of the limits, matched by a *LimitError.
var (
	ErrTooLarge   = errors.New("record too large")
	ErrTooDeep    = errors.New("record nests too deeply")
	ErrOrgRecords = errors.New("org has reached its number of profile records")
	ErrOrgBytes   = errors.New("org has reached its profile storage")
)

// LimitError is a write refused by one of the Limits; nothing was written.
// errors.Is matches it to Err.
type LimitError struct {
	Err   error // ErrTooLarge, ErrTooDeep, ErrOrgRecords or ErrOrgBytes
	Limit int64 // the limit: bytes, levels or records
	Used  int64 // ErrOrgRecords, ErrOrgBytes: the org's usage before this write
}

func (e *LimitError) Error() string {
	if e.Err == ErrOrgRecords || e.Err == ErrOrgBytes {
		return fmt.Sprintf("%v: %d of %d used", e.Err, e.Used, e.Limit)
	}
	return fmt.Sprintf("%v: the limit is %d", e.Err, e.Limit)
}

func (e *LimitError) Unwrap() error { return e.Err }

// checkSize refuses a record over the size or depth limit.
func (l Limits) checkSize(doc []byte) error {
	if len(doc) > l.RecordBytes {
		return &LimitError{Err: ErrTooLarge, Limit: int64(l.RecordBytes)}
	}
	if tooDeep(doc, l.Depth) {
		return &LimitError{Err: ErrTooDeep, Limit: int64(l.Depth)}
	}
	return nil
}

// tooDeep reports whether the arrays and objects of doc nest more than max
// levels. It only counts brackets outside strings, so it runs before, and
// whatever, the JSON is; it stops at the first level past max.
func tooDeep(doc []byte, max int) bool {
	depth := 0
	inString, escaped := false, false
	for _, c := range doc {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			if depth > max {
				return true
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return false
}
