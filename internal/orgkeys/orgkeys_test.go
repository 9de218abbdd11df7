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

// record is one record sealed in the demo org's prod profile store of a
// running service.
type record struct {
	keys   *orgkeys.Resolver
	org    string
	bind   envelope.Binding
	sealed []byte
}

func sealOne(t testing.TB, doc []byte) record {
	t.Helper()
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: t.TempDir(), NoMonitor: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	r := record{keys: env.Svc.Keys, org: env.Org,
		bind: envelope.Binding{Org: env.Org, Sandbox: "prod", Store: "profile", Object: "rec-1"}}
	if r.sealed, err = r.keys.SealRecord(context.Background(), env.Org, "prod", "profile", r.bind, doc); err != nil {
		t.Fatal(err)
	}
	return r
}

// The record path of a warm data key allocates only the sealed record:
// opening in place builds its associated data in a pooled buffer.
func TestRecordPathAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop buffers at random")
	}
	doc := bytes.Repeat([]byte("x"), 1000)
	r := sealOne(t, doc)
	ctx := context.Background()
	work := make([]byte, len(r.sealed))
	open := func() {
		copy(work, r.sealed)
		pt, err := r.keys.OpenRecord(ctx, r.org, "prod", "profile", r.bind, work)
		if err != nil || !bytes.Equal(pt, doc) {
			t.Fatalf("open: %v", err)
		}
	}
	open()
	if n := testing.AllocsPerRun(200, open); n != 0 {
		t.Errorf("opening a record with a warm key allocates %v times; want 0", n)
	}
	seal := func() {
		if _, err := r.keys.SealRecord(ctx, r.org, "prod", "profile", r.bind, doc); err != nil {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(200, seal); n > 1 {
		t.Errorf("sealing a record with a warm key allocates %v times; want 1 (the record)", n)
	}
}

// A record opens only in the store its data key belongs to.
func TestOpenRecordChecksStore(t *testing.T) {
	r := sealOne(t, []byte(`{}`))
	ctx := context.Background()
	for _, c := range []struct{ org, sandbox, kind string }{
		{r.org, "dev", "profile"},
		{r.org, "prod", "lake"},
		{"OTHER0RG1234567890@CmkOrg", "prod", "profile"},
	} {
		_, err := r.keys.OpenRecord(ctx, c.org, c.sandbox, c.kind, r.bind, bytes.Clone(r.sealed))
		if !errors.Is(err, orgkeys.ErrWrongStore) {
			t.Errorf("open in %s/%s/%s: got %v, want ErrWrongStore", c.org, c.sandbox, c.kind, err)
		}
	}
	if _, err := r.keys.OpenRecord(ctx, r.org, "prod", "profile", r.bind, bytes.Clone(r.sealed)); err != nil {
		t.Errorf("open in its own store: %v", err)
	}
}

// BenchmarkOpenRecord measures opening a 1 KiB record with a warm key,
// in place (the profile store's read path without the backend):
//
//	go test ./internal/orgkeys/ -run '^$' -bench OpenRecord
func BenchmarkOpenRecord(b *testing.B) {
	r := sealOne(b, bytes.Repeat([]byte("x"), 1024))
	ctx := context.Background()
	work := make([]byte, len(r.sealed))
	b.SetBytes(1024)
	b.ReportAllocs()
	for b.Loop() {
		copy(work, r.sealed)
		if _, err := r.keys.OpenRecord(ctx, r.org, "prod", "profile", r.bind, work); err != nil {
			b.Fatal(err)
		}
	}
}
