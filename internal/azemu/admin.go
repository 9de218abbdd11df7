package azemu

import (
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// ---- tenants, apps, consent ----

// CreateTenant adds an Entra tenant (directory). Creating it twice is an error.
func (e *Emulator) CreateTenant(tenantID string) error {
	if !tenantNameRE.MatchString(tenantID) || isReservedTenant(tenantID) {
		return fmt.Errorf("%w: tenant id %q", ErrInvalid, tenantID)
	}
	return e.mutate(func() error {
		key := strings.ToLower(tenantID)
		if _, ok := e.st.Tenants[key]; ok {
			return fmt.Errorf("%w: tenant %s already exists", ErrConflict, tenantID)
		}
		e.st.Tenants[key] = &tenantState{ID: tenantID, ServicePrincipals: map[string]string{}}
		return nil
	})
}

func isReservedTenant(t string) bool {
	switch strings.ToLower(t) {
	case "common", "organizations", "consumers", "admin":
		return true
	}
	return false
}

// RegisterApp registers (or replaces) an app in its home tenant and gives it
// a service principal there, as the Azure portal does.
func (e *Emulator) RegisterApp(app App) error {
	if app.ClientID == "" || app.ClientSecret == "" {
		return fmt.Errorf("%w: app needs ClientID and ClientSecret", ErrInvalid)
	}
	if app.Name == "" {
		app.Name = app.ClientID
	}
	return e.mutate(func() error {
		t := e.st.Tenants[strings.ToLower(app.HomeTenant)]
		if t == nil {
			return fmt.Errorf("%w: home tenant %q", ErrNotFound, app.HomeTenant)
		}
		a := app
		e.st.Apps[strings.ToLower(app.ClientID)] = &a
		if _, ok := t.ServicePrincipals[strings.ToLower(app.ClientID)]; !ok {
			t.ServicePrincipals[strings.ToLower(app.ClientID)] = newID()
		}
		return nil
	})
}

// AddRedirectURI registers one more redirect URI for the app, as adding a
// Web redirect URI to an app registration in the Azure portal does.
func (e *Emulator) AddRedirectURI(clientID, uri string) error {
	if uri == "" {
		return fmt.Errorf("%w: empty redirect URI", ErrInvalid)
	}
	return e.mutate(func() error {
		a := e.st.Apps[strings.ToLower(clientID)]
		if a == nil {
			return fmt.Errorf("%w: app %q", ErrNotFound, clientID)
		}
		if !slices.Contains(a.RedirectURIs, uri) && a.RedirectURI != uri {
			a.RedirectURIs = append(a.RedirectURIs, uri)
		}
		return nil
	})
}

// ConsentURL is the admin-consent link a tenant administrator opens.
func (e *Emulator) ConsentURL(tenantID, clientID, redirectURI string) string {
	q := "client_id=" + urlQueryEscape(clientID)
	if redirectURI != "" {
		q += "&redirect_uri=" + urlQueryEscape(redirectURI)
	}
	q += "&scope=" + urlQueryEscape(e.VaultResource()+"/.default")
	return e.url + "/" + tenantID + "/v2.0/adminconsent?" + q
}

// GrantConsent adds the app's service principal to the tenant (what Accept on
// the consent page does) and returns its object id. Granting twice returns
// the same id.
func (e *Emulator) GrantConsent(tenantID, clientID string) (string, error) {
	var oid string
	err := e.mutate(func() error {
		t := e.st.Tenants[strings.ToLower(tenantID)]
		if t == nil {
			return fmt.Errorf("%w: tenant %q", ErrNotFound, tenantID)
		}
		if e.st.Apps[strings.ToLower(clientID)] == nil {
			return fmt.Errorf("%w: app %q", ErrNotFound, clientID)
		}
		oid = t.ServicePrincipals[strings.ToLower(clientID)]
		if oid == "" {
			oid = newID()
			t.ServicePrincipals[strings.ToLower(clientID)] = oid
			e.recordChangeLocked(consentKey(t.ID, clientID), "", oid)
			e.stats.ConsentsGiven++
		}
		return nil
	})
	return oid, err
}

// RevokeConsent removes the app's service principal from the tenant. Role
// assignments held by the removed principal stay (dangling), as in Azure.
func (e *Emulator) RevokeConsent(tenantID, clientID string) error {
	return e.mutate(func() error {
		t := e.st.Tenants[strings.ToLower(tenantID)]
		if t == nil {
			return fmt.Errorf("%w: tenant %q", ErrNotFound, tenantID)
		}
		oid, ok := t.ServicePrincipals[strings.ToLower(clientID)]
		if !ok {
			return fmt.Errorf("%w: no service principal for %s in %s", ErrNotFound, clientID, tenantID)
		}
		delete(t.ServicePrincipals, strings.ToLower(clientID))
		e.recordChangeLocked(consentKey(t.ID, clientID), oid, "")
		return nil
	})
}

// ServicePrincipal returns the object id of the app's service principal in
// the tenant.
func (e *Emulator) ServicePrincipal(tenantID, clientID string) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.st.Tenants[strings.ToLower(tenantID)]
	if t == nil {
		return "", false
	}
	oid, ok := t.ServicePrincipals[strings.ToLower(clientID)]
	return oid, ok
}

// SetTokenEndpointFault makes the token endpoint answer with status (e.g.
// 500, 503); 0 restores normal behaviour.
func (e *Emulator) SetTokenEndpointFault(status int) {
	e.mu.Lock()
	e.tokenFault = status
	e.mu.Unlock()
}

// ---- vaults ----

func (e *Emulator) normalizeVault(v *Vault) error {
	if !vaultNameRE.MatchString(v.Name) || strings.Contains(v.Name, "--") {
		return fmt.Errorf("%w: vault name %q (1-24 letters, digits and hyphens, starting with a letter; Azure itself requires at least 3)", ErrInvalid, v.Name)
	}
	v.Name = strings.ToLower(v.Name)
	if v.SKU == "" {
		v.SKU = "standard"
	}
	v.SKU = strings.ToLower(v.SKU)
	if v.SKU != "standard" && v.SKU != "premium" {
		return fmt.Errorf("%w: sku %q (standard or premium)", ErrInvalid, v.SKU)
	}
	if v.Location == "" {
		v.Location = defaultLocation
	}
	if v.SoftDelete && v.RetentionDays == 0 {
		v.RetentionDays = defaultRetention
	}
	if v.SoftDelete && (v.RetentionDays < 7 || v.RetentionDays > 90) {
		return fmt.Errorf("%w: retention days %d (7-90)", ErrInvalid, v.RetentionDays)
	}
	if !v.SoftDelete {
		v.RetentionDays = 0
	}
	if v.PurgeProtection && !v.SoftDelete {
		return fmt.Errorf("%w: purge protection requires soft delete", ErrInvalid)
	}
	return normalizeAPIVersions(v)
}

// CreateVault creates a vault owned by an existing tenant.
func (e *Emulator) CreateVault(v Vault) error {
	if v.ManagedHSM {
		return fmt.Errorf("%w: create a Managed HSM with CreateManagedHSM", ErrInvalid)
	}
	if err := e.normalizeVault(&v); err != nil {
		return err
	}
	return e.mutate(func() error {
		if e.st.Tenants[strings.ToLower(v.TenantID)] == nil {
			return fmt.Errorf("%w: tenant %q", ErrNotFound, v.TenantID)
		}
		if old := e.st.Vaults[v.Name]; old != nil {
			if old.Deleted {
				return fmt.Errorf("%w: vault %s is deleted but recoverable; recover or purge it", ErrConflict, v.Name)
			}
			return fmt.Errorf("%w: vault %s already exists", ErrConflict, v.Name)
		}
		e.st.Vaults[v.Name] = &vaultState{Vault: v, Keys: map[string]*keyState{}, DeletedKeys: map[string]*keyState{}}
		e.hsmNames.Delete(v.Name)
		return nil
	})
}

// UpdateVault edits a live vault's settings (the name cannot change).
// Unlike Azure, purge protection and soft delete can be turned off again, so
// tests can show a vault in any state.
func (e *Emulator) UpdateVault(name string, fn func(*Vault)) error {
	return e.mutate(func() error {
		vs, err := e.liveVaultLocked(name)
		if err != nil {
			return err
		}
		if vs.ManagedHSM {
			return fmt.Errorf("%w: %s is a Managed HSM; its only setting is purge protection (EnableHSMPurgeProtection)", ErrInvalid, vs.Name)
		}
		nv := vs.Vault
		fn(&nv)
		nv.Name = vs.Name
		if err := e.normalizeVault(&nv); err != nil {
			return err
		}
		if e.st.Tenants[strings.ToLower(nv.TenantID)] == nil {
			return fmt.Errorf("%w: tenant %q", ErrNotFound, nv.TenantID)
		}
		vs.Vault = nv
		return nil
	})
}

// PatchVault is UpdateVault with a serialisable change set.
func (e *Emulator) PatchVault(name string, p VaultPatch) error {
	return e.UpdateVault(name, p.apply)
}

// SetFirewall turns the vault's "deny public access" firewall on or off.
func (e *Emulator) SetFirewall(vault string, deny bool) error {
	return e.UpdateVault(vault, func(v *Vault) { v.FirewallDeny = deny })
}

func (e *Emulator) liveVaultLocked(name string) (*vaultState, error) {
	vs := e.st.Vaults[strings.ToLower(name)]
	if vs == nil || vs.Deleted {
		return nil, fmt.Errorf("%w: vault %q", ErrNotFound, name)
	}
	e.expireDeletedKeysLocked(vs)
	return vs, nil
}

// DeleteVault deletes a vault: soft-deleted (recoverable) when SoftDelete is
// on, otherwise gone. Either way its host stops resolving.
func (e *Emulator) DeleteVault(name string) error {
	err := e.mutate(func() error {
		vs, err := e.liveVaultLocked(name)
		if err != nil {
			return err
		}
		if vs.SoftDelete {
			vs.Deleted = true
			vs.DeletedAt = e.now()
		} else {
			delete(e.st.Vaults, vs.Name)
		}
		return nil
	})
	if err == nil {
		e.transport.CloseIdleConnections()
	}
	return err
}

// RecoverVault undoes a soft delete.
func (e *Emulator) RecoverVault(name string) error {
	return e.mutate(func() error {
		vs := e.st.Vaults[strings.ToLower(name)]
		if vs == nil || !vs.Deleted {
			return fmt.Errorf("%w: deleted vault %q", ErrNotFound, name)
		}
		vs.Deleted = false
		vs.DeletedAt = time.Time{}
		return nil
	})
}

// PurgeVault permanently removes a soft-deleted vault; refused with
// ErrForbidden while purge protection is on.
func (e *Emulator) PurgeVault(name string) error {
	return e.mutate(func() error {
		vs := e.st.Vaults[strings.ToLower(name)]
		if vs == nil || !vs.Deleted {
			return fmt.Errorf("%w: deleted vault %q", ErrNotFound, name)
		}
		if vs.PurgeProtection {
			return fmt.Errorf("%w: vault %s has purge protection; it is purged automatically after %d days", ErrForbidden, vs.Name, vs.RetentionDays)
		}
		delete(e.st.Vaults, vs.Name)
		return nil
	})
}

// AssignRole gives a principal a data-plane role on a vault. Accepted roles:
// the Role* constants (case-insensitive).
func (e *Emulator) AssignRole(vault, principalObjectID, role string) error {
	r, ok := canonicalRole(role)
	if !ok || principalObjectID == "" {
		return fmt.Errorf("%w: role %q / principal %q", ErrInvalid, role, principalObjectID)
	}
	return e.mutate(func() error {
		vs, err := e.liveVaultLocked(vault)
		if err != nil {
			return err
		}
		ra := RoleAssignment{PrincipalObjectID: strings.ToLower(principalObjectID), Role: r}
		if !slices.Contains(vs.Roles, ra) {
			vs.Roles = append(vs.Roles, ra)
			e.recordChangeLocked(roleKey(vs.Name, principalObjectID, r), "", present)
			e.accessChangedLocked(vs.Name)
		}
		return nil
	})
}

// RemoveRole removes a role assignment.
func (e *Emulator) RemoveRole(vault, principalObjectID, role string) error {
	r, ok := canonicalRole(role)
	if !ok {
		return fmt.Errorf("%w: role %q", ErrInvalid, role)
	}
	return e.mutate(func() error {
		vs, err := e.liveVaultLocked(vault)
		if err != nil {
			return err
		}
		ra := RoleAssignment{PrincipalObjectID: strings.ToLower(principalObjectID), Role: r}
		i := slices.Index(vs.Roles, ra)
		if i < 0 {
			return fmt.Errorf("%w: assignment of %q to %s", ErrNotFound, r, principalObjectID)
		}
		vs.Roles = slices.Delete(vs.Roles, i, i+1)
		e.recordChangeLocked(roleKey(vs.Name, principalObjectID, r), present, "")
		e.accessChangedLocked(vs.Name)
		return nil
	})
}

// SetThrottle limits the vault to limit requests per fixed window, answering
// 429 without Retry-After as Key Vault does; limit 0 turns throttling off.
// Unknown vaults are ignored. SetVaultThrottle also sets the Retry-After
// switch.
func (e *Emulator) SetThrottle(vault string, limit int, window time.Duration) {
	_ = e.SetVaultThrottle(vault, Throttle{Limit: limit, Window: window})
}

// SetVaultFault makes every data-plane request to the vault wait delay
// (honouring the request context) and then, if status != 0, fail with that
// status. SetVaultFault(v, 0, 0) restores normal behaviour.
func (e *Emulator) SetVaultFault(vault string, status int, delay time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if status == 0 && delay == 0 {
		delete(e.faults, strings.ToLower(vault))
		return
	}
	e.faults[strings.ToLower(vault)] = vaultFault{status: status, delay: delay}
}

// SetVaultReset makes the vault reset the connection of every data-plane
// request (on) instead of answering, as a load balancer or a middlebox that
// drops a connection does: the request is read, the connection hijacked and
// closed with a TCP RST (SO_LINGER 0), so the client sees "connection reset
// by peer" or an unexpected EOF and no HTTP answer. SetVaultReset(v, false)
// restores normal behaviour. The reset comes before any other check (see the
// order of checks in the package doc) and is counted in VaultStats.Resets.
func (e *Emulator) SetVaultReset(vault string, on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !on {
		delete(e.resets, strings.ToLower(vault))
		return
	}
	e.resets[strings.ToLower(vault)] = true
}

// ---- keys ----

func generateRSA(bits int) (*rsa.PrivateKey, error) {
	return rsa.GenerateKey(rand.Reader, bits)
}

func (e *Emulator) newKeyVersion(o KeyOptions) (*keyVersion, error) {
	kty := o.Kty
	if kty == "" {
		kty = "RSA"
	}
	kty, ok := canonicalKty(kty)
	if !ok {
		return nil, fmt.Errorf("%w: key type %q (RSA, RSA-HSM, EC, EC-HSM, oct or oct-HSM)", ErrInvalid, o.Kty)
	}
	ops := defaultOps
	if o.Ops != nil {
		var err error
		if ops, err = normalizeOps(o.Ops); err != nil {
			return nil, err
		}
	}
	now := e.now().UTC().Truncate(time.Second)
	enabled := true
	if o.Enabled != nil {
		enabled = *o.Enabled
	}
	ver := &keyVersion{ID: newVersionID(), Kty: kty, Ops: slices.Clone(ops), Enabled: enabled,
		NotBefore: utcPtr(o.NotBefore), Expires: utcPtr(o.Expires), Created: now, Updated: now}
	if o.RSA != nil {
		if err := importRSA(ver, o.RSA); err != nil {
			return nil, err
		}
		return ver, nil
	}
	if err := generateMaterial(ver, o.Bits, o.Curve); err != nil {
		return nil, err
	}
	return ver, nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC().Truncate(time.Second)
	return &u
}

// addVersionLocked appends ver to vault/name, creating the key if needed.
func (e *Emulator) addVersionLocked(vault, name string, ver *keyVersion) error {
	vs, err := e.liveVaultLocked(vault)
	if err != nil {
		return err
	}
	lk := strings.ToLower(name)
	if _, ok := vs.DeletedKeys[lk]; ok {
		return fmt.Errorf("%w: key %s is deleted but recoverable; recover or purge it first", ErrConflict, name)
	}
	k := vs.Keys[lk]
	if k == nil {
		k = &keyState{Name: name}
		vs.Keys[lk] = k
	}
	k.Versions = append(k.Versions, ver)
	e.keyVersionCreatedLocked(vs.Name, k.Name, ver)
	return nil
}

// CreateKey creates a key, or a new version of an existing one (rotation).
func (e *Emulator) CreateKey(vault, name string, o KeyOptions) (string, error) {
	if !keyNameRE.MatchString(name) {
		return "", fmt.Errorf("%w: key name %q", ErrInvalid, name)
	}
	if !e.VaultResolves(vault) {
		return "", fmt.Errorf("%w: vault %q", ErrNotFound, vault)
	}
	ver, err := e.newKeyVersion(o)
	if err != nil {
		return "", err
	}
	err = e.mutate(func() error { return e.addVersionLocked(vault, name, ver) })
	if err != nil {
		return "", err
	}
	return ver.ID, nil
}

// RotateKey adds a new, enabled version with the newest version's type,
// size and operations (dates are not copied).
func (e *Emulator) RotateKey(vault, name string) (string, error) {
	e.mu.Lock()
	o, err := e.rotateOptionsLocked(vault, name)
	e.mu.Unlock()
	if err != nil {
		return "", err
	}
	return e.CreateKey(vault, name, o)
}

func (e *Emulator) rotateOptionsLocked(vault, name string) (KeyOptions, error) {
	_, k, err := e.liveKeyLocked(vault, name)
	if err != nil {
		return KeyOptions{}, err
	}
	n := k.newest()
	return KeyOptions{Kty: n.Kty, Bits: n.bits(), Curve: n.Curve, Ops: slices.Clone(n.Ops),
		Expires: k.RotationPolicy.expiry(e.now())}, nil
}

func (e *Emulator) liveKeyLocked(vault, name string) (*vaultState, *keyState, error) {
	vs, err := e.liveVaultLocked(vault)
	if err != nil {
		return nil, nil, err
	}
	k := vs.Keys[strings.ToLower(name)]
	if k == nil {
		return vs, nil, fmt.Errorf("%w: key %s in vault %s", ErrNotFound, name, vs.Name)
	}
	return vs, k, nil
}

// UpdateKey changes the newest version of a key.
func (e *Emulator) UpdateKey(vault, name string, u KeyUpdate) error {
	var ops []string
	if u.Ops != nil {
		var err error
		if ops, err = normalizeOps(u.Ops); err != nil {
			return err
		}
	}
	return e.mutate(func() error {
		_, k, err := e.liveKeyLocked(vault, name)
		if err != nil {
			return err
		}
		applyKeyUpdate(k.newest(), u, ops, e.now())
		return nil
	})
}

func applyKeyUpdate(v *keyVersion, u KeyUpdate, ops []string, now time.Time) {
	if u.Enabled != nil {
		v.Enabled = *u.Enabled
	}
	if ops != nil {
		v.Ops = ops
	}
	if u.NotBefore != nil {
		v.NotBefore = utcPtr(u.NotBefore)
	}
	if u.Expires != nil {
		v.Expires = utcPtr(u.Expires)
	}
	if u.ClearNotBefore {
		v.NotBefore = nil
	}
	if u.ClearExpires {
		v.Expires = nil
	}
	v.Updated = now.UTC().Truncate(time.Second)
}

// DeleteKey deletes all versions of a key: soft-deleted (recoverable) when
// the vault has soft delete, otherwise gone.
func (e *Emulator) DeleteKey(vault, name string) error {
	return e.mutate(func() error {
		_, _, err := e.deleteKeyLocked(vault, name)
		return err
	})
}

func (e *Emulator) deleteKeyLocked(vault, name string) (*vaultState, *keyState, error) {
	vs, k, err := e.liveKeyLocked(vault, name)
	if err != nil {
		return nil, nil, err
	}
	lk := strings.ToLower(name)
	delete(vs.Keys, lk)
	k.DeletedAt = e.now().UTC().Truncate(time.Second)
	k.SettlesAt = e.settleTime()
	if vs.SoftDelete {
		vs.DeletedKeys[lk] = k
	}
	return vs, k, nil
}

// RecoverKey restores a soft-deleted key with all its versions.
func (e *Emulator) RecoverKey(vault, name string) error {
	return e.mutate(func() error {
		_, _, err := e.recoverKeyLocked(vault, name)
		return err
	})
}

func (e *Emulator) recoverKeyLocked(vault, name string) (*vaultState, *keyState, error) {
	vs, err := e.liveVaultLocked(vault)
	if err != nil {
		return nil, nil, err
	}
	lk := strings.ToLower(name)
	k := vs.DeletedKeys[lk]
	if k == nil {
		return vs, nil, fmt.Errorf("%w: deleted key %s", ErrNotFound, name)
	}
	delete(vs.DeletedKeys, lk)
	k.DeletedAt = time.Time{}
	k.SettlesAt = e.settleTime()
	vs.Keys[lk] = k
	return vs, k, nil
}

// PurgeKey permanently removes a soft-deleted key. Refused with ErrForbidden
// when the vault has purge protection (Azure answers 403).
func (e *Emulator) PurgeKey(vault, name string) error {
	return e.mutate(func() error { return e.purgeKeyLocked(vault, name) })
}

func (e *Emulator) purgeKeyLocked(vault, name string) error {
	vs, err := e.liveVaultLocked(vault)
	if err != nil {
		return err
	}
	lk := strings.ToLower(name)
	if vs.DeletedKeys[lk] == nil {
		return fmt.Errorf("%w: deleted key %s", ErrNotFound, name)
	}
	if vs.PurgeProtection {
		return fmt.Errorf("%w: %s", ErrForbidden, purgeProtectedMessage)
	}
	delete(vs.DeletedKeys, lk)
	return nil
}

// expireDeletedKeysLocked purges soft-deleted keys past their retention.
func (e *Emulator) expireDeletedKeysLocked(vs *vaultState) {
	if len(vs.DeletedKeys) == 0 {
		return
	}
	now := e.now()
	maps.DeleteFunc(vs.DeletedKeys, func(_ string, k *keyState) bool {
		return !now.Before(k.DeletedAt.AddDate(0, 0, vs.RetentionDays))
	})
}

// Key describes a key (live or soft-deleted).
func (e *Emulator) Key(vault, name string) (KeyInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	vs, err := e.liveVaultLocked(vault)
	if err != nil {
		return KeyInfo{}, err
	}
	if k := vs.Keys[strings.ToLower(name)]; k != nil {
		return e.keyInfoLocked(vs, k, false), nil
	}
	if k := vs.DeletedKeys[strings.ToLower(name)]; k != nil {
		return e.keyInfoLocked(vs, k, true), nil
	}
	return KeyInfo{}, fmt.Errorf("%w: key %s in vault %s", ErrNotFound, name, vault)
}

// KeyVersion returns the newest version id of a live key.
func (e *Emulator) KeyVersion(vault, name string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, k, err := e.liveKeyLocked(vault, name)
	if err != nil {
		return "", err
	}
	return k.newest().ID, nil
}

// KeyID is the kid of the newest version of a live key.
func (e *Emulator) KeyID(vault, name string) (string, error) {
	ver, err := e.KeyVersion(vault, name)
	if err != nil {
		return "", err
	}
	return e.VaultURL(vault) + "/keys/" + name + "/" + ver, nil
}

// GetVault describes a vault (also when soft-deleted).
func (e *Emulator) GetVault(name string) (VaultInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	vs := e.st.Vaults[strings.ToLower(name)]
	if vs == nil {
		return VaultInfo{}, fmt.Errorf("%w: vault %q", ErrNotFound, name)
	}
	return e.vaultInfoLocked(vs), nil
}

// State is a snapshot of all tenants, apps (without secrets) and vaults.
func (e *Emulator) State() State {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := State{URL: e.url, VaultSuffix: e.suffix}
	for _, id := range sortedKeys(e.st.Tenants) {
		t := e.st.Tenants[id]
		s.Tenants = append(s.Tenants, TenantInfo{ID: t.ID, ServicePrincipals: maps.Clone(t.ServicePrincipals)})
	}
	for _, id := range sortedKeys(e.st.Apps) {
		a := *e.st.Apps[id]
		a.ClientSecret = ""
		s.Apps = append(s.Apps, a)
	}
	for _, n := range sortedKeys(e.st.Vaults) {
		s.Vaults = append(s.Vaults, e.vaultInfoLocked(e.st.Vaults[n]))
	}
	return s
}

// Stats returns a copy of the counters.
func (e *Emulator) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.Vaults = maps.Clone(e.stats.Vaults)
	return s
}

func (e *Emulator) bumpVault(vault string, fn func(*VaultStats)) {
	vs := e.stats.Vaults[vault]
	fn(&vs)
	e.stats.Vaults[vault] = vs
}
