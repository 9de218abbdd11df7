package guidance_test

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/guidance"
	"github.com/cmk-project/cmk/internal/kms"
)

var (
	ref = kms.KeyRef{VaultURL: "https://contoso.vault.azure.net", Name: "cmk-key"}
	env = guidance.Env{AppName: "Acme Data Platform", AppID: "0b4f2a8e-1c3d-4e5f-8a9b-0c1d2e3f4a5b",
		ConsentURL: "https://login.microsoftonline.com/common/adminconsent?client_id=0b4f2a8e-1c3d-4e5f-8a9b-0c1d2e3f4a5b"}
)

// noVerdict are the kinds that say nothing about the key itself, so they
// have no steps of their own (the package doc's promise).
func noVerdict(k kms.Kind) bool { return k.Transient() || k == kms.KindInvalidRequest }

// TestEveryKindHasText is the package's guarantee: every kms.Kind has a
// title and a one-sentence cause, and steps exactly when it is a verdict on
// the key. A new Kind fails here until it has its words.
func TestEveryKindHasText(t *testing.T) {
	for _, k := range kms.Kinds {
		checkText(t, string(k), !noVerdict(k))
	}
}

// TestEveryOtherCodeHasText covers the codes that are not kms kinds.
func TestEveryOtherCodeHasText(t *testing.T) {
	for _, tt := range []struct {
		code      string
		withSteps bool
	}{
		{cmkapi.CodeKeyNotBound, true},
		{cmkapi.CodeKeyInUse, true},
		{cmkapi.CodeKeyTypeUnsupported, true},
		{cmkapi.CodeKeyTooSmall, true},
		{cmkapi.CodeSoftDeleteDisabled, true},
		{cmkapi.CodePurgeProtectionDisabled, true},
		{cmkapi.CauseFlapping, false},       // the alert kind's steps apply
		{cmkapi.CauseGraceExhausted, false}, // the alert kind's steps apply
		{cmkapi.CauseKeyNearExpiry, true},
	} {
		checkText(t, tt.code, tt.withSteps)
	}
}

func checkText(t *testing.T, code string, withSteps bool) {
	t.Helper()
	if got := guidance.Title(code); got == "" || strings.HasSuffix(got, ".") {
		t.Errorf("Title(%s) = %q, want a short name without a final period", code, got)
	}
	if got := guidance.Cause(code); !oneSentence(got) {
		t.Errorf("Cause(%s) = %q, want one sentence ending in a period", code, got)
	}
	for _, e := range []guidance.Env{env, {}} {
		steps := guidance.Steps(code, e, ref)
		switch {
		case withSteps && len(steps) == 0:
			t.Errorf("Steps(%s, %+v) = none, want numbered steps", code, e)
		case !withSteps && steps != nil:
			t.Errorf("Steps(%s, %+v) = %q, want nil (no verdict on the key: callers fall back)", code, e, steps)
		}
		for i, s := range steps {
			// A step ends in a period, or with the Azure CLI command it
			// gives (nothing after it to be copied along).
			if !strings.HasSuffix(s, ".") && !strings.Contains(s, "With the Azure CLI") {
				t.Errorf("Steps(%s)[%d] = %q, want a sentence ending in a period", code, i, s)
			}
		}
	}
}

func oneSentence(s string) bool {
	return s != "" && strings.HasSuffix(s, ".") && !strings.Contains(strings.TrimSuffix(s, "."), ". ")
}

func TestUnknownCode(t *testing.T) {
	if got := guidance.Title("NO_SUCH_CODE"); got != "" {
		t.Errorf(`Title("NO_SUCH_CODE") = %q, want ""`, got)
	}
	if got := guidance.Cause("NO_SUCH_CODE"); got != "" {
		t.Errorf(`Cause("NO_SUCH_CODE") = %q, want ""`, got)
	}
	if got := guidance.Steps("NO_SUCH_CODE", env, ref); got != nil {
		t.Errorf(`Steps("NO_SUCH_CODE") = %q, want nil`, got)
	}
}

// TestStepsName checks that the steps name the customer's key and vault and
// the platform's app where they should, and read well without an Env.
func TestStepsName(t *testing.T) {
	bits := strconv.Itoa(kms.MinRSABits)
	for _, tt := range []struct {
		code    string
		env     guidance.Env
		want    []string // each in some step
		notWant []string // in no step
	}{
		{code: string(kms.KindVaultDNSUnresolvable), env: env, want: []string{ref.VaultURL}},
		{code: string(kms.KindKeyNotFound), env: env, want: []string{"key name " + ref.Name, "vault " + ref.VaultURL}},
		{code: string(kms.KindKeyDisabled), env: env, want: []string{ref.Name, "Enabled"}},
		{code: string(kms.KindKeyNotActive), env: env, want: []string{ref.Name, "expiration"}},
		{code: string(kms.KindKeyOperationForbidden), env: env, want: []string{ref.Name, "Wrap Key and Unwrap Key"}},
		{code: string(kms.KindIdentityUnauthorized), env: env,
			want: []string{"the " + env.AppName + " app (application id " + env.AppID + ")", guidance.RequiredRole}, notWant: []string{guidance.RequiredRoleHSM, "az keyvault role"}},
		{code: string(kms.KindIdentityUnauthorized), want: []string{"the platform's app and save"}, notWant: []string{"application id"}},
		{code: string(kms.KindIdentityInvalid), env: env, want: []string{"API: " + env.ConsentURL + ")", "the " + env.AppName + " app", guidance.RequiredRole}},
		{code: string(kms.KindIdentityInvalid), want: []string{"app-registration API)", "the platform's app"}},
		{code: string(kms.KindNetworkDenied), env: env, want: []string{"Networking", "trusted Microsoft services"}},
		{code: string(kms.KindTokenAcquisitionFailed), env: env, want: []string{"tenant", "platform operator"}},
		{code: string(kms.KindMalformedKeyURI), env: env, want: []string{"Key Identifier", "configData.keyVaultKeyIdentifier"}},
		{code: cmkapi.CodeKeyTypeUnsupported, env: env, want: []string{bits + " or 4096 bits"}},
		{code: cmkapi.CodeKeyTooSmall, env: env, want: []string{bits + " or 4096 bits"}},
		{code: cmkapi.CodeSoftDeleteDisabled, env: env, want: []string{"at least " + bits + " bits", "purge protection"}},
		{code: cmkapi.CodePurgeProtectionDisabled, env: env, want: []string{"Enable purge protection"}},
		{code: cmkapi.CodeKeyInUse, env: env, want: []string{"dedicated key"}},
		{code: cmkapi.CodeKeyNotBound, env: env, want: []string{"API: " + env.ConsentURL + ")", "administrator of the Azure tenant that owns the key vault " + ref.VaultURL}},
		{code: cmkapi.CodeKeyNotBound, want: []string{"app-registration API)", "Accept"}},
	} {
		steps := strings.Join(guidance.Steps(tt.code, tt.env, ref), "\n")
		for _, w := range tt.want {
			if !strings.Contains(steps, w) {
				t.Errorf("Steps(%s, %+v) = %q, want a step with %q", tt.code, tt.env, steps, w)
			}
		}
		for _, w := range tt.notWant {
			if strings.Contains(steps, w) {
				t.Errorf("Steps(%s, %+v) = %q, want no step with %q", tt.code, tt.env, steps, w)
			}
		}
	}
}

// TestStepsAreTheCallers checks that changing returned steps changes
// nothing for the next caller.
func TestStepsAreTheCallers(t *testing.T) {
	for _, code := range append(slices.Clone(kms.Kinds), cmkapi.CodeKeyInUse, cmkapi.CodeKeyTooSmall) {
		first := guidance.Steps(string(code), env, ref)
		if len(first) == 0 {
			continue
		}
		want := slices.Clone(first)
		first[0] = "changed"
		if got := guidance.Steps(string(code), env, ref); !slices.Equal(got, want) {
			t.Errorf("Steps(%s) after changing an earlier result = %q, want %q", code, got, want)
		}
	}
	r := guidance.RetrySteps()
	r[0] = "changed"
	if got := guidance.RetrySteps(); got[0] == "changed" {
		t.Errorf("RetrySteps() after changing an earlier result = %q, want it unchanged", got)
	}
}

func TestDescribe(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{&kms.Error{Kind: kms.KindKeyDisabled, Op: "wrap", Status: 403, Code: "Forbidden", InnerCode: "KeyDisabled"},
			"The key is disabled (wrap returned HTTP 403 KeyDisabled)."},
		{&kms.Error{Kind: kms.KindIdentityUnauthorized, Op: "describe", Status: 403, Code: "Forbidden"},
			"The vault refused the platform's app: it does not hold the required role on this vault (describe returned HTTP 403 Forbidden)."},
		{&kms.Error{Kind: kms.KindVaultDNSUnresolvable, Op: "describe", InnerCode: "no such host"},
			"The key vault's host name does not resolve: the vault does not exist or was deleted (describe: no such host)."},
		{&kms.Error{Kind: kms.KindTransient, Op: "unwrap", Err: errors.New("i/o timeout")},
			"The key vault did not answer in time or returned a server error."},
		{fmt.Errorf("wrap data key: %w", &kms.Error{Kind: kms.KindThrottled, Op: "wrap", Status: 429, Code: "Throttled"}),
			"The key vault is throttling requests (wrap returned HTTP 429 Throttled)."},
		{errors.New("database is locked"), "database is locked"},
	} {
		if got := guidance.Describe(tt.err); got != tt.want {
			t.Errorf("Describe(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
	// Describe is the kind's cause with the vault's answer inserted.
	for _, k := range kms.Kinds {
		if got, want := guidance.Describe(&kms.Error{Kind: k, Op: "wrap"}), guidance.Cause(string(k)); got != want {
			t.Errorf("Describe(%s without an answer) = %q, want Cause(%s) = %q", k, got, k, want)
		}
	}
}

func ExampleDescribe() {
	err := &kms.Error{Kind: kms.KindNetworkDenied, Op: "describe", Status: 403, Code: "Forbidden", InnerCode: "ForbiddenByFirewall"}
	fmt.Println(guidance.Title(string(kms.KindNetworkDenied)))
	fmt.Println(guidance.Describe(err))
	for i, s := range guidance.Steps(string(kms.KindNetworkDenied), guidance.Env{}, kms.KeyRef{}) {
		fmt.Printf("%d. %s\n", i+1, s)
	}
	// Output:
	// Network access denied by the vault
	// The vault's firewall refused the platform's connection (describe returned HTTP 403 ForbiddenByFirewall).
	// 1. In the Azure portal, open the key vault and select Networking.
	// 2. Under Firewalls and virtual networks, select "Allow trusted Microsoft services to bypass this firewall", or allow the platform's outbound addresses.
	// 3. Apply, then run the check again.
}

// TestStepsForBothKinds: for a key in a Managed HSM, the steps name the
// Managed HSM role and the command that grants it on the key, never the
// vault's role or its Access control (IAM); for a key in a vault, the
// other way round.
func TestStepsForBothKinds(t *testing.T) {
	hsm := kms.KeyRef{VaultURL: "https://contoso-hsm.managedhsm.azure.net", Name: "cmk-key"}
	cmd := `az keyvault role assignment create --hsm-name contoso-hsm --role "Managed HSM Crypto Service Encryption User" --assignee ` + env.AppID + " --scope /keys/cmk-key"
	for _, tt := range []struct {
		code    string
		ref     kms.KeyRef
		want    []string
		notWant []string
	}{
		{string(kms.KindIdentityUnauthorized), hsm, []string{guidance.RequiredRoleHSM, cmd, "local RBAC"}, []string{guidance.RequiredRole, "Access control (IAM) > Add"}},
		{string(kms.KindIdentityUnauthorized), ref, []string{guidance.RequiredRole, "Access control (IAM)"}, []string{guidance.RequiredRoleHSM, "--hsm-name"}},
		{string(kms.KindIdentityInvalid), hsm, []string{guidance.RequiredRoleHSM, cmd}, []string{guidance.RequiredRole}},
		{string(kms.KindIdentityInvalid), ref, []string{guidance.RequiredRole + " role on the vault"}, []string{guidance.RequiredRoleHSM}},
		{cmkapi.CodePurgeProtectionDisabled, hsm, []string{"az keyvault update-hsm --hsm-name contoso-hsm --enable-purge-protection true"}, []string{"Properties"}},
		{cmkapi.CodePurgeProtectionDisabled, ref, []string{"Enable purge protection"}, []string{"update-hsm"}},
	} {
		steps := strings.Join(guidance.Steps(tt.code, env, tt.ref), "\n")
		for _, w := range tt.want {
			if !strings.Contains(steps, w) {
				t.Errorf("Steps(%s, %s) = %q, want a step with %q", tt.code, tt.ref.VaultURL, steps, w)
			}
		}
		for _, w := range tt.notWant {
			if strings.Contains(steps, w) {
				t.Errorf("Steps(%s, %s) = %q, want no step with %q", tt.code, tt.ref.VaultURL, steps, w)
			}
		}
	}
	if got := guidance.Role(hsm); got != guidance.RequiredRoleHSM {
		t.Errorf("Role(%s) = %q, want %q", hsm, got, guidance.RequiredRoleHSM)
	}
	if got := guidance.Role(ref); got != guidance.RequiredRole {
		t.Errorf("Role(%s) = %q, want %q", ref, got, guidance.RequiredRole)
	}
	// An alert whose cause has no steps of its own falls back on the
	// kind's, which name the role too.
	d := guidance.Alert(cmkapi.AlertKeyAccessFailure, cmkapi.CauseGraceExhausted, "m", true, env, hsm)
	all := strings.Join(append(d.ProbableCauses, d.Steps...), "\n")
	if !strings.Contains(all, guidance.RequiredRoleHSM) || strings.Contains(all, guidance.RequiredRole) {
		t.Errorf("Alert(KEY_ACCESS_FAILURE) for a Managed HSM key = %q, want the Managed HSM role only", all)
	}
	d = guidance.Alert(cmkapi.AlertKeyAccessFailure, cmkapi.CauseGraceExhausted, "m", true, env, ref)
	if all := strings.Join(append(d.ProbableCauses, d.Steps...), "\n"); strings.Contains(all, guidance.RequiredRoleHSM) {
		t.Errorf("Alert(KEY_ACCESS_FAILURE) for a vault key = %q, want no Managed HSM role", all)
	}
}
