package envelope_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"
)

// TestVersion2VectorsFromSpec opens the version-2 record vectors with a
// decoder written from docs/format.md alone, using only the standard
// primitives, so the vectors pin the documented format and not merely
// what this package happens to do.
func TestVersion2VectorsFromSpec(t *testing.T) {
	data, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []struct {
		Name, Kind, DEK, Plaintext, Ciphertext, Result string
		Binding                                        struct{ Org, Sandbox, Store, Object string }
	}
	if err := json.Unmarshal(data, &vs); err != nil {
		t.Fatal(err)
	}
	checked := map[string]int{}
	for _, v := range vs {
		ct, _ := hex.DecodeString(v.Ciphertext)
		if v.Kind != "record" || len(ct) < 5 || ct[4] != 2 {
			continue
		}
		dek, _ := hex.DecodeString(v.DEK)
		b := v.Binding
		pt, err := specOpenV2(dek, [4]string{b.Org, b.Sandbox, b.Store, b.Object}, ct)
		switch v.Result {
		case "ok":
			want, _ := hex.DecodeString(v.Plaintext)
			if err != nil || !bytes.Equal(pt, want) {
				t.Errorf("%s: spec decoder = %x, %v, want %x", v.Name, pt, err, want)
			}
		default:
			if err == nil {
				t.Errorf("%s: spec decoder opened it, want %s", v.Name, v.Result)
			}
		}
		checked[v.Result]++
	}
	if checked["ok"] < 3 || checked["auth"] < 5 {
		t.Errorf("checked %v version-2 record vectors; expected more", checked)
	}
}

func specOpenV2(dek []byte, binding [4]string, ct []byte) ([]byte, error) {
	if len(ct) < 7 || string(ct[:4]) != "CMKE" || ct[4] != 2 || ct[5] != 'R' {
		return nil, errors.New("not a version-2 record")
	}
	l := int(ct[6])
	if l < 1 || l > 64 || len(ct) < 7+l+12+32+16 {
		return nil, errors.New("short")
	}
	keyID := ct[7 : 7+l]
	nonce := ct[7+l : 7+l+12]
	commit := ct[7+l+12 : 7+l+44]
	info := append([]byte("cmk envelope v2 record key+commitment"), byte(l))
	info = append(info, keyID...)
	okm, err := hkdf.Key(sha256.New, dek, nil, string(info), 64)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(okm[32:], commit) {
		return nil, errors.New("commitment")
	}
	aad := bytes.Clone(ct[:7+l+12])
	for _, f := range binding {
		aad = binary.BigEndian.AppendUint32(aad, uint32(len(f)))
		aad = append(aad, f...)
	}
	block, _ := aes.NewCipher(okm[:32])
	gcm, _ := cipher.NewGCM(block)
	return gcm.Open(nil, nonce, ct[7+l+44:], aad)
}
