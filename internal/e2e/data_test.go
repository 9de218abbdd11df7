package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/auth"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/envelope"
	"github.com/cmk-project/cmk/internal/lake"
)

// raw sends a data-plane request with the sandbox header.
func (c *client) raw(method, path, sandbox string, body io.Reader) (int, []byte) {
	c.t.Helper()
	req, _ := http.NewRequest(method, c.base+path, body)
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("x-api-key", c.key)
	req.Header.Set("x-gw-ims-org-id", c.org)
	if sandbox != "" {
		req.Header.Set("x-sandbox-name", sandbox)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1, nil // the server cut the stream
	}
	return resp.StatusCode, out
}

func errorCode(b []byte) string {
	var e cmkapi.Error
	json.Unmarshal(b, &e)
	return e.ErrorCode
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31) ^ seed
	}
	return b
}

func enable(t *testing.T, env *devenv.Env, c *client) {
	t.Helper()
	if code, body := c.do("POST", configPath, configBody(c.org, "Enable", env.KeyIdentifier)); code != 201 {
		t.Fatalf("POST config = %d %v", code, body)
	}
	if st := waitDone(t, c, "Enable"); st["status"] != "COMPLETED" {
		t.Fatalf("enablement = %v", st)
	}
}

// TestDataPlaneAcrossEnablement writes lake files of every size class and
// profile records under the system key, enables CMK, and checks everything
// still reads back byte for byte (the data keys were re-wrapped, the data
// itself not re-encrypted), that new writes work, and that steady-state
// reads and writes make no key-vault calls.
func TestDataPlaneAcrossEnablement(t *testing.T) {
	// No monitor: its own checks would be counted as key-vault calls below.
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: t.TempDir(), Poll: 50 * time.Millisecond, NoMonitor: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	c := adminClient(t, env, env.Org)
	sizes := []int{0, 1, envelope.ChunkSize - 1, envelope.ChunkSize, envelope.ChunkSize + 1, 3*envelope.ChunkSize + 17}
	files := map[string][]byte{}
	for i, n := range sizes {
		name := fmt.Sprintf("f%d.bin", i)
		files[name] = pattern(n, byte(i))
		code, body := c.raw("PUT", "/data/lake/datasets/events/files/"+name, "prod", bytes.NewReader(files[name]))
		if code != 201 {
			t.Fatalf("PUT %s (%d bytes) = %d %s", name, n, code, body)
		}
	}
	for i := range 20 {
		doc := fmt.Sprintf(`{"name":"person %d","email":"p%d@example.com"}`, i, i)
		if code, body := c.raw("PUT", fmt.Sprintf("/data/profiles/p%02d", i), "prod", strings.NewReader(doc)); code != 200 {
			t.Fatalf("PUT profile = %d %s", code, body)
		}
	}
	// What is on disk is ciphertext: no file holds the plaintext.
	stored := 0
	filepath.Walk(filepath.Join(env.Svc.Config().DataDir, "lake"), func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(p)
		stored++
		if bytes.Contains(b, files["f5.bin"][:64]) {
			t.Errorf("%s holds plaintext", p)
		}
		return nil
	})
	if stored < len(files) {
		t.Errorf("found %d stored lake files, want %d", stored, len(files))
	}
	before := hashLakeDir(t, filepath.Join(env.Svc.Config().DataDir, "lake"))

	enable(t, env, c)

	if after := hashLakeDir(t, filepath.Join(env.Svc.Config().DataDir, "lake")); after != before {
		t.Error("enabling CMK rewrote lake files; only data keys should be re-wrapped")
	}
	check := func() {
		t.Helper()
		for name, want := range files {
			code, got := c.raw("GET", "/data/lake/datasets/events/files/"+name, "prod", nil)
			if code != 200 || !bytes.Equal(got, want) {
				t.Errorf("GET %s = %d, %d bytes; want 200, %d bytes identical", name, code, len(got), len(want))
			}
		}
		for i := range 20 {
			code, got := c.raw("GET", fmt.Sprintf("/data/profiles/p%02d", i), "prod", nil)
			want := fmt.Sprintf(`{"name":"person %d","email":"p%d@example.com"}`, i, i)
			if code != 200 || string(got) != want {
				t.Errorf("GET profile p%02d = %d %s, want %s", i, code, got, want)
			}
		}
	}
	check()
	if code, body := c.raw("PUT", "/data/lake/datasets/events/files/after.bin", "prod", bytes.NewReader(pattern(1000, 9))); code != 201 {
		t.Fatalf("PUT after enablement = %d %s", code, body)
	}

	// Steady state: many reads and writes, no key-vault call at all.
	vault := func() int { v := env.Emu.Stats().Vaults[devenv.Vault]; return v.Get + v.Wrap + v.Unwrap }
	start := vault()
	for i := range 200 {
		c.raw("GET", fmt.Sprintf("/data/profiles/p%02d", i%20), "prod", nil)
		c.raw("PUT", fmt.Sprintf("/data/profiles/n%03d", i), "prod", strings.NewReader(`{"n":1}`))
	}
	check()
	if calls := vault() - start; calls != 0 {
		t.Errorf("steady-state data operations made %d key-vault calls, want 0", calls)
	}

	var list cmkapi.LakeFileList
	_, raw := c.raw("GET", "/data/lake/datasets/events/files", "prod", nil)
	json.Unmarshal(raw, &list)
	for _, f := range list.Files {
		if want, ok := files[f.Name]; ok && f.Size != int64(len(want)) {
			t.Errorf("listed size of %s = %d, want %d", f.Name, f.Size, len(want))
		}
	}
}

func hashLakeDir(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || strings.Contains(p, "staging") {
			return nil
		}
		b, _ := os.ReadFile(p)
		fmt.Fprintf(h, "%s %x\n", strings.TrimPrefix(p, dir), sha256.Sum256(b))
		return nil
	})
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestTenantIsolation crosses org x sandbox x permission: a caller only ever
// reaches the sandboxes of orgs its token holds, with the permission needed,
// and never another tenant's data.
func TestTenantIsolation(t *testing.T) {
	env := startEnv(t)
	ctx := context.Background()
	orgA, orgB := env.Org, "ORGB@CmkOrg"
	a := adminClient(t, env, orgA)
	b := adminClient(t, env, orgB)
	b.do("GET", "/data/foundation/sandbox-management/sandboxes", nil) // provisions org B with "prod"
	if err := env.Svc.Keyring.CreateSandbox(ctx, orgB, "dev"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{a, b} {
		for _, sb := range []string{"prod", "dev"} {
			doc := fmt.Sprintf(`{"owner":"%s/%s"}`, c.org, sb)
			if code, body := c.raw("PUT", "/data/profiles/same-id", sb, strings.NewReader(doc)); code != 200 {
				t.Fatalf("seed %s/%s = %d %s", c.org, sb, code, body)
			}
			if code, body := c.raw("PUT", "/data/lake/datasets/d/files/same.txt", sb, strings.NewReader(doc)); code != 201 {
				t.Fatalf("seed lake %s/%s = %d %s", c.org, sb, code, body)
			}
		}
	}
	tok := func(org string, perms ...string) string {
		s, err := env.Svc.MintDevToken("u", org, perms, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	type req struct{ method, path string }
	reads := []req{{"GET", "/data/profiles/same-id"}, {"GET", "/data/lake/datasets/d/files/same.txt"}, {"GET", "/data/profiles"}, {"GET", "/data/lake/files"}}
	writes := []req{{"PUT", "/data/profiles/same-id"}, {"PUT", "/data/lake/datasets/d/files/same.txt"}, {"DELETE", "/data/profiles/same-id"}}
	cases := []struct {
		name    string
		token   string
		org     string
		sandbox string
		reqs    []req
		status  int
		code    string
	}{
		{"reader reads own sandbox", tok(orgA, auth.PermDataRead), orgA, "dev", reads, 200, ""},
		{"reader cannot write", tok(orgA, auth.PermDataRead), orgA, "dev", writes, 403, "PERMISSION_REQUIRED"},
		{"writer cannot read", tok(orgA, auth.PermDataWrite), orgA, "prod", reads, 403, "PERMISSION_REQUIRED"},
		{"CMK admin without data permission", tok(orgA, auth.PermManageCMK), orgA, "prod", reads, 403, "PERMISSION_REQUIRED"},
		{"token for A, header B", tok(orgA, auth.PermDataRead, auth.PermDataWrite), orgB, "prod", append(reads, writes...), 403, "ORG_NOT_IN_TOKEN"},
		{"unknown sandbox", tok(orgA, auth.PermDataRead), orgA, "stage", reads, 404, "SANDBOX_NOT_FOUND"},
		{"no sandbox header", tok(orgA, auth.PermDataRead), orgA, "", reads, 400, "MISSING_SANDBOX_HEADER"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &client{t: t, base: env.Svc.URL(), token: tc.token, key: env.APIKey, org: tc.org}
			for _, r := range tc.reqs {
				var body io.Reader
				if r.method == "PUT" {
					body = strings.NewReader(`{"owner":"intruder"}`)
				}
				code, out := c.raw(r.method, r.path, tc.sandbox, body)
				if code != tc.status || (tc.code != "" && errorCode(out) != tc.code) {
					t.Errorf("%s %s = %d %s, want %d %s", r.method, r.path, code, errorCode(out), tc.status, tc.code)
				}
				if tc.status == 200 && r.path == "/data/profiles/same-id" && !strings.Contains(string(out), tc.org+"/"+tc.sandbox) {
					t.Errorf("%s read %s, want the record of %s/%s", tc.name, out, tc.org, tc.sandbox)
				}
			}
		})
	}
	// Nothing was overwritten by the refused writes.
	for _, c := range []*client{a, b} {
		for _, sb := range []string{"prod", "dev"} {
			_, got := c.raw("GET", "/data/profiles/same-id", sb, nil)
			if want := fmt.Sprintf(`{"owner":"%s/%s"}`, c.org, sb); string(got) != want {
				t.Errorf("%s/%s record = %s, want %s", c.org, sb, got, want)
			}
		}
	}
}

// TestUploadCutShort sends lake uploads whose client goes away before the
// announced Content-Length: nothing may be stored, neither as a new file
// nor over an existing one, since the sealed stream would otherwise end
// where the client stopped and open as a complete (shorter) file.
func TestUploadCutShort(t *testing.T) {
	env := startEnv(t)
	c := adminClient(t, env, env.Org)
	prior := pattern(200<<10, 3)
	if code, body := c.raw("PUT", "/data/lake/datasets/d/files/kept.bin", "prod", bytes.NewReader(prior)); code != 201 {
		t.Fatalf("seed = %d %s", code, body)
	}
	checkCutShortPut(t, env.Svc.Lake, env.Org)
	addr := strings.TrimPrefix(env.Svc.URL(), "http://")
	for _, name := range []string{"kept.bin", "new.bin"} {
		for _, sent := range []int{10, 64 << 10, 1<<20 + 5} {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(conn, "PUT /data/lake/datasets/d/files/%s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nx-api-key: %s\r\nx-gw-ims-org-id: %s\r\nx-sandbox-name: prod\r\nContent-Length: %d\r\n\r\n",
				name, addr, c.token, c.key, c.org, 3<<20)
			conn.Write(pattern(sent, 9))
			conn.Close()
			// The server notices the end of the body on its next read;
			// give it time to finish the request either way.
			deadline := time.Now().Add(600 * time.Millisecond)
			for time.Now().Before(deadline) {
				code, got := c.raw("GET", "/data/lake/datasets/d/files/"+name, "prod", nil)
				if name == "new.bin" && code != 404 || name == "kept.bin" && (code != 200 || !bytes.Equal(got, prior)) {
					t.Fatalf("%s after an upload cut at %d of %d bytes: GET = %d, %d bytes", name, sent, 3<<20, code, len(got))
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
}

// cutShort yields its data, then fails with io.ErrUnexpectedEOF, as an
// HTTP body does when its client goes away, while the request's context
// stays live.
type cutShort struct{ r io.Reader }

func (c *cutShort) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// checkCutShortPut puts files through the lake whose source fails part
// way, and checks that the lake reports the failure and stores nothing.
func checkCutShortPut(t *testing.T, l *lake.Lake, org string) {
	t.Helper()
	ctx := context.Background()
	for _, n := range []int{0, 100, 6<<20 + 5} {
		name := fmt.Sprintf("cut-%d.bin", n)
		if _, err := l.Put(ctx, org, "prod", "cut", name, &cutShort{bytes.NewReader(pattern(n, 4))}); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("Put of a source cut after %d bytes = %v, want io.ErrUnexpectedEOF", n, err)
		}
		if rc, _, err := l.Open(ctx, org, "prod", "cut", name); !errors.Is(err, lake.ErrNotFound) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("Open after a put cut after %d bytes = %v, want lake.ErrNotFound", n, err)
		}
	}
}
