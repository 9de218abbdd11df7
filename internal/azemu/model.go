package azemu

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
)

// Errors returned by the Go admin API (and by AdminClient, wrapped).
var (
	ErrNotFound  = errors.New("not found")
	ErrInvalid   = errors.New("invalid argument")
	ErrConflict  = errors.New("conflict")
	ErrForbidden = errors.New("forbidden")
)

// Role names accepted by AssignRole.
const (
	RoleCryptoServiceEncryptionUser = "Key Vault Crypto Service Encryption User"
	RoleCryptoUser                  = "Key Vault Crypto User"
	RoleCryptoOfficer               = "Key Vault Crypto Officer"
	RoleAdministrator               = "Key Vault Administrator"
	RoleReader                      = "Key Vault Reader"
)

// Data actions checked by the RBAC layer (named like Azure's).
const (
	actRead          = "Microsoft.KeyVault/vaults/keys/read"
	actWrap          = "Microsoft.KeyVault/vaults/keys/wrap/action"
	actUnwrap        = "Microsoft.KeyVault/vaults/keys/unwrap/action"
	actEncrypt       = "Microsoft.KeyVault/vaults/keys/encrypt/action"
	actDecrypt       = "Microsoft.KeyVault/vaults/keys/decrypt/action"
	actSign          = "Microsoft.KeyVault/vaults/keys/sign/action"
	actVerify        = "Microsoft.KeyVault/vaults/keys/verify/action"
	actCreate        = "Microsoft.KeyVault/vaults/keys/create/action"
	actUpdate        = "Microsoft.KeyVault/vaults/keys/update/action"
	actRotate        = "Microsoft.KeyVault/vaults/keys/rotate/action"
	actDelete        = "Microsoft.KeyVault/vaults/keys/delete"
	actDeletedRead   = "Microsoft.KeyVault/vaults/deletedKeys/read"
	actDeletedRecov  = "Microsoft.KeyVault/vaults/deletedKeys/recover/action"
	actDeletedPurge  = "Microsoft.KeyVault/vaults/deletedKeys/delete"
	subscriptionID   = "00000000-0000-0000-0000-000000000000"
	resourceGroup    = "cmk-emulator"
	defaultLocation  = "eastus"
	defaultRetention = 90
)

var roleActions = map[string][]string{
	RoleCryptoServiceEncryptionUser: {actRead, actWrap, actUnwrap},
	RoleCryptoUser:                  {actRead, actWrap, actUnwrap, actEncrypt, actDecrypt, actSign, actVerify},
	RoleReader:                      {actRead},
	RoleCryptoOfficer:               nil, // all key actions
	RoleAdministrator:               nil, // all
}

func canonicalRole(role string) (string, bool) {
	for r := range roleActions {
		if strings.EqualFold(strings.TrimSpace(role), r) {
			return r, true
		}
	}
	return "", false
}

func roleAllows(role, action string) bool {
	acts, ok := roleActions[role]
	if !ok {
		return false
	}
	if acts == nil {
		return true
	}
	return slices.Contains(acts, action)
}

// App is the platform's (multi-tenant) app registration.
type App struct {
	HomeTenant   string `json:"homeTenant"`
	ClientID     string `json:"clientId"`
	ClientSecret string `json:"clientSecret,omitempty"`
	Name         string `json:"name"`
	RedirectURI  string `json:"redirectUri,omitempty"`
	// RedirectURIs are further registered redirect URIs (an Entra app has a
	// list); a consent request may name any of them or RedirectURI.
	RedirectURIs  []string  `json:"redirectUris,omitempty"`
	SecretExpires time.Time `json:"secretExpires,omitzero"` // zero = never
}

// allowsRedirect reports whether uri is one of the app's redirect URIs. An
// app that registered none accepts any.
func (a App) allowsRedirect(uri string) bool {
	if a.RedirectURI == "" && len(a.RedirectURIs) == 0 {
		return true
	}
	return uri == a.RedirectURI || slices.Contains(a.RedirectURIs, uri)
}

// Vault describes a key vault. Zero values: SKU "standard", RetentionDays 90
// when SoftDelete is on, Location "eastus".
type Vault struct {
	Name            string `json:"name"`
	TenantID        string `json:"tenantId"`
	SKU             string `json:"sku,omitempty"`
	SoftDelete      bool   `json:"softDelete"`
	PurgeProtection bool   `json:"purgeProtection"`
	RetentionDays   int    `json:"retentionDays,omitempty"`
	FirewallDeny    bool   `json:"firewallDeny"`
	Location        string `json:"location,omitempty"` // extra: shown in Azure-style messages
	// APIVersions are the data-plane api-versions the vault accepts, oldest
	// first; empty means DefaultAPIVersions. A shorter list stands for a
	// cloud that lags behind (a sovereign cloud, Azure Stack Hub).
	APIVersions []string `json:"apiVersions,omitempty"`
	// ManagedHSM marks a Managed HSM (created with CreateManagedHSM, served
	// on "{name}.{HSM suffix}"); CreateVault refuses it.
	ManagedHSM bool `json:"managedHsm,omitempty"`
}

// VaultPatch is the serialisable form of UpdateVault (nil = unchanged).
type VaultPatch struct {
	SKU             *string `json:"sku,omitempty"`
	SoftDelete      *bool   `json:"softDelete,omitempty"`
	PurgeProtection *bool   `json:"purgeProtection,omitempty"`
	RetentionDays   *int    `json:"retentionDays,omitempty"`
	FirewallDeny    *bool   `json:"firewallDeny,omitempty"`
	TenantID        *string `json:"tenantId,omitempty"`
	// APIVersions replaces the accepted api-versions; nil leaves them, an
	// empty list restores DefaultAPIVersions (so no omitempty: [] must
	// reach the server).
	APIVersions []string `json:"apiVersions"`
}

func (p VaultPatch) apply(v *Vault) {
	if p.SKU != nil {
		v.SKU = *p.SKU
	}
	if p.SoftDelete != nil {
		v.SoftDelete = *p.SoftDelete
	}
	if p.PurgeProtection != nil {
		v.PurgeProtection = *p.PurgeProtection
	}
	if p.RetentionDays != nil {
		v.RetentionDays = *p.RetentionDays
	}
	if p.FirewallDeny != nil {
		v.FirewallDeny = *p.FirewallDeny
	}
	if p.TenantID != nil {
		v.TenantID = *p.TenantID
	}
	if p.APIVersions != nil {
		v.APIVersions = slices.Clone(p.APIVersions)
	}
}

// KeyOptions configures CreateKey.
type KeyOptions struct {
	Kty       string     `json:"kty,omitempty"`     // RSA (default), RSA-HSM, EC, EC-HSM, oct, oct-HSM
	Bits      int        `json:"bits,omitempty"`    // RSA: 2048, 3072 (default) or 4096; oct: 128, 192, 256 (default)
	Curve     string     `json:"crv,omitempty"`     // EC: P-256 (default), P-256K, P-384, P-521
	Ops       []string   `json:"ops,omitempty"`     // default wrapKey,unwrapKey,encrypt,decrypt,sign,verify
	Enabled   *bool      `json:"enabled,omitempty"` // default true
	NotBefore *time.Time `json:"notBefore,omitempty"`
	Expires   *time.Time `json:"expires,omitempty"`
	// RSA, for an RSA key type, is the material to import instead of
	// generating it (as PUT /keys/{name} imports a key): tests that need
	// thousands of keys make a few and import them under many names.
	RSA *rsa.PrivateKey `json:"-"`
}

// KeyUpdate changes the newest version of a key. Nil fields are unchanged.
// To remove an activation or expiry date set ClearNotBefore / ClearExpires
// (they win over NotBefore / Expires).
type KeyUpdate struct {
	Enabled        *bool      `json:"enabled,omitempty"`
	Ops            []string   `json:"ops,omitempty"` // nil = unchanged; empty non-nil = no operations
	NotBefore      *time.Time `json:"notBefore,omitempty"`
	Expires        *time.Time `json:"expires,omitempty"`
	ClearNotBefore bool       `json:"clearNotBefore,omitempty"`
	ClearExpires   bool       `json:"clearExpires,omitempty"`
}

// RoleAssignment is one data-plane role held by a principal on a vault.
type RoleAssignment struct {
	PrincipalObjectID string `json:"principalObjectId"`
	Role              string `json:"role"`
	// Scope is used by Managed HSM local RBAC only: "/" (the whole HSM,
	// also when empty), "/keys" or "/keys/{name}".
	Scope string `json:"scope,omitempty"`
}

// Stats are counters since Start (not persisted).
type Stats struct {
	TokensIssued   int                   `json:"tokensIssued"`
	TokenFailures  int                   `json:"tokenFailures"`
	Throttled      int                   `json:"throttled"` // 429s over all vaults
	Vaults         map[string]VaultStats `json:"vaults"`
	ConsentsGiven  int                   `json:"consentsGiven"`
	VaultRequests  int                   `json:"vaultRequests"`
	VaultForbidden int                   `json:"vaultForbidden"`
}

// VaultStats counts successful key operations served by one vault and the
// 429s it returned.
type VaultStats struct {
	Get       int `json:"get"`
	Wrap      int `json:"wrap"`
	Unwrap    int `json:"unwrap"`
	Other     int `json:"other"` // encrypt/decrypt/sign/verify/create/update/delete...
	Throttled int `json:"throttled"`
	Requests  int `json:"requests"` // every data-plane request that reached the vault
	Resets    int `json:"resets"`   // connections reset instead of answered (SetVaultReset)
}

// KeyVersionInfo describes one key version (no private material).
type KeyVersionInfo struct {
	Version   string     `json:"version"`
	KID       string     `json:"kid"`
	Kty       string     `json:"kty"`
	Bits      int        `json:"bits"`
	Curve     string     `json:"crv,omitempty"`
	Ops       []string   `json:"ops"`
	Enabled   bool       `json:"enabled"`
	NotBefore *time.Time `json:"notBefore,omitempty"`
	Expires   *time.Time `json:"expires,omitempty"`
	Created   time.Time  `json:"created"`
	Updated   time.Time  `json:"updated"`
}

// KeyInfo describes a key; Versions are oldest first (the last is newest).
type KeyInfo struct {
	Name      string           `json:"name"`
	Deleted   bool             `json:"deleted"`
	DeletedAt *time.Time       `json:"deletedAt,omitempty"`
	Versions  []KeyVersionInfo `json:"versions"`
}

// VaultInfo is the admin view of a vault.
type VaultInfo struct {
	Vault
	URL            string           `json:"url"`
	Deleted        bool             `json:"deleted"`
	DeletedAt      *time.Time       `json:"deletedAt,omitempty"`
	RecoveryLevel  string           `json:"recoveryLevel"`
	Roles          []RoleAssignment `json:"roles"`
	Keys           []KeyInfo        `json:"keys"`
	ThrottleLimit  int              `json:"throttleLimit,omitempty"`
	ThrottleWindow time.Duration    `json:"throttleWindowNs,omitempty"`
	// ThrottleRetryAfter: the vault's 429s carry a Retry-After header.
	ThrottleRetryAfter bool `json:"throttleRetryAfter,omitempty"`
}

// TenantInfo is the admin view of a tenant.
type TenantInfo struct {
	ID string `json:"id"`
	// ServicePrincipals maps an app's client id to its object id in this tenant.
	ServicePrincipals map[string]string `json:"servicePrincipals"`
}

// State is a snapshot of the emulator (secrets omitted).
type State struct {
	URL         string       `json:"url"`
	VaultSuffix string       `json:"vaultSuffix"`
	Tenants     []TenantInfo `json:"tenants"`
	Apps        []App        `json:"apps"`
	Vaults      []VaultInfo  `json:"vaults"`
}

// ---- persisted state ----

type state struct {
	Version       int                     `json:"version"`
	CACertPEM     string                  `json:"caCertPem"`
	CAKeyPEM      string                  `json:"caKeyPem"`
	SigningKeyPEM string                  `json:"signingKeyPem"`
	Tenants       map[string]*tenantState `json:"tenants"`
	Apps          map[string]*App         `json:"apps"`
	Vaults        map[string]*vaultState  `json:"vaults"`
}

type tenantState struct {
	ID                string            `json:"id"`
	ServicePrincipals map[string]string `json:"servicePrincipals"`
}

type vaultState struct {
	Vault
	Deleted        bool                 `json:"deleted,omitempty"`
	DeletedAt      time.Time            `json:"deletedAt,omitzero"`
	Roles          []RoleAssignment     `json:"roles"`
	Keys           map[string]*keyState `json:"keys"`
	DeletedKeys    map[string]*keyState `json:"deletedKeys"`
	ThrottleLimit  int                  `json:"throttleLimit,omitempty"`
	ThrottleWindow time.Duration        `json:"throttleWindow,omitempty"`
	// ThrottleRetryAfter makes a 429 carry Retry-After (Key Vault's does not).
	ThrottleRetryAfter bool `json:"throttleRetryAfter,omitempty"`
}

type keyState struct {
	Name      string        `json:"name"`
	Versions  []*keyVersion `json:"versions"`
	DeletedAt time.Time     `json:"deletedAt,omitzero"`
	// SettlesAt is when a delete or recover of the key completes (see
	// Options.KeyStateDelay); until then the key answers as neither live
	// nor deleted.
	SettlesAt      time.Time       `json:"settlesAt,omitzero"`
	RotationPolicy *rotationPolicy `json:"rotationPolicy,omitempty"`
}

type keyVersion struct {
	ID         string            `json:"id"`
	Kty        string            `json:"kty"`
	Ops        []string          `json:"ops"`
	Enabled    bool              `json:"enabled"`
	NotBefore  *time.Time        `json:"notBefore,omitempty"`
	Expires    *time.Time        `json:"expires,omitempty"`
	Created    time.Time         `json:"created"`
	Updated    time.Time         `json:"updated"`
	Tags       map[string]string `json:"tags,omitempty"`
	PrivateKey []byte            `json:"privateKey,omitempty"` // RSA: PKCS#1 DER
	Curve      string            `json:"crv,omitempty"`        // EC
	ECKey      []byte            `json:"ecKey,omitempty"`      // EC: private scalar, big-endian
	Secret     []byte            `json:"secret,omitempty"`     // oct: AES key
	Exportable bool              `json:"exportable,omitempty"`
	Release    *releasePolicy    `json:"releasePolicy,omitempty"`
	priv       *rsa.PrivateKey
	ec         *ecKey
}

func (k *keyState) newest() *keyVersion { return k.Versions[len(k.Versions)-1] }

func (k *keyState) version(id string) *keyVersion {
	if id == "" {
		return k.newest()
	}
	for _, v := range k.Versions {
		if strings.EqualFold(v.ID, id) {
			return v
		}
	}
	return nil
}

func newState() *state {
	return &state{Version: 1, Tenants: map[string]*tenantState{}, Apps: map[string]*App{}, Vaults: map[string]*vaultState{}}
}

func (st *state) fill() error {
	if st.Tenants == nil {
		st.Tenants = map[string]*tenantState{}
	}
	if st.Apps == nil {
		st.Apps = map[string]*App{}
	}
	if st.Vaults == nil {
		st.Vaults = map[string]*vaultState{}
	}
	for _, t := range st.Tenants {
		if t.ServicePrincipals == nil {
			t.ServicePrincipals = map[string]string{}
		}
	}
	for _, v := range st.Vaults {
		if v.Keys == nil {
			v.Keys = map[string]*keyState{}
		}
		if v.DeletedKeys == nil {
			v.DeletedKeys = map[string]*keyState{}
		}
		for _, m := range []map[string]*keyState{v.Keys, v.DeletedKeys} {
			for _, k := range m {
				for _, ver := range k.Versions {
					if err := ver.loadMaterial(); err != nil {
						return fmt.Errorf("key %s/%s/%s: %w", v.Name, k.Name, ver.ID, err)
					}
				}
			}
		}
	}
	return nil
}

func loadState(path string) (*state, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return newState(), nil
	}
	if err != nil {
		return nil, err
	}
	st := newState()
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("azemu: parse state file %s: %w", path, err)
	}
	if err := st.fill(); err != nil {
		return nil, fmt.Errorf("azemu: state file %s: %w", path, err)
	}
	return st, nil
}

// saveLocked writes the state file; e.mu must be held.
func (e *Emulator) saveLocked() error {
	if e.opts.StateFile == "" {
		return nil
	}
	b, err := json.MarshalIndent(e.st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(e.opts.StateFile, b, 0o600)
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// mutate runs fn under the lock and saves the state if fn succeeded.
func (e *Emulator) mutate(fn func() error) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := fn(); err != nil {
		return err
	}
	if err := e.saveLocked(); err != nil {
		return fmt.Errorf("azemu: save state: %w", err)
	}
	return nil
}

// ---- helpers ----

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func newVersionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

var (
	vaultNameRE  = regexp.MustCompile(`^[a-zA-Z]([a-zA-Z0-9-]{0,22}[a-zA-Z0-9])?$`)
	keyNameRE    = regexp.MustCompile(`^[a-zA-Z0-9-]{1,127}$`)
	tenantNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9.-]{0,127}$`)
)

var validOps = []string{"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey", "import", "export"}

var defaultOps = []string{"wrapKey", "unwrapKey", "encrypt", "decrypt", "sign", "verify"}

func normalizeOps(ops []string) ([]string, error) {
	out := make([]string, 0, len(ops))
	for _, o := range ops {
		found := ""
		for _, v := range validOps {
			if strings.EqualFold(o, v) {
				found = v
			}
		}
		if found == "" {
			return nil, fmt.Errorf("%w: unknown key operation %q", ErrInvalid, o)
		}
		if !slices.Contains(out, found) {
			out = append(out, found)
		}
	}
	return out, nil
}

func recoveryLevel(v *Vault) (string, int) {
	if !v.SoftDelete {
		return "Purgeable", 0
	}
	days := v.RetentionDays
	if days == 0 {
		days = defaultRetention
	}
	prefix := "Recoverable"
	if days < 90 {
		prefix = "CustomizedRecoverable"
	}
	if v.PurgeProtection {
		return prefix, days
	}
	return prefix + "+Purgeable", days
}

func (e *Emulator) vaultURLFor(name string) string {
	if e.isHSMName(name) {
		return "https://" + name + "." + e.hsmSuffix
	}
	return "https://" + name + "." + e.suffix
}

func (e *Emulator) keyInfoLocked(v *vaultState, k *keyState, deleted bool) KeyInfo {
	ki := KeyInfo{Name: k.Name, Deleted: deleted}
	if deleted {
		t := k.DeletedAt
		ki.DeletedAt = &t
	}
	for _, ver := range k.Versions {
		ki.Versions = append(ki.Versions, KeyVersionInfo{
			Version: ver.ID, KID: e.vaultURLFor(v.Name) + "/keys/" + k.Name + "/" + ver.ID,
			Kty: ver.Kty, Bits: ver.bits(), Curve: ver.Curve, Ops: slices.Clone(ver.Ops), Enabled: ver.Enabled,
			NotBefore: ver.NotBefore, Expires: ver.Expires, Created: ver.Created, Updated: ver.Updated,
		})
	}
	return ki
}

func (e *Emulator) vaultInfoLocked(v *vaultState) VaultInfo {
	vi := VaultInfo{Vault: v.Vault, URL: e.vaultURLFor(v.Name), Deleted: v.Deleted,
		Roles: slices.Clone(v.Roles), ThrottleLimit: v.ThrottleLimit, ThrottleWindow: v.ThrottleWindow,
		ThrottleRetryAfter: v.ThrottleRetryAfter}
	vi.RecoveryLevel, _ = recoveryLevel(&v.Vault)
	if v.Deleted {
		t := v.DeletedAt
		vi.DeletedAt = &t
	}
	for _, name := range sortedKeys(v.Keys) {
		vi.Keys = append(vi.Keys, e.keyInfoLocked(v, v.Keys[name], false))
	}
	for _, name := range sortedKeys(v.DeletedKeys) {
		vi.Keys = append(vi.Keys, e.keyInfoLocked(v, v.DeletedKeys[name], true))
	}
	return vi
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
