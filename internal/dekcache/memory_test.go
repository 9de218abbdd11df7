package dekcache

import (
	"context"
	"crypto/rand"
	"fmt"
	"runtime"
	"testing"

	"github.com/google/uuid"

	"github.com/cmk-project/cmk/internal/envelope"
)

// BenchmarkMemoryPerKey reports the heap one cached data key holds (B/key),
// for sizing (docs/operations.md, "Sizing"): the 32-byte key, its entry
// and its share of the cache's maps, and with "record" also the record key
// prepared on first use by the profile store. Keys have UUIDs as ids, as
// the keyring gives them, spread over 100 orgs.
//
//	go test -run '^$' -bench BenchmarkMemoryPerKey -benchtime 3x ./internal/dekcache/
func BenchmarkMemoryPerKey(b *testing.B) {
	const keys, orgs = 20000, 100
	ids := make([]string, keys)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	load := func(context.Context) ([]byte, error) {
		k := make([]byte, 32)
		rand.Read(k)
		return k, nil
	}
	for _, mode := range []string{"raw", "record"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				before := heapInUse()
				c := New()
				for i, id := range ids {
					org := fmt.Sprintf("org-%03d", i%orgs)
					if mode == "raw" {
						k, err := c.Get(ctx, org, id, load)
						if err != nil {
							b.Fatal(err)
						}
						clear(k)
						continue
					}
					if err := c.WithRecordKey(ctx, org, id, load, func(*envelope.RecordKey) error { return nil }); err != nil {
						b.Fatal(err)
					}
				}
				after := heapInUse()
				if c.Len() != keys {
					b.Fatalf("the cache holds %d keys, want %d", c.Len(), keys)
				}
				b.ReportMetric(float64(after-before)/keys, "B/key")
				runtime.KeepAlive(c)
			}
		})
	}
}

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
