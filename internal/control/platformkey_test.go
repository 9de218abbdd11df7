package control

import (
	"testing"

	"github.com/cmk-project/cmk/internal/kms"
)

func TestPlatformOwned(t *testing.T) {
	azure := kms.KeyRef{VaultURL: "https://cmkplatform.vault.azure.net", Name: "system"}
	aws := kms.KeyRef{VaultURL: "arn:aws:kms:eu-west-1:444455556666", Name: "key/1234abcd-12ab-34cd-56ef-1234567890ab"}
	for _, c := range []struct {
		platform, ref kms.KeyRef
		want          bool
	}{
		{azure, azure, true},
		{azure, kms.KeyRef{VaultURL: "https://CMKPLATFORM.vault.azure.net", Name: "other"}, true},
		{azure, kms.KeyRef{VaultURL: "https://customer.vault.azure.net", Name: "system"}, false},
		{azure, aws, false},
		{aws, aws, true},
		{aws, kms.KeyRef{VaultURL: "arn:aws:kms:us-east-1:444455556666", Name: "alias/x"}, true},
		{aws, kms.KeyRef{VaultURL: "arn:aws:kms:eu-west-1:111122223333", Name: aws.Name}, false},
		{aws, kms.KeyRef{VaultURL: "arn:aws-us-gov:kms:us-gov-west-1:444455556666", Name: aws.Name}, false},
		{aws, azure, false},
		{kms.KeyRef{}, azure, false},
		{kms.KeyRef{}, aws, false},
	} {
		s := &Service{PlatformKey: c.platform}
		if got := s.platformOwned(c.ref); got != c.want {
			t.Errorf("platform key %s: platformOwned(%s) = %v, want %v", c.platform, c.ref, got, c.want)
		}
	}
}
