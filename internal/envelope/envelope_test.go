package envelope

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, size := range []int{0, 1, 100, ChunkSize - 1, ChunkSize, ChunkSize + 1, 3 * ChunkSize} {
		pt := detBytes(1, size)
		ct, err := SealRecord(testDEK, testKeyID, testBind, pt)
		if err != nil {
			t.Fatalf("SealRecord(%d bytes): %v", size, err)
		}
		over, _ := RecordOverhead(testKeyID)
		if got, want := len(ct), over+size; got != want {
			t.Errorf("len(SealRecord(%d bytes)) = %d, want %d", size, got, want)
		}
		got, err := OpenRecord(testDEK, testBind, ct)
		if err != nil {
			t.Fatalf("OpenRecord(%d bytes): %v", size, err)
		}
		if !bytes.Equal(got, pt) {
			t.Errorf("OpenRecord(SealRecord(%d bytes)) differs from the plaintext", size)
		}
		if id, err := KeyID(ct); err != nil || id != testKeyID {
			t.Errorf("KeyID() = %q, %v, want %q, nil", id, err, testKeyID)
		}
	}
}

func TestRecordEmptyIsNotNil(t *testing.T) {
	ct, err := SealRecord(testDEK, testKeyID, testBind, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenRecord(testDEK, testBind, ct)
	if err != nil || got == nil || len(got) != 0 {
		t.Errorf("OpenRecord(empty) = %v, %v, want []byte{}, nil", got, err)
	}
}

func TestRecordFreshSalt(t *testing.T) {
	a, _ := SealRecord(testDEK, testKeyID, testBind, []byte("same"))
	b, _ := SealRecord(testDEK, testKeyID, testBind, []byte("same"))
	if bytes.Equal(a, b) {
		t.Error("two seals of the same record are identical; the salt is not random")
	}
}

// changedBindings returns testBind with each field changed in turn, plus
// bindings that only move bytes between fields, which a naive
// concatenation would not tell apart.
func changedBindings() map[string]Binding {
	b := testBind
	m := map[string]Binding{}
	c := b
	c.Org = "org-2"
	m["org"] = c
	c = b
	c.Sandbox = "sbx-2"
	m["sandbox"] = c
	c = b
	c.Store = "lake"
	m["store"] = c
	c = b
	c.Object = "obj-2"
	m["object"] = c
	m["zero"] = Binding{}
	m["shift org/sandbox"] = Binding{Org: "org-1s", Sandbox: "bx-1", Store: b.Store, Object: b.Object}
	m["shift store/object"] = Binding{Org: b.Org, Sandbox: b.Sandbox, Store: "profilesobj-1", Object: ""}
	return m
}

func TestRecordBinding(t *testing.T) {
	ct, err := SealRecord(testDEK, testKeyID, testBind, []byte("profile"))
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range changedBindings() {
		if _, err := OpenRecord(testDEK, b, ct); !errors.Is(err, ErrAuth) {
			t.Errorf("OpenRecord(binding with %s changed) = %v, want ErrAuth", name, err)
		}
	}
}

// TestRecordCopiedAcross models a store that copies a record's bytes to
// another org, sandbox, store or object: each copy must fail to open where
// it lands, while the original still opens.
func TestRecordCopiedAcross(t *testing.T) {
	objects := []Binding{
		{"org-a", "sbx-1", "profiles", "p-1"},
		{"org-b", "sbx-1", "profiles", "p-1"},
		{"org-a", "sbx-2", "profiles", "p-1"},
		{"org-a", "sbx-1", "cache", "p-1"},
		{"org-a", "sbx-1", "profiles", "p-2"},
	}
	sealed := make([][]byte, len(objects))
	for i, b := range objects {
		sealed[i], _ = SealRecord(testDEK, testKeyID, b, []byte(fmt.Sprint("record ", i)))
	}
	for i := range objects {
		for j, b := range objects {
			_, err := OpenRecord(testDEK, b, sealed[i])
			if i == j && err != nil {
				t.Errorf("OpenRecord(record %d at its own place) = %v, want nil", i, err)
			}
			if i != j && !errors.Is(err, ErrAuth) {
				t.Errorf("OpenRecord(record %d copied to %+v) = %v, want ErrAuth", i, b, err)
			}
		}
	}
}

func TestRecordWrongKey(t *testing.T) {
	ct, _ := SealRecord(testDEK, testKeyID, testBind, []byte("profile"))
	if _, err := OpenRecord(otherDEK, testBind, ct); !errors.Is(err, ErrAuth) {
		t.Errorf("OpenRecord(other key) = %v, want ErrAuth", err)
	}
	// Same key, but the header names another key id: the id is part of
	// the derivation, so the commitment no longer matches.
	pre := fixedSize + len(testKeyID)
	for _, id := range []string{"1b7a9a0e-4f57-4c39-9a57-6c1f3b3e2d10", "short-id"} {
		moved := append([]byte("CMKE\x02R"), byte(len(id)))
		moved = append(append(moved, id...), ct[pre:]...)
		if _, err := OpenRecord(testDEK, testBind, moved); !errors.Is(err, ErrAuth) {
			t.Errorf("OpenRecord(key id rewritten to %q) = %v, want ErrAuth", id, err)
		}
	}
	// The same for a version-1 record.
	v1, _ := sealRecordV1(detReader(1), testDEK, testKeyID, testBind, []byte("profile"))
	hs, _ := HeaderSize(testKeyID)
	for _, id := range []string{"1b7a9a0e-4f57-4c39-9a57-6c1f3b3e2d10", "short-id"} {
		h, _ := parseHeader(v1)
		h.keyID = id
		moved := append(h.append(nil), v1[hs:]...)
		if _, err := OpenRecord(testDEK, testBind, moved); !errors.Is(err, ErrAuth) {
			t.Errorf("OpenRecord(version 1, key id rewritten to %q) = %v, want ErrAuth", id, err)
		}
	}
	if _, err := OpenRecord(testDEK[:16], testBind, ct); err == nil || isRejection(err) {
		t.Errorf("OpenRecord(16-byte key) = %v, want an invalid-key error", err)
	}
}

func TestRecordTamper(t *testing.T) {
	for _, size := range []int{0, 1, 33, 1000} {
		ct, _ := sealRecord(detReader(2), testDEK, testKeyID, testBind, detBytes(3, size))
		testRecordTamper(t, size, ct)
		v1, _ := sealRecordV1(detReader(2), testDEK, testKeyID, testBind, detBytes(3, size))
		testRecordTamper(t, size, v1)
	}
}

func testRecordTamper(t *testing.T, size int, ct []byte) {
	t.Helper()
	for i := range ct {
		for _, mask := range []byte{0x01, 0x80} {
			bad := bytes.Clone(ct)
			bad[i] ^= mask
			if _, err := OpenRecord(testDEK, testBind, bad); !isRejection(err) {
				t.Fatalf("OpenRecord(%d-byte record, byte %d ^ %#x) = %v, want ErrAuth or ErrFormat", size, i, mask, err)
			}
		}
	}
	for n := 0; n < len(ct); n++ {
		if _, err := OpenRecord(testDEK, testBind, ct[:n]); !isRejection(err) {
			t.Fatalf("OpenRecord(%d-byte record truncated to %d) = %v, want ErrAuth or ErrFormat", size, n, err)
		}
	}
	if _, err := OpenRecord(testDEK, testBind, append(bytes.Clone(ct), 0)); !errors.Is(err, ErrAuth) {
		t.Errorf("OpenRecord(%d-byte record + 1 byte) = %v, want ErrAuth", size, err)
	}
}

func TestKindsDoNotMix(t *testing.T) {
	rec, _ := SealRecord(testDEK, testKeyID, testBind, []byte("x"))
	str := sealStream(t, 1, testDEK, testKeyID, testBind, []byte("x"))
	if _, err := OpenRecord(testDEK, testBind, str); !errors.Is(err, ErrFormat) {
		t.Errorf("OpenRecord(stream) = %v, want ErrFormat", err)
	}
	if _, err := openStream(testDEK, testBind, rec); !errors.Is(err, ErrFormat) {
		t.Errorf("NewReader(record) = %v, want ErrFormat", err)
	}
	// Relabelling the kind byte does not help: there is no version-2
	// stream, and in version 1 the kind is derived into the key, so the
	// commitment fails.
	rec[len(magic)+1] = kindStream
	if _, err := openStream(testDEK, testBind, rec); !errors.Is(err, ErrFormat) {
		t.Errorf("NewReader(version-2 record relabelled as stream) = %v, want ErrFormat", err)
	}
	v1, _ := sealRecordV1(nil, testDEK, testKeyID, testBind, []byte("x"))
	v1[len(magic)+1] = kindStream
	if _, err := openStream(testDEK, testBind, v1); !errors.Is(err, ErrAuth) {
		t.Errorf("NewReader(version-1 record relabelled as stream) = %v, want ErrAuth", err)
	}
	str[len(magic)+1] = kindRecord
	if _, err := OpenRecord(testDEK, testBind, str); !errors.Is(err, ErrAuth) {
		t.Errorf("OpenRecord(stream relabelled as record) = %v, want ErrAuth", err)
	}
}

func TestKeyID(t *testing.T) {
	ct, _ := SealRecord(testDEK, testKeyID, testBind, []byte("x"))
	hs := fixedSize + len(testKeyID) + nonceSize + commitSize
	tests := []struct {
		name string
		in   []byte
		want string
		err  error
	}{
		{"whole record", ct, testKeyID, nil},
		{"header", ct[:hs], testKeyID, nil},
		{"up to the id", ct[:fixedSize+len(testKeyID)], testKeyID, nil},
		{"id cut short", ct[:fixedSize+len(testKeyID)-1], "", ErrFormat},
		{"empty", nil, "", ErrFormat},
		{"not an envelope", []byte("PK\x03\x04 a zip file, not an envelope"), "", ErrFormat},
		{"version 3", append([]byte("CMKE\x03"), ct[5:]...), "", ErrFormat},
		{"version 0", append([]byte("CMKE\x00"), ct[5:]...), "", ErrFormat},
		{"unknown kind", append([]byte("CMKE\x01X"), ct[6:]...), "", ErrFormat},
		{"id length 0", []byte("CMKE\x01R\x00"), "", ErrFormat},
		{"id length 65", append([]byte("CMKE\x01R\x41"), make([]byte, 200)...), "", ErrFormat},
		{"control byte in id", []byte("CMKE\x01R\x02a\n"), "", ErrFormat},
	}
	for _, tt := range tests {
		got, err := KeyID(tt.in)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("KeyID(%s) = %q, %v, want %q, %v", tt.name, got, err, tt.want, tt.err)
		}
	}
}

func TestInvalidInputs(t *testing.T) {
	tests := []struct {
		name  string
		dek   []byte
		keyID string
		want  string
	}{
		{"short key", testDEK[:16], testKeyID, "data key is 16 bytes; 32 are required"},
		{"no key", nil, testKeyID, "data key is 0 bytes"},
		{"empty id", testDEK, "", "key id is 0 bytes"},
		{"long id", testDEK, strings.Repeat("a", 65), "key id is 65 bytes; 1 to 64 are required"},
		{"space in id", testDEK, "a b", "byte 0x20 at offset 1"},
	}
	for _, tt := range tests {
		if _, err := SealRecord(tt.dek, tt.keyID, testBind, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("SealRecord(%s) = %v, want an error containing %q", tt.name, err, tt.want)
		}
		if _, err := NewWriter(&bytes.Buffer{}, tt.dek, tt.keyID, testBind); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewWriter(%s) = %v, want an error containing %q", tt.name, err, tt.want)
		}
		if _, err := NewSealer(tt.dek, tt.keyID, SealerOptions{}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewSealer(%s) = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	if _, err := CiphertextSize(testKeyID, -1); err == nil {
		t.Error("CiphertextSize(-1) = nil error, want an error")
	}
}

func TestSealerLimit(t *testing.T) {
	s, err := NewSealer(testDEK, testKeyID, SealerOptions{MaxUses: 3, Used: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SealRecord(testBind, []byte("a")); err != nil {
		t.Fatalf("use 2: %v", err)
	}
	if _, err := s.NewWriter(&bytes.Buffer{}, testBind); err != nil {
		t.Fatalf("use 3: %v", err)
	}
	if _, err := s.SealRecord(testBind, []byte("a")); !errors.Is(err, ErrKeyExhausted) {
		t.Errorf("SealRecord(use 4 of 3) = %v, want ErrKeyExhausted", err)
	}
	if _, err := s.NewWriter(&bytes.Buffer{}, testBind); !errors.Is(err, ErrKeyExhausted) {
		t.Errorf("NewWriter(use 5 of 3) = %v, want ErrKeyExhausted", err)
	}
	if got := s.Used(); got != 3 {
		t.Errorf("Used() = %d, want 3", got)
	}
	d, _ := NewSealer(testDEK, testKeyID, SealerOptions{})
	if d.max != DefaultMaxUses {
		t.Errorf("default MaxUses = %d, want %d", d.max, uint64(DefaultMaxUses))
	}
	d.Wipe()
	if !bytes.Equal(d.dek, make([]byte, KeySize)) {
		t.Error("Wipe left the Sealer's DEK in memory")
	}
	if _, err := d.SealRecord(testBind, []byte("a")); !errors.Is(err, ErrWiped) {
		t.Errorf("SealRecord after Wipe = %v, want ErrWiped", err)
	}
}

func TestSealerConcurrent(t *testing.T) {
	const limit, workers = 200, 8
	s, _ := NewSealer(testDEK, testKeyID, SealerOptions{MaxUses: limit})
	ok := make(chan int, workers)
	for range workers {
		go func() {
			n := 0
			for range limit {
				if _, err := s.SealRecord(testBind, nil); err == nil {
					n++
				}
			}
			ok <- n
		}()
	}
	total := 0
	for range workers {
		total += <-ok
	}
	if total != limit {
		t.Errorf("%d concurrent seals succeeded, want exactly %d", total, limit)
	}
}
