package keyid_test

import (
	"errors"
	"fmt"

	"github.com/cmk-project/cmk/internal/keyid"
)

func ExamplePolicy_Parse() {
	id, err := keyid.Parse("https://ContosoKeyVault.vault.azure.net/keys/cmk-key/7c1d50lo28234cc895534c00d7eb4eb4")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(id.VaultURL, id.Name, id.Version)
	fmt.Println(id.Ref())

	_, err = keyid.Parse("https://contoso.vault.azure.net.evil.com/keys/cmk-key")
	var pe *keyid.ParseError
	if errors.As(err, &pe) {
		fmt.Println(pe.Reason)
	}
	// Output:
	// https://contosokeyvault.vault.azure.net cmk-key 7c1d50lo28234cc895534c00d7eb4eb4
	// https://contosokeyvault.vault.azure.net/keys/cmk-key
	// the host "contoso.vault.azure.net.evil.com" is not a Key Vault or Managed HSM host; allowed hosts are {vault-name}.vault.azure.net, {vault-name}.vault.azure.cn, {vault-name}.vault.usgovcloudapi.net, {vault-name}.vault.microsoftazure.de, {vault-name}.managedhsm.azure.net, {vault-name}.managedhsm.azure.cn, {vault-name}.managedhsm.usgovcloudapi.net
}
