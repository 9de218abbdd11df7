package kms_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"

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
