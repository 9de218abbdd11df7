package guidance

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/kms"
)

// azCommand is an Azure CLI command in a step, to the end of the step.
var azCommand = regexp.MustCompile(`\baz keyvault .*`)

// TestRemediesArePlainAndNamed: every step of every code, of every alert
// kind and of the expiry warning is plain text (no Markdown backticks, as
// the CLI and alerts print it as is), and every Azure CLI command in one
// names the real vault (or Managed HSM) and key, never a placeholder.
func TestRemediesArePlainAndNamed(t *testing.T) {
	env := Env{AppName: "Acme Data Platform", AppID: "0b4f2a8e-1c3d-4e5f-8a9b-0c1d2e3f4a5b", ConsentURL: "https://login.example/consent"}
	for _, tt := range []struct {
		name  string
		ref   kms.KeyRef
		vault string // the vault flag and value a command must carry
	}{
		{"vault", kms.KeyRef{VaultURL: "https://contoso.vault.azure.net", Name: "cmk-key"}, "--vault-name contoso"},
		{"managed hsm", kms.KeyRef{VaultURL: "https://contoso-hsm.managedhsm.azure.net", Name: "cmk-key"}, "--hsm-name contoso-hsm"},
	} {
		var lines []string
		add := func(what string, steps []string) {
			for _, s := range steps {
				lines = append(lines, what+": "+s)
			}
		}
		for code := range catalog {
			add(code, Steps(code, env, tt.ref))
			for kind := range alertKinds {
				for _, blocked := range []bool{false, true} {
					d := Alert(kind, code, "what the check found", blocked, env, tt.ref)
					add(kind+"/"+code, d.Steps)
					add(kind+"/"+code+" probable", d.ProbableCauses)
					add(kind+"/"+code+" summary", []string{d.Summary})
				}
			}
		}
		exp := ExpiryAlert(time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC), time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), 7, env, tt.ref)
		add("expiry", exp.Steps)
		add("retry", RetrySteps())

		commands := 0
		for _, l := range lines {
			if strings.Contains(l, "`") {
				t.Errorf("%s: step has Markdown backticks: %q", tt.name, l)
			}
			cmd := azCommand.FindString(l)
			if cmd == "" {
				continue
			}
			commands++
			if strings.Contains(cmd, "<") || (!strings.Contains(cmd, tt.vault) && !strings.Contains(cmd, "--name contoso")) {
				t.Errorf("%s: command %q does not name the vault (%s)", tt.name, cmd, tt.vault)
			}
			if strings.HasPrefix(cmd, "az keyvault key ") && !strings.Contains(cmd, tt.vault+" --name cmk-key") {
				t.Errorf("%s: key command %q does not name the key (%s --name cmk-key)", tt.name, cmd, tt.vault)
			}
			if strings.HasPrefix(cmd, "az keyvault role assignment") && !strings.Contains(cmd, "--assignee "+env.AppID) {
				t.Errorf("%s: role command %q does not name the app", tt.name, cmd)
			}
		}
		if commands == 0 {
			t.Errorf("%s: no Azure CLI command found in %d lines; the test reads nothing", tt.name, len(lines))
		}
	}
	// The commands this test relies on being there.
	ref := kms.KeyRef{VaultURL: "https://contoso.vault.azure.net", Name: "cmk-key"}
	for code, want := range map[string]string{
		string(kms.KindKeyDisabled):          "az keyvault key set-attributes --vault-name contoso --name cmk-key --enabled true",
		string(kms.KindKeyNotFound):          "az keyvault key recover --vault-name contoso --name cmk-key",
		string(kms.KindVaultDNSUnresolvable): "az keyvault recover --name contoso",
		cmkapi.CauseKeyNearExpiry:            "az keyvault key rotate --vault-name contoso --name cmk-key",
	} {
		if got := strings.Join(Steps(code, env, ref), "\n"); !strings.Contains(got, want) {
			t.Errorf("Steps(%s) = %q, want %q", code, got, want)
		}
	}
}
