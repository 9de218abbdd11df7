package profile

import (
	"errors"
	"strings"
	"testing"
)

func TestTooDeep(t *testing.T) {
	nested := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for _, tc := range []struct {
		doc  string
		max  int
		want bool
	}{
		{`{}`, 1, false},
		{`{"a":{}}`, 1, true},
		{`{"a":{}}`, 2, false},
		{`{"a":[1,[2]]}`, 2, true},
		{`{"a":[1],"b":[2],"c":{"d":3}}`, 2, false}, // siblings do not add up
		{`{"a":"[[[[{{{{"}`, 1, false},              // brackets in strings do not count
		{`{"a":"\"[[[["}`, 1, false},                // nor after an escaped quote
		{`{"a":"\\","b":[[1]]}`, 2, true},           // an escaped backslash ends the escape
		{nested(64), 64, false},
		{nested(65), 64, true},
		{nested(100000), 64, true},
	} {
		if got := tooDeep([]byte(tc.doc), tc.max); got != tc.want {
			t.Errorf("tooDeep(%.40q, %d) = %v, want %v", tc.doc, tc.max, got, tc.want)
		}
	}
}

func TestCheckSize(t *testing.T) {
	l := Limits{RecordBytes: 10, Depth: 2}.WithDefaults()
	for _, tc := range []struct {
		doc       string
		want      error
		wantLimit int64
	}{
		{`{"a":[1]}`, nil, 0},
		{`{"a":[12]}`, nil, 0},
		{`{"a":[123]}`, ErrTooLarge, 10},
		{`{"a":[[]]}`, ErrTooDeep, 2},
	} {
		err := l.checkSize([]byte(tc.doc))
		if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
			t.Errorf("checkSize(%s) = %v, want %v", tc.doc, err, tc.want)
			continue
		}
		var le *LimitError
		if tc.want != nil && (!errors.As(err, &le) || le.Limit != tc.wantLimit) {
			t.Errorf("checkSize(%s) = %#v, want a *LimitError with Limit %d", tc.doc, err, tc.wantLimit)
		}
	}
}

func TestLimitsDefaults(t *testing.T) {
	got := Limits{}.WithDefaults()
	want := Limits{RecordBytes: DefaultRecordBytes, Depth: DefaultDepth, PageBytes: DefaultPageBytes,
		OrgRecords: DefaultOrgRecords, OrgBytes: DefaultOrgBytes, UsageTTL: DefaultUsageTTL}
	if got != want {
		t.Errorf("Limits{}.WithDefaults() = %+v, want %+v", got, want)
	}
}
