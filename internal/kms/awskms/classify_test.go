package awskms

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/cmk-project/cmk/internal/kms"
)

// answer wraps an API error as the SDK returns it: an operation error
// around a response error with the HTTP status.
func answer(status int, apiErr error) error {
	return &smithy.OperationError{ServiceID: "KMS", OperationName: "Encrypt", Err: &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}}, Err: apiErr},
	}}
}

func generic(code, msg string) error { return &smithy.GenericAPIError{Code: code, Message: msg} }

func TestClassify(t *testing.T) {
	const key = "arn:aws:kms:eu-west-1:111122223333:key/" + testKeyID
	for _, tc := range []struct {
		name   string
		op     string
		err    error
		want   kms.Kind
		wantOp string
	}{
		{"disabled", "wrap", answer(400, &types.DisabledException{Message: aws.String(key + " is disabled.")}), kms.KindKeyDisabled, "wrap"},
		{"pending deletion", "unwrap", answer(400, &types.KMSInvalidStateException{Message: aws.String(key + " is pending deletion.")}), kms.KindKeyNotFound, "unwrap"},
		{"other invalid state", "wrap", answer(400, &types.KMSInvalidStateException{Message: aws.String(key + " is unavailable.")}), kms.KindTransient, "wrap"},
		{"not found", "describe", answer(400, &types.NotFoundException{Message: aws.String("Key '" + key + "' does not exist")}), kms.KindKeyNotFound, "describe"},
		{"access denied", "wrap", answer(400, generic("AccessDeniedException", "User: x is not authorized to perform: kms:Encrypt")), kms.KindIdentityUnauthorized, "wrap"},
		{"invalid key usage", "wrap", answer(400, &types.InvalidKeyUsageException{}), kms.KindKeyOperationForbidden, "wrap"},
		{"invalid ciphertext on unwrap", "unwrap", answer(400, &types.InvalidCiphertextException{}), kms.KindUnwrapFailed, "unwrap"},
		{"incorrect key on unwrap", "unwrap", answer(400, &types.IncorrectKeyException{}), kms.KindUnwrapFailed, "unwrap"},
		{"invalid ciphertext elsewhere", "wrap", answer(400, &types.InvalidCiphertextException{}), kms.KindInvalidRequest, "wrap"},
		{"throttling", "wrap", answer(400, generic("ThrottlingException", "Rate exceeded")), kms.KindThrottled, "wrap"},
		{"limit exceeded", "wrap", answer(400, &types.LimitExceededException{}), kms.KindThrottled, "wrap"},
		{"429 without a code", "wrap", answer(429, generic("", "")), kms.KindThrottled, "wrap"},
		{"internal", "wrap", answer(500, &types.KMSInternalException{}), kms.KindTransient, "wrap"},
		{"dependency timeout", "wrap", answer(503, &types.DependencyTimeoutException{}), kms.KindTransient, "wrap"},
		{"key unavailable", "unwrap", answer(500, &types.KeyUnavailableException{}), kms.KindTransient, "unwrap"},
		{"502 from a proxy", "wrap", answer(502, generic("UnknownError", "UnknownError")), kms.KindTransient, "wrap"},
		{"invalid signature", "wrap", answer(400, generic("InvalidSignatureException", "does not match")), kms.KindTokenAcquisitionFailed, "token"},
		{"unrecognized client", "describe", answer(400, generic("UnrecognizedClientException", "invalid")), kms.KindTokenAcquisitionFailed, "token"},
		{"expired token", "unwrap", answer(400, generic("ExpiredTokenException", "expired")), kms.KindTransient, "token"},
		{"validation", "wrap", answer(400, generic("ValidationException", "1 validation error")), kms.KindInvalidRequest, "wrap"},
		{"invalid arn", "wrap", answer(400, &types.InvalidArnException{}), kms.KindInvalidRequest, "wrap"},
		{"unknown code", "unwrap", answer(400, generic("SomethingNewException", "")), kms.KindTransient, "unwrap"},
		{"unknown 403 without a code", "unwrap", answer(403, generic("", "")), kms.KindTransient, "unwrap"},
		{"response without a code", "wrap", &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 504}}, Err: errors.New("x")}, kms.KindTransient, "wrap"},
		{"connection refused", "wrap", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, kms.KindTransient, "wrap"},
		{"dns not found", "wrap", &net.DNSError{Err: "no such host", Name: "kms.eu-west-1.amazonaws.com", IsNotFound: true}, kms.KindTransient, "wrap"},
		{"deadline", "unwrap", fmt.Errorf("operation error KMS: Decrypt: %w", context.DeadlineExceeded), kms.KindTransient, "unwrap"},
		{"canceled", "unwrap", context.Canceled, kms.KindTransient, "unwrap"},
		{"no credentials", "wrap", errors.New("operation error KMS: Encrypt, failed to retrieve credentials: failed to refresh cached credentials, no EC2 IMDS role found"), kms.KindTokenAcquisitionFailed, "token"},
		{"credential source unreachable", "wrap", errors.New("failed to refresh cached credentials, dial tcp 169.254.169.254:80: i/o timeout"), kms.KindTransient, "wrap"},
		{"anything else", "wrap", errors.New("surprise"), kms.KindTransient, "wrap"},
	} {
		err := Classify(tc.op, key, tc.err)
		var ke *kms.Error
		if !errors.As(err, &ke) {
			t.Errorf("%s: Classify = %v, want a *kms.Error", tc.name, err)
			continue
		}
		if ke.Kind != tc.want || ke.Op != tc.wantOp || ke.Key != key {
			t.Errorf("%s: Classify = kind %s op %s key %s, want kind %s op %s", tc.name, ke.Kind, ke.Op, ke.Key, tc.want, tc.wantOp)
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: the classified error does not wrap the original", tc.name)
		}
	}
	if Classify("wrap", key, nil) != nil {
		t.Error("Classify(nil) is not nil")
	}
	pre := &kms.Error{Kind: kms.KindKeyDisabled}
	if got := Classify("wrap", key, pre); got != pre {
		t.Errorf("Classify(*kms.Error) = %v, want it unchanged", got)
	}
}

// TestClassifyUnknownNeverRevokes: no error code outside the table may
// classify as anything a monitor would take for the customer's doing.
func TestClassifyUnknownNeverRevokes(t *testing.T) {
	for _, code := range []string{"", "Foo", "AccessDenied", "Disabled", "InternalError", "BadRequest"} {
		for _, status := range []int{400, 401, 403, 404, 409, 500} {
			k := kms.KindOf(Classify("unwrap", "k", answer(status, generic(code, "m"))))
			if !k.Transient() {
				t.Errorf("code %q status %d: kind %s, want a transient kind", code, status, k)
			}
		}
	}
}
