package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/service"
)

// startPlain starts a service with no Azure app, workers or monitor: data
// under the system key is all the limit tests need. edit adjusts the
// configuration before the service is built.
func startPlain(t *testing.T, edit func(*service.Config)) (*service.Service, *client) {
	t.Helper()
	cfg := service.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Workers: -1, NoMonitor: true, NoFsync: true, DevTokenIssuer: true,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if edit != nil {
		edit(&cfg)
	}
	svc, err := service.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	const org = "LIMITS00000000000000000@CmkOrg"
	tok, err := svc.MintDevToken("admin", org, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return svc, &client{t: t, base: svc.URL(), token: tok, key: service.DevAPIKey, org: org}
}

// stream sends a data-plane request and reads the answer into w, returning
// the status and the bytes read.
func (c *client) stream(method, path, sandbox string, body io.Reader, w io.Writer) (int, int64) {
	c.t.Helper()
	req, _ := http.NewRequest(method, c.base+path, body)
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("x-api-key", c.key)
	req.Header.Set("x-gw-ims-org-id", c.org)
	req.Header.Set("x-sandbox-name", sandbox)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	return resp.StatusCode, n
}

// nestedDoc is a JSON object of size bytes (or the least it can be) whose
// arrays nest depth levels (the object is the first), filled with one long
// array of zeros at the bottom: the shape that re-indenting inflates most,
// each 2-byte "0," growing a line of two spaces per level.
func nestedDoc(depth, size int) []byte {
	open, shut := `{"a":`+strings.Repeat("[", depth-1), strings.Repeat("]", depth-1)+"}"
	zeros := max(1, (size-len(open)-len(shut)+1)/2)
	pad := max(0, size-len(open)-len(shut)-2*zeros+1) // inner white space is kept as stored
	return []byte(open + strings.Repeat(" ", pad) + strings.Repeat("0,", zeros-1) + "0" + shut)
}

// heapPeak samples the live heap while f runs and returns the highest
// sample above the heap before f (after a collection), and the bytes f's
// run allocated in all.
func heapPeak(f func()) (peak, allocated uint64) {
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var top atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > top.Load() {
				top.Store(m.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Microsecond):
			}
		}
	})
	f()
	close(stop)
	wg.Wait()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if t := top.Load(); t > before.HeapAlloc {
		peak = t - before.HeapAlloc
	}
	return peak, after.TotalAlloc - before.TotalAlloc
}

// TestListingIsNotAmplified stores profiles at the size and nesting limits
// in the shape that re-indenting inflates most, lists them, and checks that
// the answer is the stored bytes and little more, that the server's memory
// for the listing stays within a small multiple of a page, and that the
// records come back byte for byte. It logs what the old, re-indenting
// answer would have been.
//
//	go test ./internal/e2e -run TestListingIsNotAmplified -v
func TestListingIsNotAmplified(t *testing.T) {
	svc, c := startPlain(t, nil)
	lim := svc.Profiles.Limits.WithDefaults()

	// The report's record: 54 KB nested far deeper than the limit.
	if code, out := c.raw("PUT", "/data/profiles/report", "prod", bytes.NewReader(nestedDoc(5000, 54_000))); code != 400 || errorCode(out) != cmkapi.CodeRecordTooDeep {
		t.Errorf("PUT 54 KB nested 5000 deep = %d %s, want 400 %s", code, out, cmkapi.CodeRecordTooDeep)
	}

	docs := map[string][]byte{}
	stored := 0
	for i := range 3 {
		id := fmt.Sprintf("deep-%d", i)
		docs[id] = nestedDoc(lim.Depth, lim.RecordBytes)
		stored += len(docs[id])
		if code, out := c.raw("PUT", "/data/profiles/"+id, "prod", bytes.NewReader(docs[id])); code != 200 {
			t.Fatalf("PUT %s (%d bytes, %d deep) = %d %s", id, len(docs[id]), lim.Depth, code, out)
		}
	}

	var answer bytes.Buffer
	answer.Grow(stored + 1<<20) // allocated before measuring
	var code int
	var n int64
	peak, allocated := heapPeak(func() {
		code, n = c.stream("GET", "/data/profiles", "prod", nil, &answer)
	})
	if code != 200 {
		t.Fatalf("GET /data/profiles = %d %s", code, answer.Bytes())
	}
	if max := int64(stored)*11/10 + 4<<10; n > max {
		t.Errorf("listing answer = %d bytes for %d stored, want at most %d (1.1× + 4 KiB)", n, stored, max)
	}
	// The client's buffer was allocated before; what remains is the
	// server's page (read, opened in place) and the transport's buffers.
	if bound := uint64(4 * lim.PageBytes); peak > bound {
		t.Errorf("listing peak heap = %d bytes, want at most %d (4 pages of %d)", peak, bound, lim.PageBytes)
	}
	var page cmkapi.ProfileList
	if err := json.Unmarshal(answer.Bytes(), &page); err != nil {
		t.Fatalf("listing does not decode: %v", err)
	}
	if len(page.Records) != 3 || page.Next != "" {
		t.Errorf("listing = %d records, next %q; want 3, \"\"", len(page.Records), page.Next)
	}
	for _, r := range page.Records {
		if !bytes.Equal(r.Record, docs[r.ID]) {
			t.Errorf("listed record %s differs from the %d bytes stored", r.ID, len(docs[r.ID]))
		}
	}

	// What the old answer (the page encoded with two-space indent) was.
	var old bytes.Buffer
	enc := json.NewEncoder(&old)
	enc.SetIndent("", "  ")
	enc.Encode(cmkapi.ProfileList{Records: page.Records[:1]})
	t.Logf("3 records of %d bytes, %d levels deep: stored %d bytes; listing answered %d bytes (%.3f×); peak heap during the listing +%.1f MiB, %.1f MiB allocated in all (server and client); the old re-indented answer would be %d bytes (%.0f×)",
		len(docs["deep-0"]), lim.Depth, stored, n, float64(n)/float64(stored), float64(peak)/(1<<20), float64(allocated)/(1<<20),
		3*old.Len(), float64(3*old.Len())/float64(stored))
}

// TestListingPagesByBytes checks that a page stops at the byte cap, not
// only at the count, and that following next returns every record once.
func TestListingPagesByBytes(t *testing.T) {
	svc, c := startPlain(t, nil)
	lim := svc.Profiles.Limits.WithDefaults()
	doc := nestedDoc(2, lim.RecordBytes)
	const records = 7
	for i := range records {
		if code, out := c.raw("PUT", fmt.Sprintf("/data/profiles/big-%d", i), "prod", bytes.NewReader(doc)); code != 200 {
			t.Fatalf("PUT big-%d = %d %s", i, code, out)
		}
	}
	perPage := lim.PageBytes / (lim.RecordBytes + 1<<10) // a sealed record is a little larger
	seen := map[string]int{}
	cursor := ""
	for pages := 1; ; pages++ {
		var answer bytes.Buffer
		code, n := c.stream("GET", "/data/profiles?limit=1000&cursor="+cursor, "prod", nil, &answer)
		if code != 200 {
			t.Fatalf("GET page %d = %d %s", pages, code, answer.Bytes())
		}
		if n > int64(lim.PageBytes)+4<<10 {
			t.Errorf("page %d = %d bytes, want at most the page cap %d + 4 KiB", pages, n, lim.PageBytes)
		}
		var page cmkapi.ProfileList
		if err := json.Unmarshal(answer.Bytes(), &page); err != nil {
			t.Fatalf("page %d does not decode: %v", pages, err)
		}
		if page.Next != "" && len(page.Records) != perPage {
			t.Errorf("page %d = %d records of %d bytes, want %d under the %d-byte cap", pages, len(page.Records), len(doc), perPage, lim.PageBytes)
		}
		for _, r := range page.Records {
			seen[r.ID]++
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	if len(seen) != records {
		t.Errorf("walk saw %d records, want %d", len(seen), records)
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("walk saw %s %d times, want once", id, k)
		}
	}
}

// TestRecordLimits checks the size and depth limits on write, at and just
// past each, and that a refused write changes nothing.
func TestRecordLimits(t *testing.T) {
	svc, c := startPlain(t, nil)
	lim := svc.Profiles.Limits.WithDefaults()
	if code, out := c.raw("PUT", "/data/profiles/r", "prod", strings.NewReader(`{"v":"kept"}`)); code != 200 {
		t.Fatalf("PUT = %d %s", code, out)
	}
	for _, tc := range []struct {
		name   string
		doc    []byte
		status int
		code   string
		names  string // the limit the detail must name
	}{
		{"at the size limit", nestedDoc(2, lim.RecordBytes), 200, "", ""},
		{"one byte over the size limit", nestedDoc(2, lim.RecordBytes+1), 413, cmkapi.CodeRecordTooLarge, "1 MiB"},
		{"at the depth limit", nestedDoc(lim.Depth, 1000), 200, "", ""},
		{"one level past the depth limit", nestedDoc(lim.Depth+1, 1000), 400, cmkapi.CodeRecordTooDeep, "64 levels"},
	} {
		if tc.status == 200 {
			if n := len(tc.doc); (strings.Contains(tc.name, "size") && n != lim.RecordBytes) || bytes.Count(tc.doc, []byte("[")) > lim.Depth {
				t.Fatalf("%s: test document is %d bytes", tc.name, n)
			}
		}
		code, out := c.raw("PUT", "/data/profiles/probe", "prod", bytes.NewReader(tc.doc))
		var e cmkapi.Error
		json.Unmarshal(out, &e)
		if code != tc.status || e.ErrorCode != tc.code || !strings.Contains(e.Detail, tc.names) {
			t.Errorf("PUT %s = %d %s %q, want %d %s naming %q", tc.name, code, e.ErrorCode, e.Detail, tc.status, tc.code, tc.names)
		}
		if tc.status != 200 {
			if code, out := c.raw("PUT", "/data/profiles/r", "prod", bytes.NewReader(tc.doc)); code != tc.status {
				t.Errorf("PUT %s over an existing record = %d %s, want %d", tc.name, code, out, tc.status)
			}
		}
	}
	if _, got := c.raw("GET", "/data/profiles/r", "prod", nil); string(got) != `{"v":"kept"}` {
		t.Errorf("record after refused overwrites = %.60s, want it unchanged", got)
	}
	// Records are never re-encoded: white space inside is kept.
	spaced := `{ "a" : [ 1, 2 ],  "b": "x" }`
	if code, out := c.raw("PUT", "/data/profiles/spaced", "prod", strings.NewReader(spaced)); code != 200 {
		t.Fatalf("PUT spaced = %d %s", code, out)
	}
	if _, got := c.raw("GET", "/data/profiles/spaced", "prod", nil); string(got) != spaced {
		t.Errorf("GET spaced = %s, want %s", got, spaced)
	}
}
