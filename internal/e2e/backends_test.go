package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/lake/blob"
	"github.com/cmk-project/cmk/internal/testsvc"
)

// TestScaledBackends runs the data path end to end with the data lake in
// Azure Blob Storage (Azurite) and profiles in PostgreSQL, across CMK
// enablement and a revocation.
func TestScaledBackends(t *testing.T) {
	az := testsvc.Azurite(t)
	dsn := testsvc.Postgres(t)
	env, err := devenv.Start(context.Background(), devenv.Options{
		DataDir: t.TempDir(), Poll: 50 * time.Millisecond,
		LakeAzure:   &blob.AzureConfig{ServiceURL: az.ServiceURL, AccountName: az.AccountName, AccountKey: az.AccountKey, Container: "lake"},
		ProfilesDSN: dsn,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	c := adminClient(t, env, env.Org)
	big := pattern(5<<20+3, 7) // crosses the Azure backend's block size
	if code, body := c.raw("PUT", "/data/lake/datasets/ds/files/big.bin", "prod", bytes.NewReader(big)); code != 201 {
		t.Fatalf("PUT = %d %s", code, body)
	}
	for i := range 10 {
		if code, body := c.raw("PUT", fmt.Sprintf("/data/profiles/r%d", i), "prod", strings.NewReader(fmt.Sprintf(`{"i":%d}`, i))); code != 200 {
			t.Fatalf("PUT profile = %d %s", code, body)
		}
	}
	checkCutShortPut(t, env.Svc.Lake, env.Org)
	enable(t, env, c)
	code, got := c.raw("GET", "/data/lake/datasets/ds/files/big.bin", "prod", nil)
	if code != 200 || !bytes.Equal(got, big) {
		t.Errorf("GET big.bin from Azure = %d, %d bytes; want identical %d bytes", code, len(got), len(big))
	}
	code, got = c.raw("GET", "/data/profiles?limit=100", "prod", nil)
	if code != 200 || strings.Count(string(got), `"id"`) != 10 {
		t.Errorf("list profiles from PostgreSQL = %d %s", code, got)
	}
}
