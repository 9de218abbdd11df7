package keyid_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/cmk-project/cmk/internal/keyid"
	"github.com/cmk-project/cmk/internal/kms"
)

const ver = "7c1d50lo28234cc895534c00d7eb4eb4" // the seed's example version

func TestParseAccepts(t *testing.T) {
	emu := keyid.Policy{ExtraSuffixes: []string{"vault.azure.localhost"}}
	tests := []struct {
		policy keyid.Policy
		raw    string
		want   keyid.ID
	}{
		{raw: "https://adobecmkexample.vault.azure.net/keys/adobeCMK-key/" + ver,
			want: keyid.ID{VaultURL: "https://adobecmkexample.vault.azure.net", VaultName: "adobecmkexample", Name: "adobeCMK-key", Version: ver}},
		{raw: "https://myvault.vault.azure.net/keys/k1",
			want: keyid.ID{VaultURL: "https://myvault.vault.azure.net", VaultName: "myvault", Name: "k1"}},
		{raw: "https://myvault.vault.azure.net/keys/k1/",
			want: keyid.ID{VaultURL: "https://myvault.vault.azure.net", VaultName: "myvault", Name: "k1"}},
		{raw: "https://myvault.vault.azure.net:443/keys/k1/" + ver + "/",
			want: keyid.ID{VaultURL: "https://myvault.vault.azure.net", VaultName: "myvault", Name: "k1", Version: ver}},
		{raw: "  HTTPS://ContosoKeyVault.Vault.Azure.NET/keys/Key-1\n",
			want: keyid.ID{VaultURL: "https://contosokeyvault.vault.azure.net", VaultName: "contosokeyvault", Name: "Key-1"}},
		{raw: "https://my-hsm.managedhsm.azure.net/keys/k",
			want: keyid.ID{VaultURL: "https://my-hsm.managedhsm.azure.net", VaultName: "my-hsm", Name: "k", ManagedHSM: true}},
		{raw: "https://cn-vault.vault.azure.cn/keys/k",
			want: keyid.ID{VaultURL: "https://cn-vault.vault.azure.cn", VaultName: "cn-vault", Name: "k"}},
		{raw: "https://gov1.vault.usgovcloudapi.net/keys/k/ABCDEF0123456789abcdef0123456789",
			want: keyid.ID{VaultURL: "https://gov1.vault.usgovcloudapi.net", VaultName: "gov1", Name: "k", Version: "ABCDEF0123456789abcdef0123456789"}},
		{raw: "https://abc.vault.azure.net/keys/" + strings.Repeat("k", 127),
			want: keyid.ID{VaultURL: "https://abc.vault.azure.net", VaultName: "abc", Name: strings.Repeat("k", 127)}},
		{raw: "https://a" + strings.Repeat("b", 23) + ".vault.azure.net/keys/k",
			want: keyid.ID{VaultURL: "https://a" + strings.Repeat("b", 23) + ".vault.azure.net", VaultName: "a" + strings.Repeat("b", 23), Name: "k"}},
		{policy: emu, raw: "https://myvault.vault.azure.localhost/keys/k",
			want: keyid.ID{VaultURL: "https://myvault.vault.azure.localhost", VaultName: "myvault", Name: "k"}},
		{raw: "https://myvault.vault.azure.net/keys/k" + strings.Repeat(" ", keyid.MaxLength-38),
			want: keyid.ID{VaultURL: "https://myvault.vault.azure.net", VaultName: "myvault", Name: "k"}},
	}
	for _, tt := range tests {
		got, err := tt.policy.Parse(tt.raw)
		if err != nil {
			t.Errorf("Parse(%q) error = %v, want nil", tt.raw, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tt.raw, got, tt.want)
		}
		if again, err := tt.policy.Parse(got.String()); err != nil || again != got {
			t.Errorf("Parse(%q) = %+v, %v, want %+v", got.String(), again, err, got)
		}
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name, raw string
		reason    string // substring of the human reason
	}{
		{"empty", "", "empty"},
		{"blank", "   ", "empty"},
		{"not a URL", "myvault/keys/k", "no scheme"},
		{"no scheme", "myvault.vault.azure.net/keys/k", "no scheme"},
		{"opaque", "https:myvault.vault.azure.net/keys/k", "not a URL"},
		{"bad URL", "https://myvault.vault.azure.net:abc/keys/k", "not a URL"},
		{"http", "http://myvault.vault.azure.net/keys/k", `scheme "http"`},
		{"ftp", "ftp://myvault.vault.azure.net/keys/k", `scheme "ftp"`},
		{"userinfo", "https://user:pw@myvault.vault.azure.net/keys/k", "user name or password"},
		{"user only", "https://user@myvault.vault.azure.net/keys/k", "user name or password"},
		{"ipv4", "https://10.0.0.1/keys/k", "IP address"},
		{"ipv4 port", "https://127.0.0.1:443/keys/k", "IP address"},
		{"ipv6", "https://[::1]/keys/k", "IP address"},
		{"ipv6 mapped", "https://[::ffff:10.0.0.1]:443/keys/k", "IP address"},
		{"port 8443", "https://myvault.vault.azure.net:8443/keys/k", `port "8443"`},
		{"port 80", "https://myvault.vault.azure.net:80/keys/k", `port "80"`},
		{"empty port", "https://myvault.vault.azure.net:/keys/k", `port ""`},
		{"evil host", "https://evil.com/keys/k", "not a Key Vault"},
		{"suffix as prefix", "https://myvault.vault.azure.net.evil.com/keys/k", "not a Key Vault"},
		{"bare suffix", "https://vault.azure.net/keys/k", "not a Key Vault"},
		{"lookalike", "https://myvault.vaultazure.net/keys/k", "not a Key Vault"},
		{"lookalike2", "https://myvault-vault.azure.net/keys/k", "not a Key Vault"},
		{"emulator not configured", "https://myvault.vault.azure.localhost/keys/k", "not a Key Vault"},
		{"two labels", "https://sub.sub.vault.azure.net/keys/k", "more than one label"},
		{"trailing dot", "https://myvault.vault.azure.net./keys/k", "ends with a dot"},
		{"vault too short", "https://ab.vault.azure.net/keys/k", "2 characters"},
		{"vault too long", "https://a" + strings.Repeat("b", 24) + ".vault.azure.net/keys/k", "25 characters"},
		{"vault digit first", "https://1vault.vault.azure.net/keys/k", "start with a letter"},
		{"vault hyphen first", "https://-vault.vault.azure.net/keys/k", "start with a letter"},
		{"vault hyphen end", "https://vault-.vault.azure.net/keys/k", "ends with a hyphen"},
		{"vault double hyphen", "https://my--vault.vault.azure.net/keys/k", "two hyphens"},
		{"vault underscore", "https://my_vault.vault.azure.net/keys/k", "contains '_'"},
		{"no path", "https://myvault.vault.azure.net", "no key"},
		{"root path", "https://myvault.vault.azure.net/", "no key"},
		{"keys only", "https://myvault.vault.azure.net/keys", "no key"},
		{"keys slash", "https://myvault.vault.azure.net/keys/", "no key name"},
		{"secrets", "https://myvault.vault.azure.net/secrets/k", "not a key path"},
		{"Keys capital", "https://myvault.vault.azure.net/Keys/k", "not a key path"},
		{"double slash", "https://myvault.vault.azure.net//keys/k", "not a key path"},
		{"empty name", "https://myvault.vault.azure.net/keys//" + ver, "0 characters"},
		{"name too long", "https://myvault.vault.azure.net/keys/" + strings.Repeat("k", 128), "128 characters"},
		{"name underscore", "https://myvault.vault.azure.net/keys/my_key", "contains '_'"},
		{"name dotdot", "https://myvault.vault.azure.net/keys/../secrets", "contains '.'"},
		{"short version", "https://myvault.vault.azure.net/keys/k/abc", "3 characters"},
		{"long version", "https://myvault.vault.azure.net/keys/k/" + ver + "0", "33 characters"},
		{"version symbol", "https://myvault.vault.azure.net/keys/k/" + ver[:31] + "-", "contains '-'"},
		{"extra segment", "https://myvault.vault.azure.net/keys/k/" + ver + "/wrapkey", "extra segments"},
		{"extra slash", "https://myvault.vault.azure.net/keys/k//", "version \"\" is 0 characters"},
		{"query", "https://myvault.vault.azure.net/keys/k?api-version=7.4", "query"},
		{"empty query", "https://myvault.vault.azure.net/keys/k?", "query"},
		{"fragment", "https://myvault.vault.azure.net/keys/k#x", "fragment"},
		{"empty fragment", "https://myvault.vault.azure.net/keys/k#", "fragment"},
		{"percent path", "https://myvault.vault.azure.net/keys/k%2Fx", "percent-encoded"},
		{"percent host", "https://myvault%2evault.azure.net/keys/k", "percent-encoded"},
		{"percent dot", "https://myvault.vault.azure.net/keys/%2e%2e/secrets", "percent-encoded"},
		{"backslash", `https://myvault.vault.azure.net\@evil.com/keys/k`, "backslash"},
		{"space inside", "https://myvault.vault.azure.net/keys/my key", "spaces"},
		{"tab", "https://myvault.vault.azure.net/keys/k\t/x", "spaces"},
		{"nul", "https://myvault.vault.azure.net/keys/k\x00", "control"},
		{"unicode host", "https://myvаult.vault.azure.net/keys/k", "non-ASCII"}, // Cyrillic a
		{"too long", "https://myvault.vault.azure.net/keys/k" + strings.Repeat(" ", 50<<10), "51238 bytes long; at most 2048"},
		{"too long by one", "https://myvault.vault.azure.net/keys/k" + strings.Repeat(" ", keyid.MaxLength-37), "2049 bytes long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := keyid.Parse(tt.raw)
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, nil, want error", tt.raw, got)
			}
			var ke *kms.Error
			if !errors.As(err, &ke) || ke.Kind != kms.KindMalformedKeyURI || ke.Op != "parse" {
				t.Fatalf("Parse(%q) error = %#v, want *kms.Error{Kind: %s, Op: parse}", tt.raw, err, kms.KindMalformedKeyURI)
			}
			var pe *keyid.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q) error = %v, want it to wrap *ParseError", tt.raw, err)
			}
			if !strings.Contains(pe.Reason, tt.reason) {
				t.Errorf("Parse(%q) reason = %q, want it to contain %q", tt.raw, pe.Reason, tt.reason)
			}
			if strings.ContainsAny(ke.Key, "\x00\t\n") {
				t.Errorf("Parse(%q) error Key = %q, want printable", tt.raw, ke.Key)
			}
		})
	}
}

func TestRef(t *testing.T) {
	id, err := keyid.Parse("https://MyVault.vault.azure.net/keys/k1/" + ver)
	if err != nil {
		t.Fatal(err)
	}
	got, want := id.Ref(), (kms.KeyRef{VaultURL: "https://myvault.vault.azure.net", Name: "k1"})
	if got != want {
		t.Errorf("Ref() = %+v, want %+v", got, want)
	}
	if got.String() != "https://myvault.vault.azure.net/keys/k1" {
		t.Errorf("Ref().String() = %q, want %q", got.String(), "https://myvault.vault.azure.net/keys/k1")
	}
}

func TestAllowedHost(t *testing.T) {
	p := keyid.Policy{ExtraSuffixes: []string{".Vault.Azure.Localhost."}}
	tests := []struct {
		host string
		want bool
	}{
		{"myvault.vault.azure.net", true},
		{"MYVAULT.VAULT.AZURE.NET", true},
		{"myvault.vault.azure.localhost", true},
		{"vault.azure.net", false},
		{"a.b.vault.azure.net", false},
		{"myvault.vault.azure.net.evil.com", false},
		{"myvault.vault.azure.net:443", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := p.AllowedHost(tt.host); got != tt.want {
			t.Errorf("AllowedHost(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"https://adobecmkexample.vault.azure.net/keys/adobeCMK-key/" + ver,
		"https://myvault.vault.azure.net:443/keys/k/",
		"https://my-hsm.managedhsm.azure.net/keys/k",
		"https://myvault.vault.azure.localhost/keys/k",
		"https://user@myvault.vault.azure.net/keys/k",
		"https://[::1]:443/keys/k",
		"https://myvault.vault.azure.net.evil.com/keys/k",
		"https://myvault.vault.azure.net/keys/%2e%2e",
		" HTTPS://MyVault.Vault.Azure.NET:443/keys/K-1/" + ver + "/ \n",
		"https://myvault.vault.azure.net/keys/k" + strings.Repeat(" ", keyid.MaxLength),
		"",
	} {
		f.Add(s)
	}
	p := keyid.Policy{ExtraSuffixes: []string{"vault.azure.localhost"}}
	f.Fuzz(func(t *testing.T, raw string) {
		id, err := p.Parse(raw)
		if err != nil {
			if kms.KindOf(err) != kms.KindMalformedKeyURI {
				t.Fatalf("Parse(%q) error kind = %q, want %q", raw, kms.KindOf(err), kms.KindMalformedKeyURI)
			}
			return
		}
		again, err := p.Parse(id.String())
		if err != nil || again != id {
			t.Fatalf("Parse(%q) = %+v, %v, want %+v", id.String(), again, err, id)
		}
		if len(raw) > keyid.MaxLength || len(id.String()) > len(strings.TrimSpace(raw)) {
			t.Fatalf("Parse(%q) accepted %d bytes as %q", raw, len(raw), id.String())
		}
		u, err := url.Parse(id.VaultURL)
		if err != nil || u.Scheme != "https" || u.Port() != "" || u.Path != "" || !p.AllowedHost(u.Host) {
			t.Fatalf("Parse(%q).VaultURL = %q, want https://{allowed host}", raw, id.VaultURL)
		}
		if u.Host != strings.ToLower(u.Host) {
			t.Fatalf("Parse(%q).VaultURL host = %q, want lowercase", raw, u.Host)
		}
	})
}
