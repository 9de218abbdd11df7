package service

import (
	"context"
	"errors"
	"slices"

	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/control"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/kms/awskms"
)

// router is the service's kms.Provider: it sends each call to the provider
// of the key's kind, told apart by the KeyRef's form (kms.KeyRef.AWS: an
// ARN scope rather than a vault URL). The org's stored reference, a
// configuration and keyring.CustomerRef thus need nothing else to say
// which cloud a key is in.
//
// An AWS KMS call always goes through awskms.Client.ForOrg with the org
// the call is for, read from the context (audit.WithOrg: the API request's
// org, the job's, the health check's, the data key's). The org is never
// taken from the key or from another call, so the encryption context names
// the org whose data the call protects, and the customer's key policy
// (conditioned on kms:EncryptionContext:cmk:org) refuses a call for any
// other org. A call without an org is refused before it leaves.
type router struct {
	azure kms.Provider
	aws   *awskms.Client // nil: AWS KMS is not configured
}

var _ kms.Provider = (*router)(nil)

// errNoOrg is the cause of an AWS KMS call made without an org: a bug.
var errNoOrg = errors.New("no org in the request context: an AWS KMS call must name the org its encryption context binds")

func (r *router) awsFor(ctx context.Context, op string, ref kms.KeyRef) (*awskms.Provider, error) {
	if r.aws == nil {
		return nil, &kms.Error{Kind: kms.KindTokenAcquisitionFailed, Op: op, Key: ref.String(),
			Err: errors.New("the service has no AWS KMS configured (set --aws-region and the platform's AWS credentials)")}
	}
	org := audit.OrgOf(ctx)
	if org == "" {
		return nil, &kms.Error{Kind: kms.KindInvalidRequest, Op: op, Key: ref.String(), Err: errNoOrg}
	}
	p, err := r.aws.ForOrg(org)
	if err != nil {
		return nil, &kms.Error{Kind: kms.KindInvalidRequest, Op: op, Key: ref.String(), Err: err}
	}
	return p, nil
}

// Describe implements kms.Provider. For an AWS key the symmetric key's
// Encrypt and Decrypt are how the platform wraps and unwraps data keys, so
// they are reported as wrapKey and unwrapKey too: the callers' checks of a
// key's operations read the same for both clouds.
func (r *router) Describe(ctx context.Context, ref kms.KeyRef) (kms.KeyInfo, error) {
	if !ref.AWS() {
		return r.azure.Describe(ctx, ref)
	}
	p, err := r.awsFor(ctx, "describe", ref)
	if err != nil {
		return kms.KeyInfo{}, err
	}
	info, err := p.Describe(ctx, ref)
	if err == nil && info.HasOp("encrypt") && info.HasOp("decrypt") {
		info.Ops = append(slices.Clone(info.Ops), "wrapKey", "unwrapKey")
	}
	return info, err
}

// Details is awskms.Provider.Details for the org in ctx.
func (r *router) Details(ctx context.Context, ref kms.KeyRef) (awskms.KeyDetails, error) {
	p, err := r.awsFor(ctx, "describe", ref)
	if err != nil {
		return awskms.KeyDetails{}, err
	}
	return p.Details(ctx, ref)
}

// Wrap implements kms.Provider.
func (r *router) Wrap(ctx context.Context, ref kms.KeyRef, dek []byte) (kms.Wrapped, error) {
	if !ref.AWS() {
		return r.azure.Wrap(ctx, ref, dek)
	}
	p, err := r.awsFor(ctx, "wrap", ref)
	if err != nil {
		return kms.Wrapped{}, err
	}
	return p.Wrap(ctx, ref, dek)
}

// Unwrap implements kms.Provider. The health check's stored probe carries
// no algorithm of its own (it names Key Vault's); an AWS key has one
// algorithm only, so any other name is dropped rather than refused.
func (r *router) Unwrap(ctx context.Context, ref kms.KeyRef, w kms.Wrapped) ([]byte, error) {
	if !ref.AWS() {
		return r.azure.Unwrap(ctx, ref, w)
	}
	p, err := r.awsFor(ctx, "unwrap", ref)
	if err != nil {
		return nil, err
	}
	w.Alg = awskms.AlgSymmetricDefault
	return p.Unwrap(ctx, ref, w)
}

// AWSConfig turns on customer keys in AWS KMS.
type AWSConfig struct {
	// Client is the platform's AWS KMS client: its Region (where customers
	// create keys), the allowed Regions, an endpoint for the local
	// emulator, credentials (the standard chain when nil).
	Client awskms.Config
	// Account is the platform's AWS account id (twelve digits), whose
	// principals the generated key-policy statements grant; Partition is
	// its partition ("aws" when empty).
	Account   string
	Partition string
}

// controlAWS is the control plane's view of cfg (nil when off).
func controlAWS(cfg *AWSConfig) *control.AWS {
	if cfg == nil {
		return nil
	}
	return &control.AWS{Partition: cfg.Partition, Account: cfg.Account, Region: cfg.Client.Region, Regions: cfg.Client.Regions}
}

func validAWSAccount(s string) bool {
	if len(s) != 12 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// awsKeys reads AWS key details for the health view, recording the call
// in the audit trail as a describe.
type awsKeys struct {
	r        *router
	recorder *audit.Recorder
}

// AWSKeyDetails implements control.AWSKeyReader.
func (k awsKeys) AWSKeyDetails(ctx context.Context, org string, ref kms.KeyRef) (awskms.KeyDetails, error) {
	ctx = audit.WithOrg(ctx, org)
	d, err := k.r.Details(ctx, ref)
	outcome := "ok"
	if err != nil {
		outcome = string(kms.KindOf(err))
		if outcome == "" {
			outcome = "error"
		}
	}
	k.recorder.Record(ctx, "describe", ref, "", outcome, "key details for the health view")
	return d, err
}
