package api

import (
	"net/http"

	"github.com/cmk-project/cmk/internal/cmkapi"
)

// awsKeyPolicy answers the key-policy statements of the calling org: they
// name that org's encryption context only, so what one org reads here
// lets the platform use a key for that org alone.
func (s *Server) awsKeyPolicy(w http.ResponseWriter, r *http.Request) {
	p, err := s.Control.AWSKeyPolicy(orgOf(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, p)
}

// keyOf is the key a configuration names: keyArn for AWS_KMS, the Key
// Vault key identifier otherwise. A body naming both for one provider is
// answered by the provider's own field.
func keyOf(d cmkapi.ConfigData) string {
	if d.ProviderType == cmkapi.ProviderAWSKMS {
		return d.KeyArn
	}
	return d.KeyVaultKeyIdentifier
}
