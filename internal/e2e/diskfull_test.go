package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/monitor"
	"github.com/cmk-project/cmk/internal/testsvc"
)

// TestDiskFull runs cmk with its data directory (the lake's files, the
// SQLite state and profile databases) on a small file system, fills it up,
// and checks that writes are refused with 507 STORAGE_FULL (never a 500),
// that a refused upload leaves no file, that nothing acknowledged is lost,
// that the org's key state does not change, and that once space returns the
// next writes succeed and the monitor saves the key's health again.
func TestDiskFull(t *testing.T) {
	fs := testsvc.SmallFS(t, 48<<20)
	env, err := devenv.Start(context.Background(), devenv.Options{
		DataDir: filepath.Join(fs, "data"), Poll: 50 * time.Millisecond,
		Monitor: monitor.Config{Interval: 250 * time.Millisecond, Grace: 1500 * time.Millisecond, WrapEvery: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	c := adminClient(t, env, env.Org)
	enable(t, env, c)
	s := seed(t, c)
	waitHealth(t, c, "HEALTHY", "", 10*time.Second)

	free := testsvc.Fill(t, fs)
	filled := time.Now()
	t.Logf("filled: %d bytes free", testsvc.FreeBytes(t, fs))

	// Writes while full: each is acknowledged (and must read back) or
	// refused as full; nothing else.
	statuses := map[int]int{}
	acked := map[string][]byte{}
	ackedProfiles := map[string]string{}
	big := pattern(300_000, 9)
	for i := range 20 {
		name := fmt.Sprintf("full%d", i)
		code, body := c.raw("PUT", "/data/lake/datasets/ds/files/"+name, "prod", bytes.NewReader(big))
		statuses[code]++
		switch {
		case code == 201:
			acked[name] = big
		case code == 507 && errorCode(body) == cmkapi.CodeStorageFull:
			if code, _ := c.raw("GET", "/data/lake/datasets/ds/files/"+name, "prod", nil); code != 404 {
				t.Errorf("GET of the refused upload %s = %d, want 404", name, code)
			}
		default:
			t.Errorf("PUT lake %s on a full disk = %d %.300s, want 201 or 507 %s", name, code, body, cmkapi.CodeStorageFull)
		}
		id := fmt.Sprintf("full-%d", i)
		doc := fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", 20_000))
		code, body = c.raw("PUT", "/data/profiles/"+id, "prod", strings.NewReader(doc))
		statuses[code]++
		switch {
		case code == 200:
			ackedProfiles[id] = doc
		case code == 507 && errorCode(body) == cmkapi.CodeStorageFull:
		default:
			t.Errorf("PUT profile %s on a full disk = %d %.300s, want 200 or 507 %s", id, code, body, cmkapi.CodeStorageFull)
		}
	}
	// A control-plane write goes to the state database (cmk.db).
	for i := range 5 {
		code, body := c.do("POST", "/data/infrastructure/manager/byok/webhooks", map[string]string{"url": fmt.Sprintf("http://127.0.0.1:9/hook%d", i)})
		statuses[code]++
		if code != 507 || body["errorCode"] != cmkapi.CodeStorageFull {
			t.Errorf("create webhook on a full disk = %d %v, want 507 %s", code, body, cmkapi.CodeStorageFull)
		}
	}
	t.Logf("writes on a full disk: %v (lake acknowledged %d, profiles %d)", statuses, len(acked), len(ackedProfiles))
	if statuses[507] == 0 {
		t.Errorf("no write was refused on a full disk: %v", statuses)
	}
	if left, err := os.ReadDir(filepath.Join(fs, "data", "lake", "staging")); err != nil || len(left) != 0 {
		t.Errorf("lake staging after refused uploads = %d entries, %v; want none", len(left), err)
	}
	// The key checks go on (their saves may fail); the org's state must
	// not change because the disk is full.
	before := getHealth(c).LastCheck
	time.Sleep(time.Second)
	h := getHealth(c)
	if h.State != "HEALTHY" {
		t.Errorf("health on a full disk = %s/%s, want HEALTHY", h.State, h.Cause)
	}
	t.Logf("a check saved while full: %v (last check %v, a second earlier %v)", h.LastCheck != nil && before != nil && h.LastCheck.After(*before), h.LastCheck, before)
	s.readBack(t, c)
	// Reads are served, so the replica stays in rotation.
	if code, body := get(c, "/readyz"); code != 200 {
		t.Errorf("/readyz on a full disk = %d %s, want 200", code, body)
	}

	free()
	freed := time.Now()
	var savedAfter time.Duration
	waitFor(t, "the monitor to save a check after space returned", 15*time.Second, func() bool {
		h := getHealth(c)
		if h.LastCheck != nil && h.LastCheck.After(freed) {
			savedAfter = time.Since(freed)
			return true
		}
		return false
	})
	after := pattern(300_000, 11)
	if code, body := c.raw("PUT", "/data/lake/datasets/ds/files/after", "prod", bytes.NewReader(after)); code != 201 {
		t.Errorf("PUT lake after space returned = %d %.300s", code, body)
	}
	acked["after"] = after
	if code, body := c.raw("PUT", "/data/profiles/after", "prod", strings.NewReader(`{"after":true}`)); code != 200 {
		t.Errorf("PUT profile after space returned = %d %.300s", code, body)
	}
	ackedProfiles["after"] = `{"after":true}`
	for name, want := range acked {
		if code, got := c.raw("GET", "/data/lake/datasets/ds/files/"+name, "prod", nil); code != 200 || !bytes.Equal(got, want) {
			t.Errorf("GET acknowledged lake file %s = %d, %d bytes; want %d identical", name, code, len(got), len(want))
		}
	}
	for id, want := range ackedProfiles {
		if code, got := c.raw("GET", "/data/profiles/"+id, "prod", nil); code != 200 || string(got) != want {
			t.Errorf("GET acknowledged profile %s = %d %.100s", id, code, got)
		}
	}
	if !s.access(t, c) {
		t.Errorf("data refused after space returned")
	}
	if h := getHealth(c); h.State != "HEALTHY" {
		t.Errorf("health after space returned = %s/%s, want HEALTHY", h.State, h.Cause)
	}
	t.Logf("full for %v; monitor saved a check %v after space returned", freed.Sub(filled).Round(time.Millisecond), savedAfter.Round(time.Millisecond))
}

// readBack reads every seeded file and record and checks each is served
// byte for byte.
func (s seeded) readBack(t *testing.T, c *client) {
	t.Helper()
	for name, want := range s.files {
		if code, got := c.raw("GET", "/data/lake/datasets/ds/files/"+name, "prod", nil); code != 200 || !bytes.Equal(got, want) {
			t.Errorf("GET seeded lake file %s = %d, %d bytes; want %d identical", name, code, len(got), len(want))
		}
	}
	for id, want := range s.profiles {
		if code, got := c.raw("GET", "/data/profiles/"+id, "prod", nil); code != 200 || string(got) != want {
			t.Errorf("GET seeded profile %s = %d %.100s", id, code, got)
		}
	}
}
