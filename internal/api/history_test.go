package api

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
)

// TestReportPageEscapes: every string in the access report can come from
// the org or its vault (org id, key names, causes, messages, audit details
// holding config names); none may become markup, a script or an attribute.
func TestReportPageEscapes(t *testing.T) {
	const evil = `</td><script>alert(1)</script><img src=x onerror=alert(2)>`
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	v := cmkapi.AccessReport{
		Org: evil, GeneratedAt: at, Since: at.Add(-time.Hour), Until: at, Keys: []string{evil}, BlockedSeconds: 90,
		Episodes: []cmkapi.Episode{{
			ID: "e1", Start: at.Add(-time.Hour), WorstState: `REVOKED" onmouseover="alert(3)`, Key: evil, Ongoing: true,
			Causes: []cmkapi.EpisodeCause{{At: at, State: evil, Cause: evil, Message: evil}},
			Stores: []cmkapi.StoreUsage{{Store: evil, Refused: 2, FirstRefused: &at, LastRefused: &at}},
		}},
		Audit: []cmkapi.AuditEntry{{At: at, Operation: evil, Actor: evil, Key: evil, KeyVersion: evil, Outcome: evil, Detail: `config "` + evil + `"`}},
	}
	var b bytes.Buffer
	if err := reportPage.Execute(&b, v); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, bad := range []string{"<script", "<img", `onmouseover="`, "</td><script"} {
		if strings.Contains(page, bad) {
			t.Errorf("report holds %q unescaped", bad)
		}
	}
	if n := strings.Count(page, "&lt;script&gt;alert(1)&lt;/script&gt;"); n < 10 {
		t.Errorf("escaped hostile string appears %d times, want every field (at least 10)", n)
	}
	for _, want := range []string{"@media print", "1 minute 30 seconds", "ongoing", "2026-12-02T10:00:00Z"} {
		if !strings.Contains(page, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
