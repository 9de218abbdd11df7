package consent

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzOpen feeds Open arbitrary states, seeded with the vectors in
// testdata/states.txt (valid, expired, forged and malformed states made
// under the test key at t0). Open must never panic, and whatever it opens
// must re-seal, with the same expiry and nonce, to exactly the same state:
// a state has one spelling.
func FuzzOpen(f *testing.F) {
	raw, err := os.ReadFile(filepath.Join("testdata", "states.txt"))
	if err != nil {
		f.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			f.Add(line)
		}
	}
	now := t0
	s := newSigner(f, &now)
	f.Fuzz(func(t *testing.T, state string) {
		org, exp, err := s.Open(state)
		if err != nil {
			if org != "" {
				t.Fatalf("Open(%q) = %q with error %v; want no org", state, org, err)
			}
			return
		}
		if !ValidOrg(org) {
			t.Fatalf("Open(%q) = invalid org %q", state, org)
		}
		payload, _ := b64.DecodeString(strings.SplitN(strings.TrimPrefix(state, version), ".", 2)[0])
		var nonce [nonceLen]byte
		copy(nonce[:], payload[8:headerLen])
		if again := s.seal(org, uint64(exp.Unix()), nonce); again != state {
			t.Fatalf("Open(%q) = %q, which re-seals to %q", state, org, again)
		}
	})
}

// FuzzSealOpen: every org Seal accepts comes back from Open unchanged.
func FuzzSealOpen(f *testing.F) {
	for _, org := range []string{"A", "85A1B2C3D4E5F6A7B8C9D0E1@AdobeOrg", "ü@Org", strings.Repeat("x", MaxOrgLen)} {
		f.Add(org)
	}
	now := t0
	s := newSigner(f, &now)
	f.Fuzz(func(t *testing.T, org string) {
		s.Rand = bytes.NewReader(make([]byte, nonceLen))
		st, err := s.Seal(org)
		if err != nil {
			if ValidOrg(org) {
				t.Fatalf("Seal(valid org %q) = %v", org, err)
			}
			return
		}
		got, exp, err := s.Open(st)
		if err != nil || got != org || !exp.Equal(t0.Add(DefaultTTL)) {
			t.Fatalf("Open(Seal(%q)) = %q, %v, %v", org, got, exp, err)
		}
	})
}

var update = flag.Bool("update", false, "regenerate testdata/states.txt")

// TestVectors pins the states in testdata/states.txt: each line's comment
// says what Open must answer under the test key at t0. With -update it
// writes the file first.
func TestVectors(t *testing.T) {
	if *update {
		writeVectors(t)
	}
	raw, err := os.ReadFile(filepath.Join("testdata", "states.txt"))
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	s := newSigner(t, &now)
	want := ""
	n := 0
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "# want "):
			want = strings.TrimPrefix(line, "# want ")
		case strings.HasPrefix(line, "#"):
		default:
			n++
			org, _, err := s.Open(line)
			got := "org " + org
			if err != nil {
				got = err.Error()
			}
			if got != want {
				t.Errorf("Open(%.50q) = %q, want %q", line, got, want)
			}
		}
	}
	if n < 5 {
		t.Errorf("testdata/states.txt has %d vectors, want at least 5", n)
	}
}

func writeVectors(t *testing.T) {
	now := t0
	s := newSigner(t, &now)
	nonce := [nonceLen]byte{1, 2, 3, 4, 5, 6, 7, 8}
	exp := uint64(t0.Add(DefaultTTL).Unix())
	valid := s.seal("ORGA@CmkOrg", exp, nonce)
	long := s.seal(strings.Repeat("x", MaxOrgLen), exp, nonce)
	expired := s.seal("ORGA@CmkOrg", uint64(t0.Unix()), nonce)
	other, _ := NewSigner(bytes.Repeat([]byte{0x5b}, 32))
	forged := other.seal("ORGA@CmkOrg", exp, nonce)
	var b strings.Builder
	b.WriteString("# Consent states under the key 0x5a*32 at 2026-03-01T09:00:00Z (consent_test.go's t0).\n")
	b.WriteString("# Written by `go test -run TestVectors -update`; \"# want\" says what Open answers for the lines below it.\n\n")
	b.WriteString("# want org ORGA@CmkOrg\n" + valid + "\n\n")
	b.WriteString("# want org " + strings.Repeat("x", MaxOrgLen) + "\n" + long + "\n\n")
	b.WriteString("# want " + ErrExpired.Error() + "\n" + expired + "\n\n")
	b.WriteString("# want " + ErrForged.Error() + "\n" + forged + "\n\n")
	b.WriteString("# want " + ErrMalformed.Error() + "\n" + valid[:len(valid)-1] + "\n" + valid + "=\n" + "v2." + strings.TrimPrefix(valid, "v1.") + "\n" + "v1.AAAA.AAAA\n")
	if err := os.WriteFile(filepath.Join("testdata", "states.txt"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
