package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/lake"
	"github.com/cmk-project/cmk/internal/lake/blob"
	"github.com/cmk-project/cmk/internal/profile"
	"github.com/cmk-project/cmk/internal/service"
	"github.com/cmk-project/cmk/internal/testsvc"
)

// wantError checks a refused request's status, code and that its detail
// names what it must.
func wantError(t *testing.T, what string, code int, out []byte, status int, errCode string, names ...string) {
	t.Helper()
	var e cmkapi.Error
	json.Unmarshal(out, &e)
	if code != status || e.ErrorCode != errCode {
		t.Errorf("%s = %d %s, want %d %s", what, code, out, status, errCode)
		return
	}
	for _, n := range names {
		if !strings.Contains(e.Detail, n) {
			t.Errorf("%s: detail %q does not name %q", what, e.Detail, n)
		}
	}
	if e.Hint == "" {
		t.Errorf("%s: no hint", what)
	}
}

// TestProfileQuota checks the per-org record quota over all sandboxes: a
// record past it is refused with nothing stored, an overwrite at the quota
// is not, and a delete frees a place within a second.
func TestProfileQuota(t *testing.T) {
	_, c := startPlain(t, func(cfg *service.Config) { cfg.ProfileLimits = profile.Limits{OrgRecords: 3} })
	if code, out := c.do("POST", "/data/foundation/sandbox-management/sandboxes", map[string]string{"name": "dev"}); code != 201 {
		t.Fatalf("create sandbox = %d %v", code, out)
	}
	put := func(sb, id, doc string) (int, []byte) {
		return c.raw("PUT", "/data/profiles/"+id, sb, strings.NewReader(doc))
	}
	for _, r := range [][2]string{{"prod", "a"}, {"prod", "b"}, {"dev", "a"}} {
		if code, out := put(r[0], r[1], `{"n":1}`); code != 200 {
			t.Fatalf("PUT %s/%s = %d %s", r[0], r[1], code, out)
		}
	}
	code, out := put("dev", "c", `{"n":1}`)
	wantError(t, "PUT a 4th record with a quota of 3", code, out, 507, cmkapi.CodeProfileQuotaExceeded, "at most 3", "keeps 3")
	if code, _ := c.raw("GET", "/data/profiles/c", "dev", nil); code != 404 {
		t.Errorf("GET refused record = %d, want 404 (nothing stored)", code)
	}
	if code, out := put("prod", "a", `{"n":2}`); code != 200 {
		t.Errorf("overwrite at the quota = %d %s, want 200", code, out)
	}
	if code, out := c.raw("DELETE", "/data/profiles/b", "prod", nil); code != 204 {
		t.Fatalf("DELETE = %d %s", code, out)
	}
	// The delete is seen at the next count, made at most a second after
	// the last.
	waitFor(t, "a PUT admitted after a delete freed a place", 3*time.Second, func() bool {
		code, _ := put("dev", "c", `{"n":1}`)
		return code == 200
	})
}

// TestProfileByteQuota checks the per-org quota of stored bytes.
func TestProfileByteQuota(t *testing.T) {
	_, c := startPlain(t, func(cfg *service.Config) { cfg.ProfileLimits = profile.Limits{OrgBytes: 10 << 10} })
	doc := `{"pad":"` + strings.Repeat("x", 4<<10) + `"}`
	for _, id := range []string{"a", "b"} {
		if code, out := c.raw("PUT", "/data/profiles/"+id, "prod", strings.NewReader(doc)); code != 200 {
			t.Fatalf("PUT %s = %d %s", id, code, out)
		}
	}
	code, out := c.raw("PUT", "/data/profiles/c", "prod", strings.NewReader(doc))
	wantError(t, "PUT past 10 KiB", code, out, 507, cmkapi.CodeProfileQuotaExceeded, "10 KiB")
	if code, _ := c.raw("GET", "/data/profiles/c", "prod", nil); code != 404 {
		t.Errorf("GET refused record = %d, want 404 (nothing stored)", code)
	}
	if code, out := c.raw("PUT", "/data/profiles/a", "prod", strings.NewReader(`{"small":true}`)); code != 200 {
		t.Errorf("overwrite with a smaller record at the quota = %d %s, want 200", code, out)
	}
	waitFor(t, "a PUT admitted once the overwrite freed room", 3*time.Second, func() bool {
		code, _ := c.raw("PUT", "/data/profiles/c", "prod", strings.NewReader(doc))
		return code == 200
	})
}

// unsized hides a reader's length, so the client sends it chunked and the
// server learns its size only by reading it.
type unsized struct{ r io.Reader }

func (u unsized) Read(p []byte) (int, error) { return u.r.Read(p) }

// putDeclared sends a lake upload with its Content-Length and Expect:
// 100-continue, as a careful client sends a large file.
func (c *client) putDeclared(path, sandbox string, body []byte) (int, []byte) {
	c.t.Helper()
	req, _ := http.NewRequest("PUT", c.base+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("x-api-key", c.key)
	req.Header.Set("x-gw-ims-org-id", c.org)
	req.Header.Set("x-sandbox-name", sandbox)
	req.Header.Set("Expect", "100-continue")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// stagingEmpty checks that no upload left anything in the local lake's
// staging directory.
func stagingEmpty(t *testing.T, svc *service.Service) {
	t.Helper()
	left, err := os.ReadDir(filepath.Join(svc.Config().DataDir, "lake", "staging"))
	if err != nil || len(left) != 0 {
		t.Errorf("lake staging after refused uploads = %d entries, %v; want none", len(left), err)
	}
}

// TestLakeFileLimit checks the per-file limit on uploads with and without
// a declared length, at and just past it: a refused upload stores nothing,
// neither as a new file nor over an existing one.
func TestLakeFileLimit(t *testing.T) {
	const limit = 1 << 20
	svc, c := startPlain(t, func(cfg *service.Config) { cfg.LakeQuota = lake.Quota{FileBytes: limit} })
	kept := pattern(1000, 1)
	if code, out := c.raw("PUT", "/data/lake/datasets/d/files/kept.bin", "prod", bytes.NewReader(kept)); code != 201 {
		t.Fatalf("PUT kept.bin = %d %s", code, out)
	}
	for _, tc := range []struct {
		name, file string
		size       int
		declared   bool
		status     int
		names      string
	}{
		{"streamed, at the limit", "at.bin", limit, false, 201, ""},
		{"declared, at the limit", "at2.bin", limit, true, 201, ""},
		{"streamed, one byte over", "over.bin", limit + 1, false, 413, "this upload passed that"},
		{"declared, one byte over", "over2.bin", limit + 1, true, 413, "declares 1 MiB (1048577 bytes)"},
		{"declared, far over", "over3.bin", 64 << 20, true, 413, "declares 64 MiB"},
		{"streamed, over an existing file", "kept.bin", limit + 1, false, 413, "1 MiB (1048576 bytes)"},
		{"declared, over an existing file", "kept.bin", limit + 1, true, 413, "1 MiB (1048576 bytes)"},
	} {
		body := pattern(tc.size, 2)
		path := "/data/lake/datasets/d/files/" + tc.file
		var code int
		var out []byte
		if tc.declared {
			code, out = c.putDeclared(path, "prod", body)
		} else {
			code, out = c.raw("PUT", path, "prod", unsized{bytes.NewReader(body)})
		}
		if tc.status == 201 {
			if code != 201 {
				t.Errorf("PUT %s = %d %s, want 201", tc.name, code, out)
			}
			continue
		}
		wantError(t, "PUT "+tc.name, code, out, 413, cmkapi.CodeFileTooLarge, tc.names)
		code, got := c.raw("GET", path, "prod", nil)
		if tc.file == "kept.bin" {
			if code != 200 || !bytes.Equal(got, kept) {
				t.Errorf("GET kept.bin after a refused overwrite = %d, %d bytes; want the 1000 bytes kept", code, len(got))
			}
		} else if code != 404 {
			t.Errorf("GET %s after it was refused = %d, want 404", tc.file, code)
		}
	}
	stagingEmpty(t, svc)
	var list cmkapi.LakeFileList
	_, out := c.raw("GET", "/data/lake/files", "prod", nil)
	json.Unmarshal(out, &list)
	var names []string
	for _, f := range list.Files {
		names = append(names, f.Name)
	}
	if got := strings.Join(names, ","); got != "at.bin,at2.bin,kept.bin" {
		t.Errorf("lake files = %s, want at.bin,at2.bin,kept.bin", got)
	}
}

// TestLakeOrgQuota checks the per-org quota over all sandboxes: an upload
// that would pass it is refused (507) with nothing stored, a smaller one
// fits, and a delete frees room within a second.
func TestLakeOrgQuota(t *testing.T) {
	const quota = 3 << 20
	svc, c := startPlain(t, func(cfg *service.Config) { cfg.LakeQuota = lake.Quota{OrgBytes: quota} })
	if code, out := c.do("POST", "/data/foundation/sandbox-management/sandboxes", map[string]string{"name": "dev"}); code != 201 {
		t.Fatalf("create sandbox = %d %v", code, out)
	}
	mib := pattern(1<<20, 3)
	for _, f := range [][2]string{{"prod", "a"}, {"dev", "b"}} {
		if code, out := c.raw("PUT", "/data/lake/datasets/d/files/"+f[1], f[0], bytes.NewReader(mib)); code != 201 {
			t.Fatalf("PUT %s/%s = %d %s", f[0], f[1], code, out)
		}
	}
	// 2 MiB and the sealing's overhead are stored: a third MiB does not fit.
	code, out := c.putDeclared("/data/lake/datasets/d/files/c", "prod", mib)
	wantError(t, "PUT a declared third MiB", code, out, 507, cmkapi.CodeLakeQuotaExceeded, "at most 3 MiB")
	code, out = c.raw("PUT", "/data/lake/datasets/d/files/c", "dev", unsized{bytes.NewReader(mib)})
	wantError(t, "PUT a streamed third MiB", code, out, 507, cmkapi.CodeLakeQuotaExceeded, "at most 3 MiB")
	for _, sb := range []string{"prod", "dev"} {
		if code, _ := c.raw("GET", "/data/lake/datasets/d/files/c", sb, nil); code != 404 {
			t.Errorf("GET %s/c after it was refused = %d, want 404", sb, code)
		}
	}
	stagingEmpty(t, svc)
	if code, out := c.raw("PUT", "/data/lake/datasets/d/files/half", "prod", bytes.NewReader(mib[:512<<10])); code != 201 {
		t.Errorf("PUT 512 KiB within the quota = %d %s, want 201", code, out)
	}
	if code, out := c.raw("DELETE", "/data/lake/datasets/d/files/a", "prod", nil); code != 204 {
		t.Fatalf("DELETE a = %d %s", code, out)
	}
	waitFor(t, "an upload admitted after a delete freed room", 3*time.Second, func() bool {
		code, _ := c.raw("PUT", "/data/lake/datasets/d/files/c", "prod", bytes.NewReader(mib))
		return code == 201
	})
}

// TestQuotasOnScaledBackends checks the lake's file limit and org quota
// with the lake in Azure Blob Storage (Azurite), where an upload past a
// block is staged block by block, and the profile quota and listing cap
// with profiles in PostgreSQL.
func TestQuotasOnScaledBackends(t *testing.T) {
	az := testsvc.Azurite(t)
	dsn := testsvc.Postgres(t)
	svc, c := startPlain(t, func(cfg *service.Config) {
		cfg.LakeAzure = &blob.AzureConfig{ServiceURL: az.ServiceURL, AccountName: az.AccountName, AccountKey: az.AccountKey, Container: "quota"}
		cfg.ProfilesDSN = dsn
		cfg.LakeQuota = lake.Quota{FileBytes: 6 << 20, OrgBytes: 10 << 20}
		cfg.ProfileLimits = profile.Limits{OrgRecords: 3, PageBytes: 2000}
	})
	// Past the file limit after one staged block of 4 MiB.
	code, out := c.raw("PUT", "/data/lake/datasets/d/files/big", "prod", unsized{bytes.NewReader(pattern(6<<20+1, 1))})
	wantError(t, "PUT 6 MiB + 1 streamed to Azure", code, out, 413, cmkapi.CodeFileTooLarge, "6 MiB")
	if objs, err := svc.Lake.Backend.List(t.Context(), c.org+"/"); err != nil || len(objs) != 0 {
		t.Errorf("Azure objects after a refused upload = %v, %v; want none", objs, err)
	}
	for i, want := range []int{201, 507} { // 6 MiB stored; 6 more would pass 10 MiB
		code, out := c.raw("PUT", fmt.Sprintf("/data/lake/datasets/d/files/f%d", i), "prod", unsized{bytes.NewReader(pattern(6<<20, 2))})
		if code != want {
			t.Errorf("PUT 6 MiB #%d to Azure = %d %s, want %d", i, code, out, want)
		}
	}
	if objs, _ := svc.Lake.Backend.List(t.Context(), c.org+"/"); len(objs) != 1 {
		t.Errorf("Azure objects = %d, want 1", len(objs))
	}

	for i, want := range []int{200, 200, 200, 507} {
		code, out := c.raw("PUT", fmt.Sprintf("/data/profiles/r%d", i), "prod", strings.NewReader(`{"pad":"`+strings.Repeat("x", 900)+`"}`))
		if code != want {
			t.Errorf("PUT profile #%d to PostgreSQL = %d %s, want %d", i, code, out, want)
		}
	}
	var page cmkapi.ProfileList
	_, out = c.raw("GET", "/data/profiles", "prod", nil)
	if err := json.Unmarshal(out, &page); err != nil || len(page.Records) != 1 || page.Next == "" {
		t.Errorf("first page under a 2000-byte cap = %d records, next %q, %v; want 1 of about 1 KiB and a next cursor", len(page.Records), page.Next, err)
	}
}
