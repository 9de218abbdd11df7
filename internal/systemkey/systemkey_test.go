package systemkey

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "system.key")
	k1, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("key file mode = %v, want %v", got, want)
	}
	k2, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if k1.ID() != k2.ID() {
		t.Errorf("reloaded key id = %s, want %s", k2.ID(), k1.ID())
	}
	w, err := k1.Wrap([]byte("0123456789abcdef0123456789abcdef"), []byte("org/sb/lake/1"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := k2.Unwrap(w, []byte("org/sb/lake/1"))
	if err != nil || !bytes.Equal(got, []byte("0123456789abcdef0123456789abcdef")) {
		t.Errorf("Unwrap = %q, %v; want the wrapped key", got, err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(path); err == nil {
		t.Error("LoadOrCreate accepted a world-readable key file")
	}
}

func TestUnwrapTamper(t *testing.T) {
	k, err := New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	aad := []byte("org/sb/lake/1")
	w, err := k.Wrap(bytes.Repeat([]byte{1}, 32), aad)
	if err != nil {
		t.Fatal(err)
	}
	for i := range w {
		bad := bytes.Clone(w)
		bad[i] ^= 0x01
		if _, err := k.Unwrap(bad, aad); !errors.Is(err, ErrUnwrap) {
			t.Fatalf("Unwrap with byte %d flipped = %v, want ErrUnwrap", i, err)
		}
	}
	if _, err := k.Unwrap(w, []byte("org/sb/profile/1")); !errors.Is(err, ErrUnwrap) {
		t.Errorf("Unwrap under another record's aad = %v, want ErrUnwrap", err)
	}
	if _, err := k.Unwrap(w[:10], aad); !errors.Is(err, ErrUnwrap) {
		t.Errorf("Unwrap of truncated key = %v, want ErrUnwrap", err)
	}
	other, _ := New(bytes.Repeat([]byte{8}, 32))
	if _, err := other.Unwrap(w, aad); !errors.Is(err, ErrUnwrap) {
		t.Errorf("Unwrap under another system key = %v, want ErrUnwrap", err)
	}
}
