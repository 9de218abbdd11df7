package envelope

import (
	"bytes"
	"io"
	"testing"
)

// addVectorSeeds seeds f with every vector's ciphertext, of either kind:
// valid ones under the key and binding the fuzz targets use, and the
// invalid ones as starting points for mutation.
func addVectorSeeds(f *testing.F) {
	for _, v := range loadVectors(f) {
		f.Add(mustHex(f, v.Ciphertext))
	}
}

func FuzzOpenRecord(f *testing.F) {
	addVectorSeeds(f)
	f.Fuzz(func(t *testing.T, ct []byte) {
		id, idErr := KeyID(ct)
		pt, err := OpenRecord(testDEK, testBind, ct)
		if err != nil {
			if !isRejection(err) {
				t.Fatalf("OpenRecord = %v, want ErrAuth or ErrFormat", err)
			}
			return
		}
		if idErr != nil {
			t.Fatalf("OpenRecord succeeded but KeyID = %v", idErr)
		}
		// A ciphertext that opens is exactly what sealing its plaintext
		// with its salt produces: no other encoding is accepted.
		if again := resealWithSalt(t, "record", ct, testDEK, id, testBind, pt); !bytes.Equal(again, ct) {
			t.Fatalf("opened ciphertext %x does not re-seal to itself (got %x)", ct, again)
		}
		if _, err := OpenRecord(testDEK, Binding{Org: "elsewhere"}, ct); err == nil {
			t.Fatal("ciphertext opened under two bindings")
		}
	})
}

func FuzzReader(f *testing.F) {
	addVectorSeeds(f)
	f.Fuzz(func(t *testing.T, ct []byte) {
		var asked string
		r, err := NewReader(bytes.NewReader(ct), testBind, func(id string) ([]byte, error) {
			asked = id
			return testDEK, nil
		})
		var pt []byte
		if err == nil {
			pt, err = io.ReadAll(r)
		}
		if err != nil {
			if !isRejection(err) {
				t.Fatalf("read = %v, want ErrAuth or ErrFormat", err)
			}
			return
		}
		if id, err := KeyID(ct); err != nil || id != asked {
			t.Fatalf("KeyID = %q, %v; the reader asked for %q", id, err, asked)
		}
		if again := resealWithSalt(t, "stream", ct, testDEK, asked, testBind, pt); !bytes.Equal(again, ct) {
			t.Fatalf("opened stream does not re-seal to itself")
		}
	})
}
