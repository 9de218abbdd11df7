package blob_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cmk-project/cmk/internal/lake/blob"
)

func TestValidateKey(t *testing.T) {
	tests := []struct {
		key string
		ok  bool
	}{
		{"org/sandbox/dataset/file", true},
		{"a", true},
		{"a..b/c", true},
		{".hidden/x", true},
		{"with space/ü", true},
		{strings.Repeat("x", blob.MaxSegmentLen), true},
		{strings.Repeat("abcdefgh/", 113) + "abcdefg", true}, // 1024 bytes
		{"", false},
		{"/a", false},
		{"a/", false},
		{"a//b", false},
		{"..", false},
		{"a/../b", false},
		{"a/.", false},
		{"a\x00", false},
		{"a\rb", false},
		{"a\u200bb", false}, // zero-width space: not printable
		{"\xc3", false},     // truncated UTF-8
		{strings.Repeat("x", blob.MaxSegmentLen+1), false},
		{strings.Repeat("abcdefgh/", 113) + "abcdefgh", false}, // 1025 bytes
	}
	for _, tc := range tests {
		err := blob.ValidateKey(tc.key)
		if tc.ok && err != nil {
			t.Errorf("ValidateKey(%.40q) = %v, want nil", tc.key, err)
		}
		if !tc.ok && !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("ValidateKey(%.40q) = %v, want ErrInvalidKey", tc.key, err)
		}
	}
}
