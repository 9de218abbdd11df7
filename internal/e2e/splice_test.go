package e2e

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

// TestSplicedCiphertextIsRefused copies stored ciphertext where it does not
// belong — a profile record onto another record, sandbox and org, a lake file
// onto another name — straight in the storage backends, as someone with
// access to the database or the bucket could. Every such read must fail its
// integrity check; nothing is served.
func TestSplicedCiphertextIsRefused(t *testing.T) {
	ctx := context.Background()
	env := startEnv(t)
	a := adminClient(t, env, env.Org)
	b := adminClient(t, env, "ORGB@CmkOrg")
	b.do("GET", "/data/foundation/sandbox-management/sandboxes", nil) // provisions org B
	secret := `{"ssn":"123-45-6789"}`
	if code, body := a.raw("PUT", "/data/profiles/alice", "prod", strings.NewReader(secret)); code != 200 {
		t.Fatalf("PUT = %d %s", code, body)
	}
	a.raw("PUT", "/data/profiles/bob", "prod", strings.NewReader(`{"x":1}`))
	b.raw("PUT", "/data/profiles/alice", "prod", strings.NewReader(`{"x":2}`))
	backend := env.Svc.Profiles.Backend
	rec, err := backend.Get(ctx, env.Org, "prod", "alice")
	if err != nil {
		t.Fatal(err)
	}
	// Onto another record, another sandbox and another org.
	targets := []struct {
		c                *client
		org, sandbox, id string
	}{{a, env.Org, "prod", "bob"}, {a, env.Org, "dev", "alice"}, {b, "ORGB@CmkOrg", "prod", "alice"}}
	for _, tg := range targets {
		if err := backend.Upsert(ctx, tg.org, tg.sandbox, tg.id, rec.Value); err != nil {
			t.Fatal(err)
		}
		env.Svc.Profiles.Cache.Drop(tg.org, tg.sandbox, tg.id)
		code, body := tg.c.raw("GET", "/data/profiles/"+tg.id, tg.sandbox, nil)
		if code != 500 || errorCode(body) != "DATA_INTEGRITY_FAILURE" || strings.Contains(string(body), "123-45") {
			t.Errorf("spliced record at %s/%s/%s = %d %s, want 500 DATA_INTEGRITY_FAILURE without the data", tg.org, tg.sandbox, tg.id, code, body)
		}
	}

	// A lake file copied to another name.
	if code, body := a.raw("PUT", "/data/lake/datasets/d/files/real.bin", "prod", bytes.NewReader(pattern(100_000, 3))); code != 201 {
		t.Fatalf("PUT = %d %s", code, body)
	}
	rc, _, err := env.Svc.Lake.Backend.Get(ctx, env.Org+"/prod/d/real.bin")
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := io.ReadAll(rc)
	rc.Close()
	if _, err := env.Svc.Lake.Backend.Put(ctx, env.Org+"/prod/d/copy.bin", bytes.NewReader(stored)); err != nil {
		t.Fatal(err)
	}
	if code, body := a.raw("GET", "/data/lake/datasets/d/files/copy.bin", "prod", nil); code == 200 {
		t.Errorf("copied lake file served (%d bytes)", len(body))
	}
	// Truncated in place.
	if _, err := env.Svc.Lake.Backend.Put(ctx, env.Org+"/prod/d/real.bin", bytes.NewReader(stored[:len(stored)-100])); err != nil {
		t.Fatal(err)
	}
	if code, body := a.raw("GET", "/data/lake/datasets/d/files/real.bin", "prod", nil); code == 200 && len(body) == 100_000 {
		t.Error("truncated lake file served whole")
	}
}
