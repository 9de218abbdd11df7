package preflight

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/guidance"
	"github.com/cmk-project/cmk/internal/kms"
)

// The checks of a key in AWS KMS. Whether the key policy grants what the
// platform needs is found by trying, as AWS gives no other way to ask: the
// key is described (the statement without encryption context), then a
// probe is encrypted and decrypted with the org's encryption context (the
// statement bound to the org). An org that submits another org's key ARN
// fails CheckAWSPolicyForOrg: AWS refuses it under its own context, and
// nothing of the other org's data is touched.
const (
	CheckAWSKeyARN          = "aws_key_arn"
	CheckAWSCredentials     = "aws_platform_credentials"
	CheckAWSDescribe        = "aws_key_policy_describe"
	CheckAWSPendingDeletion = "aws_key_not_pending_deletion"
	CheckAWSKeySpec         = "aws_key_spec_and_usage"
	CheckAWSPolicyForOrg    = "aws_key_policy_org_context"
	CheckAWSRoundTrip       = "aws_encryption_context_round_trip"
	CheckAWSPolicyBindsOrg  = "aws_key_policy_binds_org"
)

// AWSOrder is the order the checks of an AWS KMS key run in; CheckKeyExists
// and CheckKeyEnabled are shared with Key Vault keys.
var AWSOrder = []string{CheckAWSKeyARN, CheckAWSCredentials, CheckAWSDescribe, CheckKeyExists, CheckAWSPendingDeletion,
	CheckKeyEnabled, CheckAWSKeySpec, CheckAWSPolicyForOrg, CheckAWSRoundTrip, CheckAWSPolicyBindsOrg}

var awsTitles = map[string]string{
	CheckAWSKeyARN:          "The key ARN is a KMS key ARN of an allowed partition and Region",
	CheckAWSCredentials:     "The platform's AWS credentials are accepted",
	CheckAWSDescribe:        "The key policy lets the platform's account describe the key",
	CheckAWSPendingDeletion: "The key is not scheduled for deletion",
	CheckAWSKeySpec:         "The key is symmetric (SYMMETRIC_DEFAULT) for ENCRYPT_DECRYPT",
	CheckAWSPolicyForOrg:    "The key policy lets the platform encrypt with this org's encryption context",
	CheckAWSRoundTrip:       "An encrypt/decrypt round trip with this org's encryption context succeeds",
	CheckAWSPolicyBindsOrg:  "The key policy refuses the platform any other org's encryption context",
}

// awsTitle is the title of a check of an AWS KMS key.
func awsTitle(check string) string {
	if t, ok := awsTitles[check]; ok {
		return t
	}
	switch check {
	case CheckKeyExists:
		return "The key exists in AWS KMS"
	case CheckKeyEnabled:
		return "The key is enabled"
	}
	return titles[check]
}

// IsAWSKey reports whether raw names a key in AWS KMS (an ARN) rather than
// a Key Vault key.
func IsAWSKey(raw string) bool { return strings.HasPrefix(raw, "arn:") }

// splitARN splits an ARN into a kms.KeyRef as awskms.KeyARN.Ref does. The
// provider checks the reference (partition, Region allowlist, form) before
// any request and answers kms.KindMalformedKeyURI, which fails
// CheckAWSKeyARN.
func splitARN(raw string) (kms.KeyRef, bool) {
	f := strings.SplitN(raw, ":", 6)
	if len(f) != 6 {
		return kms.KeyRef{}, false
	}
	return kms.KeyRef{VaultURL: strings.Join(f[:5], ":"), Name: f[5]}, true
}

// runAWS runs the checks of an AWS KMS key with the provider, which must
// bind each call to the org in ctx.
func runAWS(ctx context.Context, provider kms.Provider, raw string, env guidance.Env, owner Owner) *Report {
	r := &Report{KeyIdentifier: raw}
	set := func(check string, st Status, code, msg string, remedy []string) {
		r.Results = append(r.Results, Result{Check: check, Title: awsTitle(check), Status: st, Code: code, Message: msg, Remedy: remedy})
	}
	passUpTo := func(check string) {
		for _, c := range AWSOrder {
			if c == check {
				return
			}
			done := false
			for _, res := range r.Results {
				done = done || res.Check == c
			}
			if !done {
				set(c, Passed, "", "", nil)
			}
		}
	}
	finish := func() *Report {
		seen := map[string]bool{}
		for _, res := range r.Results {
			seen[res.Check] = true
		}
		for _, c := range AWSOrder {
			if !seen[c] {
				set(c, Skipped, "", "Not run: an earlier check did not pass.", nil)
			}
		}
		r.Passed = r.FirstProblem() == nil
		return r
	}
	ref, ok := splitARN(raw)
	// failAt records err against check, or as no verdict when its kind is
	// none (throttled, transient, unexpected).
	failAt := func(check string, err error) *Report {
		kind := kms.KindOf(err)
		code := string(kind)
		var ke *kms.Error
		errors.As(err, &ke)
		switch {
		case kind == kms.KindMalformedKeyURI:
			check = CheckAWSKeyARN
		case kind == kms.KindTokenAcquisitionFailed:
			check = CheckAWSCredentials
		case kind == kms.KindKeyNotFound && ke != nil && ke.Code == "KeyPendingDeletion":
			check, code = CheckAWSPendingDeletion, guidance.CodeKeyPendingDeletion
		case kind == kms.KindKeyNotFound:
			check = CheckKeyExists
		case kind == kms.KindKeyDisabled:
			check = CheckKeyEnabled
		case kind == kms.KindKeyOperationForbidden:
			check = CheckAWSKeySpec
		}
		passUpTo(check)
		if kind.Transient() || !kind.LossOfAccess() && kind != kms.KindMalformedKeyURI && kind != kms.KindTokenAcquisitionFailed {
			r.Retryable = kind.Transient() || kind == ""
			if ke != nil {
				r.RetryAfter = ke.RetryAfter
			}
			if code == "" {
				code = string(kms.KindTransient)
			}
			set(check, Error, code, guidance.Describe(err), guidance.AWSRetrySteps())
			return finish()
		}
		set(check, Failed, code, guidance.Describe(err), guidance.Steps(code, env, ref))
		return finish()
	}
	if !ok {
		code := string(kms.KindMalformedKeyURI)
		set(CheckAWSKeyARN, Failed, code, fmt.Sprintf("%q is not an ARN; use the key ARN from the AWS KMS console.", raw), guidance.Steps(code, env, kms.KeyRef{VaultURL: "arn:"}))
		return finish()
	}

	info, err := provider.Describe(ctx, ref)
	if err != nil {
		return failAt(CheckAWSDescribe, err)
	}
	r.Key = &info
	passUpTo(CheckKeyEnabled)
	if !info.Enabled {
		code := string(kms.KindKeyDisabled)
		set(CheckKeyEnabled, Failed, code, fmt.Sprintf("Key %s is disabled.", ref), guidance.Steps(code, env, ref))
		return finish()
	}
	set(CheckKeyEnabled, Passed, "", "", nil)
	if info.KeyType != "SYMMETRIC_DEFAULT" || !info.HasOp("encrypt") || !info.HasOp("decrypt") {
		code := cmkapi.CodeKeyTypeUnsupported
		set(CheckAWSKeySpec, Failed, code, fmt.Sprintf("Key %s is of spec %s with operations %s; a SYMMETRIC_DEFAULT key for ENCRYPT_DECRYPT is required.", ref, info.KeyType, strings.Join(info.Ops, ", ")),
			guidance.Steps(code, env, ref))
		return finish()
	}
	set(CheckAWSKeySpec, Passed, "", "", nil)

	probe := make([]byte, 32)
	if _, err := rand.Read(probe); err != nil {
		set(CheckAWSPolicyForOrg, Error, string(kms.KindTransient), err.Error(), nil)
		return finish()
	}
	w, err := provider.Wrap(ctx, ref, probe)
	if err != nil {
		return failAt(CheckAWSPolicyForOrg, err)
	}
	set(CheckAWSPolicyForOrg, Passed, "", "", nil)
	back, err := provider.Unwrap(ctx, ref, w)
	if err == nil && subtle.ConstantTimeCompare(back, probe) != 1 {
		err = &kms.Error{Kind: kms.KindUnwrapFailed, Op: "unwrap", Key: ref.String(), Err: errors.New("AWS KMS returned a different plaintext than the one encrypted")}
	}
	clear(back)
	if err != nil {
		return failAt(CheckAWSRoundTrip, err)
	}
	set(CheckAWSRoundTrip, Passed, "", "", nil)

	// A policy that grants the platform the key without the org condition
	// would let any org that learns the ARN use it (the AWS form of key
	// squatting): the key must be refused under another org's context.
	if owner.AsOtherOrg != nil {
		_, err := provider.Wrap(owner.AsOtherOrg(ctx), ref, probe)
		switch kind := kms.KindOf(err); {
		case err == nil:
			code := guidance.CodeKeyPolicyNotOrgBound
			set(CheckAWSPolicyBindsOrg, Failed, code, fmt.Sprintf("The policy of key %s lets the platform use it for any org, not only %s.", ref, owner.Org), guidance.Steps(code, env, ref))
			return finish()
		case kind == kms.KindIdentityUnauthorized:
			set(CheckAWSPolicyBindsOrg, Passed, "", "", nil)
		default:
			return failAt(CheckAWSPolicyBindsOrg, err)
		}
	}
	return finish()
}
