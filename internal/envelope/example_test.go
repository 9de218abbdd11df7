package envelope_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cmk-project/cmk/internal/envelope"
)

// In real use the DEK is 32 random bytes unwrapped by the org's key.
var (
	dek   = bytes.Repeat([]byte{7}, envelope.KeySize)
	keyID = "6f1d2c3b-0a9e-4d8c-b7a6-5f4e3d2c1b0a"
)

func ExampleSealRecord() {
	where := envelope.Binding{Org: "contoso", Sandbox: "prod", Store: "profiles", Object: "user-42"}
	ct, err := envelope.SealRecord(dek, keyID, where, []byte(`{"name":"Ada"}`))
	if err != nil {
		fmt.Println(err)
		return
	}

	// The reader learns which key to fetch from the record itself.
	id, _ := envelope.KeyID(ct)
	fmt.Println(id == keyID)

	pt, err := envelope.OpenRecord(dek, where, ct)
	fmt.Println(string(pt), err)

	// The same bytes copied to another object do not open.
	elsewhere := where
	elsewhere.Object = "user-43"
	_, err = envelope.OpenRecord(dek, elsewhere, ct)
	fmt.Println(errors.Is(err, envelope.ErrAuth))
	// Output:
	// true
	// {"name":"Ada"} <nil>
	// true
}

func ExampleNewWriter() {
	where := envelope.Binding{Org: "contoso", Sandbox: "prod", Store: "lake", Object: "datasets/sales.csv"}
	src := strings.NewReader("region,amount\nnorth,10\nsouth,20\n")

	var file bytes.Buffer
	w, err := envelope.NewWriter(&file, dek, keyID, where)
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := io.Copy(w, src); err != nil {
		fmt.Println(err)
		return
	}
	if err := w.Close(); err != nil { // writes the last chunk
		fmt.Println(err)
		return
	}

	size, _ := envelope.CiphertextSize(keyID, int64(src.Size()))
	fmt.Println(int64(file.Len()) == size)

	r, err := envelope.NewReader(&file, where, func(id string) ([]byte, error) {
		if id != keyID {
			return nil, fmt.Errorf("unknown data key %s", id)
		}
		return dek, nil
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := io.Copy(os.Stdout, r); err != nil {
		fmt.Println(err)
	}
	// Output:
	// true
	// region,amount
	// north,10
	// south,20
}

func ExampleSealer() {
	// A Sealer counts the objects sealed under its DEK; at the limit the
	// caller rotates to a new DEK.
	s, err := envelope.NewSealer(dek, keyID, envelope.SealerOptions{MaxUses: 2})
	if err != nil {
		fmt.Println(err)
		return
	}
	where := envelope.Binding{Org: "contoso", Sandbox: "prod", Store: "cache", Object: "k"}
	for i := 0; i < 3; i++ {
		_, err := s.SealRecord(where, []byte("v"))
		fmt.Println(i, errors.Is(err, envelope.ErrKeyExhausted))
	}
	fmt.Println(s.Used())
	// Output:
	// 0 false
	// 1 false
	// 2 true
	// 2
}
