package blob_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"strings"

	"github.com/cmk-project/cmk/internal/lake/blob"
)

func ExampleFS() {
	dir, err := os.MkdirTemp("", "lake")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	store, err := blob.NewFS(dir, blob.DefaultFSOptions())
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	ctx := context.Background()
	if _, err := store.Put(ctx, "acme/sandbox-1/sales/part-0", strings.NewReader("ciphertext")); err != nil {
		log.Fatal(err)
	}
	objs, err := store.List(ctx, "acme/sandbox-1/")
	if err != nil {
		log.Fatal(err)
	}
	for _, o := range objs {
		fmt.Println(o.Key, o.Size)
	}

	r, _, err := store.Get(ctx, "acme/sandbox-1/sales/part-0")
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	data, _ := io.ReadAll(r)
	fmt.Println(string(data))

	_, _, err = store.Get(ctx, "acme/sandbox-1/sales/part-1")
	fmt.Println(errors.Is(err, blob.ErrNotFound))
	// Output:
	// acme/sandbox-1/sales/part-0 10
	// ciphertext
	// true
}
