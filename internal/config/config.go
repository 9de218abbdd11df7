// Package config gives every flag of the serve command a key in one
// configuration file (JSON) and a CMK_* environment variable, and applies
// them in a fixed order: a flag on the command line wins over the
// environment, which wins over the file, which wins over the default.
//
// The settings are the command's flags themselves, so a new flag has its
// key and variable at once: the key is the flag's name, the variable CMK_
// and the name in upper case with '-' as '_' (a few keep older names, see
// envNames). Three kinds of flag are different:
//
//   - Flag-only settings (MarkFlagOnly): development switches that must
//     never be turned on by a file or a variable left behind in an
//     environment (--dev-token-issuer, --emulator).
//   - Secrets (Secret): read only from their environment variable or from
//     a file named by a *-file setting; a secret written in the
//     configuration file is refused, and --print-config redacts them.
//   - The command's own switches (--config, --print-config).
//
// Every mistake is an *Error naming the setting, the value, where it came
// from and what is allowed, with a hint.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
)

const (
	annotFlagOnly = "cmk-config-flag-only"
	annotSecret   = "cmk-config-secret"
)

// envNames are the variables that keep the names they had before the
// configuration file: the DSNs and the system key file.
var envNames = map[string]string{
	"database":          "CMK_DATABASE_DSN",
	"profiles-postgres": "CMK_PROFILES_DSN",
	"system-key":        "CMK_SYSTEM_KEY_FILE",
}

// Source says where a setting's value came from.
type Source string

const (
	FromDefault Source = "default"
	FromFile    Source = "file"
	FromEnv     Source = "env"
	FromFlag    Source = "flag"
)

// MarkFlagOnly makes the named flags settable on the command line only.
func MarkFlagOnly(fs *pflag.FlagSet, names ...string) {
	for _, n := range names {
		if err := fs.SetAnnotation(n, annotFlagOnly, []string{"true"}); err != nil {
			panic(err) // a programming error: no such flag
		}
	}
}

// MarkRedacted makes --print-config hide the named flags' values (a DSN
// may carry a password).
func MarkRedacted(fs *pflag.FlagSet, names ...string) {
	for _, n := range names {
		if err := fs.SetAnnotation(n, annotSecret, []string{"true"}); err != nil {
			panic(err)
		}
	}
}

// Secret declares a secret setting: its value comes only from env, or from
// the file named by the setting fileKey (a flag of fs).
type Secret struct {
	Name    string // the setting's name, e.g. "azure-client-secret"
	Env     string // e.g. CMK_AZURE_CLIENT_SECRET
	FileKey string // e.g. "azure-client-secret-file"
}

// EnvName returns the environment variable of the flag named name, or ""
// for a flag-only setting.
func EnvName(f *pflag.Flag) string {
	if FlagOnly(f) {
		return ""
	}
	if n, ok := envNames[f.Name]; ok {
		return n
	}
	return "CMK_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
}

// FlagOnly reports whether f is settable on the command line only.
func FlagOnly(f *pflag.Flag) bool {
	return len(f.Annotations[annotFlagOnly]) > 0 || f.Name == "help" || f.Name == "version"
}

// Setting is one setting as applied.
type Setting struct {
	Key    string `json:"key"`
	Env    string `json:"env,omitempty"`
	Value  string `json:"value"`
	Source Source `json:"source"`
	Secret bool   `json:"secret,omitempty"`
}

// Effective is the configuration as applied, for --print-config.
type Effective struct {
	File     string    `json:"file,omitempty"`
	Settings []Setting `json:"settings"`
}

// Error is a configuration mistake.
type Error struct {
	Setting string
	Value   string
	Source  Source
	Problem string
	Advice  string
}

func (e *Error) Error() string {
	where := ""
	switch e.Source {
	case FromFile:
		where = " in the configuration file"
	case FromEnv:
		where = " from the environment"
	}
	if e.Value == "" {
		return fmt.Sprintf("setting %s%s: %s", e.Setting, where, e.Problem)
	}
	return fmt.Sprintf("setting %s%s is %q: %s", e.Setting, where, e.Value, e.Problem)
}

// Hint is the advice for the person at the terminal.
func (e *Error) Hint() string { return e.Advice }

// Apply sets every flag of fs not given on the command line from the
// environment (lookup) or else from the JSON file named by file (may be
// ""), and reads the secrets. It returns the effective configuration and the
// secrets' values by name.
func Apply(fs *pflag.FlagSet, file string, lookup func(string) (string, bool), secrets []Secret) (*Effective, map[string]string, error) {
	values, err := readFile(file)
	if err != nil {
		return nil, nil, err
	}
	eff := &Effective{File: file}
	secretByName := map[string]Secret{}
	for _, s := range secrets {
		secretByName[s.Name] = s
	}
	// Every key of the file must be a setting the file may hold.
	var keys []string
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if s, ok := secretByName[k]; ok {
			return nil, nil, &Error{Setting: k, Source: FromFile, Problem: "a secret may not be written in the configuration file",
				Advice: fmt.Sprintf("put it in the environment variable %s, or in a file (mode 0600) named by the setting %q", s.Env, s.FileKey)}
		}
		f := fs.Lookup(k)
		if f == nil {
			return nil, nil, &Error{Setting: k, Source: FromFile, Problem: "no such setting",
				Advice: fmt.Sprintf("did you mean %q? The settings are the flags of --help, without the leading dashes", closest(k, fs, secrets))}
		}
		if FlagOnly(f) {
			return nil, nil, &Error{Setting: k, Source: FromFile, Problem: "this setting is taken on the command line only",
				Advice: fmt.Sprintf("pass --%s on the command line; it turns on a development mode and is never read from a file or the environment", k)}
		}
	}
	var applyErr error
	fs.VisitAll(func(f *pflag.Flag) {
		if applyErr != nil || f.Name == "help" || f.Name == "version" {
			return
		}
		env := EnvName(f)
		st := Setting{Key: f.Name, Env: env, Source: FromDefault}
		switch {
		case f.Changed:
			st.Source = FromFlag
		case env != "" && lookupSet(lookup, env):
			v, _ := lookup(env)
			if err := f.Value.Set(v); err != nil {
				applyErr = badValue(f, v, FromEnv, err)
				return
			}
			st.Source = FromEnv
		default:
			if raw, ok := values[f.Name]; ok {
				v, err := fileValue(f, raw)
				shown := v
				if err != nil {
					shown = string(raw)
				} else {
					err = f.Value.Set(v)
				}
				if err != nil {
					applyErr = badValue(f, shown, FromFile, err)
					return
				}
				st.Source = FromFile
			}
		}
		st.Value = valueString(f)
		if len(f.Annotations[annotSecret]) > 0 {
			st.Secret = true
			if st.Value != "" {
				st.Value = "(redacted)"
			}
		}
		eff.Settings = append(eff.Settings, st)
	})
	if applyErr != nil {
		return nil, nil, applyErr
	}
	got := map[string]string{}
	for _, s := range secrets {
		st := Setting{Key: s.Name, Env: s.Env, Source: FromDefault, Secret: true}
		fileSet := eff.get(s.FileKey)
		if v, ok := lookup(s.Env); ok && v != "" {
			if fileSet != nil && fileSet.Value != "" {
				return nil, nil, &Error{Setting: s.Name, Source: FromEnv, Problem: fmt.Sprintf("given twice: in %s and in the file named by %s", s.Env, s.FileKey),
					Advice: "keep one of the two"}
			}
			got[s.Name], st.Source = v, FromEnv
		} else if fileSet != nil && fileSet.Value != "" {
			b, err := os.ReadFile(fileSet.Value)
			if err != nil {
				return nil, nil, &Error{Setting: s.FileKey, Value: fileSet.Value, Source: fileSet.Source, Problem: "cannot be read: " + errText(err),
					Advice: fmt.Sprintf("name a readable file holding the secret, or put the secret in %s", s.Env)}
			}
			v := strings.TrimRight(string(b), "\r\n")
			if v == "" {
				return nil, nil, &Error{Setting: s.FileKey, Value: fileSet.Value, Source: fileSet.Source, Problem: "the file is empty",
					Advice: "write the secret in the file, or put it in " + s.Env}
			}
			got[s.Name], st.Source = v, fileSet.Source
		}
		if got[s.Name] != "" {
			st.Value = "(redacted)"
		}
		eff.Settings = append(eff.Settings, st)
	}
	sort.Slice(eff.Settings, func(i, j int) bool { return eff.Settings[i].Key < eff.Settings[j].Key })
	return eff, got, nil
}

func (e *Effective) get(key string) *Setting {
	for i := range e.Settings {
		if e.Settings[i].Key == key {
			return &e.Settings[i]
		}
	}
	return nil
}

// lookupSet: a variable set to "" counts as unset, as before.
func lookupSet(lookup func(string) (string, bool), name string) bool {
	v, ok := lookup(name)
	return ok && v != ""
}

// readFile reads the configuration file: one JSON object of settings.
func readFile(file string) (map[string]json.RawMessage, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, &Error{Setting: "config", Value: file, Source: FromFlag, Problem: "cannot be read: " + errText(err),
			Advice: "name a readable JSON file of settings (see docs/operations.md)"}
	}
	var values map[string]json.RawMessage
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&values); err != nil {
		return nil, &Error{Setting: "config", Value: file, Source: FromFlag, Problem: "is not a JSON object of settings: " + err.Error(),
			Advice: `write one object, e.g. {"addr": "0.0.0.0:8443", "check-interval": "30s"}`}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &Error{Setting: "config", Value: file, Source: FromFlag, Problem: "holds more than one JSON value",
			Advice: "keep one object of settings in the file"}
	}
	return values, nil
}

// fileValue turns a JSON value into the flag's text: a string, a number,
// a boolean, or (for a list setting) an array of strings.
func fileValue(f *pflag.Flag, raw json.RawMessage) (string, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", err
	}
	switch v := v.(type) {
	case string:
		return v, nil
	case bool:
		return fmt.Sprint(v), nil
	case float64:
		return string(raw), nil
	case []any:
		if !strings.HasSuffix(f.Value.Type(), "Slice") {
			return "", errors.New("a list is allowed only for a list setting")
		}
		parts := make([]string, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return "", errors.New("a list setting holds strings")
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	default:
		return "", errors.New("the value must be a string, a number, a boolean or a list of strings")
	}
}

// valueString is the flag's value as text (lists without brackets).
func valueString(f *pflag.Flag) string {
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		return strings.Join(sv.GetSlice(), ",")
	}
	return f.Value.String()
}

func badValue(f *pflag.Flag, v string, src Source, err error) error {
	return &Error{Setting: f.Name, Value: v, Source: src, Problem: fmt.Sprintf("not %s (%s)", allowed(f), errText(err)),
		Advice: fmt.Sprintf("%s takes %s: %s", f.Name, allowed(f), f.Usage)}
}

// allowed describes the values a flag takes.
func allowed(f *pflag.Flag) string {
	switch f.Value.Type() {
	case "duration":
		return "a duration such as 30s, 10m or 1h"
	case "int":
		return "a whole number"
	case "bool":
		return "a boolean, true or false"
	case "stringSlice":
		return "a comma-separated list (in the file, a list of strings)"
	default:
		return "a " + f.Value.Type()
	}
}

func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// closest returns the known setting nearest to k by edit distance.
func closest(k string, fs *pflag.FlagSet, secrets []Secret) string {
	best, bestD := "", -1
	try := func(name string) {
		if d := distance(k, name); bestD < 0 || d < bestD {
			best, bestD = name, d
		}
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if !FlagOnly(f) {
			try(f.Name)
		}
	})
	for _, s := range secrets {
		try(s.FileKey)
	}
	return best
}

// distance is the Levenshtein distance of a and b; '_' counts as '-'.
func distance(a, b string) int {
	a = strings.ReplaceAll(strings.ToLower(a), "_", "-")
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Print writes the effective configuration, one setting a line: key,
// value, source and environment variable. Secrets show as (redacted).
func (e *Effective) Print(w io.Writer) {
	if e.File != "" {
		fmt.Fprintf(w, "# configuration file: %s\n", e.File)
	}
	fmt.Fprintf(w, "# setting = value  (source; environment variable)\n")
	for _, s := range e.Settings {
		env := s.Env
		if env == "" {
			env = "flag only"
		}
		fmt.Fprintf(w, "%s = %q  (%s; %s)\n", s.Key, s.Value, s.Source, env)
	}
}
