package guidance

import (
	"strings"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/kms"
)

// CodeKeyPendingDeletion is the check code of an AWS KMS key scheduled for
// deletion: its kind is kms.KindKeyNotFound (access ends as with a
// deleted key), but the fix is to cancel the deletion.
const CodeKeyPendingDeletion = "KEY_PENDING_DELETION"

// CodeKeyPolicyNotOrgBound is the check code of an AWS KMS key whose policy
// lets the platform use it under any org's encryption context, so another
// org that learns the ARN could use it too.
const CodeKeyPolicyNotOrgBound = "KEY_POLICY_NOT_ORG_BOUND"

// AWSPolicySource says where an org's administrator finds the key-policy
// statements the platform needs: they are generated per org.
const AWSPolicySource = "the key-policy statements of the Encryption page (GET /data/infrastructure/manager/byok/aws-key-policy, or cmk doctor --aws-policy)"

// awsARN is the key's ARN from its reference.
func awsARN(ref kms.KeyRef) string {
	if ref.VaultURL == "" {
		return "<key ARN>"
	}
	return ref.String()
}

// awsRegion is the Region in the key's ARN, for the commands.
func awsRegion(ref kms.KeyRef) string {
	f := strings.Split(ref.VaultURL, ":")
	if len(f) >= 4 && f[3] != "" {
		return f[3]
	}
	return "<region>"
}

// awsCauses are the causes of the codes whose Key Vault wording does not
// fit a key in AWS KMS.
var awsCauses = map[string]string{
	string(kms.KindMalformedKeyURI):        "The key ARN is not a KMS key ARN (or alias ARN) of an allowed partition and Region.",
	string(kms.KindKeyNotFound):            "AWS KMS has no such key (or it was deleted).",
	CodeKeyPendingDeletion:                 "The key is scheduled for deletion, which ends the platform's access to it.",
	CodeKeyPolicyNotOrgBound:               "The key policy lets the platform use the key for any org, so another org that learns its ARN could use it too.",
	string(kms.KindKeyDisabled):            "The key is disabled.",
	string(kms.KindKeyOperationForbidden):  "The key is not a symmetric encryption key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT).",
	string(kms.KindIdentityUnauthorized):   "AWS KMS refused the platform: the key policy does not grant the platform's account this use of the key for this org.",
	string(kms.KindTokenAcquisitionFailed): "The platform's AWS credentials were refused or could not be found.",
	string(kms.KindUnwrapFailed):           "AWS KMS could not decrypt the data key with this key and the org's encryption context.",
	string(kms.KindThrottled):              "AWS KMS throttled the platform's requests.",
	string(kms.KindTransient):              "AWS KMS did not answer, or answered with a temporary error.",
	cmkapi.CodeKeyTypeUnsupported:          "The key is not a symmetric encryption key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT).",
}

// AWSCause is the cause of code for a key in AWS KMS.
func AWSCause(code string) string {
	if c, ok := awsCauses[code]; ok {
		return c
	}
	return Cause(code)
}

// AWSRetrySteps are RetrySteps for a key in AWS KMS.
func AWSRetrySteps() []string {
	return []string{
		"AWS KMS did not give a definite answer; this is usually temporary.",
		"Run the check again in a minute. If it keeps failing, check the AWS Health Dashboard for AWS KMS in your Region.",
	}
}

// awsSteps are the steps of code for the AWS KMS key ref, or nil when the
// code has none of its own.
func awsSteps(code string, ref kms.KeyRef) []string {
	arn, region := awsARN(ref), awsRegion(ref)
	switch code {
	case string(kms.KindMalformedKeyURI):
		return []string{
			"In the AWS KMS console, in the platform's Region, open Customer managed keys and select your key.",
			"Copy its ARN; it looks like arn:aws:kms:<region>:<account>:key/<key id> (an alias ARN arn:aws:kms:<region>:<account>:alias/<name> works too).",
			"The key must be a single-Region key in a Region the platform allows; send the ARN as configData.keyArn.",
		}
	case string(kms.KindKeyNotFound):
		return []string{
			"Check the key ARN " + arn + ": the account, the Region and the key id.",
			"If the key is scheduled for deletion, cancel it with aws kms cancel-key-deletion --key-id " + arn + " --region " + region + ", then enable it with aws kms enable-key --key-id " + arn + " --region " + region,
			"A key whose deletion completed cannot be recovered: the data it protects is lost.",
			"Run the check again.",
		}
	case CodeKeyPendingDeletion:
		return []string{
			"Cancel the deletion: aws kms cancel-key-deletion --key-id " + arn + " --region " + region + " (or the console: Key actions > Cancel key deletion).",
			"A cancelled key is disabled: enable it with aws kms enable-key --key-id " + arn + " --region " + region,
			"Run the check again.",
		}
	case string(kms.KindKeyDisabled):
		return []string{
			"Enable the key: aws kms enable-key --key-id " + arn + " --region " + region + " (or the console: Key actions > Enable).",
			"Make sure no automation disables it again, then run the check again.",
		}
	case string(kms.KindKeyOperationForbidden), cmkapi.CodeKeyTypeUnsupported:
		return []string{
			"The key's type and usage cannot be changed: create a new single-Region key with aws kms create-key --key-spec SYMMETRIC_DEFAULT --key-usage ENCRYPT_DECRYPT --region " + region,
			"Paste " + AWSPolicySource + " into its key policy.",
			"Submit the new key's ARN.",
		}
	case string(kms.KindIdentityUnauthorized), string(kms.KindUnwrapFailed):
		return []string{
			"Open " + AWSPolicySource + ": they are made for this org and grant the platform's account kms:DescribeKey, and kms:Encrypt, kms:Decrypt, kms:ReEncrypt*, kms:GenerateDataKey* and kms:CreateGrant only with this org's encryption context (kms:EncryptionContext:cmk:org).",
			"Add them to the key's policy: the console's Key policy tab > Edit, or aws kms get-key-policy --key-id " + arn + " --policy-name default, then aws kms put-key-policy --key-id " + arn + " --policy-name default --policy file://policy.json.",
			"A key can serve one org only: the statements of another org do not let the platform use the key for this one.",
			"Key policy changes can take a few minutes to apply; run the check again.",
		}
	case CodeKeyPolicyNotOrgBound:
		return []string{
			"Replace the statements that grant the platform's account kms:Encrypt, kms:Decrypt, kms:ReEncrypt*, kms:GenerateDataKey* or kms:CreateGrant without a condition by " + AWSPolicySource + ": they grant these only with this org's encryption context (kms:EncryptionContext:cmk:org).",
			"Keep kms:DescribeKey in its own statement; it carries no encryption context.",
			"Key policy changes can take a few minutes to apply; run the check again.",
		}
	case string(kms.KindTokenAcquisitionFailed):
		return []string{
			"This is on the platform's side: its AWS credentials were refused or are missing.",
			"Contact the platform operator; run the check again once they confirm the fix.",
		}
	}
	return nil
}

// awsAlertKinds are the probable causes and steps of the alert kinds for a
// key in AWS KMS.
var awsAlertKinds = map[string]alertKind{
	cmkapi.AlertKeyAccessDisabled: {
		probable: []string{
			"Someone disabled the key in AWS KMS (DisableKey).",
			"Automation in the key's account disabled the key.",
		},
		steps: []string{
			"Enable the key (the console: Key actions > Enable), or run aws kms enable-key --key-id <key ARN>",
			"Make sure no automation disables the key again.",
			"Also confirm the key is not scheduled for deletion.",
		},
	},
	cmkapi.AlertKeyAccessFailure: {
		probable: []string{
			"The key was scheduled for deletion, or deleted.",
			"The platform's statements were removed from the key policy, or changed so they no longer name this org's encryption context.",
			"The key's account or an explicit Deny in the key policy now refuses the platform's account.",
		},
		steps: []string{
			"Confirm the key exists and is not pending deletion; if it is, run aws kms cancel-key-deletion --key-id <key ARN>, then aws kms enable-key --key-id <key ARN>",
			"Confirm the key policy holds " + AWSPolicySource + ", unchanged.",
			"Run a re-check from the Encryption page or the API once fixed; access returns within seconds.",
		},
	},
	cmkapi.AlertNotification: {
		probable: []string{
			"A temporary network disruption between the platform and AWS KMS.",
			"AWS KMS is throttling or returning server errors.",
			"The key's state or policy is changing back and forth.",
		},
		steps: []string{
			"Review the key's AWS CloudTrail events for recent errors or throttling.",
			"Confirm the key is enabled and not pending deletion.",
			"Look for automation that changes the key or its policy.",
		},
	},
}
