package azemu

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
)

// DefaultHSMSuffix is used when Options.HSMSuffix is empty.
const DefaultHSMSuffix = "managedhsm.azure.localhost"

// Managed HSM local RBAC role names accepted by AssignHSMRole.
const (
	RoleHSMCryptoUser                  = "Managed HSM Crypto User"
	RoleHSMCryptoServiceEncryptionUser = "Managed HSM Crypto Service Encryption User"
	RoleHSMCryptoOfficer               = "Managed HSM Crypto Officer"
	RoleHSMCryptoAuditor               = "Managed HSM Crypto Auditor"
	RoleHSMAdministrator               = "Managed HSM Administrator"
)

// Managed HSM data actions (named like Azure's).
const (
	hsmRead          = "Microsoft.KeyVault/managedHsm/keys/read/action"
	hsmWrite         = "Microsoft.KeyVault/managedHsm/keys/write/action"
	hsmCreate        = "Microsoft.KeyVault/managedHsm/keys/create"
	hsmDelete        = "Microsoft.KeyVault/managedHsm/keys/delete"
	hsmRotate        = "Microsoft.KeyVault/managedHsm/keys/rotate/action"
	hsmBackup        = "Microsoft.KeyVault/managedHsm/keys/backup/action"
	hsmRestore       = "Microsoft.KeyVault/managedHsm/keys/restore/action"
	hsmImport        = "Microsoft.KeyVault/managedHsm/keys/import/action"
	hsmEncrypt       = "Microsoft.KeyVault/managedHsm/keys/encrypt/action"
	hsmDecrypt       = "Microsoft.KeyVault/managedHsm/keys/decrypt/action"
	hsmWrap          = "Microsoft.KeyVault/managedHsm/keys/wrap/action"
	hsmUnwrap        = "Microsoft.KeyVault/managedHsm/keys/unwrap/action"
	hsmSign          = "Microsoft.KeyVault/managedHsm/keys/sign/action"
	hsmVerify        = "Microsoft.KeyVault/managedHsm/keys/verify/action"
	hsmDeletedRead   = "Microsoft.KeyVault/managedHsm/keys/deletedKeys/read/action"
	hsmDeletedRecov  = "Microsoft.KeyVault/managedHsm/keys/deletedKeys/recover/action"
	hsmDeletedPurge  = "Microsoft.KeyVault/managedHsm/keys/deletedKeys/delete"
	hsmRandom        = "Microsoft.KeyVault/managedHsm/rng/action"
	hsmRoleAssignWri = "Microsoft.KeyVault/managedHsm/roleAssignments/write/action"
)

// hsmActionOf maps the data plane's (vault) action of a request to the
// Managed HSM action that local RBAC checks.
var hsmActionOf = map[string]string{
	actRead: hsmRead, actUpdate: hsmWrite, actPolicyWrite: hsmWrite, actCreate: hsmCreate,
	actDelete: hsmDelete, actRotate: hsmRotate, actBackup: hsmBackup, actRestore: hsmRestore,
	actImport: hsmImport, actEncrypt: hsmEncrypt, actDecrypt: hsmDecrypt, actWrap: hsmWrap,
	actUnwrap: hsmUnwrap, actSign: hsmSign, actVerify: hsmVerify, actDeletedRead: hsmDeletedRead,
	actDeletedRecov: hsmDeletedRecov, actDeletedPurge: hsmDeletedPurge, actRandom: hsmRandom,
}

// hsmRoleActions are the data actions of the built-in Managed HSM roles,
// following Azure's role table: the Crypto User uses and manages keys but
// cannot recover or purge deleted ones; the Crypto Officer manages keys
// (including recover and purge) but cannot use them; the Service
// Encryption User only reads, wraps and unwraps (what a service needs for
// customer-managed keys); the Administrator manages the HSM and its role
// assignments and has no key permissions at all.
var hsmRoleActions = map[string][]string{
	RoleHSMCryptoUser: {hsmRead, hsmWrite, hsmCreate, hsmDelete, hsmRotate, hsmBackup, hsmRestore, hsmImport,
		hsmEncrypt, hsmDecrypt, hsmWrap, hsmUnwrap, hsmSign, hsmVerify, hsmDeletedRead, hsmRandom},
	RoleHSMCryptoServiceEncryptionUser: {hsmRead, hsmWrap, hsmUnwrap},
	RoleHSMCryptoOfficer: {hsmRead, hsmWrite, hsmCreate, hsmDelete, hsmRotate, hsmBackup, hsmRestore, hsmImport,
		hsmDeletedRead, hsmDeletedRecov, hsmDeletedPurge},
	RoleHSMCryptoAuditor: {hsmRead, hsmDeletedRead},
	RoleHSMAdministrator: {hsmRoleAssignWri},
}

func canonicalHSMRole(role string) (string, bool) {
	for r := range hsmRoleActions {
		if strings.EqualFold(strings.TrimSpace(role), r) {
			return r, true
		}
	}
	return "", false
}

// canonicalHSMScope accepts "/" (or ""), "/keys" and "/keys/{name}".
func canonicalHSMScope(scope string) (string, bool) {
	s := strings.TrimSpace(scope)
	switch {
	case s == "" || s == "/":
		return "/", true
	case strings.EqualFold(s, "/keys"):
		return "/keys", true
	}
	name, ok := strings.CutPrefix(s, "/keys/")
	if !ok || !keyNameRE.MatchString(name) {
		return "", false
	}
	return "/keys/" + strings.ToLower(name), true
}

// hsmScopeCovers reports whether an assignment at scope applies to a
// request on key (empty for requests not about one key).
func hsmScopeCovers(scope, key string) bool {
	switch scope {
	case "/", "", "/keys":
		return true
	}
	return key != "" && strings.EqualFold(scope, "/keys/"+key)
}

// hsmAllows is the local RBAC decision for one request.
func hsmAllows(roles []RoleAssignment, oid, action, key string) bool {
	if oid == "" {
		return false
	}
	for _, ra := range roles {
		if strings.EqualFold(ra.PrincipalObjectID, oid) && hsmScopeCovers(ra.Scope, key) &&
			slices.Contains(hsmRoleActions[ra.Role], action) {
			return true
		}
	}
	return false
}

// allowedFor decides RBAC for a request: vault roles for a vault, local
// RBAC for a Managed HSM.
func (e *Emulator) allowedFor(v Vault, oid string, rt *kvRoute) bool {
	if !v.ManagedHSM {
		return e.rbacAllows(v.Name, oid, rt.action)
	}
	action, ok := hsmActionOf[rt.action]
	if !ok {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	vs := e.st.Vaults[v.Name]
	return vs != nil && hsmAllows(vs.Roles, oid, action, rt.key)
}

// actionFor names a request's action as the 403 message shows it.
func actionFor(v Vault, action string) string {
	if v.ManagedHSM {
		if a, ok := hsmActionOf[action]; ok {
			return a
		}
	}
	return action
}

func resourceKind(v Vault) string {
	if v.ManagedHSM {
		return "managedhsms"
	}
	return "vaults"
}

// resourceFor is the token audience (and challenge resource) of a vault:
// "https://{vault suffix}" or, for a Managed HSM, "https://{HSM suffix}".
// azkeys accepts the challenge because every host ends in "."+suffix.
func (e *Emulator) resourceFor(v Vault) string {
	if v.ManagedHSM {
		return e.HSMResource()
	}
	return e.VaultResource()
}

// HSMSuffix is the DNS suffix of Managed HSM hosts.
func (e *Emulator) HSMSuffix() string { return e.hsmSuffix }

// HSMResource is the token audience Managed HSMs expect, "https://{HSM suffix}".
func (e *Emulator) HSMResource() string { return "https://" + e.hsmSuffix }

// HSMURL is "https://{name}.{HSM suffix}".
func (e *Emulator) HSMURL(name string) string {
	return "https://" + strings.ToLower(name) + "." + e.hsmSuffix
}

// ManagedHSM describes a Managed HSM. Soft delete is always on; purge
// protection, once on, cannot be switched off; RetentionDays defaults to 90.
type ManagedHSM struct {
	Name            string `json:"name"`
	TenantID        string `json:"tenantId"`
	PurgeProtection bool   `json:"purgeProtection"`
	RetentionDays   int    `json:"retentionDays,omitempty"`
	Location        string `json:"location,omitempty"`
}

// CreateManagedHSM creates a Managed HSM owned by an existing tenant. Vaults
// and HSMs share one name space in the emulator.
func (e *Emulator) CreateManagedHSM(h ManagedHSM) error {
	if !vaultNameRE.MatchString(h.Name) || strings.Contains(h.Name, "--") || len(h.Name) < 3 {
		return fmt.Errorf("%w: Managed HSM name %q (3-24 letters, digits and hyphens, starting with a letter)", ErrInvalid, h.Name)
	}
	if h.RetentionDays == 0 {
		h.RetentionDays = defaultRetention
	}
	if h.RetentionDays < 7 || h.RetentionDays > 90 {
		return fmt.Errorf("%w: retention days %d (7-90)", ErrInvalid, h.RetentionDays)
	}
	if h.Location == "" {
		h.Location = defaultLocation
	}
	v := Vault{Name: strings.ToLower(h.Name), TenantID: h.TenantID, SKU: "Standard_B1", SoftDelete: true,
		PurgeProtection: h.PurgeProtection, RetentionDays: h.RetentionDays, Location: h.Location, ManagedHSM: true}
	return e.mutate(func() error {
		if e.st.Tenants[strings.ToLower(v.TenantID)] == nil {
			return fmt.Errorf("%w: tenant %q", ErrNotFound, v.TenantID)
		}
		if e.st.Vaults[v.Name] != nil {
			return fmt.Errorf("%w: a vault or Managed HSM named %s exists (or is deleted but recoverable)", ErrConflict, v.Name)
		}
		e.st.Vaults[v.Name] = &vaultState{Vault: v, Keys: map[string]*keyState{}, DeletedKeys: map[string]*keyState{}}
		e.hsmNames.Store(v.Name, true)
		return nil
	})
}

// EnableHSMPurgeProtection switches purge protection on. There is no way
// back, as in Azure.
func (e *Emulator) EnableHSMPurgeProtection(name string) error {
	return e.mutate(func() error {
		vs, err := e.liveHSMLocked(name)
		if err != nil {
			return err
		}
		vs.PurgeProtection = true
		return nil
	})
}

func (e *Emulator) liveHSMLocked(name string) (*vaultState, error) {
	vs, err := e.liveVaultLocked(name)
	if err != nil || !vs.ManagedHSM {
		return nil, fmt.Errorf("%w: Managed HSM %q", ErrNotFound, name)
	}
	return vs, nil
}

// AssignHSMRole gives a principal a Managed HSM local RBAC role at scope
// "/" (or ""), "/keys" or "/keys/{name}". Accepted roles: the RoleHSM*
// constants (case-insensitive).
func (e *Emulator) AssignHSMRole(hsm, principalObjectID, role, scope string) error {
	r, ok := canonicalHSMRole(role)
	if !ok || principalObjectID == "" {
		return fmt.Errorf("%w: role %q for principal %q (roles: %s, %s, %s, %s, %s)", ErrInvalid, role, principalObjectID,
			RoleHSMCryptoUser, RoleHSMCryptoServiceEncryptionUser, RoleHSMCryptoOfficer, RoleHSMCryptoAuditor, RoleHSMAdministrator)
	}
	sc, ok := canonicalHSMScope(scope)
	if !ok {
		return fmt.Errorf("%w: scope %q (\"/\", \"/keys\" or \"/keys/{name}\")", ErrInvalid, scope)
	}
	return e.mutate(func() error {
		vs, err := e.liveHSMLocked(hsm)
		if err != nil {
			return err
		}
		ra := RoleAssignment{PrincipalObjectID: principalObjectID, Role: r, Scope: sc}
		if !slices.Contains(vs.Roles, ra) {
			vs.Roles = append(vs.Roles, ra)
		}
		return nil
	})
}

// RemoveHSMRole removes a Managed HSM role assignment.
func (e *Emulator) RemoveHSMRole(hsm, principalObjectID, role, scope string) error {
	r, ok1 := canonicalHSMRole(role)
	sc, ok2 := canonicalHSMScope(scope)
	if !ok1 || !ok2 {
		return fmt.Errorf("%w: role %q at scope %q", ErrInvalid, role, scope)
	}
	return e.mutate(func() error {
		vs, err := e.liveHSMLocked(hsm)
		if err != nil {
			return err
		}
		i := slices.Index(vs.Roles, RoleAssignment{PrincipalObjectID: principalObjectID, Role: r, Scope: sc})
		if i < 0 {
			return fmt.Errorf("%w: no role %s for %s at %s", ErrNotFound, r, principalObjectID, sc)
		}
		vs.Roles = slices.Delete(vs.Roles, i, i+1)
		return nil
	})
}

// isHSMName reports whether name is a Managed HSM (live or deleted).
func (e *Emulator) isHSMName(name string) bool {
	_, ok := e.hsmNames.Load(strings.ToLower(name))
	return ok
}

// hsmRoleReq is the admin API body for Managed HSM role assignments.
type hsmRoleReq struct {
	PrincipalObjectID string `json:"principalObjectId"`
	Role              string `json:"role"`
	Scope             string `json:"scope,omitempty"`
}

type hsmPatch struct {
	PurgeProtection *bool `json:"purgeProtection,omitempty"`
}

func (e *Emulator) hsmAdminRoutes(m *http.ServeMux) {
	h := func(pattern string, f adminFunc) { m.Handle(pattern, adminHandler(f)) }
	h("POST /admin/managedhsms", func(r *http.Request) (any, error) {
		var q ManagedHSM
		if err := readJSON(r, &q); err != nil {
			return nil, err
		}
		return nil, e.CreateManagedHSM(q)
	})
	h("GET /admin/managedhsms/{hsm}", func(r *http.Request) (any, error) {
		vi, err := e.GetVault(r.PathValue("hsm"))
		if err == nil && !vi.ManagedHSM {
			err = fmt.Errorf("%w: Managed HSM %q", ErrNotFound, r.PathValue("hsm"))
		}
		return vi, err
	})
	h("PATCH /admin/managedhsms/{hsm}", func(r *http.Request) (any, error) {
		var q hsmPatch
		if err := readJSON(r, &q); err != nil {
			return nil, err
		}
		if q.PurgeProtection == nil {
			return nil, nil
		}
		if !*q.PurgeProtection {
			return nil, fmt.Errorf("%w: purge protection of a Managed HSM cannot be switched off", ErrForbidden)
		}
		return nil, e.EnableHSMPurgeProtection(r.PathValue("hsm"))
	})
	h("POST /admin/managedhsms/{hsm}/roles", func(r *http.Request) (any, error) {
		var q hsmRoleReq
		if err := readJSON(r, &q); err != nil {
			return nil, err
		}
		return nil, e.AssignHSMRole(r.PathValue("hsm"), q.PrincipalObjectID, q.Role, q.Scope)
	})
	h("DELETE /admin/managedhsms/{hsm}/roles", func(r *http.Request) (any, error) {
		var q hsmRoleReq
		if err := readJSON(r, &q); err != nil {
			return nil, err
		}
		return nil, e.RemoveHSMRole(r.PathValue("hsm"), q.PrincipalObjectID, q.Role, q.Scope)
	})
}

// CreateManagedHSM mirrors Emulator.CreateManagedHSM.
func (c *AdminClient) CreateManagedHSM(h ManagedHSM) error {
	return c.do(bg(), http.MethodPost, "/admin/managedhsms", h, nil)
}

// EnableHSMPurgeProtection mirrors Emulator.EnableHSMPurgeProtection.
func (c *AdminClient) EnableHSMPurgeProtection(name string) error {
	on := true
	return c.do(bg(), http.MethodPatch, "/admin/managedhsms"+p(name), hsmPatch{PurgeProtection: &on}, nil)
}

// AssignHSMRole mirrors Emulator.AssignHSMRole.
func (c *AdminClient) AssignHSMRole(hsm, principalObjectID, role, scope string) error {
	return c.do(bg(), http.MethodPost, "/admin/managedhsms"+p(hsm, "roles"), hsmRoleReq{principalObjectID, role, scope}, nil)
}

// RemoveHSMRole mirrors Emulator.RemoveHSMRole.
func (c *AdminClient) RemoveHSMRole(hsm, principalObjectID, role, scope string) error {
	return c.do(bg(), http.MethodDelete, "/admin/managedhsms"+p(hsm, "roles"), hsmRoleReq{principalObjectID, role, scope}, nil)
}

// settleTime is when a delete or recover started now completes (zero when
// Options.KeyStateDelay is zero).
func (e *Emulator) settleTime() time.Time {
	if e.opts.KeyStateDelay <= 0 {
		return time.Time{}
	}
	return e.now().Add(e.opts.KeyStateDelay)
}

// routeHSMHosts makes a routing transport send "{hsm}.{suffix}" hosts of
// live Managed HSMs to the emulator too; other names of that suffix fail
// as a missing DNS name does.
func routeHSMHosts(t *http.Transport, emuHost, suffix string, resolves func(name string) bool) {
	routeHSMHostsCtx(t, emuHost, suffix, func(_ context.Context, name string) bool { return resolves(name) })
}

func routeHSMHostsCtx(t *http.Transport, emuHost, suffix string, resolves func(ctx context.Context, name string) bool) {
	next := t.DialContext
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err == nil && strings.HasSuffix(strings.ToLower(strings.TrimSuffix(host, ".")), "."+suffix) {
			name, ok := vaultFromHost(host, suffix)
			if !ok || !resolves(ctx, name) {
				return nil, dnsNotFound(host)
			}
			return d.DialContext(ctx, network, emuHost)
		}
		return next(ctx, network, addr)
	}
}

// discoveryHost is where MSAL sends instance discovery for authorities it
// does not know; the emulator's transports send it to the emulator.
const discoveryHost = "login.microsoftonline.com"

// routeDiscoveryHost makes a routing transport send discoveryHost to the
// emulator, so that clients with instance discovery on (azidentity's
// default) work.
func routeDiscoveryHost(t *http.Transport, emuHost string) {
	next := t.DialContext
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, port, err := net.SplitHostPort(addr); err == nil && port == "443" && strings.EqualFold(strings.TrimSuffix(host, "."), discoveryHost) {
			return d.DialContext(ctx, network, emuHost)
		}
		return next(ctx, network, addr)
	}
}
