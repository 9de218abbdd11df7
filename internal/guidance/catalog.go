package guidance

import (
	"fmt"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/kms"
)

// entry is the catalog's text for one failure code.
type entry struct {
	title string
	cause string                         // one sentence, ending in a period
	steps func(Env, kms.KeyRef) []string // nil: no steps of its own
}

// catalog holds the words for every failure code, kms kinds first, in the
// order of kms.Kinds, then the check codes, then the health causes.
var catalog = map[string]entry{
	string(kms.KindMalformedKeyURI): {
		title: "Malformed key identifier",
		cause: "The key identifier is not a valid Key Vault key URI.",
		steps: func(Env, kms.KeyRef) []string {
			return []string{
				"In the Azure portal, open your key vault, select Keys, then your key and its current version.",
				"Copy the Key Identifier; it looks like https://<vault-name>.vault.azure.net/keys/<key-name>/<version>.",
				"Send that exact value as configData.keyVaultKeyIdentifier.",
			}
		},
	},
	string(kms.KindVaultDNSUnresolvable): {
		title: "Key vault not found",
		cause: "The key vault's host name does not resolve: the vault does not exist or was deleted.",
		steps: func(_ Env, ref kms.KeyRef) []string {
			return []string{
				"Check the vault name in the key identifier (" + orDefault(ref.VaultURL, "https://<vault-name>.vault.azure.net") + ").",
				"If the vault was deleted, recover it: Azure portal > Key vaults > Manage deleted vaults. With the Azure CLI: " + azVaultRecover(ref),
				"Run the check again once the vault resolves.",
			}
		},
	},
	string(kms.KindKeyNotFound): {
		title: "Key not found",
		cause: "The key was not found in the vault (it may have been deleted).",
		steps: func(_ Env, ref kms.KeyRef) []string {
			return []string{
				"Check the key name " + ref.Name + " in the vault " + ref.VaultURL + ".",
				"If the key was deleted, recover it: the vault's Keys > Manage deleted keys > Recover. With the Azure CLI: " + azKey(ref, "recover"),
				"Run the check again.",
			}
		},
	},
	string(kms.KindKeyDisabled): {
		title: "Key disabled",
		cause: "The key is disabled.",
		steps: func(_ Env, ref kms.KeyRef) []string {
			return []string{
				"In the Azure portal, open the key vault, select Keys, then " + ref.Name + " and its current version.",
				"Set Enabled to Yes and save. With the Azure CLI: " + azKey(ref, "set-attributes", "--enabled true"),
				"Make sure no automation or lifecycle policy disables it again, then run the check again.",
			}
		},
	},
	string(kms.KindKeyNotActive): {
		title: "Key not active",
		cause: "The key is outside its activation/expiry dates, so it cannot wrap.",
		steps: func(_ Env, ref kms.KeyRef) []string {
			return []string{
				"In the Azure portal, open the key " + ref.Name + " and its current version.",
				"Clear or move the expiration date into the future, and clear any activation date in the future (or create a new version of the key).",
				"Run the check again.",
			}
		},
	},
	string(kms.KindKeyOperationForbidden): {
		title: "Key operation not permitted",
		cause: "The key does not permit the operation.",
		steps: func(_ Env, ref kms.KeyRef) []string {
			return []string{
				"In the Azure portal, open the key " + ref.Name + " and its current version.",
				"Under Permitted operations, select Wrap Key and Unwrap Key, then save.",
				"Run the check again.",
			}
		},
	},
	string(kms.KindIdentityUnauthorized): {
		title: "App not authorized on the vault",
		cause: "The vault refused the platform's app: it does not hold the required role on this vault.",
		steps: func(e Env, ref kms.KeyRef) []string {
			if ref.ManagedHSM() {
				return []string{
					"A Managed HSM grants roles through its own local RBAC, on the key, not through the resource's Access control (IAM).",
					"As an administrator of the Managed HSM " + ref.VaultName() + ", give the " + orDefault(e.AppName, "platform's") + " app the " + RequiredRoleHSM + " role on the key. With the Azure CLI: " + HSMRoleCommand(e, ref),
					"Role assignments can take a few minutes to apply; run the check again.",
				}
			}
			return []string{
				"In the Azure portal, open the key vault and select Access control (IAM) > Add > Add role assignment.",
				"Choose the " + RequiredRole + " role.",
				"Select members: search for the " + orDefault(e.AppName, "platform's") + " app" + opt(" (application id ", e.AppID, ")") + " and save.",
				"If the vault uses access policies instead of RBAC, grant the app get, wrapKey and unwrapKey on keys.",
				"Role assignments can take a few minutes to apply; run the check again.",
			}
		},
	},
	string(kms.KindNetworkDenied): {
		title: "Network access denied by the vault",
		cause: "The vault's firewall refused the platform's connection.",
		steps: func(Env, kms.KeyRef) []string {
			return []string{
				"In the Azure portal, open the key vault and select Networking.",
				"Under Firewalls and virtual networks, select \"Allow trusted Microsoft services to bypass this firewall\", or allow the platform's outbound addresses.",
				"Apply, then run the check again.",
			}
		},
	},
	string(kms.KindIdentityInvalid): {
		title: "App not present in your tenant",
		cause: "The platform's app is not present in your Azure tenant: admin consent was not given or was removed.",
		steps: func(e Env, ref kms.KeyRef) []string {
			grant := "Grant the app the " + RequiredRole + " role on the vault, then run the check again."
			if ref.ManagedHSM() {
				grant = "Grant the app the " + RequiredRoleHSM + " role on the key, then run the check again. With the Azure CLI: " + HSMRoleCommand(e, ref)
			}
			return []string{
				"Open the consent link (applicationRedirectUrl from the app-registration API" + opt(": ", e.ConsentURL, "") + ") as an administrator of the Azure tenant that owns the key vault.",
				"Select Accept to add the " + orDefault(e.AppName, "platform's") + " app to your tenant.",
				grant,
			}
		},
	},
	string(kms.KindTokenAcquisitionFailed): {
		title: "App sign-in failed",
		cause: "The platform's app could not obtain a token from Microsoft Entra ID.",
		steps: func(Env, kms.KeyRef) []string {
			return []string{
				"Confirm the vault belongs to the Azure tenant you consented the app into.",
				"If the consent was given, the platform's app credentials may be invalid or expired: contact the platform operator (this is on the platform's side).",
				"Run the check again.",
			}
		},
	},
	string(kms.KindUnwrapFailed): {
		title: "Unwrap failed",
		cause: "The vault could not unwrap data it had wrapped.",
		steps: func(Env, kms.KeyRef) []string {
			return []string{
				"Confirm the key and its versions were not deleted, purged or re-imported.",
				"If the key was deleted, recover it and run the check again.",
			}
		},
	},
	string(kms.KindThrottled): {
		title: "Key vault throttling",
		cause: "The key vault is throttling requests.",
	},
	string(kms.KindTransient): {
		title: "Key vault unavailable",
		cause: "The key vault did not answer in time or returned a server error.",
	},
	string(kms.KindInvalidRequest): {
		title: "Request rejected by the key vault",
		cause: "The key vault rejected the request.",
	},

	cmkapi.CodeKeyNotBound: {
		title: "Key not bound to this org",
		cause: "The key's vault is not in an Azure tenant whose administrator consented for this org, so this org may not use it.",
		steps: func(e Env, ref kms.KeyRef) []string {
			return []string{
				"Open this org's consent link (applicationRedirectUrl from the app-registration API" + opt(": ", e.ConsentURL, "") + ") and sign in as an administrator of the Azure tenant that owns the key vault" + opt(" ", ref.VaultURL, "") + ".",
				"Select Accept: the platform then records that tenant for this org. The link is for this org only and expires; the app-registration API gives a fresh one on every call.",
				"If the key is in a vault of another tenant than the one you consented from, use a key from a vault of your org's tenant instead.",
				"Run the check again, or submit the configuration again.",
			}
		},
	},
	cmkapi.CodeKeyInUse: {
		title: "Key already protects another org",
		cause: "This key already protects another organization's data; a key can protect one org only.",
		steps: func(Env, kms.KeyRef) []string {
			return []string{"Create a dedicated key for this org in your vault.", "Submit a new configuration with its key identifier."}
		},
	},
	cmkapi.CodeKeyTypeUnsupported: {
		title: "Key type not supported",
		cause: "The key is not an RSA key.",
		steps: newKeySteps,
	},
	cmkapi.CodeKeyTooSmall: {
		title: "Key too small",
		cause: fmt.Sprintf("The key has fewer than %d bits.", kms.MinRSABits),
		steps: newKeySteps,
	},
	cmkapi.CodeSoftDeleteDisabled: {
		title: "Soft-delete disabled",
		cause: "The vault does not have soft-delete enabled, so a deleted key would be gone at once.",
		steps: func(Env, kms.KeyRef) []string {
			return []string{
				"Soft-delete cannot be turned on for an existing vault without it in every case; create a new key vault with soft-delete and purge protection enabled.",
				fmt.Sprintf("Generate an RSA key of at least %d bits in it, grant the role, and submit the new key identifier.", kms.MinRSABits),
			}
		},
	},
	cmkapi.CodePurgeProtectionDisabled: {
		title: "Purge protection disabled",
		cause: "The vault does not have purge protection enabled, so anyone with purge rights could destroy the key, and with it all your data on the platform.",
		steps: func(_ Env, ref kms.KeyRef) []string {
			if ref.ManagedHSM() {
				return []string{
					"Turn on purge protection for the Managed HSM " + ref.VaultName() + " (it cannot be turned off again). With the Azure CLI: az keyvault update-hsm --hsm-name " + ref.VaultName() + " --enable-purge-protection true",
					"Submit the configuration again.",
				}
			}
			return []string{
				"In the Azure portal, open the key vault and select Properties.",
				"Under Purge protection, select \"Enable purge protection\" and save (it cannot be turned off again).",
				"Submit the configuration again.",
			}
		},
	},

	cmkapi.CauseFlapping: {
		title: "Key access flapping",
		cause: "Access to your key keeps switching between working and failing.",
	},
	cmkapi.CauseGraceExhausted: {
		title: "Grace period exhausted",
		cause: "The platform could not reach your key for longer than the grace period, so your data is now refused until the key can be reached again.",
	},
	cmkapi.CauseKeyNearExpiry: {
		title: "Key expiring soon",
		cause: "The current version of your key has an expiration date that is near; after it the platform can no longer wrap new data keys with it.",
		steps: expirySteps,
	},
}

// newKeySteps fix a key of the wrong type or size: a key's type and size
// cannot be changed, so the customer makes a new one.
func newKeySteps(Env, kms.KeyRef) []string {
	return []string{
		"In the Azure portal, open the key vault and select Keys, then Generate/Import.",
		fmt.Sprintf("Create an RSA key with a size of %d or 4096 bits, permitting Wrap Key and Unwrap Key.", kms.MinRSABits),
		"Copy its Key Identifier and submit a new configuration with it (a key's type and size cannot be changed).",
	}
}

// azKey is the Azure CLI command "az keyvault key <sub>" for the key ref
// names, its vault (or Managed HSM) and name filled in, then extra. The
// steps are plain text: a command is the end of its step, with nothing
// after it that could be copied along.
func azKey(ref kms.KeyRef, sub string, extra ...string) string {
	where := "--vault-name "
	if ref.ManagedHSM() {
		where = "--hsm-name "
	}
	cmd := "az keyvault key " + sub + " " + where + orDefault(ref.VaultName(), "<vault-name>") + " --name " + orDefault(ref.Name, "<key-name>")
	for _, e := range extra {
		cmd += " " + e
	}
	return cmd
}

// azVaultRecover is the Azure CLI command that recovers the deleted vault
// (or Managed HSM) of ref.
func azVaultRecover(ref kms.KeyRef) string {
	if ref.ManagedHSM() {
		return "az keyvault recover --hsm-name " + orDefault(ref.VaultName(), "<hsm-name>")
	}
	return "az keyvault recover --name " + orDefault(ref.VaultName(), "<vault-name>")
}

// opt returns prefix+v+suffix, or "" when v is empty.
func opt(prefix, v, suffix string) string {
	if v == "" {
		return ""
	}
	return prefix + v + suffix
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
