package api

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/profile"
)

// TestProfilePageAsStored checks that a listing is the JSON of
// cmkapi.ProfileList with each record's bytes exactly as stored (no
// re-indenting, no re-encoding), and a fixed number of bytes per record
// besides.
func TestProfilePageAsStored(t *testing.T) {
	deep := []byte(`{"a":` + string(bytes.Repeat([]byte("["), 60)) + `1` + string(bytes.Repeat([]byte("]"), 60)) + `}`)
	for _, tc := range []struct {
		name string
		recs []profile.Record
		next string
	}{
		{"empty", nil, ""},
		{"one", []profile.Record{{ID: "a", Doc: []byte(`{"name":"Ada"}`)}}, ""},
		{"awkward ids and a next cursor", []profile.Record{
			{ID: `quote"back\slash`, Doc: []byte(`{"x":1}`)},
			{ID: "<script>&ünï", Doc: []byte(`{ "spaced" : [ 1 , 2 ] }`)},
			{ID: "deep", Doc: deep},
		}, "1.ZGVlcA"},
	} {
		var buf bytes.Buffer
		if err := writeProfilePage(&buf, tc.recs, tc.next); err != nil {
			t.Fatalf("%s: writeProfilePage = %v", tc.name, err)
		}
		var got cmkapi.ProfileList
		if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
			t.Fatalf("%s: answer does not decode as a ProfileList: %v\n%s", tc.name, err, buf.Bytes())
		}
		if got.Next != tc.next || len(got.Records) != len(tc.recs) || got.Records == nil {
			t.Fatalf("%s: decoded = %d records (nil %v), next %q; want %d, %q", tc.name, len(got.Records), got.Records == nil, got.Next, len(tc.recs), tc.next)
		}
		stored := 0
		for i, rec := range tc.recs {
			stored += len(rec.Doc) + len(rec.ID)
			if got.Records[i].ID != rec.ID || !bytes.Equal(got.Records[i].Record, rec.Doc) {
				t.Errorf("%s: record %d = %q %s, want %q %s as stored", tc.name, i, got.Records[i].ID, got.Records[i].Record, rec.ID, rec.Doc)
			}
		}
		// {"id":"","record":}, per record plus escapes in the ids, and the
		// envelope around the page.
		if max := stored + 30*len(tc.recs) + 40 + len(tc.next); buf.Len() > max {
			t.Errorf("%s: answer = %d bytes for %d stored, want at most %d", tc.name, buf.Len(), stored, max)
		}
	}
}

func TestSizeText(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 bytes"},
		{1023, "1023 bytes"},
		{1 << 20, "1 MiB (1048576 bytes)"},
		{3 << 29, "1.5 GiB (1610612736 bytes)"},
		{64 << 30, "64 GiB (68719476736 bytes)"},
		{1 << 40, "1 TiB (1099511627776 bytes)"},
	} {
		if got := sizeText(tc.n); got != tc.want {
			t.Errorf("sizeText(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}
