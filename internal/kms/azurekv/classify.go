package azurekv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/cmk-project/cmk/internal/kms"
)

// Classify turns an error from azkeys, azidentity or the network into a
// *kms.Error for op ("describe", "wrap", "unwrap") on ref. A nil error
// stays nil and a *kms.Error is returned unchanged.
//
// Key Vault answers (the specific reason is the innermost innererror.code,
// the top-level code is usually just "Forbidden"):
//
//	401 (any AKV1xxxx)                         KindIdentityUnauthorized
//	403 ForbiddenByFirewall, or a message about
//	    the client address, public network
//	    access, private link or NSP rules      KindNetworkDenied
//	403 ForbiddenByRbac/ForbiddenByPolicy/
//	    AccessDenied                           KindIdentityUnauthorized
//	403 KeyOperationForbidden                  KindKeyOperationForbidden
//	403 KeyDisabled, or "disabled" message     KindKeyDisabled
//	403 KeyExpired/KeyNotYetValid, or an
//	    "expired"/"not yet valid" message      KindKeyNotActive
//	403 anything else                          KindIdentityUnauthorized
//	404                                        KindKeyNotFound
//	400 on unwrap whose message says the vault
//	    was "unable to decrypt" the value      KindUnwrapFailed
//	400 otherwise (an api-version the vault
//	    does not recognise, a bad parameter,
//	    any other BadParameter), other 4xx     KindInvalidRequest
//	409 (object being recovered, conflicts)    KindTransient
//	429                                        KindThrottled, with RetryAfter
//	408, 5xx                                   KindTransient
//
// Entra ID answers (Op becomes "token"; InnerCode is "AADSTS" + the first
// of error_codes):
//
//	AADSTS700016 (app not in the key's tenant:
//	    consent never given or revoked),
//	AADSTS7000112 (app or its service
//	    principal disabled)                    KindIdentityInvalid
//	429                                        KindThrottled
//	408, 5xx, or no answer at all (DNS, refused,
//	    timeout)                               KindTransient
//	anything else: AADSTS7000215/7000222 (bad
//	    or expired secret), AADSTS90002 (tenant
//	    not found), invalid_client, ...        KindTokenAcquisitionFailed
//
// A token endpoint that is down or unreachable is transient rather than
// KindTokenAcquisitionFailed: an Entra ID outage must not look like every
// customer revoking their key at once.
//
// No answer from the vault:
//
//	*net.DNSError with IsNotFound              KindVaultDNSUnresolvable
//	other DNS errors, refused or reset
//	    connections, timeouts, TLS failures,
//	    context deadline or cancellation       KindTransient
//	a vault challenge that is not Key Vault's
//	    (wrong resource, no WWW-Authenticate)  KindInvalidRequest
//
// Anything not recognised is KindTransient, so an unexpected error can
// raise an alert but never revoke a customer's data. KindInvalidRequest is
// no verdict on the key either (the health monitor coasts on it): only
// Key Vault's own words for a ciphertext it cannot decrypt make an unwrap
// failure. A 400 BadParameter on unwrap is not enough: Key Vault answers
// 400 BadParameter for an api-version it does not know ("The specified
// version (…) is not recognized"), a malformed value or a bad algorithm as
// well, all of which are about the request, not the key.
func Classify(op string, ref kms.KeyRef, err error) error {
	if err == nil {
		return nil
	}
	var ke *kms.Error
	if errors.As(err, &ke) {
		return err
	}
	e := &kms.Error{Op: op, Key: ref.String(), Err: err}
	var afe *azidentity.AuthenticationFailedError
	var re *azcore.ResponseError
	switch {
	case errors.As(err, &afe):
		classifyToken(e, afe)
	case errors.As(err, &re):
		classifyVault(e, re)
	default:
		classifyNoAnswer(e, err)
	}
	return e
}

func classifyVault(e *kms.Error, re *azcore.ResponseError) {
	e.Status = re.StatusCode
	e.Code = re.ErrorCode
	code, inner, msg := vaultError(re.RawResponse)
	if e.Code == "" {
		e.Code = code
	}
	e.InnerCode = inner
	lmsg := strings.ToLower(msg)
	switch s := e.Status; {
	case s == http.StatusTooManyRequests:
		e.Kind = kms.KindThrottled
		if re.RawResponse != nil {
			e.RetryAfter = retryAfter(re.RawResponse.Header, time.Now())
		}
	case s == http.StatusRequestTimeout || s >= 500:
		e.Kind = kms.KindTransient
	case s == http.StatusUnauthorized:
		e.Kind = kms.KindIdentityUnauthorized
		if e.InnerCode == "" {
			e.InnerCode = akvCode.FindString(msg)
		}
	case s == http.StatusForbidden:
		reason := inner
		if reason == "" {
			reason = e.Code
		}
		e.Kind = classify403(reason, lmsg)
	case s == http.StatusNotFound:
		e.Kind = kms.KindKeyNotFound
	case s == http.StatusConflict:
		e.Kind = kms.KindTransient
	case e.Op == "unwrap" && s == http.StatusBadRequest && strings.Contains(lmsg, "unable to decrypt") && !aboutAPIVersion(lmsg):
		e.Kind = kms.KindUnwrapFailed
	default:
		e.Kind = kms.KindInvalidRequest
	}
}

// classify403 picks the kind of a 403 from its innermost code, falling back
// on the message for codes Azure does not document.
func classify403(code, lmsg string) kms.Kind {
	switch code {
	case "ForbiddenByFirewall", "ForbiddenByNetworkSecurityPerimeter":
		return kms.KindNetworkDenied
	case "ForbiddenByRbac", "ForbiddenByPolicy", "AccessDenied":
		return kms.KindIdentityUnauthorized
	case "KeyOperationForbidden":
		return kms.KindKeyOperationForbidden
	case "KeyDisabled":
		return kms.KindKeyDisabled
	case "KeyExpired", "KeyNotYetValid", "KeyNotActive":
		return kms.KindKeyNotActive
	}
	// Firewall first: "Public network access is disabled" is not about the key.
	for _, s := range []string{"client address", "public network access", "private link", "nsp rules", "trusted service"} {
		if strings.Contains(lmsg, s) {
			return kms.KindNetworkDenied
		}
	}
	switch {
	case strings.Contains(lmsg, "disabled"):
		return kms.KindKeyDisabled
	case strings.Contains(lmsg, "expired"), strings.Contains(lmsg, "not yet valid"),
		strings.Contains(lmsg, "not-yet-valid"), strings.Contains(lmsg, "not active"):
		return kms.KindKeyNotActive
	case strings.Contains(lmsg, "not permitted on this key"):
		return kms.KindKeyOperationForbidden
	}
	return kms.KindIdentityUnauthorized
}

// aboutAPIVersion recognises Key Vault's answer to an api-version it does
// not know or a missing one.
func aboutAPIVersion(lmsg string) bool {
	return strings.Contains(lmsg, "api-version") ||
		strings.Contains(lmsg, "version") && (strings.Contains(lmsg, "not recognized") || strings.Contains(lmsg, "not supported"))
}

var (
	akvCode    = regexp.MustCompile(`AKV\d+`)
	aadstsCode = regexp.MustCompile(`AADSTS(\d+)`)
)

// vaultError reads Key Vault's error envelope: the top-level code, the
// innermost innererror code (when there is one) and the top-level message.
func vaultError(resp *http.Response) (code, inner, msg string) {
	if resp == nil {
		return "", "", ""
	}
	body, err := runtime.Payload(resp)
	if err != nil {
		return "", "", ""
	}
	type envelope struct {
		Code       string    `json:"code"`
		Message    string    `json:"message"`
		InnerError *envelope `json:"innererror"`
	}
	var b struct {
		Error envelope `json:"error"`
	}
	if json.Unmarshal(body, &b) != nil {
		return "", "", ""
	}
	for ie := b.Error.InnerError; ie != nil; ie = ie.InnerError {
		if ie.Code != "" {
			inner = ie.Code
		}
	}
	return b.Error.Code, inner, b.Error.Message
}

func classifyToken(e *kms.Error, afe *azidentity.AuthenticationFailedError) {
	e.Op = "token"
	if resp := afe.RawResponse; resp != nil {
		e.Status = resp.StatusCode
		if body, err := runtime.Payload(resp); err == nil {
			var b struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
				Codes       []int  `json:"error_codes"`
			}
			if json.Unmarshal(body, &b) == nil {
				e.Code = b.Error
				if len(b.Codes) > 0 {
					e.InnerCode = fmt.Sprintf("AADSTS%d", b.Codes[0])
				}
			}
		}
	}
	if e.InnerCode == "" {
		if m := aadstsCode.FindStringSubmatch(afe.Error()); m != nil {
			e.InnerCode = "AADSTS" + m[1]
		}
	}
	switch s := e.Status; {
	case e.InnerCode == "AADSTS700016", e.InnerCode == "AADSTS7000112":
		e.Kind = kms.KindIdentityInvalid
	case s == http.StatusTooManyRequests:
		e.Kind = kms.KindThrottled
		e.RetryAfter = retryAfter(afe.RawResponse.Header, time.Now())
	case s == http.StatusRequestTimeout || s >= 500:
		e.Kind = kms.KindTransient
	case s == 0 && e.InnerCode == "" && looksLikeNetwork(afe.Error()):
		e.Kind = kms.KindTransient
	default:
		e.Kind = kms.KindTokenAcquisitionFailed
	}
}

// looksLikeNetwork recognises the text of a transport failure. azidentity
// keeps only the text of an error that carried no HTTP response, so the
// underlying net error cannot be inspected.
func looksLikeNetwork(msg string) bool {
	msg = strings.ToLower(msg)
	for _, s := range []string{
		"no such host", "connection refused", "connection reset", "broken pipe",
		"i/o timeout", "timeout", "deadline exceeded", "context canceled",
		"eof", "tls handshake", "network is unreachable", "server misbehaving",
		"dial tcp",
	} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func classifyNoAnswer(e *kms.Error, err error) {
	msg := err.Error()
	switch {
	case isDNSNotFound(err):
		e.Kind = kms.KindVaultDNSUnresolvable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		e.Kind = kms.KindTransient
	case strings.Contains(msg, "WWW-Authenticate"), strings.Contains(msg, "challenge resource"):
		// The host answered 401 like Key Vault but not with Key Vault's
		// challenge (or for another domain): it is not the vault we meant.
		e.Kind = kms.KindInvalidRequest
	case strings.Contains(msg, "invalid tenantID"):
		// The challenge named a tenant the credential refuses.
		e.Op = "token"
		e.Kind = kms.KindTokenAcquisitionFailed
	default:
		// Other DNS errors, refused or reset connections, timeouts, TLS
		// failures and anything unrecognised.
		e.Kind = kms.KindTransient
	}
}

func isDNSNotFound(err error) bool {
	var dns *net.DNSError
	return errors.As(err, &dns) && dns.IsNotFound
}

// MaxRetryAfter caps the wait a vault's Retry-After can impose: a wrong or
// hostile value must not push a check, a job's page or a rotation out
// indefinitely (Key Vault's own backoff advice tops out at 16 s).
const MaxRetryAfter = 5 * time.Minute

// retryAfter reads how long the server asked us to wait: Retry-After in
// seconds or as an HTTP date, or Azure's retry-after-ms variants, at most
// MaxRetryAfter.
func retryAfter(h http.Header, now time.Time) time.Duration {
	return min(readRetryAfter(h, now), MaxRetryAfter)
}

func readRetryAfter(h http.Header, now time.Time) time.Duration {
	for _, name := range []string{"Retry-After-Ms", "X-Ms-Retry-After-Ms"} {
		if ms, err := strconv.Atoi(strings.TrimSpace(h.Get(name))); err == nil && ms > 0 {
			return time.Duration(ms) * time.Millisecond
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s > 0 {
			return time.Duration(s) * time.Second
		}
		return 0
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
