package azemu

import (
	"crypto"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ---- Key Vault error envelope ----

type kvErr struct {
	Code       string `json:"code"`
	Message    string `json:"message,omitempty"`
	InnerError *kvErr `json:"innererror,omitempty"`
}

func writeKVError(w http.ResponseWriter, status int, code, msg, inner string) {
	e := kvErr{Code: code, Message: msg}
	if inner != "" {
		e.InnerError = &kvErr{Code: inner}
	}
	writeJSON(w, status, map[string]any{"error": e})
}

// Message texts. Where Azure's text is known it is used as is;
// the others are the emulator's choice (marked "unverified" in the sheet).
const (
	msgMissingToken       = "AKV10000: Request is missing a Bearer or PoP token."
	msgThrottled          = "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached"
	msgNotBase64          = "Content of 'value' is not base64url.\r\nProperty 'value' is required.\r\n"
	msgBadAlg             = "Property  has invalid value\r\n"
	msgUndecryptable      = "Unable to decrypt specified value with this key"
	purgeProtectedMessage = "Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed."
)

func keyNotFoundMsg(name string) string {
	return fmt.Sprintf("A key with (name/id) %s was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182", name)
}

// ---- request context ----

type caller struct {
	AppID, OID, TID, Iss string
}

func (c caller) String() string {
	return fmt.Sprintf("appid=%s;oid=%s;iss=%s", c.AppID, c.OID, c.Iss)
}

type kvReq struct {
	w      http.ResponseWriter
	r      *http.Request
	vault  Vault // copy
	caller caller
	apiVer string
}

// resetConn hijacks the request's connection and closes it with a TCP RST
// (SO_LINGER 0) under its TLS layer, so the client reads "connection reset
// by peer" rather than an answer or a clean close. It reports false when the
// connection cannot be hijacked (the caller then answers normally).
func resetConn(w http.ResponseWriter) bool {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return false
	}
	c, _, err := hj.Hijack()
	if err != nil {
		return false
	}
	raw := c
	if tc, ok := c.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = raw.Close()
	return true
}

func (e *Emulator) serveVault(w http.ResponseWriter, r *http.Request, name string) {
	e.mu.Lock()
	vs := e.st.Vaults[name]
	live := vs != nil && !vs.Deleted
	var v Vault
	if live {
		v = vs.Vault
		e.stats.VaultRequests++
		e.bumpVault(v.Name, func(s *VaultStats) { s.Requests++ })
	}
	fault := e.faults[name]
	reset := live && e.resets[name]
	if reset {
		e.bumpVault(v.Name, func(s *VaultStats) { s.Resets++ })
	}
	e.mu.Unlock()

	if reset && resetConn(w) {
		return
	}

	if !live {
		// The host would not resolve; a client that still holds a
		// connection gets it closed without an answer.
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return
			}
		}
		writeKVError(w, http.StatusNotFound, "VaultNotFound", "The vault does not exist.", "")
		return
	}
	w.Header().Set("x-ms-request-id", newID())
	w.Header().Set("x-ms-keyvault-region", v.Location)
	w.Header().Set("x-ms-keyvault-service-version", "1.9.0.0")
	w.Header().Set("x-ms-keyvault-network-info", "conn_type=Ipv4;addr="+remoteIP(r)+";act_addr_fam=InterNetwork;")

	if fault.delay > 0 {
		t := time.NewTimer(fault.delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if fault.status != 0 {
		code := map[int]string{500: "InternalServerError", 502: "BadGateway", 504: "GatewayTimeout"}[fault.status]
		if code == "" {
			code = "ServiceUnavailable"
		}
		writeKVError(w, fault.status, code, "The service is temporarily unavailable. Please retry later. (fault injected by the emulator)", "")
		return
	}
	apiVer := r.URL.Query().Get("api-version")
	if msg := checkAPIVersion(&v, apiVer); msg != "" {
		writeKVError(w, http.StatusBadRequest, "BadParameter", msg, "")
		return
	}
	c, ok := e.authenticate(w, r, v)
	if !ok {
		return
	}
	req := &kvReq{w: w, r: r, vault: v, caller: c, apiVer: apiVer}
	rt := parseKVRoute(r)
	if rt.handler == nil {
		writeKVError(w, rt.status, rt.code, rt.msg, "")
		return
	}
	if !e.admitThrottle(w, v.Name) {
		return
	}
	if v.FirewallDeny {
		e.forbidden()
		writeKVError(w, http.StatusForbidden, "Forbidden", fmt.Sprintf(
			"Client address is not authorized and caller is not a trusted service.\r\nClient address: %s\r\nCaller: %s\r\nVault: %s;location=%s",
			remoteIP(r), c, v.Name, v.Location), "ForbiddenByFirewall")
		return
	}
	if !e.allowedFor(v, c.OID, rt) {
		e.forbidden()
		res := fmt.Sprintf("/subscriptions/%s/resourcegroups/%s/providers/microsoft.keyvault/%s/%s", subscriptionID, resourceGroup, resourceKind(v), v.Name)
		if rt.key != "" {
			res += "/keys/" + rt.key
		}
		writeKVError(w, http.StatusForbidden, "Forbidden", strings.Join([]string{
			"Caller is not authorized to perform action on resource.",
			"If role assignments, deny assignments or role definitions were changed recently, please observe propagation time.",
			"Caller: " + c.String(),
			"Action: '" + actionFor(v, rt.action) + "'",
			"Resource: '" + res + "'",
			"Assignment: (not found)",
			"DenyAssignmentId: null",
			"DecisionReason: null",
			"Vault: " + v.Name + ";location=" + v.Location,
			"",
		}, "\r\n"), "ForbiddenByRbac")
		return
	}
	rt.handler(e, req, rt)
}

func (e *Emulator) forbidden() {
	e.mu.Lock()
	e.stats.VaultForbidden++
	e.mu.Unlock()
}

func remoteIP(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

func (e *Emulator) challenge(w http.ResponseWriter, v Vault, msg string) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="%s/%s", resource="%s"`, e.url, v.TenantID, e.resourceFor(v)))
	writeKVError(w, http.StatusUnauthorized, "Unauthorized", msg, "")
}

// authenticate validates the bearer token: signature, lifetime, audience and
// issuer (the vault's tenant). On failure it writes a 401 with a challenge.
func (e *Emulator) authenticate(w http.ResponseWriter, r *http.Request, v Vault) (caller, bool) {
	authz := r.Header.Get("Authorization")
	scheme, raw, _ := strings.Cut(authz, " ")
	if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(raw) == "" {
		e.challenge(w, v, msgMissingToken)
		return caller{}, false
	}
	claims := jwt.MapClaims{}
	_, err := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithoutClaimsValidation()).
		ParseWithClaims(strings.TrimSpace(raw), claims, func(t *jwt.Token) (any, error) {
			if kid, _ := t.Header["kid"].(string); kid != e.signKID {
				return nil, errors.New("unknown kid")
			}
			return &e.signKey.PublicKey, nil
		})
	if err != nil {
		if errors.Is(err, jwt.ErrTokenUnverifiable) {
			e.challenge(w, v, "AKV10046: Unable to resolve the key used for signature validation.")
		} else {
			e.challenge(w, v, "AKV10031: Invalid token signature or format.") // emulator's text
		}
		return caller{}, false
	}
	str := func(k string) string { s, _ := claims[k].(string); return s }
	now := e.now()
	if exp, err := claims.GetExpirationTime(); err != nil || exp == nil || !now.Before(exp.Time) {
		e.challenge(w, v, "AKV10026: Token expired.") // emulator's text; Azure's code is unverified
		return caller{}, false
	}
	if nbf, err := claims.GetNotBefore(); err == nil && nbf != nil && now.Add(5*time.Minute).Before(nbf.Time) {
		e.challenge(w, v, "AKV10027: Token is not yet valid.") // emulator's text
		return caller{}, false
	}
	resource := e.resourceFor(v)
	if aud := str("aud"); aud != resource {
		e.challenge(w, v, fmt.Sprintf("AKV10022: Invalid audience. Expected %s, found: %s.", resource, aud))
		return caller{}, false
	}
	want := stsIssuer(v.TenantID)
	if iss := str("iss"); !strings.EqualFold(iss, want) {
		e.challenge(w, v, fmt.Sprintf("AKV10032: Invalid issuer. Expected one of %s, https://login.microsoftonline.com/%s/v2.0, found %s.", want, v.TenantID, iss))
		return caller{}, false
	}
	return caller{AppID: str("appid"), OID: str("oid"), TID: str("tid"), Iss: str("iss")}, true
}

func (e *Emulator) admitThrottle(w http.ResponseWriter, vault string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	vs := e.st.Vaults[vault]
	if vs == nil || vs.ThrottleLimit <= 0 {
		return true
	}
	now := e.now()
	win := e.windows[vault]
	if win == nil || !now.Before(win.start.Add(vs.ThrottleWindow)) {
		win = &throttleWindow{start: now}
		e.windows[vault] = win
	}
	if win.count >= vs.ThrottleLimit {
		secs := int(math.Ceil(win.start.Add(vs.ThrottleWindow).Sub(now).Seconds()))
		if secs < 1 {
			secs = 1
		}
		e.stats.Throttled++
		e.bumpVault(vault, func(s *VaultStats) { s.Throttled++ })
		// Key Vault's 429 carries no Retry-After as far as captures show
		// (azure-errors.md, Key Vault row 7); the vault's switch adds one.
		if vs.ThrottleRetryAfter {
			w.Header().Set("Retry-After", strconv.Itoa(secs))
		}
		writeKVError(w, http.StatusTooManyRequests, "Throttled", msgThrottled, "")
		return false
	}
	win.count++
	return true
}

func (e *Emulator) rbacAllows(vault, oid, action string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	vs := e.st.Vaults[vault]
	if vs == nil || oid == "" {
		return false
	}
	// Each role as the data plane sees it: assignments and removals reach
	// it only after the propagation delay (propagation.go).
	for role := range roleActions {
		held := slices.Contains(vs.Roles, RoleAssignment{PrincipalObjectID: strings.ToLower(oid), Role: role})
		if roleAllows(role, action) && e.effectiveLocked(roleKey(vault, oid, role), presence(held)) == present {
			return true
		}
	}
	return false
}

// ---- routing ----

type kvRoute struct {
	action  string
	op      string // operation name used in messages and stats
	key     string
	version string
	handler func(*Emulator, *kvReq, *kvRoute)
	status  int
	code    string
	msg     string
}

var cryptoOps = map[string]struct{ op, action string }{
	"wrapkey":   {"wrapKey", actWrap},
	"unwrapkey": {"unwrapKey", actUnwrap},
	"encrypt":   {"encrypt", actEncrypt},
	"decrypt":   {"decrypt", actDecrypt},
	"sign":      {"sign", actSign},
	"verify":    {"verify", actVerify},
}

func parseKVRoute(r *http.Request) *kvRoute {
	segs := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	m := r.Method
	notFound := &kvRoute{status: http.StatusNotFound, code: "NotFound", msg: fmt.Sprintf("The operation %s %s is not supported by this vault.", m, r.URL.Path)}
	badMethod := &kvRoute{status: http.StatusMethodNotAllowed, code: "MethodNotAllowed", msg: fmt.Sprintf("The requested method %s is not allowed on %s.", m, r.URL.Path)}
	rt := func(action, op, key, version string, h func(*Emulator, *kvReq, *kvRoute)) *kvRoute {
		return &kvRoute{action: action, op: op, key: key, version: version, handler: h}
	}
	if ext := parseKVRouteExt(r, segs, rt); ext != nil {
		return ext
	}
	switch {
	case len(segs) == 1 && segs[0] == "keys":
		if m == http.MethodGet {
			return rt(actRead, "list", "", "", (*Emulator).kvListKeys)
		}
		return badMethod
	case len(segs) == 1 && segs[0] == "deletedkeys":
		if m == http.MethodGet {
			return rt(actDeletedRead, "listDeleted", "", "", (*Emulator).kvListDeleted)
		}
		return badMethod
	case segs[0] == "keys" && len(segs) >= 2 && segs[1] != "":
		name := segs[1]
		if !keyNameRE.MatchString(name) {
			return &kvRoute{status: http.StatusBadRequest, code: "BadParameter", msg: "Invalid key name " + name}
		}
		switch len(segs) {
		case 2:
			switch m {
			case http.MethodGet:
				return rt(actRead, "get", name, "", (*Emulator).kvGetKey)
			case http.MethodPatch:
				return rt(actUpdate, "update", name, "", (*Emulator).kvUpdateKey)
			case http.MethodDelete:
				return rt(actDelete, "delete", name, "", (*Emulator).kvDeleteKey)
			}
			return badMethod
		case 3:
			switch seg := segs[2]; {
			case seg == "create":
				if m == http.MethodPost {
					return rt(actCreate, "create", name, "", (*Emulator).kvCreateKey)
				}
				return badMethod
			case seg == "rotate":
				if m == http.MethodPost {
					return rt(actRotate, "rotate", name, "", (*Emulator).kvRotateKey)
				}
				return badMethod
			case seg == "versions":
				if m == http.MethodGet {
					return rt(actRead, "listVersions", name, "", (*Emulator).kvListVersions)
				}
				return badMethod
			case cryptoOps[seg].op != "":
				// azcore drops the empty version segment: /keys/{name}/wrapkey
				if m != http.MethodPost {
					return badMethod
				}
				return rt(cryptoOps[seg].action, cryptoOps[seg].op, name, "", (*Emulator).kvCrypto)
			case seg == "" || versionRE.MatchString(seg):
				switch m {
				case http.MethodGet:
					return rt(actRead, "get", name, seg, (*Emulator).kvGetKey)
				case http.MethodPatch:
					return rt(actUpdate, "update", name, seg, (*Emulator).kvUpdateKey)
				}
				return badMethod
			}
			return notFound
		case 4:
			op, ok := cryptoOps[segs[3]]
			if !ok || (segs[2] != "" && !versionRE.MatchString(segs[2])) {
				return notFound
			}
			if m != http.MethodPost {
				return badMethod
			}
			return rt(op.action, op.op, name, segs[2], (*Emulator).kvCrypto)
		}
		return notFound
	case segs[0] == "deletedkeys" && len(segs) >= 2 && segs[1] != "":
		name := segs[1]
		switch {
		case len(segs) == 2 && m == http.MethodGet:
			return rt(actDeletedRead, "getDeleted", name, "", (*Emulator).kvGetDeleted)
		case len(segs) == 2 && m == http.MethodDelete:
			return rt(actDeletedPurge, "purge", name, "", (*Emulator).kvPurge)
		case len(segs) == 3 && segs[2] == "recover" && m == http.MethodPost:
			return rt(actDeletedRecov, "recover", name, "", (*Emulator).kvRecover)
		}
		return notFound
	}
	return notFound
}

var versionRE = regexp.MustCompile(`^[0-9a-fA-F]{32}$`)

// ---- JSON shapes ----

type jsonWebKey struct {
	KID    string   `json:"kid"`
	Kty    string   `json:"kty"`
	KeyOps []string `json:"key_ops"`
	N      string   `json:"n,omitempty"`
	E      string   `json:"e,omitempty"`
	Crv    string   `json:"crv,omitempty"`
	X      string   `json:"x,omitempty"`
	Y      string   `json:"y,omitempty"`
}

type keyAttributes struct {
	Enabled         *bool  `json:"enabled,omitempty"`
	NotBefore       *int64 `json:"nbf,omitempty"`
	Expires         *int64 `json:"exp,omitempty"`
	Created         int64  `json:"created,omitempty"`
	Updated         int64  `json:"updated,omitempty"`
	RecoveryLevel   string `json:"recoveryLevel,omitempty"`
	RecoverableDays *int   `json:"recoverableDays,omitempty"`
	Exportable      *bool  `json:"exportable,omitempty"`
}

type keyBundle struct {
	Key                *jsonWebKey        `json:"key,omitempty"`
	KID                string             `json:"kid,omitempty"` // list items
	Attributes         keyAttributes      `json:"attributes"`
	Tags               map[string]string  `json:"tags,omitempty"`
	ReleasePolicy      *releasePolicyJSON `json:"release_policy,omitempty"`
	RecoveryID         string             `json:"recoveryId,omitempty"`
	DeletedDate        int64              `json:"deletedDate,omitempty"`
	ScheduledPurgeDate int64              `json:"scheduledPurgeDate,omitempty"`
}

func unixPtr(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	u := t.Unix()
	return &u
}

func (e *Emulator) attrs(v *Vault, ver *keyVersion) keyAttributes {
	level, days := recoveryLevel(v)
	en, exportable := ver.Enabled, ver.Exportable
	return keyAttributes{Enabled: &en, NotBefore: unixPtr(ver.NotBefore), Expires: unixPtr(ver.Expires),
		Created: ver.Created.Unix(), Updated: ver.Updated.Unix(), RecoveryLevel: level, RecoverableDays: &days,
		Exportable: &exportable}
}

func (e *Emulator) kid(vault string, k *keyState, ver *keyVersion) string {
	s := e.vaultURLFor(vault) + "/keys/" + k.Name
	if ver != nil {
		s += "/" + ver.ID
	}
	return s
}

func (e *Emulator) bundle(v *Vault, k *keyState, ver *keyVersion) keyBundle {
	return keyBundle{
		Key:           publicJWK(e.kid(v.Name, k, ver), ver),
		Attributes:    e.attrs(v, ver),
		Tags:          ver.Tags,
		ReleasePolicy: ver.Release.bundle(),
	}
}

func (e *Emulator) deletedBundle(v *Vault, k *keyState, full bool) keyBundle {
	var b keyBundle
	if full {
		b = e.bundle(v, k, k.newest())
	} else {
		b = keyBundle{KID: e.kid(v.Name, k, nil), Attributes: e.attrs(v, k.newest()), Tags: k.newest().Tags}
	}
	if v.SoftDelete {
		b.RecoveryID = e.vaultURLFor(v.Name) + "/deletedkeys/" + k.Name
		b.DeletedDate = k.DeletedAt.Unix()
		b.ScheduledPurgeDate = k.DeletedAt.AddDate(0, 0, v.RetentionDays).Unix()
	}
	return b
}

// ---- handlers ----

func (e *Emulator) served(vault, op string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.bumpVault(vault, func(s *VaultStats) {
		switch op {
		case "get":
			s.Get++
		case "wrapKey":
			s.Wrap++
		case "unwrapKey":
			s.Unwrap++
		default:
			s.Other++
		}
	})
}

// lookupLocked finds a live key version or writes 404.
func (e *Emulator) lookupLocked(q *kvReq, name, version string) (*vaultState, *keyState, *keyVersion, bool) {
	vs, err := e.liveVaultLocked(q.vault.Name)
	if err != nil {
		writeKVError(q.w, http.StatusNotFound, "KeyNotFound", keyNotFoundMsg(name), "")
		return nil, nil, nil, false
	}
	k := vs.Keys[strings.ToLower(name)]
	if k == nil || k.settling(e.now()) {
		writeKVError(q.w, http.StatusNotFound, "KeyNotFound", keyNotFoundMsg(name), "")
		return nil, nil, nil, false
	}
	ver := k.version(version)
	if ver == nil {
		writeKVError(q.w, http.StatusNotFound, "KeyNotFound", keyNotFoundMsg(name+"/"+version), "")
		return nil, nil, nil, false
	}
	return vs, k, ver, true
}

// privateKeyOps are the operations a disabled key refuses.
var privateKeyOps = map[string]bool{"unwrapKey": true, "decrypt": true, "sign": true}

func disabledKey(w http.ResponseWriter, op string) {
	writeKVError(w, http.StatusForbidden, "Forbidden", fmt.Sprintf("Operation %s is not allowed on a disabled key.", op), "KeyDisabled")
}

func (e *Emulator) kvGetKey(q *kvReq, rt *kvRoute) {
	e.mu.Lock()
	vs, k, ver, ok := e.lookupLocked(q, rt.key, rt.version)
	if !ok {
		e.mu.Unlock()
		return
	}
	// A disabled key is still returned, with attributes.enabled false
	// (azure-errors.md, Key Vault row 1).
	b := e.bundle(&vs.Vault, k, ver)
	e.mu.Unlock()
	e.served(q.vault.Name, "get")
	writeJSON(q.w, http.StatusOK, b)
}

type cryptoBody struct {
	Alg    string  `json:"alg"`
	Value  *string `json:"value"`
	Digest *string `json:"digest"`
	IV     string  `json:"iv"`
	AAD    string  `json:"aad"`
	Tag    string  `json:"tag"`
}

func decodeB64URL(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	return base64.RawURLEncoding.Strict().DecodeString(s)
}

func oaepHash(alg string) (hash.Hash, bool, bool) {
	switch alg {
	case "RSA-OAEP-256":
		return sha256.New(), true, true
	case "RSA-OAEP":
		return sha1.New(), true, true
	}
	// RSA1_5 is refused: PKCS #1 v1.5 encryption is unsafe and cmk never
	// uses it.
	return nil, false, false
}

var signAlgs = map[string]struct {
	h   crypto.Hash
	pss bool
}{
	"RS256": {crypto.SHA256, false}, "RS384": {crypto.SHA384, false}, "RS512": {crypto.SHA512, false},
	"PS256": {crypto.SHA256, true}, "PS384": {crypto.SHA384, true}, "PS512": {crypto.SHA512, true},
}

func (e *Emulator) kvCrypto(q *kvReq, rt *kvRoute) {
	var body cryptoBody
	if err := json.NewDecoder(io.LimitReader(q.r.Body, 1<<20)).Decode(&body); err != nil {
		writeKVError(q.w, http.StatusBadRequest, "BadParameter", "The request body is not valid JSON: "+err.Error(), "")
		return
	}
	if body.Value == nil {
		writeKVError(q.w, http.StatusBadRequest, "BadParameter", msgNotBase64, "")
		return
	}
	value, err := decodeB64URL(*body.Value)
	if err != nil {
		writeKVError(q.w, http.StatusBadRequest, "BadParameter", msgNotBase64, "")
		return
	}
	var digest []byte
	if body.Alg == "" {
		writeKVError(q.w, http.StatusBadRequest, "BadParameter", msgBadAlg, "")
		return
	}
	switch rt.op {
	case "sign", "verify":
		if rt.op == "verify" {
			if body.Digest == nil {
				writeKVError(q.w, http.StatusBadRequest, "BadParameter", "Content of 'digest' is not base64url.\r\nProperty 'digest' is required.\r\n", "")
				return
			}
			if digest, err = decodeB64URL(*body.Digest); err != nil {
				writeKVError(q.w, http.StatusBadRequest, "BadParameter", "Content of 'digest' is not base64url.\r\n", "")
				return
			}
		}
	}
	oq := opRequest{op: rt.op, alg: body.Alg, value: value, digest: digest}
	for _, f := range []struct {
		name, s string
		dst     *[]byte
	}{{"iv", body.IV, &oq.iv}, {"aad", body.AAD, &oq.aad}, {"tag", body.Tag, &oq.tag}} {
		if f.s == "" {
			continue
		}
		if *f.dst, err = decodeB64URL(f.s); err != nil {
			writeKVError(q.w, http.StatusBadRequest, "BadParameter", "Content of '"+f.name+"' is not base64url.\r\n", "")
			return
		}
	}

	e.mu.Lock()
	_, k, ver, ok := e.lookupLocked(q, rt.key, rt.version)
	if !ok {
		e.mu.Unlock()
		return
	}
	enabled, ops, nbf, exp := ver.Enabled, slices.Clone(ver.Ops), ver.NotBefore, ver.Expires
	kid := e.kid(q.vault.Name, k, ver)
	e.mu.Unlock()

	// A disabled key refuses only the private-key operations; wrapKey,
	// encrypt and verify still succeed (azure-errors.md, Key Vault row 1,
	// from a live capture), so a client that wraps without reading the
	// attribute can wrap under a key it can no longer unwrap.
	if !enabled && privateKeyOps[rt.op] {
		disabledKey(q.w, rt.op)
		return
	}
	if !slices.Contains(ops, rt.op) {
		writeKVError(q.w, http.StatusForbidden, "Forbidden", fmt.Sprintf("Operation %s is not permitted on this key.", rt.op), "KeyOperationForbidden")
		return
	}
	// Outside nbf/exp only wrapKey, encrypt and sign are refused; unwrap,
	// decrypt and verify keep working (azure-errors.md, Key Vault row 5).
	// The 403 is documented; the innererror codes KeyNotYetValid and
	// KeyExpired and the message texts are the emulator's (unverified).
	if rt.op == "wrapKey" || rt.op == "encrypt" || rt.op == "sign" {
		now := e.now()
		if nbf != nil && now.Before(*nbf) {
			writeKVError(q.w, http.StatusForbidden, "Forbidden", fmt.Sprintf("Operation %s is not allowed on a key that is not yet valid (nbf %s).", rt.op, nbf.UTC().Format(time.RFC3339)), "KeyNotYetValid")
			return
		}
		if exp != nil && !now.Before(*exp) {
			writeKVError(q.w, http.StatusForbidden, "Forbidden", fmt.Sprintf("Operation %s is not allowed on an expired key (exp %s).", rt.op, exp.UTC().Format(time.RFC3339)), "KeyExpired")
			return
		}
	}

	out, err := runOp(ver, kid, oq)
	switch {
	case errors.Is(err, errBadAlg):
		writeKVError(q.w, http.StatusBadRequest, "BadParameter", msgBadAlg, "")
		return
	case errors.Is(err, errUndecryptable):
		writeKVError(q.w, http.StatusBadRequest, "BadParameter", msgUndecryptable, "")
		return
	case errors.Is(err, ErrInvalid):
		writeKVError(q.w, http.StatusBadRequest, "BadParameter", strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": "), "")
		return
	case err != nil:
		writeKVError(q.w, http.StatusInternalServerError, "InternalServerError", err.Error(), "")
		return
	}
	e.served(q.vault.Name, rt.op)
	writeJSON(q.w, http.StatusOK, out)
}

type createBody struct {
	Kty        string             `json:"kty"`
	Curve      string             `json:"crv"`
	Release    *releasePolicyJSON `json:"release_policy"`
	KeySize    int                `json:"key_size"`
	PublicExp  int                `json:"public_exponent"`
	KeyOps     []string           `json:"key_ops"`
	Attributes *attrsBody         `json:"attributes"`
	Tags       map[string]string  `json:"tags"`
}

type attrsBody struct {
	Exportable *bool  `json:"exportable"`
	Enabled    *bool  `json:"enabled"`
	NotBefore  *int64 `json:"nbf"`
	Expires    *int64 `json:"exp"`
}

func fromUnix(p *int64) *time.Time {
	if p == nil {
		return nil
	}
	t := time.Unix(*p, 0).UTC()
	return &t
}

func (e *Emulator) writeAdminErrAsKV(w http.ResponseWriter, name string, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		writeKVError(w, http.StatusNotFound, "KeyNotFound", keyNotFoundMsg(name), "")
	case errors.Is(err, ErrConflict):
		writeKVError(w, http.StatusConflict, "Conflict", fmt.Sprintf("Key %s is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged.", name), "ObjectIsDeletedButRecoverable")
	case errors.Is(err, ErrForbidden):
		writeKVError(w, http.StatusForbidden, "Forbidden", purgeProtectedMessage, "")
	case errors.Is(err, ErrInvalid):
		writeKVError(w, http.StatusBadRequest, "BadParameter", strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": "), "")
	default:
		writeKVError(w, http.StatusInternalServerError, "InternalServerError", err.Error(), "")
	}
}

func (e *Emulator) kvCreateKey(q *kvReq, rt *kvRoute) {
	var body createBody
	if err := json.NewDecoder(io.LimitReader(q.r.Body, 1<<20)).Decode(&body); err != nil {
		writeKVError(q.w, http.StatusBadRequest, "BadParameter", "The request body is not valid JSON: "+err.Error(), "")
		return
	}
	if body.Kty == "" {
		writeKVError(q.w, http.StatusBadRequest, "BadParameter", "Property kty is required.", "")
		return
	}
	if body.PublicExp != 0 && body.PublicExp != 65537 {
		writeKVError(q.w, http.StatusBadRequest, "BadParameter", "The emulator supports public exponent 65537 only.", "")
		return
	}
	kty, err := ktyForVault(&q.vault, body.Kty)
	if err != nil {
		e.writeAdminErrAsKV(q.w, rt.key, err)
		return
	}
	o := KeyOptions{Kty: kty, Bits: body.KeySize, Curve: body.Curve, Ops: body.KeyOps}
	if body.Attributes != nil {
		o.Enabled = body.Attributes.Enabled
		o.NotBefore = fromUnix(body.Attributes.NotBefore)
		o.Expires = fromUnix(body.Attributes.Expires)
	}
	ver, err := e.newKeyVersion(o)
	if err != nil {
		e.writeAdminErrAsKV(q.w, rt.key, err)
		return
	}
	if err := setRelease(ver, body.Attributes, body.Release); err != nil {
		e.writeAdminErrAsKV(q.w, rt.key, err)
		return
	}
	ver.Tags = body.Tags
	e.finishNewVersion(q, rt, ver)
}

func (e *Emulator) finishNewVersion(q *kvReq, rt *kvRoute, ver *keyVersion) {
	var b keyBundle
	err := e.mutate(func() error {
		if err := e.addVersionLocked(q.vault.Name, rt.key, ver); err != nil {
			return err
		}
		vs, k, _ := e.liveKeyLocked(q.vault.Name, rt.key)
		b = e.bundle(&vs.Vault, k, ver)
		return nil
	})
	e.reply(q, rt, b, err)
}

func (e *Emulator) kvRotateKey(q *kvReq, rt *kvRoute) {
	e.mu.Lock()
	o, err := e.rotateOptionsLocked(q.vault.Name, rt.key)
	e.mu.Unlock()
	if err != nil {
		e.writeAdminErrAsKV(q.w, rt.key, err)
		return
	}
	ver, err := e.newKeyVersion(o)
	if err != nil {
		e.writeAdminErrAsKV(q.w, rt.key, err)
		return
	}
	e.finishNewVersion(q, rt, ver)
}

type updateBody struct {
	KeyOps     []string          `json:"key_ops"`
	Attributes *attrsBody        `json:"attributes"`
	Tags       map[string]string `json:"tags"`
}

func (e *Emulator) kvUpdateKey(q *kvReq, rt *kvRoute) {
	var body updateBody
	if err := json.NewDecoder(io.LimitReader(q.r.Body, 1<<20)).Decode(&body); err != nil && err != io.EOF {
		writeKVError(q.w, http.StatusBadRequest, "BadParameter", "The request body is not valid JSON: "+err.Error(), "")
		return
	}
	var ops []string
	if body.KeyOps != nil {
		var err error
		if ops, err = normalizeOps(body.KeyOps); err != nil {
			e.writeAdminErrAsKV(q.w, rt.key, err)
			return
		}
	}
	u := KeyUpdate{}
	if a := body.Attributes; a != nil {
		u.Enabled, u.NotBefore, u.Expires = a.Enabled, fromUnix(a.NotBefore), fromUnix(a.Expires)
	}
	var b keyBundle
	found := true
	err := e.mutate(func() error {
		vs, k, ver, ok := e.lookupLocked(q, rt.key, rt.version)
		if !ok {
			found = false
			return ErrNotFound
		}
		applyKeyUpdate(ver, u, ops, e.now())
		if body.Tags != nil {
			ver.Tags = body.Tags
		}
		b = e.bundle(&vs.Vault, k, ver)
		return nil
	})
	if !found {
		return // lookupLocked answered
	}
	e.reply(q, rt, b, err)
}

func (e *Emulator) kvDeleteKey(q *kvReq, rt *kvRoute) {
	var b keyBundle
	err := e.mutate(func() error {
		vs, k, err := e.deleteKeyLocked(q.vault.Name, rt.key)
		if err != nil {
			return err
		}
		b = e.deletedBundle(&vs.Vault, k, true)
		return nil
	})
	e.reply(q, rt, b, err)
}

// reply answers a key operation: the error as Key Vault would, or b.
func (e *Emulator) reply(q *kvReq, rt *kvRoute, b keyBundle, err error) {
	if err != nil {
		e.writeAdminErrAsKV(q.w, rt.key, err)
		return
	}
	e.served(q.vault.Name, rt.op)
	writeJSON(q.w, http.StatusOK, b)
}

func deletedNotFound(w http.ResponseWriter, name string) {
	writeKVError(w, http.StatusNotFound, "KeyNotFound", "Deleted Key not found: "+name, "")
}

func (e *Emulator) kvGetDeleted(q *kvReq, rt *kvRoute) {
	e.mu.Lock()
	vs, err := e.liveVaultLocked(q.vault.Name)
	var k *keyState
	if err == nil {
		k = vs.DeletedKeys[strings.ToLower(rt.key)]
	}
	if k == nil || k.settling(e.now()) {
		e.mu.Unlock()
		deletedNotFound(q.w, rt.key)
		return
	}
	b := e.deletedBundle(&vs.Vault, k, true)
	e.mu.Unlock()
	e.served(q.vault.Name, rt.op)
	writeJSON(q.w, http.StatusOK, b)
}

func (e *Emulator) kvRecover(q *kvReq, rt *kvRoute) {
	var b keyBundle
	err := e.mutate(func() error {
		vs, k, err := e.recoverKeyLocked(q.vault.Name, rt.key)
		if err != nil {
			return err
		}
		b = e.bundle(&vs.Vault, k, k.newest())
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		deletedNotFound(q.w, rt.key)
		return
	}
	e.reply(q, rt, b, err)
}

func (e *Emulator) kvPurge(q *kvReq, rt *kvRoute) {
	err := e.mutate(func() error { return e.purgeKeyLocked(q.vault.Name, rt.key) })
	if errors.Is(err, ErrNotFound) {
		deletedNotFound(q.w, rt.key)
		return
	}
	if err != nil {
		e.writeAdminErrAsKV(q.w, rt.key, err)
		return
	}
	e.served(q.vault.Name, rt.op)
	q.w.WriteHeader(http.StatusNoContent)
}

// ---- lists (paged) ----

func (e *Emulator) page(q *kvReq, items []keyBundle) {
	max := 25
	if s := q.r.URL.Query().Get("maxresults"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 25 {
			writeKVError(q.w, http.StatusBadRequest, "BadParameter", "invalid maxresults: must be between 1 and 25", "")
			return
		}
		max = n
	}
	off := 0
	if tok := q.r.URL.Query().Get("$skiptoken"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		n, err2 := strconv.Atoi(strings.TrimPrefix(string(b), "azemu:"))
		if err != nil || err2 != nil || n < 0 {
			writeKVError(q.w, http.StatusBadRequest, "BadParameter", "invalid $skiptoken", "")
			return
		}
		off = n
	}
	if off > len(items) {
		off = len(items)
	}
	end := min(off+max, len(items))
	resp := map[string]any{"value": items[off:end], "nextLink": nil}
	if end < len(items) {
		tok := base64.RawURLEncoding.EncodeToString([]byte("azemu:" + strconv.Itoa(end)))
		resp["nextLink"] = fmt.Sprintf("%s%s?api-version=%s&$skiptoken=%s&maxresults=%d", e.vaultURLFor(q.vault.Name), q.r.URL.Path, q.apiVer, tok, max)
	}
	e.served(q.vault.Name, "list")
	writeJSON(q.w, http.StatusOK, resp)
}

func (e *Emulator) kvListVersions(q *kvReq, rt *kvRoute) {
	e.mu.Lock()
	vs, k, _, ok := e.lookupLocked(q, rt.key, "")
	if !ok {
		e.mu.Unlock()
		return
	}
	items := make([]keyBundle, 0, len(k.Versions))
	for _, ver := range k.Versions {
		items = append(items, keyBundle{KID: e.kid(vs.Name, k, ver), Attributes: e.attrs(&vs.Vault, ver), Tags: ver.Tags})
	}
	e.mu.Unlock()
	e.page(q, items)
}

func (e *Emulator) kvListKeys(q *kvReq, _ *kvRoute) {
	e.mu.Lock()
	vs, err := e.liveVaultLocked(q.vault.Name)
	var items []keyBundle
	if err == nil {
		for _, n := range sortedKeys(vs.Keys) {
			k := vs.Keys[n]
			if k.settling(e.now()) {
				continue
			}
			items = append(items, keyBundle{KID: e.kid(vs.Name, k, nil), Attributes: e.attrs(&vs.Vault, k.newest()), Tags: k.newest().Tags})
		}
	}
	e.mu.Unlock()
	e.page(q, items)
}

func (e *Emulator) kvListDeleted(q *kvReq, _ *kvRoute) {
	e.mu.Lock()
	vs, err := e.liveVaultLocked(q.vault.Name)
	var items []keyBundle
	if err == nil {
		for _, n := range sortedKeys(vs.DeletedKeys) {
			if vs.DeletedKeys[n].settling(e.now()) {
				continue
			}
			items = append(items, e.deletedBundle(&vs.Vault, vs.DeletedKeys[n], false))
		}
	}
	e.mu.Unlock()
	e.page(q, items)
}
