package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/kms/awskms"
	"github.com/cmk-project/cmk/internal/store"
)

// ProviderAWS is the provider type of a key in AWS KMS.
const ProviderAWS = cmkapi.ProviderAWSKMS

// AWS is the platform's side of customer keys in AWS KMS.
type AWS struct {
	// Partition and Account are where the platform's AWS principals live:
	// the key-policy statements grant that account, conditioned on
	// aws:PrincipalAccount, so no other account's principal benefits.
	Partition string // "aws" when empty
	Account   string // twelve digits
	// Region is the platform's Region, where customers create their keys;
	// Regions are the Regions a key may be in ([Region] when empty).
	Region  string
	Regions []string
}

func (a *AWS) regions() []string {
	if len(a.Regions) == 0 {
		return []string{a.Region}
	}
	return a.Regions
}

func (a *AWS) partition() string {
	if a.Partition == "" {
		return "aws"
	}
	return a.Partition
}

// The actions the platform uses with the org's encryption context (the
// product grants the set AWS documents for envelope encryption, though cmk
// calls Encrypt and Decrypt only) and the one it uses without (DescribeKey
// carries no encryption context, so it cannot be bound to the org: it only
// reads the key's state).
var (
	awsUseActions      = []string{"kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*"}
	awsDescribeActions = []string{"kms:DescribeKey"}
)

// AWSKeyPolicy returns the key-policy statements org's administrator
// pastes into the key's policy. Using the key is bound to org by
// kms:EncryptionContext:cmk:org, the context every call of the platform
// for org carries and no call for another org can: another org that learns
// the key ARN is refused by AWS itself (confused deputy). Only DescribeKey,
// which reads the key's state, is granted without it.
func (s *Service) AWSKeyPolicy(org string) (*cmkapi.AWSKeyPolicy, error) {
	if s.AWS == nil || s.AWS.Account == "" {
		return nil, problem(ErrUnsupportedProvider, "AWS KMS is not available", "This service is not configured for customer keys in AWS KMS.",
			`Use "providerType": "AZURE_KEYVAULT", or ask the platform's operator to configure AWS KMS.`)
	}
	return s.AWS.KeyPolicy(org)
}

// KeyPolicy returns org's key-policy statements (see
// Service.AWSKeyPolicy); local tools use it to make a key for an org.
func (a *AWS) KeyPolicy(org string) (*cmkapi.AWSKeyPolicy, error) {
	principal := fmt.Sprintf("arn:%s:iam::%s:root", a.partition(), a.Account)
	acct := map[string]any{"aws:PrincipalAccount": a.Account}
	bound := func() map[string]any {
		return map[string]any{"aws:PrincipalAccount": a.Account, "kms:EncryptionContext:" + awskms.ContextOrg: org}
	}
	stmts := []cmkapi.AWSPolicyStatement{
		{Sid: "CmkPlatformDescribeKey", Effect: "Allow", Principal: map[string]string{"AWS": principal}, Action: awsDescribeActions, Resource: "*",
			Condition: map[string]map[string]any{"StringEquals": acct}},
		{Sid: "CmkPlatformUseKeyForOrg", Effect: "Allow", Principal: map[string]string{"AWS": principal}, Action: awsUseActions, Resource: "*",
			Condition: map[string]map[string]any{"StringEquals": bound()}},
		{Sid: "CmkPlatformGrantsForOrg", Effect: "Allow", Principal: map[string]string{"AWS": principal}, Action: []string{"kms:CreateGrant"}, Resource: "*",
			Condition: map[string]map[string]any{"StringEquals": bound(), "Bool": {"kms:GrantIsForAWSResource": "true"}}},
	}
	raw, err := json.MarshalIndent(stmts, "", "  ")
	if err != nil {
		return nil, err
	}
	return &cmkapi.AWSKeyPolicy{
		IMSOrgID: org, PlatformAccount: a.Account, Region: a.Region, Regions: a.regions(),
		EncryptionContext: map[string]string{awskms.ContextOrg: org}, Statements: stmts, StatementsJSON: string(raw),
		KeySpec: "SYMMETRIC_DEFAULT", KeyUsage: "ENCRYPT_DECRYPT",
	}, nil
}

// AWSStatementPrefix starts the Sid of every statement KeyPolicy makes, so
// the statements can be found (and removed) in a key policy.
const AWSStatementPrefix = "CmkPlatform"

// submitAWS stores a NEW configuration of a key in AWS KMS. The ARN is
// checked here (partition, Region, form) so a bad one is refused at once;
// whether org may use the key is for validation to find out, by trying
// with org's encryption context.
func (s *Service) submitAWS(ctx context.Context, org string, in ConfigInput) (*store.Config, error) {
	if s.AWS == nil {
		return nil, problem(ErrUnsupportedProvider, "AWS KMS is not available", "This service is not configured for customer keys in AWS KMS.",
			`Use "providerType": "AZURE_KEYVAULT", or ask the platform's operator to configure AWS KMS.`)
	}
	a, err := awskms.ParseARN(in.KeyIdentifier, s.AWS.regions())
	if err != nil {
		return nil, problem(ErrInvalidKeyID, "Invalid key ARN", err.Error(),
			"Copy the key's ARN from the AWS KMS console (Customer managed keys > your key > ARN), e.g. arn:aws:kms:"+s.AWS.Region+":111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab, and send it as configData.keyArn.")
	}
	ref := a.Ref()
	if s.platformOwned(ref) {
		return nil, platformKeyProblem()
	}
	c := &store.Config{
		ID: uuid.NewString(), OrgID: org, Name: in.Name, Type: in.Type, ProviderType: ProviderAWS,
		KeyIdentifier: a.String(), VaultURL: ref.VaultURL, KeyName: ref.Name,
	}
	if err := s.createConfig(ctx, org, c); err != nil {
		return nil, err
	}
	s.log().Info("cmk config submitted", "org", org, "config", c.Name, "job", c.ID, "provider", ProviderAWS, "key", c.KeyIdentifier)
	return c, nil
}

// createConfig stores c, mapping the store's refusals to problems.
func (s *Service) createConfig(ctx context.Context, org string, c *store.Config) error {
	switch err := s.Store.CreateConfig(ctx, c); {
	case errors.Is(err, store.ErrDuplicateName):
		return problem(ErrNameTaken, "Name already used", fmt.Sprintf("Org %q already has a configuration named %q.", org, c.Name),
			"Check its status with GET .../customer/config/"+url.PathEscape(c.Name)+"?configType=BYOK_CONFIG, or submit with a new name.")
	case errors.Is(err, store.ErrJobActive):
		return problem(ErrJobActive, "Enablement already in progress", "Another configuration of this org is still being applied.",
			"Wait for it to reach COMPLETED or FAILED (check its status), then submit again if needed.")
	case errors.Is(err, store.ErrAlreadyEnabled):
		return problem(ErrIrreversible, "Customer-managed keys already enabled", "This org already encrypts its data with its customer-managed key; the key configuration cannot be replaced or reverted.",
			"To rotate, rotate the same key: the platform always uses the key's current material.")
	default:
		return err
	}
}

// AWSKeyReader reads what AWS KMS says of an org's key beyond kms.KeyInfo
// (the service's router, through the org's provider). Its calls are
// audited by the implementation.
type AWSKeyReader interface {
	AWSKeyDetails(ctx context.Context, org string, ref kms.KeyRef) (awskms.KeyDetails, error)
}

// awsRotationNote says why an AWS KMS key's rotation needs nothing of the
// platform.
const awsRotationNote = "AWS KMS rotates the key material behind the same ARN and keeps every earlier material to decrypt what it encrypted, so data keys wrapped before a rotation still open and nothing is re-wrapped; new data keys use the current material."

// awsKeyFacts are the last details read of each org's AWS key, in memory
// (one entry per org using an AWS key).
type awsKeyFacts struct {
	mu    sync.Mutex
	byOrg map[string]awsKeyFact
}

type awsKeyFact struct {
	ref     kms.KeyRef
	details awskms.KeyDetails
	at      time.Time
}

// refreshAWSKey reads the org's AWS key details again (on a re-check,
// which is rate limited per org).
func (s *Service) refreshAWSKey(ctx context.Context, org string) {
	o, err := s.Store.Org(ctx, org)
	if err != nil || o.KEKMode != store.ModeCustomer {
		return
	}
	s.awsKeyHealth(ctx, org, keyring.CustomerRef(o), true)
}

// awsKeyHealth is the AWS part of the org's key health, nil for a key not
// in AWS KMS. The details are read once per org (or again when refresh is
// set), so reading the health does not reach AWS each time.
func (s *Service) awsKeyHealth(ctx context.Context, org string, ref kms.KeyRef, refresh bool) *cmkapi.AWSKeyHealth {
	if !ref.AWS() {
		return nil
	}
	v := &cmkapi.AWSKeyHealth{KeyArn: ref.String(), Rotation: awsRotationNote}
	if s.AWSKeys == nil {
		return v
	}
	f := &s.awsFacts
	f.mu.Lock()
	fact, ok := f.byOrg[org]
	f.mu.Unlock()
	if !ok || refresh || fact.ref != ref {
		// A failed read is kept too (empty details): the health check
		// says what is wrong, and reading the health must not call AWS
		// each time.
		d, _ := s.AWSKeys.AWSKeyDetails(audit.WithOrg(ctx, org), org, ref)
		fact = awsKeyFact{ref: ref, details: d, at: time.Now()}
		f.mu.Lock()
		if f.byOrg == nil {
			f.byOrg = map[string]awsKeyFact{}
		}
		f.byOrg[org] = fact
		f.mu.Unlock()
	}
	if fact.details.KeyState == "" {
		return v
	}
	v.KeyState, v.LastRotation, v.KeyMaterialID = fact.details.KeyState, fact.details.LastRotation, fact.details.CurrentKeyMaterialID
	at := fact.at.UTC()
	v.ReadAt = &at
	return v
}
