package devenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/cmk-project/cmk/internal/awsemu"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/kms/awskms"
	"github.com/cmk-project/cmk/internal/service"
	"github.com/cmk-project/cmk/internal/store"
)

// Fixed names of the AWS half of the demo world.
const (
	AWSDemoOrg         = "DEMOAWS0RG12345678@CmkOrg"
	AWSCustomerAccount = "111122223333" // owns the AWS demo org's key
	AWSPlatformAccount = "444455556666" // runs cmk
	AWSPlatformUser    = "cmk-service"
	AWSOwnerUser       = "key-admin" // the customer's administrator of the key
	AWSKeyAlias        = "cmk-demo"
)

// AWS is the local AWS KMS of an environment and its demo org, whose key
// was created in the emulator with the org's generated policy statements
// pasted into its key policy (the org has not enabled it: that is for the
// demo, the test or the person to do).
type AWS struct {
	Emu    *awsemu.Emulator
	Server *awsemu.Server
	Org    string
	Token  string // a token for Org
	KeyARN string
	// Policy is the key's policy as created: the customer account's own
	// statement and the org's statements.
	Policy string
	// Owner holds the credentials of the key's administrator in the
	// customer's account (what 'cmk aws-emulator key ...' acts as).
	Owner awsemu.Credentials
}

// startAWS starts the local AWS KMS with the customer's and the platform's
// accounts and the platform's user, and says how the service reaches it.
func startAWS(o Options) (*AWS, *service.AWSConfig, error) {
	emu := awsemu.New(awsemu.Options{})
	srv, err := emu.Serve(orDefaultAddr(o.AWSEmulatorAddr), false)
	if err != nil {
		return nil, nil, fmt.Errorf("start the local AWS KMS: %w", err)
	}
	a := &AWS{Emu: emu, Server: srv, Org: AWSDemoOrg}
	for _, acct := range []string{AWSCustomerAccount, AWSPlatformAccount} {
		if err := emu.CreateAccount(acct); err != nil {
			srv.Close()
			return nil, nil, err
		}
	}
	creds, err := emu.CreateUser(AWSPlatformAccount, AWSPlatformUser)
	if err == nil {
		a.Owner, err = emu.CreateUser(AWSCustomerAccount, AWSOwnerUser)
	}
	if err != nil {
		srv.Close()
		return nil, nil, err
	}
	timeout := o.VaultTimeout
	return a, &service.AWSConfig{
		Account: AWSPlatformAccount,
		Client: awskms.Config{
			Region: emu.Region(), Endpoint: srv.URL, Timeout: timeout,
			Credentials: credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken),
		},
	}, nil
}

func orDefaultAddr(a string) string {
	if a == "" {
		return "127.0.0.1:0"
	}
	return a
}

// setupAWSOrg creates the AWS demo org with its sandboxes and a token, and
// its key in the customer's account with the org's statements in its
// policy, as the org's administrator would paste them from the page.
func (e *Env) setupAWSOrg(ctx context.Context, sandboxes []string) error {
	a := e.AWS
	if _, err := e.Svc.Store.EnsureOrg(ctx, a.Org); err != nil {
		return err
	}
	for _, sb := range sandboxes {
		if err := e.Svc.Keyring.CreateSandbox(ctx, a.Org, sb); err != nil && !errors.Is(err, store.ErrDuplicateName) {
			return err
		}
	}
	var err error
	if a.Token, err = e.Svc.MintDevToken("dev-admin", a.Org, nil, 24*time.Hour); err != nil {
		return err
	}
	p, err := e.Svc.Control.AWSKeyPolicy(a.Org)
	if err != nil {
		return err
	}
	if a.Policy, err = KeyPolicy(AWSCustomerAccount, p.Statements); err != nil {
		return err
	}
	k, err := a.Emu.CreateKey(AWSCustomerAccount, awsemu.KeyOptions{Description: "cmk demo key of " + a.Org, Policy: a.Policy})
	if err != nil {
		return fmt.Errorf("create the AWS demo key: %w", err)
	}
	if err := a.Emu.CreateAlias("alias/"+AWSKeyAlias, k.ARN); err != nil {
		return err
	}
	a.KeyARN = k.ARN
	return nil
}

// KeyPolicy is a key policy of the customer account owner: its root may do
// everything with the key (AWS's default), followed by stmts.
func KeyPolicy(owner string, stmts []cmkapi.AWSPolicyStatement) (string, error) {
	all := []any{map[string]any{
		"Sid": "EnableIAMUserPermissions", "Effect": "Allow", "Principal": map[string]string{"AWS": "arn:aws:iam::" + owner + ":root"},
		"Action": "kms:*", "Resource": "*",
	}}
	for _, s := range stmts {
		all = append(all, s)
	}
	b, err := json.Marshal(map[string]any{"Version": "2012-10-17", "Statement": all})
	return string(b), err
}

// AWSClient is an API client of the AWS demo org.
func (e *Env) AWSClient() *cmkapi.Client {
	return &cmkapi.Client{BaseURL: e.Svc.URL(), Token: e.AWS.Token, OrgID: e.AWS.Org, APIKey: e.APIKey}
}

// awsInfo is the AWS part of Info, nil without the local AWS KMS.
func (e *Env) awsInfo() *cmkapi.AWSInfo {
	if e.AWS == nil {
		return nil
	}
	a := e.AWS
	return &cmkapi.AWSInfo{EmulatorURL: a.Server.URL, OrgID: a.Org, Token: a.Token, KeyARN: a.KeyARN,
		OwnerAccessKey: a.Owner.AccessKeyID, OwnerSecretKey: a.Owner.SecretAccessKey, PlatformAccount: AWSPlatformAccount}
}
