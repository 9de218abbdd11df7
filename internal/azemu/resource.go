package azemu

import (
	"fmt"
	"strings"
)

// knownResourceLocked reports whether the authority has a resource
// principal for resource (the part of a "/.default" scope before the
// suffix): the vault resource, or a registered app addressed by its client
// id or its default identifier URI "api://{clientId}". A trailing slash is
// ignored here, as the token keeps the resource as asked, so Key Vault can
// then refuse the audience (AKV10022, azure-errors.md section 10).
// e.mu must be held.
func (e *Emulator) knownResourceLocked(resource string) bool {
	r := strings.TrimSuffix(resource, "/")
	if strings.EqualFold(r, e.VaultResource()) || strings.EqualFold(r, e.HSMResource()) {
		return true
	}
	id := strings.TrimPrefix(strings.ToLower(r), "api://")
	return e.st.Apps[id] != nil
}

// resourceNotFoundMsg is AADSTS500011's text (azure-errors.md section 13:
// error invalid_resource; the 400 status is unverified). Entra ID names the
// tenant by its display name; the emulator's tenants have only an id.
func resourceNotFoundMsg(resource, tenant string) string {
	return fmt.Sprintf("The resource principal named %s was not found in the tenant named %s. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.", resource, tenant)
}
