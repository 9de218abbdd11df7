package control

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/guidance"
	"github.com/cmk-project/cmk/internal/keyid"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/kms/awskms"
	"github.com/cmk-project/cmk/internal/preflight"
	"github.com/cmk-project/cmk/internal/store"
)

// Configuration rules.
const (
	ConfigTypeBYOK   = cmkapi.ConfigTypeBYOK
	ProviderAzure    = cmkapi.ProviderAzureKeyVault
	MaxConfigNameLen = 128
)

// ConfigInput is a submitted configuration (seed 001's body).
type ConfigInput struct {
	Name          string
	Type          string
	OrgID         string // imsOrgId of the body: must be the caller's org
	ProviderType  string
	KeyIdentifier string
}

// SubmitConfig validates a configuration and starts its enablement job.
func (s *Service) SubmitConfig(ctx context.Context, org string, in ConfigInput) (_ *store.Config, err error) {
	// The key as parsed, never the raw field: a pasted link or token must
	// not land in the trail.
	key := "(not a valid key identifier)"
	defer func() {
		s.action(ctx, org, audit.OpConfigSubmit, fmt.Sprintf("name %q, provider %q, key %s", in.Name, in.ProviderType, key), err)
	}()
	if !validConfigName(in.Name) {
		return nil, problem(ErrInvalidField, "Invalid name", fmt.Sprintf("name must be 1 to %d characters with no surrounding spaces, no control or invisible formatting characters (line breaks, tabs, escapes, text-direction overrides) and none of / ? # %% \\.", MaxConfigNameLen),
			"Choose a name you will remember: you need it to check the status. Names are case-sensitive.")
	}
	if in.Type != ConfigTypeBYOK {
		return nil, problem(ErrInvalidConfigType, "Invalid configuration type", fmt.Sprintf("type is %q; it must be %q.", in.Type, ConfigTypeBYOK), `Set "type": "BYOK_CONFIG".`)
	}
	if in.OrgID != org {
		return nil, problem(ErrOrgMismatch, "Org mismatch", fmt.Sprintf("imsOrgId %q does not equal the x-gw-ims-org-id header %q.", in.OrgID, org),
			"Send the same org id in the body and in the header.")
	}
	if in.ProviderType == ProviderAWS {
		return s.submitAWS(ctx, org, in)
	}
	if in.ProviderType != ProviderAzure {
		if err := s.revertAttempt(ctx, org, in.ProviderType); err != nil {
			return nil, err
		}
		return nil, problem(ErrUnsupportedProvider, "Unsupported provider type", fmt.Sprintf("configData.providerType is %q; it must be %q or %q.", in.ProviderType, ProviderAzure, ProviderAWS),
			`Set "providerType": "AZURE_KEYVAULT" (with keyVaultKeyIdentifier) or "AWS_KMS" (with keyArn).`)
	}
	id, err := s.Policy.Parse(in.KeyIdentifier)
	if err == nil {
		key = id.String()
	}
	if err != nil {
		return nil, problem(ErrInvalidKeyID, "Invalid key identifier", preflight.IdentifierMessage(err),
			"Copy the Key Identifier from your key's current version in the Azure portal; it looks like https://<vault>.vault.azure.net/keys/<key>/<version>.")
	}
	if s.platformOwned(id.Ref()) {
		return nil, platformKeyProblem()
	}
	if taken, err := s.keyTakenFor(ctx, org, id); err != nil {
		return nil, err
	} else if taken {
		return nil, problem(ErrKeyInUse, guidance.Title(cmkapi.CodeKeyInUse), "This key is already configured for another organization; a key can protect one org's data only.",
			"Create a dedicated key for this org in your vault and submit its identifier.")
	}
	c := &store.Config{
		ID: uuid.NewString(), OrgID: org, Name: in.Name, Type: in.Type, ProviderType: in.ProviderType,
		KeyIdentifier: id.String(), VaultURL: id.VaultURL, KeyName: id.Name, KeyVersion: id.Version,
	}
	switch err := s.Store.CreateConfig(ctx, c); {
	case errors.Is(err, store.ErrDuplicateName):
		return nil, problem(ErrNameTaken, "Name already used", fmt.Sprintf("Org %q already has a configuration named %q.", org, in.Name),
			"Check its status with GET .../customer/config/"+url.PathEscape(in.Name)+"?configType=BYOK_CONFIG, or submit with a new name.")
	case errors.Is(err, store.ErrJobActive):
		return nil, problem(ErrJobActive, "Enablement already in progress", "Another configuration of this org is still being applied.",
			"Wait for it to reach COMPLETED or FAILED (check its status), then submit again if needed.")
	case errors.Is(err, store.ErrAlreadyEnabled):
		return nil, problem(ErrIrreversible, "Customer-managed keys already enabled", "This org already encrypts its data with its customer-managed key; the key configuration cannot be replaced or reverted.",
			"To rotate, add a new version of the same key in your vault: the platform always uses the newest version.")
	case err != nil:
		return nil, err
	}
	s.log().Info("cmk config submitted", "org", org, "config", c.Name, "job", c.ID, "vault", c.VaultURL, "key", c.KeyName)
	return c, nil
}

// validConfigName reports whether name may name a configuration. Names are
// shown to every admin of the org, in the Encryption page, the CLI and logs,
// so besides the URL-unsafe characters they may hold no control or format
// characters (Unicode Cc and Cf: line breaks, terminal escapes, zero-width
// characters, the bidirectional overrides U+202A–U+202E and U+2066–U+2069)
// and must be valid UTF-8.
func validConfigName(name string) bool {
	if name == "" || len(name) > MaxConfigNameLen || strings.ContainsAny(name, "/?#%\\") || strings.TrimSpace(name) != name || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return false
		}
	}
	return true
}

// revertAttempt answers a request to go back to system-managed keys; nil
// when the provider type is not such a request.
func (s *Service) revertAttempt(ctx context.Context, org, provider string) error {
	switch strings.ToUpper(provider) {
	case "SYSTEM", "SYSTEM_MANAGED", "PLATFORM_MANAGED", "NONE", "DEFAULT":
	default:
		return nil
	}
	o, err := s.Store.Org(ctx, org)
	if err != nil {
		return err
	}
	if o.KEKMode == store.ModeCustomer {
		return problem(ErrIrreversible, "Cannot revert to system-managed keys", "Customer-managed keys are enabled for this org, and that cannot be undone.",
			"Keep your key vault, key and the app's role in place; to stop the platform reading your data, remove the role (see the revocation docs).")
	}
	return problem(ErrUnsupportedProvider, "Already system-managed", "This org uses system-managed keys; there is nothing to revert.", `To enable CMK, send "providerType": "AZURE_KEYVAULT".`)
}

// ConfigByName returns the org's configuration.
func (s *Service) ConfigByName(ctx context.Context, org, name, configType string) (*store.Config, error) {
	if configType != ConfigTypeBYOK {
		return nil, problem(ErrInvalidConfigType, "Invalid configType", fmt.Sprintf("configType is %q; it must be %q.", configType, ConfigTypeBYOK), "Add ?configType=BYOK_CONFIG to the URL.")
	}
	c, err := s.configNamed(ctx, org, name)
	if err == nil {
		s.reportColumns(c)
	}
	return c, err
}

// reportColumns logs a stored field of c that did not decode; the field is
// shown empty rather than failing the read.
func (s *Service) reportColumns(c *store.Config) {
	if c.ColumnErr != nil {
		s.log().Warn("configuration has an unreadable stored field; shown without it", "org", c.OrgID, "config", c.ID, "err", c.ColumnErr)
	}
}

func (s *Service) configNamed(ctx context.Context, org, name string) (*store.Config, error) {
	c, err := s.Store.ConfigByName(ctx, org, name)
	if errors.Is(err, store.ErrNotFound) {
		hint := "List your configurations with GET /data/infrastructure/manager/customer/config."
		if all, err := s.Store.Configs(ctx, org); err == nil {
			for _, c := range all {
				if strings.EqualFold(c.Name, name) {
					hint = fmt.Sprintf("Names are case-sensitive: did you mean %q?", c.Name)
				}
			}
		}
		return nil, problem(ErrNotFound, "Configuration not found", fmt.Sprintf("Org %q has no configuration named %q.", org, name), hint)
	}
	return c, err
}

// Configs lists the org's configurations.
func (s *Service) Configs(ctx context.Context, org string) ([]*store.Config, error) {
	all, err := s.Store.Configs(ctx, org)
	for _, c := range all {
		s.reportColumns(c)
	}
	return all, err
}

// DeleteConfig always refuses: configurations are kept, and enabling is one
// way. It says which of the two applies.
func (s *Service) DeleteConfig(ctx context.Context, org, name string) error {
	c, err := s.configNamed(ctx, org, name)
	if err != nil {
		return err
	}
	if c.Status == store.StatusFailed {
		return problem(ErrIrreversible, "Configurations are kept", "A failed configuration stays as a record of what was tried; it does not block a new one.", "Submit a new configuration with another name.")
	}
	return problem(ErrIrreversible, "Cannot remove the customer-managed key", "Once customer-managed keys are enabled (or being enabled) they cannot be turned off or removed.",
		"To rotate, add a new version of the key in your vault. To withdraw access, remove the app's role on the vault.")
}

// Preflight runs every validation check against a key without enabling
// anything. A key another org already uses is not this org's to probe; an
// org that could own it (see keyTakenFor) is told so.
func (s *Service) Preflight(ctx context.Context, org, keyIdentifier string) (*preflight.Report, error) {
	if id, err := s.Policy.Parse(keyIdentifier); err == nil {
		if s.platformOwned(id.Ref()) {
			return nil, platformKeyProblem()
		}
		if taken, err := s.keyTakenFor(ctx, org, id); err != nil {
			return nil, err
		} else if taken {
			return nil, problem(ErrKeyInUse, guidance.Title(cmkapi.CodeKeyInUse), "This key is already configured for another organization.", "Use a key dedicated to this org.")
		}
	} else if preflight.IsAWSKey(keyIdentifier) && s.AWS != nil {
		if a, err := awskms.ParseARN(keyIdentifier, s.AWS.regions()); err == nil && s.platformOwned(a.Ref()) {
			return nil, platformKeyProblem()
		}
	}
	timeout := s.PreflightTimeout
	if timeout == 0 {
		timeout = defaultPreflightTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The steps name the org's consent link by where to get it (the
	// app-registration API), not the link: its state is the org's
	// credential, and answers like this one are shown, logged and kept.
	env := s.Env
	bound, err := s.Store.OrgTenants(ctx, org)
	if err != nil {
		return nil, err
	}
	owner := preflight.Owner{Org: org, Tenants: bound, Finder: s.Ownership.Tenants, AsOtherOrg: asOtherOrg}
	return preflight.Run(ctx, s.Provider, s.Policy, keyIdentifier, env, owner), nil
}

// keyTakenFor reports whether org is to be told that the key of id already
// protects another org's data. Only an org bound to the Azure tenant the
// other org's vault was found in is told: it could own the key, and needs to
// know why it cannot use it. Any other org learns nothing here, not even
// that the key exists; its job fails the ownership check, which says
// nothing about the key either. Both lookups run every time, so the answer
// takes as long whether or not the key is taken.
func (s *Service) keyTakenFor(ctx context.Context, org string, id keyid.ID) (bool, error) {
	holder, taken, err := s.Store.KeyHolderTenant(ctx, org, id.VaultURL, id.Name)
	if err != nil {
		return false, err
	}
	bound, err := s.Store.OrgTenants(ctx, org)
	if err != nil {
		return false, err
	}
	return taken && holder != "" && slices.Contains(bound, holder), nil
}

// asOtherOrg acts for an org that does not exist: a key in AWS KMS must be
// refused under its encryption context (preflight.CheckAWSPolicyBindsOrg).
func asOtherOrg(ctx context.Context) context.Context {
	return audit.WithOrg(ctx, audit.BindingProbeOrg)
}

// platformOwned reports whether ref is in the platform's own key vault
// (any key in it, the platform key's or not) or, for AWS KMS, in the
// platform key's AWS account (any Region): keys an org must never be able
// to name as its own, so no org's data is ever tied to the platform's keys
// and no org learns anything about them through validation.
func (s *Service) platformOwned(ref kms.KeyRef) bool {
	p := s.PlatformKey
	switch {
	case p.Name == "" || ref.AWS() != p.AWS():
		return false
	case !p.AWS():
		return strings.EqualFold(strings.TrimSuffix(ref.VaultURL, "/"), strings.TrimSuffix(p.VaultURL, "/"))
	}
	// arn:{partition}:kms:{region}:{account}
	a, b := strings.Split(ref.VaultURL, ":"), strings.Split(p.VaultURL, ":")
	return len(a) == 5 && len(b) == 5 && a[1] == b[1] && a[4] == b[4]
}

func platformKeyProblem() error {
	return problem(ErrKeyInUse, guidance.Title(cmkapi.CodeKeyInUse), "This key is in a key vault or account that holds the platform's own keys; it cannot protect an org's data.",
		"Create a key in a vault (or AWS account) of your own and submit its identifier.")
}
