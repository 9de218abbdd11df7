package envelope

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestRecordKeyOpensBothVersions(t *testing.T) {
	k, err := NewRecordKey(testDEK, testKeyID)
	if err != nil {
		t.Fatal(err)
	}
	pt := []byte(`{"name":"Ada"}`)
	v1, _ := sealRecordV1(nil, testDEK, testKeyID, testBind, pt)
	v2, err := k.Seal(testBind, pt)
	if err != nil {
		t.Fatal(err)
	}
	if v1[len(magic)] != Version1 || v2[len(magic)] != Version2 {
		t.Fatalf("versions %d and %d, want 1 and 2", v1[len(magic)], v2[len(magic)])
	}
	for name, ct := range map[string][]byte{"version 1": v1, "version 2": v2} {
		got, err := k.Open(testBind, ct)
		if err != nil || !bytes.Equal(got, pt) {
			t.Errorf("Open(%s) = %q, %v, want %q", name, got, err, pt)
		}
		if got, err := OpenRecord(testDEK, testBind, ct); err != nil || !bytes.Equal(got, pt) {
			t.Errorf("OpenRecord(%s) = %q, %v, want %q", name, got, err, pt)
		}
		other, _ := NewRecordKey(otherDEK, testKeyID)
		if _, err := other.Open(testBind, ct); !errors.Is(err, ErrAuth) {
			t.Errorf("Open(%s) with another DEK = %v, want ErrAuth", name, err)
		}
	}
	// A record names its key id; a RecordKey of another id refuses it.
	renamed, _ := NewRecordKey(testDEK, "another-id")
	if _, err := renamed.Open(testBind, v2); !errors.Is(err, ErrAuth) {
		t.Errorf("Open by a RecordKey of another key id = %v, want ErrAuth", err)
	}
}

func TestRecordKeyWipe(t *testing.T) {
	k, _ := NewRecordKey(testDEK, testKeyID)
	ct, _ := k.Seal(testBind, []byte("x"))
	dek := k.dek
	k.Wipe()
	if !bytes.Equal(dek, make([]byte, KeySize)) {
		t.Error("Wipe left the DEK copy in memory")
	}
	if _, err := k.Seal(testBind, []byte("x")); !errors.Is(err, ErrWiped) {
		t.Errorf("Seal after Wipe = %v, want ErrWiped", err)
	}
	if _, err := k.Open(testBind, ct); !errors.Is(err, ErrWiped) {
		t.Errorf("Open after Wipe = %v, want ErrWiped", err)
	}
}

func TestRecordKeyConcurrent(t *testing.T) {
	k, _ := NewRecordKey(testDEK, testKeyID)
	var wg sync.WaitGroup
	seen := sync.Map{}
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				pt := []byte{byte(w), byte(i)}
				ct, err := k.Seal(testBind, pt)
				if err != nil {
					t.Error(err)
					return
				}
				pre := fixedSize + len(testKeyID)
				if _, dup := seen.LoadOrStore(string(ct[pre:pre+nonceSize]), true); dup {
					t.Error("a nonce repeated")
				}
				if got, err := k.Open(testBind, ct); err != nil || !bytes.Equal(got, pt) {
					t.Errorf("Open = %x, %v, want %x", got, err, pt)
				}
			}
		}()
	}
	wg.Wait()

	// Wiping while others seal and open: each call either works or
	// fails with ErrWiped, never anything else (the race detector checks
	// that Wipe waits for calls in progress).
	ct, _ := k.Seal(testBind, []byte("x"))
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				if _, err := k.Open(testBind, ct); err != nil && !errors.Is(err, ErrWiped) {
					t.Errorf("Open during Wipe = %v", err)
					return
				}
			}
		}()
	}
	k.Wipe()
	wg.Wait()
}

// The sealed record does not alias the buffer that held its associated
// data: appending to it must not change what opens.
func TestRecordSealedCapacity(t *testing.T) {
	ct, _ := SealRecord(testDEK, testKeyID, testBind, []byte("abc"))
	if cap(ct) != len(ct) {
		t.Errorf("cap = %d, len = %d; want the record alone", cap(ct), len(ct))
	}
}

func TestRecordOpenInPlace(t *testing.T) {
	k, _ := NewRecordKey(testDEK, testKeyID)
	for _, size := range []int{0, 1, 100, 5000} {
		pt := detBytes(4, size)
		ct, _ := k.Seal(testBind, pt)
		v1, _ := sealRecordV1(nil, testDEK, testKeyID, testBind, pt)
		for name, c := range map[string][]byte{"version 1": v1, "version 2": ct} {
			got, err := k.OpenInPlace(testBind, bytes.Clone(c))
			if err != nil || !bytes.Equal(got, pt) {
				t.Errorf("OpenInPlace(%s, %d bytes) = %v, want the plaintext", name, size, err)
			}
			bad := bytes.Clone(c)
			bad[len(bad)-1] ^= 1
			if _, err := k.OpenInPlace(testBind, bad); !errors.Is(err, ErrAuth) {
				t.Errorf("OpenInPlace(%s, %d bytes, tag flipped) = %v, want ErrAuth", name, size, err)
			}
			if _, err := k.OpenInPlace(Binding{Org: "other"}, bytes.Clone(c)); !errors.Is(err, ErrAuth) {
				t.Errorf("OpenInPlace(%s, %d bytes, other binding) = %v, want ErrAuth", name, size, err)
			}
		}
	}
	// Associated data too long for the pooled buffer is built apart.
	long := testBind
	long.Object = strings.Repeat("o", aadPoolSize)
	ct, _ := k.Seal(long, []byte("abc"))
	if got, err := k.OpenInPlace(long, bytes.Clone(ct)); err != nil || string(got) != "abc" {
		t.Errorf("OpenInPlace with a %d-byte object id = %q, %v; want the plaintext", len(long.Object), got, err)
	}
	if _, err := k.OpenInPlace(testBind, bytes.Clone(ct)); !errors.Is(err, ErrAuth) {
		t.Errorf("OpenInPlace of a long-id record under another binding = %v, want ErrAuth", err)
	}
}
