package profile_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/cmk-project/cmk/internal/devenv"
)

// BenchmarkStore measures the encrypted record path against the same
// backend storing plaintext, in process (no HTTP):
//
//	go test ./internal/profile/ -run '^$' -bench Store -benchtime 20000x
func BenchmarkStore(b *testing.B) {
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: b.TempDir(), NoMonitor: true})
	if err != nil {
		b.Fatal(err)
	}
	defer env.Close()
	ctx := context.Background()
	doc := []byte(fmt.Sprintf(`{"name":"Ada Lovelace","notes":"%0900d"}`, 7))
	ps := env.Svc.Profiles
	for _, cache := range []bool{false, true} {
		c := ps.Cache
		if !cache {
			ps.Cache = nil
		}
		b.Run(fmt.Sprintf("encrypted-upsert/cache=%v", cache), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if err := ps.Upsert(ctx, env.Org, "prod", fmt.Sprintf("r%d", i%1000), doc); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("encrypted-get/cache=%v", cache), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := ps.Get(ctx, env.Org, "prod", fmt.Sprintf("r%d", i%1000)); err != nil {
					b.Fatal(err)
				}
			}
		})
		ps.Cache = c
	}
	b.Run("plain-upsert", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if err := ps.Backend.Upsert(ctx, env.Org, "plain", fmt.Sprintf("r%d", i%1000), doc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("plain-get", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := ps.Backend.Get(ctx, env.Org, "plain", fmt.Sprintf("r%d", i%1000)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
