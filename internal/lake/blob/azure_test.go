package blob_test

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/cmk-project/cmk/internal/lake/blob"
	"github.com/cmk-project/cmk/internal/lake/blob/blobtest"
	"github.com/cmk-project/cmk/internal/testsvc"
)

func TestAzureConformance(t *testing.T) {
	az := testsvc.Azurite(t)
	var n atomic.Int32
	blobtest.Run(t, func(t *testing.T) blob.Backend {
		b, err := blob.NewAzure(context.Background(), blob.AzureConfig{
			ServiceURL:  az.ServiceURL,
			AccountName: az.AccountName,
			AccountKey:  az.AccountKey,
			// Container names: 3-63 lower-case letters, digits and '-'.
			Container:  fmt.Sprintf("conformance-%d", n.Add(1)),
			HTTPClient: &http.Client{},
		})
		if err != nil {
			t.Fatalf("NewAzure error: %v", err)
		}
		return b
	})
}

// TestAzureExistingContainer checks that NewAzure accepts a container that
// is already there, and sees its objects.
func TestAzureExistingContainer(t *testing.T) {
	az := testsvc.Azurite(t)
	ctx := context.Background()
	cfg := blob.AzureConfig{ServiceURL: az.ServiceURL, AccountName: az.AccountName, AccountKey: az.AccountKey, Container: "lake"}
	b1, err := blob.NewAzure(ctx, cfg)
	if err != nil {
		t.Fatalf("NewAzure error: %v", err)
	}
	if _, err := b1.Put(ctx, "k", http.NoBody); err != nil {
		t.Fatalf("Put error: %v", err)
	}
	b2, err := blob.NewAzure(ctx, cfg)
	if err != nil {
		t.Fatalf("second NewAzure error: %v", err)
	}
	objs, err := b2.List(ctx, "")
	if err != nil || len(objs) != 1 || objs[0].Key != "k" {
		t.Fatalf("List = %v, %v; want only k", objs, err)
	}
}

// TestAzurePutMemory checks that a large Put holds about one block in
// memory, not the object.
func TestAzurePutMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("uploads 128 MiB")
	}
	az := testsvc.Azurite(t)
	b, err := blob.NewAzure(context.Background(), blob.AzureConfig{
		ServiceURL: az.ServiceURL, AccountName: az.AccountName, AccountKey: az.AccountKey, Container: "memory",
	})
	if err != nil {
		t.Fatalf("NewAzure error: %v", err)
	}
	checkPutMemory(t, b, 128<<20, 24<<20)
}
