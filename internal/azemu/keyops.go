package azemu

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Data actions of the operations added to the keys data plane.
const (
	actBackup      = "Microsoft.KeyVault/vaults/keys/backup/action"
	actRestore     = "Microsoft.KeyVault/vaults/keys/restore/action"
	actImport      = "Microsoft.KeyVault/vaults/keys/import/action"
	actPolicyRead  = "Microsoft.KeyVault/vaults/keys/read"
	actPolicyWrite = "Microsoft.KeyVault/vaults/keys/write"
	actRandom      = "Microsoft.KeyVault/managedHsm/rng/action"
)

// parseKVRouteExt routes the requests vault.go's table does not know:
// import, backup, restore, rotation policy and random bytes. It returns
// nil for everything else.
func parseKVRouteExt(r *http.Request, segs []string, rt func(action, op, key, version string, h func(*Emulator, *kvReq, *kvRoute)) *kvRoute) *kvRoute {
	m := r.Method
	switch {
	case len(segs) == 1 && segs[0] == "rng" && m == http.MethodPost:
		return rt(actRandom, "rng", "", "", (*Emulator).kvRandomBytes)
	case len(segs) == 2 && segs[0] == "keys" && segs[1] == "restore" && m == http.MethodPost:
		return rt(actRestore, "restore", "", "", (*Emulator).kvRestore)
	case len(segs) == 2 && segs[0] == "keys" && m == http.MethodPut && keyNameRE.MatchString(segs[1]):
		return rt(actImport, "import", segs[1], "", (*Emulator).kvImport)
	case len(segs) == 3 && segs[0] == "keys" && keyNameRE.MatchString(segs[1]):
		switch {
		case segs[2] == "backup" && m == http.MethodPost:
			return rt(actBackup, "backup", segs[1], "", (*Emulator).kvBackup)
		case segs[2] == "rotationpolicy" && m == http.MethodGet:
			return rt(actPolicyRead, "getRotationPolicy", segs[1], "", (*Emulator).kvGetRotationPolicy)
		case segs[2] == "rotationpolicy" && m == http.MethodPut:
			return rt(actPolicyWrite, "setRotationPolicy", segs[1], "", (*Emulator).kvSetRotationPolicy)
		}
	}
	return nil
}

// ktyForVault checks a requested key type against the vault kind. A Managed
// HSM holds HSM-protected keys only, so "RSA", "EC" and "oct" there become
// "RSA-HSM", "EC-HSM" and "oct-HSM"; a vault has no symmetric keys, and
// HSM-protected keys need the premium SKU.
func ktyForVault(v *Vault, requested string) (string, error) {
	kty, ok := canonicalKty(requested)
	if !ok {
		return "", fmt.Errorf("%w: key type %q (RSA, RSA-HSM, EC, EC-HSM, oct or oct-HSM)", ErrInvalid, requested)
	}
	if v.ManagedHSM {
		if !strings.HasSuffix(kty, "-HSM") {
			kty += "-HSM"
		}
		return kty, nil
	}
	if keyFamily(kty) == "oct" {
		return "", fmt.Errorf("%w: key type %s is available in Managed HSM only, not in a key vault", ErrInvalid, kty)
	}
	if strings.HasSuffix(kty, "-HSM") && v.SKU != "premium" {
		return "", fmt.Errorf("%w: key type %s needs a premium vault; vault %s is %s", ErrInvalid, kty, v.Name, v.SKU)
	}
	return kty, nil
}

// ---- release policy (stored, never evaluated: no attestation service) ----

type releasePolicy struct {
	ContentType string `json:"contentType,omitempty"`
	Immutable   bool   `json:"immutable,omitempty"`
	Data        []byte `json:"data"`
}

type releasePolicyJSON struct {
	ContentType string `json:"contentType,omitempty"`
	Immutable   *bool  `json:"immutable,omitempty"`
	Data        string `json:"data,omitempty"`
}

func (p *releasePolicy) bundle() *releasePolicyJSON {
	if p == nil {
		return nil
	}
	im := p.Immutable
	return &releasePolicyJSON{ContentType: p.ContentType, Immutable: &im, Data: b64(p.Data)}
}

// setRelease records the exportable flag and release policy of a new key.
// As in Key Vault, an exportable key needs a release policy.
func setRelease(ver *keyVersion, a *attrsBody, rp *releasePolicyJSON) error {
	if a != nil && a.Exportable != nil {
		ver.Exportable = *a.Exportable
	}
	if rp == nil {
		if ver.Exportable {
			return fmt.Errorf("%w: a release policy must be provided when creating the first version of an exportable key", ErrInvalid)
		}
		return nil
	}
	data, err := decodeB64URL(rp.Data)
	if err != nil || !json.Valid(data) {
		return fmt.Errorf("%w: release_policy.data must be a base64url JSON policy", ErrInvalid)
	}
	ct := rp.ContentType
	if ct == "" {
		ct = "application/json; charset=utf-8"
	}
	ver.Release = &releasePolicy{ContentType: ct, Immutable: rp.Immutable != nil && *rp.Immutable, Data: data}
	return nil
}

// ---- import ----

type importBody struct {
	Key        *importJWK         `json:"key"`
	HSM        *bool              `json:"Hsm"`
	Attributes *attrsBody         `json:"attributes"`
	Tags       map[string]string  `json:"tags"`
	Release    *releasePolicyJSON `json:"release_policy"`
}

// kvImport is PUT /keys/{name}: a new version made from the caller's JSON
// web key, private parts included.
func (e *Emulator) kvImport(q *kvReq, rt *kvRoute) {
	var body importBody
	if err := json.NewDecoder(io.LimitReader(q.r.Body, 1<<20)).Decode(&body); err != nil {
		writeKVError(q.w, http.StatusBadRequest, "BadParameter", "The request body is not valid JSON: "+err.Error(), "")
		return
	}
	if body.Key == nil {
		writeKVError(q.w, http.StatusBadRequest, "BadParameter", "Property key is required: the JSON web key to import.", "")
		return
	}
	requested := body.Key.Kty
	if body.HSM != nil && *body.HSM && !strings.HasSuffix(requested, "-HSM") && requested != "" {
		requested += "-HSM"
	}
	kty, err := ktyForVault(&q.vault, requested)
	if err != nil {
		e.writeAdminErrAsKV(q.w, rt.key, err)
		return
	}
	ops := slices.Clone(defaultOps)
	if body.Key.KeyOps != nil {
		if ops, err = normalizeOps(body.Key.KeyOps); err != nil {
			e.writeAdminErrAsKV(q.w, rt.key, err)
			return
		}
	}
	now := e.now().UTC().Truncate(time.Second)
	ver := &keyVersion{ID: newVersionID(), Kty: kty, Ops: ops, Enabled: true, Created: now, Updated: now, Tags: body.Tags}
	if a := body.Attributes; a != nil {
		if a.Enabled != nil {
			ver.Enabled = *a.Enabled
		}
		ver.NotBefore, ver.Expires = fromUnix(a.NotBefore), fromUnix(a.Expires)
	}
	if err := materialFromJWK(ver, *body.Key); err != nil {
		e.writeAdminErrAsKV(q.w, rt.key, err)
		return
	}
	if err := setRelease(ver, body.Attributes, body.Release); err != nil {
		e.writeAdminErrAsKV(q.w, rt.key, err)
		return
	}
	e.finishNewVersion(q, rt, ver)
}

// ---- backup and restore ----

// A backup is the key (all versions, attributes, tags, rotation policy and
// material) sealed with AES-256-GCM under a key derived from the emulator's
// token signing key, so only this emulator (or one restarted from its state
// file) can restore it. The additional data binds it to the tenant and kind
// (vault or Managed HSM) it came from: as Azure restores a backup only within
// the same subscription and geography, a backup taken in one tenant's vault
// cannot be restored into another tenant's.
const backupMagic = "AZEMU-KEY-BACKUP-1."

type backupContent struct {
	Key *keyState `json:"key"`
}

func (e *Emulator) backupAEAD() cipher.AEAD {
	sum := sha256.Sum256(append([]byte("azemu key backup v1\x00"), x509.MarshalPKCS1PrivateKey(e.signKey)...))
	block, _ := aes.NewCipher(sum[:])
	gcm, _ := cipher.NewGCM(block)
	return gcm
}

func backupAAD(v *Vault) []byte {
	kind := "vault"
	if v.ManagedHSM {
		kind = "managedhsm"
	}
	return []byte(strings.ToLower(v.TenantID) + "|" + kind)
}

func (e *Emulator) kvBackup(q *kvReq, rt *kvRoute) {
	e.mu.Lock()
	_, k, _, ok := e.lookupLocked(q, rt.key, "")
	var plain []byte
	var err error
	if ok {
		plain, err = json.Marshal(backupContent{Key: k})
	}
	e.mu.Unlock()
	if !ok {
		return
	}
	if err != nil {
		writeKVError(q.w, http.StatusInternalServerError, "InternalServerError", err.Error(), "")
		return
	}
	gcm := e.backupAEAD()
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		writeKVError(q.w, http.StatusInternalServerError, "InternalServerError", err.Error(), "")
		return
	}
	blob := append([]byte(backupMagic), gcm.Seal(nonce, nonce, plain, backupAAD(&q.vault))...)
	e.served(q.vault.Name, rt.op)
	writeJSON(q.w, http.StatusOK, map[string]string{"value": b64(blob)})
}

func (e *Emulator) kvRestore(q *kvReq, rt *kvRoute) {
	var body struct {
		Value string `json:"value"`
	}
	if err := json.NewDecoder(io.LimitReader(q.r.Body, 8<<20)).Decode(&body); err != nil {
		writeKVError(q.w, http.StatusBadRequest, "BadParameter", "The request body is not valid JSON: "+err.Error(), "")
		return
	}
	blob, err := decodeB64URL(body.Value)
	bad := func() {
		writeKVError(q.w, http.StatusBadRequest, "BadParameter", "Backup blob could not be restored: it is not a key backup taken by this emulator in this tenant and kind of vault.", "")
	}
	gcm := e.backupAEAD()
	if err != nil || !bytes.HasPrefix(blob, []byte(backupMagic)) || len(blob) < len(backupMagic)+gcm.NonceSize() {
		bad()
		return
	}
	sealed := blob[len(backupMagic):]
	plain, err := gcm.Open(nil, sealed[:gcm.NonceSize()], sealed[gcm.NonceSize():], backupAAD(&q.vault))
	if err != nil {
		bad()
		return
	}
	var c backupContent
	if err := json.Unmarshal(plain, &c); err != nil || c.Key == nil || len(c.Key.Versions) == 0 {
		bad()
		return
	}
	k := c.Key
	for _, ver := range k.Versions {
		if err := ver.loadMaterial(); err != nil {
			bad()
			return
		}
	}
	k.DeletedAt, k.SettlesAt = time.Time{}, time.Time{}
	rt.key = k.Name
	var b keyBundle
	err = e.mutate(func() error {
		vs, err := e.liveVaultLocked(q.vault.Name)
		if err != nil {
			return err
		}
		lk := strings.ToLower(k.Name)
		if vs.Keys[lk] != nil || vs.DeletedKeys[lk] != nil {
			return errRestoreConflict
		}
		vs.Keys[lk] = k
		b = e.bundle(&vs.Vault, k, k.newest())
		return nil
	})
	if errors.Is(err, errRestoreConflict) {
		writeKVError(q.w, http.StatusConflict, "Conflict", fmt.Sprintf("There was a conflict restoring the key '%s'. A key with this name exists or is deleted but recoverable; delete and purge it first, or restore into another vault.", k.Name), "")
		return
	}
	e.reply(q, rt, b, err)
}

var errRestoreConflict = errors.New("restore conflict")

// ---- rotation policy ----

type rotationPolicy struct {
	LifetimeActions []lifetimeAction `json:"lifetimeActions"`
	ExpiryTime      string           `json:"expiryTime,omitempty"`
	Created         time.Time        `json:"created"`
	Updated         time.Time        `json:"updated"`
}

type lifetimeAction struct {
	Trigger struct {
		TimeAfterCreate  string `json:"timeAfterCreate,omitempty"`
		TimeBeforeExpiry string `json:"timeBeforeExpiry,omitempty"`
	} `json:"trigger"`
	Action struct {
		Type string `json:"type"`
	} `json:"action"`
}

type rotationPolicyJSON struct {
	ID              string           `json:"id,omitempty"`
	LifetimeActions []lifetimeAction `json:"lifetimeActions"`
	Attributes      struct {
		ExpiryTime string `json:"expiryTime,omitempty"`
		Created    int64  `json:"created,omitempty"`
		Updated    int64  `json:"updated,omitempty"`
	} `json:"attributes"`
}

// isoDurationRE accepts the ISO 8601 durations Key Vault takes: days,
// months, years (and weeks), e.g. P90D, P1Y2M, P4W. The digit limits keep
// the arithmetic far from overflow.
var isoDurationRE = regexp.MustCompile(`^P(\d{1,4}Y)?(\d{1,4}M)?(\d{1,4}W)?(\d{1,5}D)?$`)

func (e *Emulator) policyJSON(vault string, k *keyState) rotationPolicyJSON {
	out := rotationPolicyJSON{ID: e.vaultURLFor(vault) + "/keys/" + k.Name + "/rotationpolicy"}
	p := k.RotationPolicy
	if p == nil {
		// Without a policy of its own a key has the default one: a
		// notification 30 days before expiry (Key Vault answers it, not 404).
		var a lifetimeAction
		a.Trigger.TimeBeforeExpiry = "P30D"
		a.Action.Type = "Notify"
		out.LifetimeActions = []lifetimeAction{a}
		return out
	}
	out.LifetimeActions = p.LifetimeActions
	out.Attributes.ExpiryTime = p.ExpiryTime
	out.Attributes.Created, out.Attributes.Updated = p.Created.Unix(), p.Updated.Unix()
	return out
}

func (e *Emulator) kvGetRotationPolicy(q *kvReq, rt *kvRoute) {
	e.mu.Lock()
	_, k, _, ok := e.lookupLocked(q, rt.key, "")
	var out rotationPolicyJSON
	if ok {
		out = e.policyJSON(q.vault.Name, k)
	}
	e.mu.Unlock()
	if !ok {
		return
	}
	e.served(q.vault.Name, rt.op)
	writeJSON(q.w, http.StatusOK, out)
}

func validatePolicy(in rotationPolicyJSON) ([]lifetimeAction, error) {
	if in.Attributes.ExpiryTime != "" && (!isoDurationRE.MatchString(in.Attributes.ExpiryTime) || in.Attributes.ExpiryTime == "P") {
		return nil, fmt.Errorf("%w: attributes.expiryTime %q is not an ISO 8601 duration such as P90D", ErrInvalid, in.Attributes.ExpiryTime)
	}
	acts := make([]lifetimeAction, 0, len(in.LifetimeActions))
	for i, a := range in.LifetimeActions {
		t := a.Action.Type
		if !strings.EqualFold(t, "Rotate") && !strings.EqualFold(t, "Notify") {
			return nil, fmt.Errorf("%w: lifetimeActions[%d].action.type %q (Rotate or Notify)", ErrInvalid, i, t)
		}
		ac, be := a.Trigger.TimeAfterCreate, a.Trigger.TimeBeforeExpiry
		if (ac == "") == (be == "") {
			return nil, fmt.Errorf("%w: lifetimeActions[%d].trigger needs exactly one of timeAfterCreate and timeBeforeExpiry", ErrInvalid, i)
		}
		if d := ac + be; !isoDurationRE.MatchString(d) || d == "P" {
			return nil, fmt.Errorf("%w: lifetimeActions[%d].trigger %q is not an ISO 8601 duration such as P30D", ErrInvalid, i, d)
		}
		if be != "" && in.Attributes.ExpiryTime == "" {
			return nil, fmt.Errorf("%w: lifetimeActions[%d].trigger.timeBeforeExpiry needs attributes.expiryTime", ErrInvalid, i)
		}
		acts = append(acts, a)
	}
	return acts, nil
}

func (e *Emulator) kvSetRotationPolicy(q *kvReq, rt *kvRoute) {
	var in rotationPolicyJSON
	if err := json.NewDecoder(io.LimitReader(q.r.Body, 1<<20)).Decode(&in); err != nil {
		writeKVError(q.w, http.StatusBadRequest, "BadParameter", "The request body is not valid JSON: "+err.Error(), "")
		return
	}
	acts, err := validatePolicy(in)
	if err != nil {
		e.writeAdminErrAsKV(q.w, rt.key, err)
		return
	}
	var out rotationPolicyJSON
	found := true
	err = e.mutate(func() error {
		_, k, _, ok := e.lookupLocked(q, rt.key, "")
		if !ok {
			found = false
			return ErrNotFound
		}
		now := e.now().UTC().Truncate(time.Second)
		p := &rotationPolicy{LifetimeActions: acts, ExpiryTime: in.Attributes.ExpiryTime, Created: now, Updated: now}
		if k.RotationPolicy != nil {
			p.Created = k.RotationPolicy.Created
		}
		k.RotationPolicy = p
		out = e.policyJSON(q.vault.Name, k)
		return nil
	})
	if !found {
		return // lookupLocked answered
	}
	if err != nil {
		e.writeAdminErrAsKV(q.w, rt.key, err)
		return
	}
	e.served(q.vault.Name, rt.op)
	writeJSON(q.w, http.StatusOK, out)
}

// ---- random bytes (Managed HSM) ----

// maxRandomBytes is the most one call may ask for (Managed HSM's limit).
const maxRandomBytes = 128

func (e *Emulator) kvRandomBytes(q *kvReq, rt *kvRoute) {
	if !q.vault.ManagedHSM {
		writeKVError(q.w, http.StatusNotFound, "NotFound", "Random bytes are served by Managed HSM only.", "")
		return
	}
	var body struct {
		Count int `json:"count"`
	}
	if err := json.NewDecoder(io.LimitReader(q.r.Body, 4096)).Decode(&body); err != nil {
		writeKVError(q.w, http.StatusBadRequest, "BadParameter", "The request body is not valid JSON: "+err.Error(), "")
		return
	}
	if body.Count < 1 || body.Count > maxRandomBytes {
		writeKVError(q.w, http.StatusBadRequest, "BadParameter", fmt.Sprintf("count is %d; it must be between 1 and %d.", body.Count, maxRandomBytes), "")
		return
	}
	buf := make([]byte, body.Count)
	if _, err := rand.Read(buf); err != nil {
		writeKVError(q.w, http.StatusInternalServerError, "InternalServerError", err.Error(), "")
		return
	}
	e.served(q.vault.Name, rt.op)
	writeJSON(q.w, http.StatusOK, map[string]string{"value": base64.RawURLEncoding.EncodeToString(buf)})
}

// settling reports whether a delete or recover of k is still under way.
func (k *keyState) settling(now time.Time) bool {
	return !k.SettlesAt.IsZero() && now.Before(k.SettlesAt)
}

// expiry is the expiry date a new version gets under the policy: now plus
// its expiryTime (nil without a policy or expiryTime).
func (p *rotationPolicy) expiry(now time.Time) *time.Time {
	if p == nil || p.ExpiryTime == "" {
		return nil
	}
	m := isoDurationRE.FindStringSubmatch(p.ExpiryTime)
	if m == nil {
		return nil
	}
	n := func(s string) int {
		v := 0
		for _, c := range strings.TrimRight(s, "YMWD") {
			v = v*10 + int(c-'0')
		}
		return v
	}
	t := now.UTC().Truncate(time.Second).AddDate(n(m[1]), n(m[2]), 7*n(m[3])+n(m[4]))
	return &t
}
