// Package kms defines how cmk talks to a key-encryption key (KEK) held
// outside the service: the customer's key in Azure Key Vault, or the
// system-managed key the platform holds before an org enables CMK.
//
// A Provider does three things: describe a key, wrap a data key under it,
// and unwrap a data key it wrapped. Every failure is returned as *Error
// carrying a Kind, so callers (validation, the enablement job, the health
// monitor) branch on the cause without looking at error strings.
package kms

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// KeyRef names a customer key without its version: cmk keeps only the
// vault and key name and always uses the newest version of the key.
type KeyRef struct {
	VaultURL string // https://{vault}.vault.azure.net or https://{hsm}.managedhsm.azure.net, no trailing slash
	Name     string
}

// String is the key's identifier without version: the Key Vault key URI,
// or for an AWS KMS key the ARN.
func (r KeyRef) String() string {
	if r.AWS() {
		return r.VaultURL + ":" + r.Name
	}
	return r.VaultURL + "/keys/" + r.Name
}

// AWS reports whether ref names a key in AWS KMS: VaultURL is then the
// ARN's scope (arn:{partition}:kms:{region}:{account}) and Name its
// resource (key/{id} or alias/{name}), as awskms.KeyARN.Ref makes them.
func (r KeyRef) AWS() bool { return strings.HasPrefix(r.VaultURL, "arn:") }

// ManagedHSM reports whether the key is in a Managed HSM
// (https://{hsm}.managedhsm.azure.net and the sovereign clouds' equivalents)
// rather than a key vault.
func (r KeyRef) ManagedHSM() bool {
	host := strings.TrimPrefix(r.VaultURL, "https://")
	_, rest, ok := strings.Cut(host, ".")
	return ok && strings.HasPrefix(rest, "managedhsm.")
}

// VaultName is the first label of the vault's (or Managed HSM's) host.
func (r KeyRef) VaultName() string {
	name, _, _ := strings.Cut(strings.TrimPrefix(r.VaultURL, "https://"), ".")
	return name
}

// KeyInfo describes the current (newest) version of a key.
type KeyInfo struct {
	KID           string     // full key identifier including the version
	Version       string     // version segment of KID
	KeyType       string     // "RSA", "RSA-HSM", "EC", ...
	Bits          int        // modulus size for RSA keys, 0 otherwise
	Ops           []string   // permitted operations (key_ops)
	Enabled       bool       // attributes.enabled
	NotBefore     *time.Time // attributes.nbf
	Expires       *time.Time // attributes.exp
	RecoveryLevel string     // attributes.recoveryLevel, e.g. "Recoverable"
}

// HasOp reports whether op is among the key's permitted operations.
func (k KeyInfo) HasOp(op string) bool {
	for _, o := range k.Ops {
		if o == op {
			return true
		}
	}
	return false
}

// CheckUsable returns why the platform must not wrap data keys under the
// key version info describes at now, or nil. Key Vault's own answers are no
// guide here: it still wraps under a disabled key (and refuses only unwrap),
// so a wrap that works proves nothing; the attributes do. The error is a
// *Error of op "describe": KindKeyDisabled when the version is disabled,
// KindKeyNotActive outside its nbf/exp dates, KindKeyOperationForbidden
// when its key_ops lack wrapKey or unwrapKey. The key's type and size are
// not checked here (they are no Kind: see the validation checks).
func CheckUsable(ref KeyRef, info KeyInfo, now time.Time) error {
	fail := func(kind Kind, format string, args ...any) error {
		return &Error{Kind: kind, Op: "describe", Key: ref.String(), Err: fmt.Errorf(format, args...)}
	}
	switch {
	case !info.Enabled:
		return fail(KindKeyDisabled, "key version %s is disabled", info.Version)
	case info.NotBefore != nil && now.Before(*info.NotBefore):
		return fail(KindKeyNotActive, "key version %s is not active until %s", info.Version, info.NotBefore.UTC().Format(time.RFC3339))
	case info.Expires != nil && !now.Before(*info.Expires):
		return fail(KindKeyNotActive, "key version %s expired at %s", info.Version, info.Expires.UTC().Format(time.RFC3339))
	case !info.HasOp("wrapKey") || !info.HasOp("unwrapKey"):
		// An AWS KMS key's Encrypt and Decrypt are how the platform wraps
		// and unwraps: the provider reports them as wrapKey and unwrapKey.
		return fail(KindKeyOperationForbidden, "key version %s does not permit both wrapKey and unwrapKey (permitted: %v)", info.Version, info.Ops)
	}
	return nil
}

// MinRSABits is the smallest RSA key cmk accepts as a customer key. The
// platform's profile store requires 3072-bit keys, so a smaller key cannot
// protect every store.
const MinRSABits = 3072

// Wrapped is a data key wrapped under one version of a KEK.
type Wrapped struct {
	KeyVersion string // version of the KEK that produced Ciphertext
	Alg        string // "RSA-OAEP-256"
	Ciphertext []byte
}

// Provider is a key-encryption key service.
//
// Error contract: every non-nil error is (or wraps) *Error with a Kind
// from this package. Implementations must honour ctx cancellation.
// Unwrap must fail with KindUnwrapFailed when the ciphertext was not
// produced by the named key version.
type Provider interface {
	// Describe returns the newest version of the key.
	Describe(ctx context.Context, ref KeyRef) (KeyInfo, error)
	// Wrap wraps dek under the newest version of the key.
	Wrap(ctx context.Context, ref KeyRef, dek []byte) (Wrapped, error)
	// Unwrap recovers a data key wrapped under the given key version.
	Unwrap(ctx context.Context, ref KeyRef, w Wrapped) ([]byte, error)
}

// Kind classifies a key-service failure. The string values are stable:
// they are stored, returned by the API as error codes and used in alerts.
// Each constant's name spells its value (KindNetworkDenied is
// "NETWORK_DENIED"), and Kinds lists them all; kms_test.go checks both.
type Kind string

const (
	KindMalformedKeyURI        Kind = "MALFORMED_KEY_URI"        // the key identifier is not an allowed Key Vault key URI
	KindVaultDNSUnresolvable   Kind = "VAULT_DNS_UNRESOLVABLE"   // the vault host does not resolve (vault deleted or never existed)
	KindKeyNotFound            Kind = "KEY_NOT_FOUND"            // no such key (or deleted, pending purge)
	KindKeyDisabled            Kind = "KEY_DISABLED"             // the key exists but is disabled
	KindKeyNotActive           Kind = "KEY_NOT_ACTIVE"           // outside nbf/exp: wrap refused
	KindKeyOperationForbidden  Kind = "KEY_OPERATION_FORBIDDEN"  // the operation is not in the key's key_ops
	KindIdentityUnauthorized   Kind = "IDENTITY_UNAUTHORIZED"    // RBAC or access policy denies the app (role missing)
	KindNetworkDenied          Kind = "NETWORK_DENIED"           // vault firewall refuses the caller's address
	KindIdentityInvalid        Kind = "IDENTITY_INVALID"         // the app has no service principal in the key's tenant
	KindTokenAcquisitionFailed Kind = "TOKEN_ACQUISITION_FAILED" // the token endpoint refused or failed (bad secret, tenant unknown)
	KindUnwrapFailed           Kind = "UNWRAP_FAILED"            // the service could not unwrap the ciphertext
	KindThrottled              Kind = "THROTTLED"                // 429 from the vault
	KindTransient              Kind = "TRANSIENT"                // timeouts, 5xx, connection resets
	KindInvalidRequest         Kind = "INVALID_REQUEST"          // 400 from the service: a bug on our side or a bad value
)

// Kinds lists every Kind in declaration order. Code that must handle each
// kind (person-facing text, for one) iterates it in its tests, so a new kind
// cannot go unhandled.
var Kinds = []Kind{
	KindMalformedKeyURI, KindVaultDNSUnresolvable, KindKeyNotFound, KindKeyDisabled, KindKeyNotActive,
	KindKeyOperationForbidden, KindIdentityUnauthorized, KindNetworkDenied, KindIdentityInvalid,
	KindTokenAcquisitionFailed, KindUnwrapFailed, KindThrottled, KindTransient, KindInvalidRequest,
}

// Transient reports whether a failure of this kind may go away on its own
// (so it must never be treated as a revocation).
func (k Kind) Transient() bool { return k == KindThrottled || k == KindTransient }

// LossOfAccess reports whether a failure of this kind is an answer that
// positively says the key can no longer be used by the platform: the key is
// disabled, deleted, outside its dates or without the operation, the vault
// is gone or closed to the platform, the app lost its role or its consent in
// the key's tenant, or the vault said it could not decrypt a ciphertext. The
// health monitor revokes only on these (and on a grace that ran out); any
// other failure, KindInvalidRequest and KindMalformedKeyURI included, is no
// verdict on the key.
//
// KindTokenAcquisitionFailed is not among them: a wrong or expired client
// secret of the platform's own app, or a token endpoint that answers
// strangely, is the platform's fault, not the customer withdrawing access,
// and it strikes every org at once. It coasts like an outage (an alert
// names it; the grace bounds it) while the operator fixes the secret. The
// customer's own withdrawal of consent is KindIdentityInvalid, which does
// revoke.
func (k Kind) LossOfAccess() bool {
	switch k {
	case KindKeyDisabled, KindKeyNotFound, KindVaultDNSUnresolvable, KindKeyNotActive, KindKeyOperationForbidden,
		KindIdentityUnauthorized, KindNetworkDenied, KindIdentityInvalid, KindUnwrapFailed:
		return true
	}
	return false
}

// Error is a classified key-service failure.
type Error struct {
	Kind       Kind
	Op         string        // "describe", "wrap", "unwrap", "token"
	Key        string        // key reference (vault URL + name), never key material
	Status     int           // HTTP status, 0 when no response arrived
	Code       string        // service error code, e.g. "Forbidden" or "invalid_client"
	InnerCode  string        // innermost service error code, e.g. "ForbiddenByRbac" or "AADSTS700016"
	RetryAfter time.Duration // from a 429's Retry-After, 0 when absent
	Err        error         // underlying error
}

func (e *Error) Error() string {
	code := e.Code
	if e.InnerCode != "" {
		code += "/" + e.InnerCode
	}
	msg := fmt.Sprintf("%s %s: %s", e.Op, e.Key, e.Kind)
	if e.Status != 0 {
		msg += fmt.Sprintf(" (HTTP %d %s)", e.Status, code)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the Kind of err, or "" when err is not a *Error.
func KindOf(err error) Kind {
	var ke *Error
	if errors.As(err, &ke) {
		return ke.Kind
	}
	return ""
}
