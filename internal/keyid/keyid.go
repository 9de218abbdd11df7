// Package keyid parses Azure Key Vault key identifiers and decides, before
// any network call, whether cmk may talk to the host they name.
//
// A key identifier is accepted only in the form
//
//	https://{vault}.{suffix}[:443]/keys/{name}[/{version}][/]
//
// where {suffix} is one of the Key Vault or Managed HSM domains of the Azure
// clouds (DefaultSuffixes) or a suffix the operator configured on purpose
// (Policy.ExtraSuffixes, e.g. the local emulator's). Anything else is
// refused with a *kms.Error of kind kms.KindMalformedKeyURI whose Err is a
// *ParseError explaining, in words meant for a person, what was wrong and
// what a valid identifier looks like.
//
// The parser is deliberately strict: percent-encoding, IP literals, user
// information, odd ports, queries, fragments and extra path segments are all
// refused, because the host of an accepted identifier is later contacted
// with the platform's credentials.
package keyid

import (
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/cmk-project/cmk/internal/kms"
)

// DefaultSuffixes are the DNS suffixes of Key Vault and Managed HSM in the
// public and sovereign Azure clouds. A vault host must be exactly one label
// followed by one of these (or by a Policy.ExtraSuffixes entry).
var DefaultSuffixes = []string{
	"vault.azure.net",
	"vault.azure.cn",
	"vault.usgovcloudapi.net",
	"vault.microsoftazure.de",
	"managedhsm.azure.net",
	"managedhsm.azure.cn",
	"managedhsm.usgovcloudapi.net",
}

// Limits from the Azure naming rules for vaults and keys.
const (
	minVaultName  = 3
	maxVaultName  = 24
	maxKeyName    = 127
	versionLength = 32 // Key Vault key versions are 32 characters
)

// MaxLength bounds a key identifier as sent, surrounding spaces included. The
// longest valid one (a 24-letter vault on the longest suffix, a 127-letter
// key name and a version) is under 250 bytes; 2 KiB leaves room for a pasted
// line with its spaces and refuses a body padded to fill a request.
const MaxLength = 2 << 10

// example is what the error messages offer as a model of a valid identifier.
const example = "https://{vault-name}.vault.azure.net/keys/{key-name}"

// ID is a parsed, allowed Key Vault key identifier.
type ID struct {
	VaultURL   string // https://{host}, host lowercased, no port, no trailing slash
	VaultName  string // first label of the host, lowercased
	Name       string // key name, as given
	Version    string // key version, "" when the identifier names no version
	ManagedHSM bool   // the host is a Managed HSM rather than a vault
}

// Ref returns the versionless reference cmk keeps for the key.
func (id ID) Ref() kms.KeyRef { return kms.KeyRef{VaultURL: id.VaultURL, Name: id.Name} }

// String returns the canonical form of the identifier, which parses back to id.
func (id ID) String() string {
	s := id.VaultURL + "/keys/" + id.Name
	if id.Version != "" {
		s += "/" + id.Version
	}
	return s
}

// ParseError says why a key identifier was refused. Reason is a complete
// sentence meant for the person who typed the identifier.
type ParseError struct {
	Reason string
}

func (e *ParseError) Error() string { return e.Reason }

// Policy decides which hosts a key identifier may name.
// The zero Policy allows exactly DefaultSuffixes.
type Policy struct {
	// ExtraSuffixes are DNS suffixes allowed in addition to DefaultSuffixes,
	// such as the local emulator's "vault.azure.localhost". Set them only in
	// configurations that really talk to such a host.
	ExtraSuffixes []string
}

// Parse parses raw with the zero Policy (public and sovereign clouds only).
func Parse(raw string) (ID, error) { return Policy{}.Parse(raw) }

// Parse parses raw and checks it against the policy. The error, when not
// nil, is a *kms.Error of kind kms.KindMalformedKeyURI wrapping a *ParseError.
// Surrounding spaces are ignored; what cmk stores and shows is the ID's
// canonical String, never raw.
func (p Policy) Parse(raw string) (ID, error) {
	var id ID
	var reason string
	if len(raw) > MaxLength {
		reason = fmt.Sprintf("the key identifier is %d bytes long; at most %d are accepted (a Key Vault key identifier is under 250), e.g. %s", len(raw), MaxLength, example)
	} else {
		id, reason = p.parse(strings.TrimSpace(raw))
	}
	if reason != "" {
		return ID{}, &kms.Error{
			Kind: kms.KindMalformedKeyURI,
			Op:   "parse",
			Key:  printable(raw),
			Err:  &ParseError{Reason: reason},
		}
	}
	return id, nil
}

// ParseVault parses the URL of a vault itself, "https://{vault}.{suffix}"
// with an optional trailing slash (as Key Vault's events name a vault), with
// the same rules as Parse. The ID has no key name.
func (p Policy) ParseVault(raw string) (ID, error) {
	t := strings.TrimSuffix(strings.TrimSpace(raw), "/")
	if len(raw) > MaxLength || strings.Count(t, "/") != 2 {
		return ID{}, &kms.Error{Kind: kms.KindMalformedKeyURI, Op: "parse", Key: printable(raw),
			Err: &ParseError{Reason: "a vault URL is https://{vault-name}.vault.azure.net, with no path"}}
	}
	id, err := p.Parse(t + "/keys/vault")
	if err != nil {
		return ID{}, err
	}
	id.Name = ""
	return id, nil
}

// AllowedHost reports whether host (without a port) is exactly one valid
// vault label followed by an allowed suffix.
func (p Policy) AllowedHost(host string) bool {
	_, _, reason := p.splitHost(host)
	return reason == ""
}

func (p Policy) parse(raw string) (ID, string) {
	if raw == "" {
		return ID{}, "the key identifier is empty; expected " + example
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c <= ' ' || c >= 0x7f {
			return ID{}, "the key identifier contains spaces, control or non-ASCII characters; expected " + example
		}
	}
	if strings.ContainsRune(raw, '%') {
		return ID{}, "the key identifier contains percent-encoded characters, which are not allowed; write it plainly, e.g. " + example
	}
	if strings.ContainsRune(raw, '\\') {
		return ID{}, "the key identifier contains a backslash; expected " + example
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" {
		return ID{}, "the key identifier is not a URL; expected " + example
	}
	switch {
	case u.Scheme == "":
		return ID{}, "the key identifier has no scheme; it must start with https://, e.g. " + example
	case !strings.EqualFold(u.Scheme, "https"):
		return ID{}, fmt.Sprintf("the key identifier uses the scheme %q; only https is allowed, e.g. %s", u.Scheme, example)
	case u.User != nil || strings.ContainsRune(u.Host, '@'):
		return ID{}, "the key identifier contains a user name or password before the host, which is not allowed; expected " + example
	case u.RawQuery != "" || u.ForceQuery:
		return ID{}, "the key identifier has a query string (?...), which is not allowed; expected " + example
	case u.Fragment != "" || strings.ContainsRune(raw, '#'):
		return ID{}, "the key identifier has a fragment (#...), which is not allowed; expected " + example
	case u.Host == "":
		return ID{}, "the key identifier has no host; expected " + example
	}

	host, port := u.Hostname(), u.Port()
	if strings.HasPrefix(u.Host, "[") || net.ParseIP(host) != nil {
		return ID{}, fmt.Sprintf("the key identifier names the IP address %s; it must name the vault by its DNS name, e.g. %s", host, example)
	}
	if strings.HasSuffix(u.Host, ":") || (port != "" && port != "443") {
		return ID{}, fmt.Sprintf("the key identifier uses port %q; Key Vault is reached on the default HTTPS port (443) only, e.g. %s", port, example)
	}
	vault, suffix, reason := p.splitHost(host)
	if reason != "" {
		return ID{}, reason
	}

	name, version, reason := splitPath(u.Path)
	if reason != "" {
		return ID{}, reason
	}
	return ID{
		VaultURL:   "https://" + vault + "." + suffix,
		VaultName:  vault,
		Name:       name,
		Version:    version,
		ManagedHSM: strings.HasPrefix(suffix, "managedhsm."),
	}, ""
}

// splitHost returns the lowercased vault label and allowed suffix of host.
func (p Policy) splitHost(host string) (vault, suffix, reason string) {
	h := strings.ToLower(host)
	if strings.HasSuffix(h, ".") {
		return "", "", fmt.Sprintf("the host %q ends with a dot; expected a host such as {vault-name}.vault.azure.net", host)
	}
	best := ""
	for _, s := range p.suffixes() {
		if strings.HasSuffix(h, "."+s) && len(s) > len(best) {
			best = s
		}
	}
	if best == "" {
		return "", "", fmt.Sprintf("the host %q is not a Key Vault or Managed HSM host; allowed hosts are {vault-name}.%s", host, strings.Join(p.suffixes(), ", {vault-name}."))
	}
	label := strings.TrimSuffix(h, "."+best)
	if strings.Contains(label, ".") {
		return "", "", fmt.Sprintf("the host %q has more than one label before %q; expected exactly {vault-name}.%s", host, best, best)
	}
	if r := checkVaultName(label); r != "" {
		return "", "", r
	}
	return label, best, ""
}

func (p Policy) suffixes() []string {
	if len(p.ExtraSuffixes) == 0 {
		return DefaultSuffixes
	}
	all := append([]string(nil), DefaultSuffixes...)
	for _, s := range p.ExtraSuffixes {
		s = strings.Trim(strings.ToLower(strings.TrimSpace(s)), ".")
		if s != "" {
			all = append(all, s)
		}
	}
	return all
}

func checkVaultName(v string) string {
	const rule = "vault names are 3 to 24 letters, digits and hyphens, start with a letter, do not end with a hyphen and have no two hyphens in a row"
	switch {
	case len(v) < minVaultName || len(v) > maxVaultName:
		return fmt.Sprintf("the vault name %q is %d characters long; %s", v, len(v), rule)
	case v[0] < 'a' || v[0] > 'z':
		return fmt.Sprintf("the vault name %q does not start with a letter; %s", v, rule)
	case strings.HasSuffix(v, "-"):
		return fmt.Sprintf("the vault name %q ends with a hyphen; %s", v, rule)
	case strings.Contains(v, "--"):
		return fmt.Sprintf("the vault name %q has two hyphens in a row; %s", v, rule)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; !isAlnum(c) && c != '-' {
			return fmt.Sprintf("the vault name %q contains %q; %s", v, c, rule)
		}
	}
	return ""
}

// splitPath accepts /keys/{name}[/{version}][/].
func splitPath(path string) (name, version, reason string) {
	rest, ok := strings.CutPrefix(path, "/keys/")
	if !ok {
		if path == "" || path == "/" || path == "/keys" {
			return "", "", "the key identifier names the vault but no key; expected " + example
		}
		return "", "", fmt.Sprintf("the path %q is not a key path; expected /keys/{key-name}, e.g. %s", path, example)
	}
	rest = strings.TrimSuffix(rest, "/")
	if rest == "" {
		return "", "", "the key identifier has no key name after /keys/; expected " + example
	}
	segs := strings.Split(rest, "/")
	if len(segs) > 2 {
		return "", "", fmt.Sprintf("the path %q has extra segments; expected /keys/{key-name} or /keys/{key-name}/{version}", path)
	}
	name = segs[0]
	if r := checkKeyName(name); r != "" {
		return "", "", r
	}
	if len(segs) == 2 {
		version = segs[1]
		if r := checkVersion(version); r != "" {
			return "", "", r
		}
	}
	return name, version, ""
}

func checkKeyName(n string) string {
	const rule = "key names are 1 to 127 letters, digits and hyphens"
	if n == "" || len(n) > maxKeyName {
		return fmt.Sprintf("the key name is %d characters long; %s", len(n), rule)
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; !isAlnum(c) && c != '-' {
			return fmt.Sprintf("the key name %q contains %q; %s", n, c, rule)
		}
	}
	return ""
}

// CheckVersion reports whether v looks like a Key Vault key version.
func CheckVersion(v string) error {
	if r := checkVersion(v); r != "" {
		return &ParseError{Reason: r}
	}
	return nil
}

func checkVersion(v string) string {
	const rule = "a key version is 32 letters and digits, e.g. 7c1d50lo28234cc895534c00d7eb4eb4"
	if len(v) != versionLength {
		return fmt.Sprintf("the key version %q is %d characters long; %s", v, len(v), rule)
	}
	for i := 0; i < len(v); i++ {
		if !isAlnum(v[i]) {
			return fmt.Sprintf("the key version %q contains %q; %s", v, v[i], rule)
		}
	}
	return ""
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// printable returns raw cut to a loggable length, with anything but
// printable ASCII replaced, so a refused identifier can go into errors and
// logs without carrying control characters.
func printable(raw string) string {
	const max = 256
	var b strings.Builder
	for i := 0; i < len(raw) && b.Len() < max; i++ {
		if c := raw[i]; c >= ' ' && c < 0x7f {
			b.WriteByte(c)
		} else {
			b.WriteByte('?')
		}
	}
	if len(raw) > max {
		b.WriteString("...")
	}
	return b.String()
}
