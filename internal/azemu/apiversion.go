package azemu

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// DefaultAPIVersions are the Key Vault data-plane api-versions a vault
// accepts unless configured otherwise (Vault.APIVersions), oldest first:
// the stable versions the keys API has had and the previews the Go SDK's
// azkeys releases sent (from its changelog), up to "2025-07-01", the
// version azkeys v1.5.0 sends on every call.
var DefaultAPIVersions = []string{
	"2016-10-01", "7.0", "7.1", "7.2", "7.3-preview", "7.3", "7.4-preview.1", "7.4",
	"7.5-preview.1", "7.5", "7.6-preview.1", "7.6-preview.2", "7.6", "2025-07-01",
}

// apiVersionRE is the shape of a Key Vault api-version.
var apiVersionRE = regexp.MustCompile(`^(7\.\d+(-preview(\.\d+)?)?|20\d\d-\d\d-\d\d(-preview)?)$`)

// normalizeAPIVersions checks a vault's configured api-versions.
func normalizeAPIVersions(v *Vault) error {
	if len(v.APIVersions) == 0 {
		v.APIVersions = nil
		return nil
	}
	out := make([]string, 0, len(v.APIVersions))
	for _, s := range v.APIVersions {
		s = strings.TrimSpace(s)
		if !apiVersionRE.MatchString(s) {
			return fmt.Errorf("%w: api-version %q: want the form 7.N, 7.N-preview.N or YYYY-MM-DD", ErrInvalid, s)
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	v.APIVersions = out
	return nil
}

func (v *Vault) acceptedAPIVersions() []string {
	if len(v.APIVersions) > 0 {
		return v.APIVersions
	}
	return DefaultAPIVersions
}

// latestStable is the newest non-preview version of a list ordered oldest
// first (the last one when all are previews).
func latestStable(versions []string) string {
	for i := len(versions) - 1; i >= 0; i-- {
		if !strings.Contains(versions[i], "preview") {
			return versions[i]
		}
	}
	return versions[len(versions)-1]
}

// checkAPIVersion returns the message of the 400 BadParameter the vault
// answers to a missing or unknown api-version, or "" when it accepts it.
// Key Vault answers 400 BadParameter to a version it does not know; the
// texts are the emulator's (not in azure-errors.md, so unverified).
func checkAPIVersion(v *Vault, apiVer string) string {
	accepted := v.acceptedAPIVersions()
	if apiVer == "" {
		return fmt.Sprintf("The request URI contains an invalid or missing 'api-version' query parameter. Consider using the latest supported version (%s).", latestStable(accepted))
	}
	for _, a := range accepted {
		if strings.EqualFold(a, apiVer) {
			return ""
		}
	}
	return fmt.Sprintf("The specified version (%s) is not recognized. Consider using the latest supported version (%s).", apiVer, latestStable(accepted))
}

// SetAPIVersions sets the api-versions a vault accepts (oldest first); none
// restores DefaultAPIVersions.
func (e *Emulator) SetAPIVersions(vault string, versions ...string) error {
	if versions == nil {
		versions = []string{}
	}
	return e.PatchVault(vault, VaultPatch{APIVersions: versions})
}
