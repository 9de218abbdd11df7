package guidance

import (
	"strings"
	"testing"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/kms"
)

var awsRef = kms.KeyRef{VaultURL: "arn:aws:kms:eu-west-1:111122223333", Name: "key/1234abcd-12ab-34cd-56ef-1234567890ab"}

// TestAWSWording: every verdict on an AWS KMS key has steps that speak of
// AWS and none of Azure, and its alerts' words do too.
func TestAWSWording(t *testing.T) {
	for _, k := range kms.Kinds {
		if !k.LossOfAccess() || k == kms.KindVaultDNSUnresolvable || k == kms.KindNetworkDenied || k == kms.KindIdentityInvalid || k == kms.KindKeyNotActive {
			continue // not answers AWS KMS gives (see awskms.Classify)
		}
		steps := Steps(string(k), Env{}, awsRef)
		text := strings.Join(steps, " ")
		if len(steps) < 2 || strings.Contains(text, "Azure") || !strings.Contains(strings.ToLower(text), "aws") {
			t.Errorf("Steps(%s, AWS key) = %q, want AWS steps", k, steps)
		}
		if c := AWSCause(string(k)); strings.Contains(c, "vault") {
			t.Errorf("AWSCause(%s) = %q, speaks of a vault", k, c)
		}
	}
	steps := strings.Join(Steps(CodeKeyPendingDeletion, Env{}, awsRef), " ")
	if !strings.Contains(steps, "aws kms cancel-key-deletion --key-id "+awsRef.String()+" --region eu-west-1") || !strings.Contains(steps, "aws kms enable-key") {
		t.Errorf("pending-deletion steps = %q", steps)
	}
	for _, kind := range []string{cmkapi.AlertKeyAccessDisabled, cmkapi.AlertKeyAccessFailure, cmkapi.AlertNotification} {
		d := Alert(kind, "", "", true, Env{}, awsRef)
		if all := d.Summary + strings.Join(d.ProbableCauses, " ") + strings.Join(d.Steps, " "); strings.Contains(all, "Azure") || strings.Contains(all, "Key Vault") {
			t.Errorf("Alert(%s, AWS key) speaks of Azure: %+v", kind, d)
		}
	}
	// Key Vault keys keep their words.
	if s := strings.Join(Steps(string(kms.KindKeyDisabled), Env{}, kms.KeyRef{VaultURL: "https://v.vault.azure.net", Name: "k"}), " "); !strings.Contains(s, "Azure portal") {
		t.Errorf("Key Vault steps changed: %q", s)
	}
}
