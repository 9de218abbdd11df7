package awskms

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/cmk-project/cmk/internal/kms"
)

// Classify turns an error from the AWS SDK, the credential chain or the
// network into a *kms.Error for op ("describe", "wrap", "unwrap") on the
// key named key (its ARN). A nil error stays nil and a *kms.Error is
// returned unchanged.
//
// AWS KMS answers (the error code is the body's __type):
//
//	DisabledException                          KindKeyDisabled
//	KMSInvalidStateException, key pending
//	    deletion                               KindKeyNotFound
//	KMSInvalidStateException, other states
//	    (Creating, Updating, Unavailable, …)   KindTransient
//	NotFoundException                          KindKeyNotFound
//	AccessDeniedException                      KindIdentityUnauthorized
//	InvalidKeyUsageException                   KindKeyOperationForbidden
//	InvalidCiphertextException,
//	    IncorrectKeyException on unwrap        KindUnwrapFailed
//	ThrottlingException, LimitExceeded-
//	    Exception, TooManyRequests, 429        KindThrottled
//	KMSInternalException, DependencyTimeout-
//	    Exception, KeyUnavailableException,
//	    408, 5xx                               KindTransient
//	InvalidSignatureException, Unrecognized-
//	    ClientException, IncompleteSignature,
//	    MissingAuthenticationToken, and the
//	    credential chain finding no
//	    credentials                            KindTokenAcquisitionFailed (Op "token")
//	ExpiredTokenException                      KindTransient (Op "token")
//	ValidationException, InvalidArnException,
//	    InvalidGrantTokenException,
//	    UnsupportedOperationException,
//	    InvalidCiphertext/IncorrectKey outside
//	    unwrap                                 KindInvalidRequest
//
// Pending deletion is KindKeyNotFound, as a soft-deleted Key Vault key is:
// the customer scheduled the key's destruction, which ends the platform's
// access as surely as deleting it; cancelling the deletion brings it back
// (disabled, so it must also be enabled).
//
// Credential failures are KindTokenAcquisitionFailed, as a refused client
// secret is for Key Vault: the platform's own AWS credentials (or its
// clock) are wrong. A customer cannot cause them — removing the platform
// from the key policy answers AccessDeniedException — so an alert on this
// kind points at the platform's configuration, not at the customer. The
// credential chain failing to reach its source (instance metadata or STS
// unreachable, timeouts) is transient instead: an outage must not look
// like every customer revoking at once. So is ExpiredTokenException:
// session credentials (instance, task or web-identity roles) that expire
// between the SDK's refresh and the request are renewed on the next call,
// and that race must not revoke every org using AWS at once.
//
// No answer (DNS, refused or reset connections, timeouts, TLS, context
// deadline or cancellation) is KindTransient; so is anything not
// recognised, including unknown error codes, so an unexpected error can
// raise an alert but never revoke a customer's data.
func Classify(op, key string, err error) error {
	if err == nil {
		return nil
	}
	var ke *kms.Error
	if errors.As(err, &ke) {
		return err
	}
	e := &kms.Error{Op: op, Key: key, Err: err}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		e.Status = re.Response.StatusCode
	}
	var ae smithy.APIError
	switch {
	case errors.As(err, &ae):
		e.Code = ae.ErrorCode()
		e.Kind = classifyCode(op, e.Code, ae.ErrorMessage(), e.Status)
		if e.Kind == kms.KindTokenAcquisitionFailed || e.Code == "ExpiredTokenException" || e.Code == "ExpiredToken" {
			e.Op = "token"
		}
	case e.Status != 0:
		e.Kind = classifyStatus(e.Status)
	case isCredentialFailure(err):
		e.Op, e.Kind = "token", kms.KindTokenAcquisitionFailed
	default:
		e.Kind = kms.KindTransient
	}
	return e
}

func classifyCode(op, code, msg string, status int) kms.Kind {
	switch code {
	case "DisabledException":
		return kms.KindKeyDisabled
	case "KMSInvalidStateException":
		if l := strings.ToLower(msg); strings.Contains(l, "pending deletion") || strings.Contains(l, "pendingdeletion") {
			return kms.KindKeyNotFound
		}
		return kms.KindTransient
	case "NotFoundException":
		return kms.KindKeyNotFound
	case "AccessDeniedException":
		return kms.KindIdentityUnauthorized
	case "InvalidKeyUsageException":
		return kms.KindKeyOperationForbidden
	case "InvalidCiphertextException", "IncorrectKeyException":
		if op == "unwrap" {
			return kms.KindUnwrapFailed
		}
		return kms.KindInvalidRequest
	case "ThrottlingException", "Throttling", "LimitExceededException", "TooManyRequestsException", "RequestLimitExceeded":
		return kms.KindThrottled
	case "KMSInternalException", "DependencyTimeoutException", "KeyUnavailableException", "ServiceUnavailableException",
		"InternalFailure", "ServiceUnavailable", "RequestTimeout", "RequestTimeoutException":
		return kms.KindTransient
	case "ExpiredTokenException", "ExpiredToken":
		return kms.KindTransient
	case "InvalidSignatureException", "UnrecognizedClientException",
		"IncompleteSignatureException", "IncompleteSignature", "MissingAuthenticationTokenException",
		"MissingAuthenticationToken", "InvalidClientTokenId", "SignatureDoesNotMatch":
		return kms.KindTokenAcquisitionFailed
	case "ValidationException", "InvalidArnException", "InvalidGrantTokenException", "UnsupportedOperationException",
		"SerializationException", "InvalidMarkerException", "DryRunOperationException":
		return kms.KindInvalidRequest
	}
	// An unknown code: only its status says anything.
	return classifyStatus(status)
}

// classifyStatus classifies an answer without a recognisable error code
// (a proxy's page, an empty body).
func classifyStatus(status int) kms.Kind {
	if status == http.StatusTooManyRequests {
		return kms.KindThrottled
	}
	// 408 and 5xx are transient; so is an unrecognised 4xx, which is no
	// evidence of anything the customer did.
	return kms.KindTransient
}

// isCredentialFailure recognises the credential chain having no
// credentials to offer (nothing in the environment, the shared files, web
// identity or instance metadata) as opposed to failing to reach a source.
// The SDK wraps these failures in plain errors, so the text is all there is.
func isCredentialFailure(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	msg := strings.ToLower(err.Error())
	if !strings.Contains(msg, "credential") {
		return false
	}
	for _, s := range []string{"timeout", "deadline", "connection refused", "connection reset", "no such host", "i/o", "eof", "network is unreachable"} {
		if strings.Contains(msg, s) {
			return false
		}
	}
	return true
}
