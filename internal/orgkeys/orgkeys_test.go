package orgkeys_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/envelope"
	"github.com/cmk-project/cmk/internal/orgkeys"
)

func startEnv(t *testing.T) *devenv.Env {
	t.Helper()
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: t.TempDir(), NoMonitor: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	return env
}

// The record path of a warm data key allocates only the sealed record: a
// cache hit makes no loader, and opening in place builds its associated
// data in a pooled buffer.
func TestRecordPathAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a service")
	}
	env := startEnv(t)
	ctx := context.Background()
	keys := env.Svc.Keys
	b := envelope.Binding{Org: env.Org, Sandbox: "prod", Store: "profile", Object: "rec-1"}
	doc := bytes.Repeat([]byte("x"), 1000)
	sealed, err := keys.SealRecord(ctx, env.Org, "prod", "profile", b, doc)
	if err != nil {
		t.Fatal(err)
	}
	work := make([]byte, len(sealed))
	open := func() {
		copy(work, sealed)
		pt, err := keys.OpenRecord(ctx, env.Org, "prod", "profile", b, work)
		if err != nil || !bytes.Equal(pt, doc) {
			t.Fatalf("open: %v", err)
		}
	}
	open()
	if n := testing.AllocsPerRun(200, open); n != 0 {
		t.Errorf("opening a record with a warm key allocates %v times; want 0", n)
	}
	seal := func() {
		if _, err := keys.SealRecord(ctx, env.Org, "prod", "profile", b, doc); err != nil {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(200, seal); n > 1 {
		t.Errorf("sealing a record with a warm key allocates %v times; want 1 (the record)", n)
	}
}

// A record opens only in the store its data key belongs to.
func TestOpenRecordChecksStore(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a service")
	}
	env := startEnv(t)
	ctx := context.Background()
	keys := env.Svc.Keys
	b := envelope.Binding{Org: env.Org, Sandbox: "prod", Store: "profile", Object: "rec-1"}
	sealed, err := keys.SealRecord(ctx, env.Org, "prod", "profile", b, []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ org, sandbox, kind string }{
		{env.Org, "dev", "profile"},
		{env.Org, "prod", "lake"},
		{"OTHER0RG1234567890@CmkOrg", "prod", "profile"},
	} {
		_, err := keys.OpenRecord(ctx, c.org, c.sandbox, c.kind, b, bytes.Clone(sealed))
		if !errors.Is(err, orgkeys.ErrWrongStore) {
			t.Errorf("open in %s/%s/%s: got %v, want ErrWrongStore", c.org, c.sandbox, c.kind, err)
		}
	}
	if _, err := keys.OpenRecord(ctx, env.Org, "prod", "profile", b, bytes.Clone(sealed)); err != nil {
		t.Errorf("open in its own store: %v", err)
	}
}

// BenchmarkOpenRecord measures opening a 1 KiB record with a warm key,
// in place (the profile store's read path without the backend):
//
//	go test ./internal/orgkeys/ -run '^$' -bench OpenRecord
func BenchmarkOpenRecord(b *testing.B) {
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: b.TempDir(), NoMonitor: true})
	if err != nil {
		b.Fatal(err)
	}
	defer env.Close()
	ctx := context.Background()
	keys := env.Svc.Keys
	bind := envelope.Binding{Org: env.Org, Sandbox: "prod", Store: "profile", Object: "rec-1"}
	sealed, err := keys.SealRecord(ctx, env.Org, "prod", "profile", bind, bytes.Repeat([]byte("x"), 1024))
	if err != nil {
		b.Fatal(err)
	}
	work := make([]byte, len(sealed))
	b.SetBytes(1024)
	b.ReportAllocs()
	for b.Loop() {
		copy(work, sealed)
		if _, err := keys.OpenRecord(ctx, env.Org, "prod", "profile", bind, work); err != nil {
			b.Fatal(err)
		}
	}
}
