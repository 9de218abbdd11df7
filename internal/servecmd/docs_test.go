package servecmd

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/cmk-project/cmk/internal/config"
)

// operationsDoc is docs/operations.md, split into its fenced blocks by
// language and the text outside them.
type operationsDoc struct {
	text   string
	blocks map[string][]string // language → bodies
}

func readOperationsDoc(t *testing.T) operationsDoc {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	d := operationsDoc{blocks: map[string][]string{}}
	lang, body, in := "", []string{}, false
	var text []string
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case !in && strings.HasPrefix(line, "```"):
			in, lang, body = true, strings.TrimPrefix(line, "```"), nil
		case in && line == "```":
			in = false
			d.blocks[lang] = append(d.blocks[lang], strings.Join(body, "\n"))
		case in:
			body = append(body, line)
		default:
			text = append(text, line)
		}
	}
	d.text = strings.Join(text, "\n")
	return d
}

// envNames maps every variable the command reads to its setting.
func envNames() (map[string]string, *pflag.FlagSet) {
	fs := New("cmkd").Flags()
	names := map[string]string{}
	fs.VisitAll(func(f *pflag.Flag) {
		if env := config.EnvName(f); env != "" {
			names[env] = f.Name
		}
	})
	for _, s := range Secrets {
		names[s.Env] = s.Name
	}
	return names, fs
}

// TestOperationsSettingsTable: the reference table lists every flag, once,
// with its variable (or none for a flag-only setting), and nothing else.
func TestOperationsSettingsTable(t *testing.T) {
	d := readOperationsDoc(t)
	_, fs := envNames()
	ref := d.text[strings.Index(d.text, "### Reference"):]
	row := regexp.MustCompile("(?m)^\\| `([a-z0-9-]+)` \\| ([^|]+) \\|")
	listed := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(ref, -1) {
		key, env := m[1], strings.TrimSpace(m[2])
		f := fs.Lookup(key)
		if f == nil {
			t.Errorf("docs/operations.md lists %q, which is not a setting", key)
			continue
		}
		if listed[key] {
			t.Errorf("docs/operations.md lists %q twice", key)
		}
		listed[key] = true
		want := "`" + config.EnvName(f) + "`"
		if config.EnvName(f) == "" {
			want = "— (flag only)"
		}
		if env != want {
			t.Errorf("docs/operations.md gives %s the variable %s, want %s", key, env, want)
		}
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if !listed[f.Name] {
			t.Errorf("docs/operations.md does not list the setting %s (%s)", f.Name, config.EnvName(f))
		}
	})
	for _, s := range Secrets {
		if !strings.Contains(d.text, "`"+s.Env+"` | `"+s.FileKey+"`") {
			t.Errorf("docs/operations.md's secrets table lacks %s with %s", s.Env, s.FileKey)
		}
	}
}

// TestOperationsExamples: every key, flag and variable in the examples is
// a real one, and the example file's values are accepted. The deployment
// files the docs link are checked by deploy_test.go.
func TestOperationsExamples(t *testing.T) {
	d := readOperationsDoc(t)
	names, fs := envNames()
	isFlag := func(where, name string) {
		if fs.Lookup(name) == nil {
			t.Errorf("%s uses --%s, which is not a flag", where, name)
		}
	}

	// The configuration file example: every key a setting, every value
	// accepted (the secret's file aside, which does not exist here).
	if len(d.blocks["json"]) == 0 {
		t.Fatal("docs/operations.md has no configuration file example")
	}
	var file map[string]any
	if err := json.Unmarshal([]byte(d.blocks["json"][0]), &file); err != nil {
		t.Fatalf("the configuration file example does not parse: %v", err)
	}
	for _, s := range Secrets {
		delete(file, s.FileKey)
	}
	b, _ := json.Marshal(file)
	path := filepath.Join(t.TempDir(), "cmk.json")
	os.WriteFile(path, b, 0o600)
	if _, _, err := config.Apply(New("cmkd").Flags(), path, noEnv, Secrets); err != nil {
		t.Errorf("the configuration file example is refused: %v", err)
	}

	// The --print-config and error examples.
	for _, block := range d.blocks["text"] {
		for _, line := range strings.Split(block, "\n") {
			if m := regexp.MustCompile(`^([a-z0-9-]+) = ".*"  \((flag|env|file|default); ([^)]+)\)$`).FindStringSubmatch(line); m != nil {
				if env := m[3]; env != "flag only" {
					if names[env] != m[1] {
						t.Errorf("print-config example: %s is shown with %s, which is %q's variable", m[1], env, names[env])
					}
				}
			}
			if m := regexp.MustCompile(`^error: setting ([a-z0-9-]+) `).FindStringSubmatch(line); m != nil {
				isFlag("the error example", m[1])
			}
		}
	}
}
