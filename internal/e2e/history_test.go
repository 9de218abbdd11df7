package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/monitor"
)

// getJSON reads a GET answer of c's org into out.
func (c *client) getJSON(path string, out any) (int, string) {
	c.t.Helper()
	code, body := c.raw("GET", path, "", nil)
	if code == 200 && out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			c.t.Fatalf("GET %s: %v: %s", path, err, body)
		}
	}
	return code, string(body)
}

// TestHistoryOfARevocation: revoke → reads refused by the lake and the
// profile store → restore → reads served; the history then shows one
// episode with both stores, their first refusal and when each was served
// again, and the access report (JSON and HTML) says the same. Another
// org's token sees only its own, empty, history.
func TestHistoryOfARevocation(t *testing.T) {
	env := fastEnv(t, monitor.Config{FlapCount: 1000})
	c := adminClient(t, env, env.Org)
	enable(t, env, c)
	waitHealth(t, c, "HEALTHY", "", 5*time.Second)
	start := time.Now()
	if code, body := c.raw("PUT", "/data/lake/datasets/ds/files/f1", "prod", strings.NewReader("hello")); code/100 != 2 {
		t.Fatalf("PUT lake file = %d %s", code, body)
	}
	if code, body := c.raw("PUT", "/data/profiles/p1", "prod", strings.NewReader(`{"a":1}`)); code/100 != 2 {
		t.Fatalf("PUT profile = %d %s", code, body)
	}

	no, yes := false, true
	if err := env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &no}); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, c, "REVOKED", "", 10*time.Second)
	for _, p := range []string{"/data/lake/datasets/ds/files/f1", "/data/profiles/p1"} {
		if code, body := c.raw("GET", p, "prod", nil); code != 403 || errorCode(body) != cmkapi.CodeCMKKeyRevoked {
			t.Fatalf("GET %s while revoked = %d %s, want 403 %s", p, code, body, cmkapi.CodeCMKKeyRevoked)
		}
	}
	if err := env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &yes}); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, c, "HEALTHY", "", 10*time.Second)
	for _, p := range []string{"/data/lake/datasets/ds/files/f1", "/data/profiles/p1"} {
		if code, body := c.raw("GET", p, "prod", nil); code != 200 {
			t.Fatalf("GET %s after the restore = %d %s, want 200", p, code, body)
		}
	}
	if err := env.Svc.FlushHistory(context.Background()); err != nil {
		t.Fatal(err)
	}

	var h cmkapi.History
	if code, body := c.getJSON(cmkapi.GetHistory.Path, &h); code != 200 {
		t.Fatalf("GET history = %d %s", code, body)
	}
	if len(h.Episodes) != 1 {
		t.Fatalf("history = %d episodes, want 1: %+v", len(h.Episodes), h.Episodes)
	}
	ep := h.Episodes[0]
	if ep.Ongoing || ep.End == nil || ep.WorstState != "REVOKED" || ep.Start.Before(start.Add(-time.Second)) || ep.BlockedFrom == nil || ep.BlockedUntil == nil {
		t.Fatalf("episode = %+v, want ended, REVOKED, blocked from and until", ep)
	}
	stores := map[string]cmkapi.StoreUsage{}
	for _, s := range ep.Stores {
		stores[s.Store] = s
	}
	for _, name := range []string{"lake", "profile"} {
		s, ok := stores[name]
		if !ok || s.Refused < 1 || s.FirstRefused == nil || s.Resumed == nil {
			t.Fatalf("store %s in the episode = %+v (found %v), want a refusal and a resume", name, s, ok)
		}
		if s.FirstRefused.Before(*ep.BlockedFrom) || !s.Resumed.After(*s.LastRefused) || s.Resumed.Before(*ep.BlockedUntil) {
			t.Errorf("store %s: refused %v–%v, resumed %v; blocked %v–%v: out of order", name, s.FirstRefused, s.LastRefused, s.Resumed, ep.BlockedFrom, ep.BlockedUntil)
		}
	}

	var rep cmkapi.AccessReport
	if code, body := c.getJSON(cmkapi.GetAccessReport.Path, &rep); code != 200 {
		t.Fatalf("GET report = %d %s", code, body)
	}
	if rep.Org != env.Org || len(rep.Episodes) != 1 || rep.Episodes[0].ID != ep.ID || rep.BlockedSeconds != ep.BlockedSeconds || len(rep.Keys) != 1 {
		t.Errorf("report = org %s, %d episodes, blocked %ds, keys %v; want %s, the history's episode, %ds, one key", rep.Org, len(rep.Episodes), rep.BlockedSeconds, rep.Keys, env.Org, ep.BlockedSeconds)
	}
	ops := map[string]bool{}
	for _, a := range rep.Audit {
		ops[a.Operation] = true
	}
	if !ops["revocation"] || !ops["recovery"] {
		t.Errorf("report's audit entries = %+v, want the revocation and the recovery", rep.Audit)
	}

	req, _ := http.NewRequest("GET", c.base+cmkapi.GetAccessReport.Path+"?format=html", nil)
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("x-api-key", c.key)
	req.Header.Set("x-gw-ims-org-id", c.org)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	html := string(page)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("HTML report = %d %s %q", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Security-Policy"))
	}
	for _, want := range []string{env.Org, "REVOKED", "<td>lake</td>", "<td>profile</td>", ep.Start.UTC().Format(time.RFC3339), stores["lake"].FirstRefused.UTC().Format(time.RFC3339), "@media print"} {
		if !strings.Contains(html, want) {
			t.Errorf("HTML report lacks %q", want)
		}
	}
	if strings.Contains(strings.ToLower(html), "<script") {
		t.Error("HTML report holds a script")
	}

	// Another org's token: its own history only, empty; the org header of
	// another org is refused.
	other := adminClient(t, env, "other-org@AdobeOrg")
	var oh cmkapi.History
	if code, body := other.getJSON(cmkapi.GetHistory.Path, &oh); code != 200 || oh.Org != "other-org@AdobeOrg" || len(oh.Episodes) != 0 {
		t.Errorf("another org's history = %d %s, want its own, empty", code, body)
	}
	var orep cmkapi.AccessReport
	if code, body := other.getJSON(cmkapi.GetAccessReport.Path, &orep); code != 200 || len(orep.Episodes) != 0 || len(orep.Audit) != 0 || len(orep.Keys) != 0 {
		t.Errorf("another org's report = %d %s, want empty", code, body)
	}
	other.org = env.Org
	if code, _ := other.getJSON(cmkapi.GetHistory.Path, nil); code != 403 {
		t.Errorf("another org's token asking for this org's history = %d, want 403", code)
	}
	if code, body := c.getJSON(cmkapi.GetHistory.Path+"?since=yesterday", nil); code != 400 || !strings.Contains(body, "RFC 3339") {
		t.Errorf("history?since=yesterday = %d %s, want 400 naming RFC 3339", code, body)
	}
}
