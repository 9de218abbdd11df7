package awsemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// maxBody bounds a request body; KMS requests are a few kilobytes (a key
// policy is at most 32 KiB).
const maxBody = 1 << 20

type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func errValidation(msg string) *apiError { return &apiError{400, "ValidationException", msg} }
func errInternal(err error) *apiError {
	return &apiError{500, "KMSInternalException", "internal error: " + err.Error()}
}

var errLockout = &apiError{400, "MalformedPolicyDocumentException", "The new key policy will not allow you to update the key policy in the future."}

func errMalformedPolicy(err error) *apiError {
	return &apiError{400, "MalformedPolicyDocumentException", err.Error()}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err *apiError) {
	writeJSON(w, err.status, map[string]string{"__type": err.code, "message": err.msg})
}

// ServeHTTP answers the KMS JSON 1.1 protocol.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if id, err := e.newUUID(); err == nil {
		w.Header().Set("X-Amzn-RequestId", id)
	}
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		writeError(w, &apiError{404, "UnknownOperationException", "KMS answers POST / only."})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		writeError(w, &apiError{400, "SerializationException", "could not read the request body: " + err.Error()})
		return
	}
	if len(body) > maxBody {
		writeError(w, &apiError{413, "RequestEntityTooLargeException", fmt.Sprintf("the request body is larger than %d bytes", maxBody)})
		return
	}
	c, aerr := e.authenticate(r, body)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if aerr := e.admit(r, c); aerr != nil {
		writeError(w, aerr)
		return
	}
	op, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), "TrentService.")
	h := handlers[op]
	if !ok || h == nil {
		writeError(w, &apiError{400, "UnknownOperationException", fmt.Sprintf("unknown operation %q", r.Header.Get("X-Amz-Target"))})
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-amz-json-1.1") {
		writeError(w, &apiError{400, "SerializationException", fmt.Sprintf("Content-Type %q: send application/x-amz-json-1.1", ct)})
		return
	}
	e.mu.Lock()
	out, aerr := h(e, c, body)
	e.mu.Unlock()
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// admit applies the switches: latency, faults, throttling, rate limits.
func (e *Emulator) admit(r *http.Request, c *credential) *apiError {
	e.mu.Lock()
	latency, fault, throttled := e.latency, e.faultCode, e.throttled
	e.requests++
	limited := false
	if l := e.limits[c.account]; l != nil {
		now := e.now()
		if now.Sub(l.start) >= l.window || now.Before(l.start) {
			l.start, l.count = now, 0
		}
		l.count++
		limited = l.count > l.limit
	}
	e.mu.Unlock()
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return &apiError{500, "KMSInternalException", "the client went away"}
		}
	}
	switch {
	case fault == http.StatusInternalServerError:
		return &apiError{fault, "KMSInternalException", "The request processing has failed because of an unknown error, exception or failure."}
	case fault != 0:
		return &apiError{fault, "ServiceUnavailableException", "The service is unavailable (fault injected)."}
	case throttled, limited:
		return &apiError{400, "ThrottlingException", "Rate exceeded"}
	}
	return nil
}

type handler func(e *Emulator, c *credential, body []byte) (any, *apiError)

var handlers map[string]handler

func init() {
	handlers = map[string]handler{
		"CreateKey": op((*Emulator).createKey), "DescribeKey": op((*Emulator).describeKey),
		"EnableKey": op((*Emulator).enableKey), "DisableKey": op((*Emulator).disableKey),
		"ScheduleKeyDeletion": op((*Emulator).scheduleKeyDeletion), "CancelKeyDeletion": op((*Emulator).cancelKeyDeletion),
		"Encrypt": op((*Emulator).encrypt), "Decrypt": op((*Emulator).decrypt),
		"GenerateDataKey": op((*Emulator).generateDataKey), "ReEncrypt": op((*Emulator).reEncrypt),
		"EnableKeyRotation": op((*Emulator).enableKeyRotation), "DisableKeyRotation": op((*Emulator).disableKeyRotation),
		"GetKeyRotationStatus": op((*Emulator).getKeyRotationStatus), "RotateKeyOnDemand": op((*Emulator).rotateKeyOnDemand),
		"ListKeyRotations": op((*Emulator).listKeyRotations),
		"PutKeyPolicy":     op((*Emulator).putKeyPolicy), "GetKeyPolicy": op((*Emulator).getKeyPolicy),
		"CreateAlias": op((*Emulator).createAlias), "ListAliases": op((*Emulator).listAliases),
		"ListKeys": op((*Emulator).listKeys),
	}
}

// op adapts a typed operation to a handler: it decodes the JSON body into
// the operation's input.
func op[In any](f func(*Emulator, *credential, *In) (any, *apiError)) handler {
	return func(e *Emulator, c *credential, body []byte) (any, *apiError) {
		in := new(In)
		if len(body) > 0 {
			if err := json.Unmarshal(body, in); err != nil {
				return nil, &apiError{400, "SerializationException", "could not read the request: " + err.Error()}
			}
		}
		return f(e, c, in)
	}
}

// epoch is a time as AWS JSON protocols send it: seconds since 1970.
type epoch time.Time

func (t epoch) MarshalJSON() ([]byte, error) {
	return []byte(fmt.Sprintf("%.3f", float64(time.Time(t).UnixMilli())/1000)), nil
}

func epochPtr(t time.Time) *epoch {
	if t.IsZero() {
		return nil
	}
	v := epoch(t)
	return &v
}

// ---- key resolution and authorization

// keyFor resolves a KeyId parameter (key id, key ARN, alias name or alias
// ARN) for the caller. Key ids and alias names are the caller's own
// account's; another account's key can be named only by ARN, and only for
// operations AWS allows across accounts.
func (e *Emulator) keyFor(c *credential, keyID string, crossAccount bool) (*key, *apiError) {
	if keyID == "" {
		return nil, errValidation("1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null")
	}
	acct, ref := c.account, keyID
	if strings.HasPrefix(keyID, "arn:") {
		a, err := parseKeyARN(keyID)
		if err != nil {
			return nil, &apiError{400, "NotFoundException", "Invalid arn " + keyID}
		}
		if a.region != e.region {
			return nil, &apiError{400, "NotFoundException", "Invalid arn " + a.region}
		}
		acct, ref = a.account, a.resource
		if acct != c.account && !crossAccount {
			return nil, &apiError{400, "NotFoundException",
				fmt.Sprintf("Key '%s' does not exist (this operation cannot use a key of another account)", keyID)}
		}
	}
	k := e.resolveLocked(acct, ref)
	if k != nil {
		return k, nil
	}
	if name, ok := strings.CutPrefix(ref, "alias/"); ok {
		return nil, &apiError{400, "NotFoundException", fmt.Sprintf("Alias arn:aws:kms:%s:%s:alias/%s is not found.", e.region, acct, name)}
	}
	return nil, &apiError{400, "NotFoundException",
		fmt.Sprintf("Key 'arn:aws:kms:%s:%s:key/%s' does not exist", e.region, acct, strings.TrimPrefix(ref, "key/"))}
}

func (e *Emulator) authorize(c *credential, k *key, action string, ec map[string]string) *apiError {
	switch k.policy.evaluate(newRequest(c, action, k.arn, ec)) {
	case allowed:
		return nil
	case explicitDeny:
		return &apiError{400, "AccessDeniedException", fmt.Sprintf(
			"User: %s is not authorized to perform: %s on resource: %s with an explicit deny in a resource-based policy",
			c.caller, action, k.arn)}
	}
	return &apiError{400, "AccessDeniedException", fmt.Sprintf(
		"User: %s is not authorized to perform: %s on resource: %s because no resource-based policy allows the %s action",
		c.caller, action, k.arn, action)}
}

// usable refuses a key that cannot encrypt or decrypt now.
func usable(k *key) *apiError {
	switch k.state {
	case stateDisabled:
		return &apiError{400, "DisabledException", k.arn + " is disabled."}
	case statePendingDeletion:
		return &apiError{400, "KMSInvalidStateException", k.arn + " is pending deletion."}
	}
	return nil
}

func notPending(k *key) *apiError {
	if k.state == statePendingDeletion {
		return &apiError{400, "KMSInvalidStateException", k.arn + " is pending deletion."}
	}
	return nil
}

// keyOp resolves, authorizes and (when check is set) checks the state of
// the key of a management operation.
func (e *Emulator) keyOp(c *credential, keyID, action string, cross bool, check func(*key) *apiError) (*key, *apiError) {
	k, err := e.keyFor(c, keyID, cross)
	if err != nil {
		return nil, err
	}
	if err := e.authorize(c, k, action, nil); err != nil {
		return nil, err
	}
	if check != nil {
		if err := check(k); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// ---- operations

type keyMetadata struct {
	AWSAccountId          string
	KeyId                 string
	Arn                   string
	CreationDate          *epoch
	Enabled               bool
	Description           string
	KeyUsage              string
	KeyState              string
	DeletionDate          *epoch `json:",omitempty"`
	PendingDeletionWindow *int32 `json:"PendingDeletionWindowInDays,omitempty"`
	Origin                string
	KeyManager            string
	CustomerMasterKeySpec string
	KeySpec               string
	EncryptionAlgorithms  []string
	MultiRegion           bool
	CurrentKeyMaterialId  string
}

func (k *key) metadata() keyMetadata {
	m := keyMetadata{
		AWSAccountId: k.account, KeyId: k.id, Arn: k.arn, CreationDate: epochPtr(k.created),
		Enabled: k.state == stateEnabled, Description: k.description, KeyUsage: "ENCRYPT_DECRYPT",
		KeyState: k.state, Origin: "AWS_KMS", KeyManager: "CUSTOMER", CustomerMasterKeySpec: "SYMMETRIC_DEFAULT",
		KeySpec: "SYMMETRIC_DEFAULT", EncryptionAlgorithms: []string{"SYMMETRIC_DEFAULT"},
		CurrentKeyMaterialId: k.materials[len(k.materials)-1].id,
	}
	if k.state == statePendingDeletion {
		m.DeletionDate = epochPtr(k.deletionDate)
		d := int32(k.pendingDays)
		m.PendingDeletionWindow = &d
	}
	return m
}

type createKeyIn struct {
	Description, KeyUsage, KeySpec, CustomerMasterKeySpec, Origin, Policy string
	MultiRegion                                                           bool
	BypassPolicyLockoutSafetyCheck                                        bool
}

func (e *Emulator) createKey(c *credential, in *createKeyIn) (any, *apiError) {
	switch {
	case in.KeyUsage != "" && in.KeyUsage != "ENCRYPT_DECRYPT":
		return nil, &apiError{400, "UnsupportedOperationException", "this emulator makes ENCRYPT_DECRYPT keys only, not " + in.KeyUsage}
	case in.KeySpec != "" && in.KeySpec != "SYMMETRIC_DEFAULT", in.CustomerMasterKeySpec != "" && in.CustomerMasterKeySpec != "SYMMETRIC_DEFAULT":
		return nil, &apiError{400, "UnsupportedOperationException", "this emulator makes SYMMETRIC_DEFAULT keys only"}
	case in.MultiRegion:
		return nil, &apiError{400, "UnsupportedOperationException", "this emulator does not make multi-Region keys"}
	case in.Origin != "" && in.Origin != "AWS_KMS":
		return nil, &apiError{400, "UnsupportedOperationException", "this emulator makes keys of origin AWS_KMS only"}
	case len(in.Description) > 8192:
		return nil, errValidation("1 validation error detected: Value at 'description' failed to satisfy constraint: Member must have length less than or equal to 8192")
	}
	if in.Policy != "" {
		p, err := parsePolicy(in.Policy)
		if err != nil {
			return nil, errMalformedPolicy(err)
		}
		if !in.BypassPolicyLockoutSafetyCheck && p.evaluate(newRequest(c, "kms:PutKeyPolicy", "*", nil)) != allowed {
			return nil, errLockout
		}
	}
	k, err := e.createKeyLocked(c.account, in.Description, in.Policy)
	if err != nil {
		return nil, err
	}
	return map[string]any{"KeyMetadata": k.metadata()}, nil
}

type keyIDIn struct{ KeyId string }

func (e *Emulator) describeKey(c *credential, in *keyIDIn) (any, *apiError) {
	k, err := e.keyOp(c, in.KeyId, "kms:DescribeKey", true, nil)
	if err != nil {
		return nil, err
	}
	return map[string]any{"KeyMetadata": k.metadata()}, nil
}

func (e *Emulator) enableKey(c *credential, in *keyIDIn) (any, *apiError) {
	k, err := e.keyOp(c, in.KeyId, "kms:EnableKey", false, notPending)
	if err != nil {
		return nil, err
	}
	k.state = stateEnabled
	return struct{}{}, nil
}

func (e *Emulator) disableKey(c *credential, in *keyIDIn) (any, *apiError) {
	k, err := e.keyOp(c, in.KeyId, "kms:DisableKey", false, notPending)
	if err != nil {
		return nil, err
	}
	k.state = stateDisabled
	return struct{}{}, nil
}

type scheduleIn struct {
	KeyId               string
	PendingWindowInDays *int32
}

func (e *Emulator) scheduleKeyDeletion(c *credential, in *scheduleIn) (any, *apiError) {
	days := defaultPendingDays
	if in.PendingWindowInDays != nil {
		days = int(*in.PendingWindowInDays)
	}
	if days < minPendingDays || days > maxPendingDays {
		return nil, errValidation(fmt.Sprintf("1 validation error detected: Value '%d' at 'pendingWindowInDays' failed to satisfy constraint: "+
			"Member must have value between %d and %d", days, minPendingDays, maxPendingDays))
	}
	k, err := e.keyOp(c, in.KeyId, "kms:ScheduleKeyDeletion", false, notPending)
	if err != nil {
		return nil, err
	}
	k.state, k.pendingDays = statePendingDeletion, days
	k.deletionDate = e.now().UTC().AddDate(0, 0, days)
	d := int32(days)
	return map[string]any{"KeyId": k.arn, "DeletionDate": epochPtr(k.deletionDate), "KeyState": k.state, "PendingWindowInDays": d}, nil
}

func (e *Emulator) cancelKeyDeletion(c *credential, in *keyIDIn) (any, *apiError) {
	k, err := e.keyOp(c, in.KeyId, "kms:CancelKeyDeletion", false, func(k *key) *apiError {
		if k.state != statePendingDeletion {
			return &apiError{400, "KMSInvalidStateException", k.arn + " is not pending deletion."}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// As in AWS, a key whose deletion is cancelled comes back disabled.
	k.state, k.deletionDate, k.pendingDays = stateDisabled, time.Time{}, 0
	return map[string]any{"KeyId": k.arn}, nil
}

func checkAlgorithm(alg string) *apiError {
	if alg != "" && alg != "SYMMETRIC_DEFAULT" {
		return &apiError{400, "InvalidKeyUsageException", "The encryption algorithm " + alg + " is not supported by a SYMMETRIC_DEFAULT key."}
	}
	return nil
}

func checkContext(ec map[string]string) *apiError {
	for k, v := range ec {
		if k == "" || v == "" {
			return errValidation("encryption context keys and values must not be empty")
		}
	}
	return nil
}

type encryptIn struct {
	KeyId               string
	Plaintext           []byte
	EncryptionContext   map[string]string
	EncryptionAlgorithm string
}

func (e *Emulator) encrypt(c *credential, in *encryptIn) (any, *apiError) {
	if n := len(in.Plaintext); n < 1 || n > 4096 {
		return nil, errValidation(fmt.Sprintf("1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "+
			"Member must have length between 1 and 4096 (got %d bytes)", n))
	}
	blob, k, err := e.encryptTo(c, in.KeyId, "kms:Encrypt", in.Plaintext, in.EncryptionContext, in.EncryptionAlgorithm)
	if err != nil {
		return nil, err
	}
	return map[string]any{"CiphertextBlob": blob, "KeyId": k.arn, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}, nil
}

func (e *Emulator) encryptTo(c *credential, keyID, action string, pt []byte, ec map[string]string, alg string) ([]byte, *key, *apiError) {
	if err := checkAlgorithm(alg); err != nil {
		return nil, nil, err
	}
	if err := checkContext(ec); err != nil {
		return nil, nil, err
	}
	k, err := e.keyFor(c, keyID, true)
	if err != nil {
		return nil, nil, err
	}
	if err := e.authorize(c, k, action, ec); err != nil {
		return nil, nil, err
	}
	if err := usable(k); err != nil {
		return nil, nil, err
	}
	blob, serr := e.seal(k, pt, ec)
	if serr != nil {
		return nil, nil, errInternal(serr)
	}
	return blob, k, nil
}

type decryptIn struct {
	KeyId               string
	CiphertextBlob      []byte
	EncryptionContext   map[string]string
	EncryptionAlgorithm string
}

var errInvalidCiphertext = &apiError{400, "InvalidCiphertextException", ""}

func (e *Emulator) decryptFrom(c *credential, keyID, action string, blob []byte, ec map[string]string, alg string) ([]byte, string, *key, *apiError) {
	if err := checkAlgorithm(alg); err != nil {
		return nil, "", nil, err
	}
	if n := len(blob); n < 1 || n > 6144 {
		return nil, "", nil, errValidation(fmt.Sprintf("1 validation error detected: Value at 'ciphertextBlob' failed to satisfy constraint: "+
			"Member must have length between 1 and 6144 (got %d bytes)", n))
	}
	var k *key
	if keyID != "" {
		var err *apiError
		if k, err = e.keyFor(c, keyID, true); err != nil {
			return nil, "", nil, err
		}
		if id := blobKeyID(blob); id != "" && id != k.id {
			return nil, "", nil, &apiError{400, "IncorrectKeyException",
				"The key ID in the request does not identify a CMK that can perform this operation."}
		}
	} else {
		k = e.keys[blobKeyID(blob)]
		if k == nil || e.expireLocked(k) {
			return nil, "", nil, errInvalidCiphertext
		}
	}
	if err := e.authorize(c, k, action, ec); err != nil {
		return nil, "", nil, err
	}
	if err := usable(k); err != nil {
		return nil, "", nil, err
	}
	pt, mid, ok := open(k, blob, ec)
	if !ok {
		return nil, "", nil, errInvalidCiphertext
	}
	return pt, mid, k, nil
}

func (e *Emulator) decrypt(c *credential, in *decryptIn) (any, *apiError) {
	pt, mid, k, err := e.decryptFrom(c, in.KeyId, "kms:Decrypt", in.CiphertextBlob, in.EncryptionContext, in.EncryptionAlgorithm)
	if err != nil {
		return nil, err
	}
	return map[string]any{"KeyId": k.arn, "Plaintext": pt, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT", "KeyMaterialId": mid}, nil
}

type generateIn struct {
	KeyId             string
	EncryptionContext map[string]string
	KeySpec           string
	NumberOfBytes     *int32
}

func (e *Emulator) generateDataKey(c *credential, in *generateIn) (any, *apiError) {
	var n int
	switch {
	case in.KeySpec != "" && in.NumberOfBytes != nil:
		return nil, errValidation("Please specify either number of bytes or key spec.")
	case in.KeySpec == "AES_256":
		n = 32
	case in.KeySpec == "AES_128":
		n = 16
	case in.KeySpec != "":
		return nil, errValidation("1 validation error detected: Value '" + in.KeySpec + "' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [AES_256, AES_128]")
	case in.NumberOfBytes != nil && *in.NumberOfBytes >= 1 && *in.NumberOfBytes <= 1024:
		n = int(*in.NumberOfBytes)
	default:
		return nil, errValidation("Please specify either number of bytes (1 to 1024) or key spec.")
	}
	pt, rerr := e.randomBytes(n)
	if rerr != nil {
		return nil, errInternal(rerr)
	}
	blob, k, err := e.encryptTo(c, in.KeyId, "kms:GenerateDataKey", pt, in.EncryptionContext, "")
	if err != nil {
		return nil, err
	}
	return map[string]any{"CiphertextBlob": blob, "Plaintext": pt, "KeyId": k.arn,
		"KeyMaterialId": k.materials[len(k.materials)-1].id}, nil
}

type reEncryptIn struct {
	CiphertextBlob                                            []byte
	SourceKeyId, DestinationKeyId                             string
	SourceEncryptionContext, DestinationEncryptionContext     map[string]string
	SourceEncryptionAlgorithm, DestinationEncryptionAlgorithm string
}

func (e *Emulator) reEncrypt(c *credential, in *reEncryptIn) (any, *apiError) {
	pt, mid, src, err := e.decryptFrom(c, in.SourceKeyId, "kms:ReEncryptFrom", in.CiphertextBlob, in.SourceEncryptionContext, in.SourceEncryptionAlgorithm)
	if err != nil {
		return nil, err
	}
	blob, dst, err := e.encryptTo(c, in.DestinationKeyId, "kms:ReEncryptTo", pt, in.DestinationEncryptionContext, in.DestinationEncryptionAlgorithm)
	if err != nil {
		return nil, err
	}
	return map[string]any{"CiphertextBlob": blob, "SourceKeyId": src.arn, "KeyId": dst.arn,
		"SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT", "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
		"SourceKeyMaterialId": mid, "DestinationKeyMaterialId": dst.materials[len(dst.materials)-1].id}, nil
}

type rotationIn struct {
	KeyId                string
	RotationPeriodInDays *int32
}

func (e *Emulator) enableKeyRotation(c *credential, in *rotationIn) (any, *apiError) {
	days := defaultRotation
	if in.RotationPeriodInDays != nil {
		days = int(*in.RotationPeriodInDays)
	}
	if days < minRotationDays || days > maxRotationDays {
		return nil, errValidation(fmt.Sprintf("1 validation error detected: Value '%d' at 'rotationPeriodInDays' failed to satisfy constraint: "+
			"Member must have value between %d and %d", days, minRotationDays, maxRotationDays))
	}
	k, err := e.keyOp(c, in.KeyId, "kms:EnableKeyRotation", false, usable)
	if err != nil {
		return nil, err
	}
	k.rotationEnabled, k.rotationDays = true, days
	k.nextRotation = e.now().UTC().AddDate(0, 0, days)
	return struct{}{}, nil
}

func (e *Emulator) disableKeyRotation(c *credential, in *keyIDIn) (any, *apiError) {
	k, err := e.keyOp(c, in.KeyId, "kms:DisableKeyRotation", false, usable)
	if err != nil {
		return nil, err
	}
	k.rotationEnabled, k.nextRotation = false, time.Time{}
	return struct{}{}, nil
}

func (e *Emulator) getKeyRotationStatus(c *credential, in *keyIDIn) (any, *apiError) {
	k, err := e.keyOp(c, in.KeyId, "kms:GetKeyRotationStatus", true, notPending)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"KeyId": k.arn, "KeyRotationEnabled": k.rotationEnabled}
	if k.rotationEnabled {
		out["RotationPeriodInDays"] = k.rotationDays
		out["NextRotationDate"] = epochPtr(k.nextRotation)
	}
	if !k.onDemandStarted.IsZero() {
		out["OnDemandRotationStartDate"] = epochPtr(k.onDemandStarted)
	}
	return out, nil
}

// maxOnDemandRotations is AWS's lifetime limit of on-demand rotations per key.
const maxOnDemandRotations = 25

func (e *Emulator) rotateKeyOnDemand(c *credential, in *keyIDIn) (any, *apiError) {
	k, err := e.keyOp(c, in.KeyId, "kms:RotateKeyOnDemand", false, usable)
	if err != nil {
		return nil, err
	}
	n := 0
	for _, m := range k.materials {
		if m.kind == rotationOnDemand {
			n++
		}
	}
	if n >= maxOnDemandRotations {
		return nil, &apiError{400, "LimitExceededException",
			fmt.Sprintf("%s has reached the limit of %d on-demand rotations.", k.arn, maxOnDemandRotations)}
	}
	if rerr := e.rotateLocked(k, rotationOnDemand, e.now()); rerr != nil {
		return nil, errInternal(rerr)
	}
	return map[string]any{"KeyId": k.arn}, nil
}

type listIn struct {
	KeyId              string
	Limit              *int32
	Marker             string
	IncludeKeyMaterial string
}

// page picks the entries of one page: Marker is the index to start at.
func page(n int, in *listIn) (start, end int, next string, err *apiError) {
	limit := 100
	if in.Limit != nil {
		if *in.Limit < 1 || *in.Limit > 1000 {
			return 0, 0, "", errValidation("1 validation error detected: Value at 'limit' failed to satisfy constraint: Member must have value between 1 and 1000")
		}
		limit = int(*in.Limit)
	}
	if in.Marker != "" {
		if _, serr := fmt.Sscanf(in.Marker, "%d", &start); serr != nil || start < 0 || start > n {
			return 0, 0, "", &apiError{400, "InvalidMarkerException", "The marker is not one this service gave out."}
		}
	}
	end = min(n, start+limit)
	if end < n {
		next = fmt.Sprint(end)
	}
	return start, end, next, nil
}

func paged(out map[string]any, next string) map[string]any {
	out["Truncated"] = next != ""
	if next != "" {
		out["NextMarker"] = next
	}
	return out
}

func (e *Emulator) listKeyRotations(c *credential, in *listIn) (any, *apiError) {
	k, err := e.keyOp(c, in.KeyId, "kms:ListKeyRotations", false, notPending)
	if err != nil {
		return nil, err
	}
	var ms []material
	switch in.IncludeKeyMaterial {
	case "", "ROTATIONS_ONLY":
		ms = k.materials[1:]
	case "ALL_KEY_MATERIAL":
		ms = k.materials
	default:
		return nil, errValidation("IncludeKeyMaterial: want ROTATIONS_ONLY or ALL_KEY_MATERIAL")
	}
	start, end, next, err := page(len(ms), in)
	if err != nil {
		return nil, err
	}
	current := k.materials[len(k.materials)-1].id
	var rows []map[string]any
	for _, m := range ms[start:end] {
		state := "NON_CURRENT"
		if m.id == current {
			state = "CURRENT"
		}
		row := map[string]any{"KeyId": k.arn, "KeyMaterialId": m.id, "KeyMaterialState": state}
		if m.kind != "" {
			row["RotationDate"], row["RotationType"] = epochPtr(m.created), m.kind
		}
		rows = append(rows, row)
	}
	return paged(map[string]any{"Rotations": rows}, next), nil
}

type policyIn struct {
	KeyId, PolicyName, Policy      string
	BypassPolicyLockoutSafetyCheck bool
}

func checkPolicyName(name string) *apiError {
	if name != "" && name != "default" {
		return errValidation("The only valid PolicyName is 'default', not '" + name + "'.")
	}
	return nil
}

func (e *Emulator) putKeyPolicy(c *credential, in *policyIn) (any, *apiError) {
	if err := checkPolicyName(in.PolicyName); err != nil {
		return nil, err
	}
	k, err := e.keyOp(c, in.KeyId, "kms:PutKeyPolicy", false, notPending)
	if err != nil {
		return nil, err
	}
	p, perr := parsePolicy(in.Policy)
	if perr != nil {
		return nil, errMalformedPolicy(perr)
	}
	if !in.BypassPolicyLockoutSafetyCheck && p.evaluate(newRequest(c, "kms:PutKeyPolicy", k.arn, nil)) != allowed {
		return nil, errLockout
	}
	k.policyText, k.policy = in.Policy, p
	return struct{}{}, nil
}

func (e *Emulator) getKeyPolicy(c *credential, in *policyIn) (any, *apiError) {
	if err := checkPolicyName(in.PolicyName); err != nil {
		return nil, err
	}
	k, err := e.keyOp(c, in.KeyId, "kms:GetKeyPolicy", false, nil)
	if err != nil {
		return nil, err
	}
	return map[string]any{"Policy": k.policyText, "PolicyName": "default"}, nil
}

type aliasIn struct{ AliasName, TargetKeyId string }

func (e *Emulator) createAlias(c *credential, in *aliasIn) (any, *apiError) {
	if strings.HasPrefix(in.TargetKeyId, "alias/") || strings.Contains(in.TargetKeyId, ":alias/") {
		return nil, errValidation("TargetKeyId must name a key (key id or key ARN), not an alias.")
	}
	k, err := e.keyOp(c, in.TargetKeyId, "kms:CreateAlias", false, notPending)
	if err != nil {
		return nil, err
	}
	if aerr := e.createAliasLocked(c.account, in.AliasName, k); aerr != nil {
		var ae *apiError
		if errors.As(aerr, &ae) {
			return nil, ae
		}
		return nil, errInternal(aerr)
	}
	return struct{}{}, nil
}

func (e *Emulator) listAliases(c *credential, in *listIn) (any, *apiError) {
	a := e.accounts[c.account]
	var filter string
	if in.KeyId != "" {
		k, err := e.keyFor(c, in.KeyId, false)
		if err != nil {
			return nil, err
		}
		filter = k.id
	}
	var rows []map[string]any
	for _, name := range sortedKeys(a.aliases) {
		id := a.aliases[name]
		if k := e.keys[id]; k == nil || e.expireLocked(k) || filter != "" && id != filter {
			continue
		}
		rows = append(rows, map[string]any{"AliasName": name, "TargetKeyId": id,
			"AliasArn": fmt.Sprintf("arn:aws:kms:%s:%s:%s", e.region, c.account, name)})
	}
	start, end, next, err := page(len(rows), in)
	if err != nil {
		return nil, err
	}
	return paged(map[string]any{"Aliases": rows[start:end]}, next), nil
}

func (e *Emulator) listKeys(c *credential, in *listIn) (any, *apiError) {
	var rows []map[string]any
	for _, id := range sortedKeys(e.keys) {
		k := e.keys[id]
		if k.account != c.account || e.expireLocked(k) {
			continue
		}
		rows = append(rows, map[string]any{"KeyId": k.id, "KeyArn": k.arn})
	}
	start, end, next, err := page(len(rows), in)
	if err != nil {
		return nil, err
	}
	return paged(map[string]any{"Keys": rows[start:end]}, next), nil
}
