package kms_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/kms"
)

// TestKinds checks what the Kind doc comment promises: every Kind constant
// declared in kms.go is in kms.Kinds (once), and its name spells its value.
func TestKinds(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "kms.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	declared := map[kms.Kind]string{} // value -> constant name
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			v := spec.(*ast.ValueSpec)
			if id, ok := v.Type.(*ast.Ident); !ok || id.Name != "Kind" {
				continue
			}
			for i, name := range v.Names {
				lit, ok := v.Values[i].(*ast.BasicLit)
				if !ok {
					t.Fatalf("%s: value is not a string literal", name.Name)
				}
				value, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				declared[kms.Kind(value)] = name.Name
				if got, want := strings.ToUpper(name.Name), "KIND"+strings.ReplaceAll(value, "_", ""); got != want {
					t.Errorf("constant %s = %q: name spells %s, want %s (Kind + the value in CamelCase)", name.Name, value, got, want)
				}
			}
		}
	}
	if len(declared) == 0 {
		t.Fatal("no Kind constants found in kms.go")
	}
	listed := map[kms.Kind]bool{}
	for _, k := range kms.Kinds {
		if listed[k] {
			t.Errorf("kms.Kinds lists %s twice", k)
		}
		listed[k] = true
		if _, ok := declared[k]; !ok {
			t.Errorf("kms.Kinds lists %s, which kms.go does not declare", k)
		}
	}
	for k, name := range declared {
		if !listed[k] {
			t.Errorf("%s (%s) is missing from kms.Kinds", name, k)
		}
	}
}

// TestLossOfAccess pins which kinds are a verdict on the key: a kind that is
// about the request or the platform, or no answer at all, must never be.
func TestLossOfAccess(t *testing.T) {
	no := map[kms.Kind]bool{kms.KindThrottled: true, kms.KindTransient: true, kms.KindInvalidRequest: true, kms.KindMalformedKeyURI: true,
		kms.KindTokenAcquisitionFailed: true}
	for _, k := range kms.Kinds {
		if got, want := k.LossOfAccess(), !no[k]; got != want {
			t.Errorf("%s.LossOfAccess() = %v, want %v", k, got, want)
		}
		if k.LossOfAccess() && k.Transient() {
			t.Errorf("%s is both transient and a loss of access", k)
		}
	}
}

func TestCheckUsable(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	before, after := now.Add(-time.Second), now.Add(time.Second)
	ref := kms.KeyRef{VaultURL: "https://contoso.vault.azure.net", Name: "cmk"}
	good := kms.KeyInfo{Version: "v1", Enabled: true, Ops: []string{"wrapKey", "unwrapKey"}, NotBefore: &before, Expires: &after}
	for _, tt := range []struct {
		name string
		edit func(*kms.KeyInfo)
		want kms.Kind
	}{
		{"usable", func(*kms.KeyInfo) {}, ""},
		{"no dates", func(k *kms.KeyInfo) { k.NotBefore, k.Expires = nil, nil }, ""},
		{"disabled", func(k *kms.KeyInfo) { k.Enabled = false }, kms.KindKeyDisabled},
		{"not yet active", func(k *kms.KeyInfo) { k.NotBefore = &after }, kms.KindKeyNotActive},
		{"expires now", func(k *kms.KeyInfo) { k.Expires = &now }, kms.KindKeyNotActive},
		{"no wrapKey", func(k *kms.KeyInfo) { k.Ops = []string{"unwrapKey"} }, kms.KindKeyOperationForbidden},
		{"no unwrapKey", func(k *kms.KeyInfo) { k.Ops = []string{"wrapKey", "encrypt"} }, kms.KindKeyOperationForbidden},
	} {
		info := good
		tt.edit(&info)
		if got := kms.KindOf(kms.CheckUsable(ref, info, now)); got != tt.want {
			t.Errorf("%s: CheckUsable() kind = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestKeyRefManagedHSM(t *testing.T) {
	for _, tt := range []struct {
		url  string
		hsm  bool
		name string
	}{
		{"https://contoso.vault.azure.net", false, "contoso"},
		{"https://contoso-hsm.managedhsm.azure.net", true, "contoso-hsm"},
		{"https://gov-hsm.managedhsm.usgovcloudapi.net", true, "gov-hsm"},
		{"https://cn-hsm.managedhsm.azure.cn", true, "cn-hsm"},
		{"https://managedhsm.vault.azure.net", false, "managedhsm"},
	} {
		r := kms.KeyRef{VaultURL: tt.url, Name: "k"}
		if r.ManagedHSM() != tt.hsm || r.VaultName() != tt.name {
			t.Errorf("KeyRef{%s}.ManagedHSM(), VaultName() = %v, %q, want %v, %q", tt.url, r.ManagedHSM(), r.VaultName(), tt.hsm, tt.name)
		}
	}
}
