package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cmk-project/cmk/internal/keyid"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/kms/awskms"
	"github.com/cmk-project/cmk/internal/kms/azurekv"
	"github.com/cmk-project/cmk/internal/platformkey"
	"github.com/cmk-project/cmk/internal/store"
	"github.com/cmk-project/cmk/internal/systemkey"
)

// ErrNeedsMigration is returned by New when a platform key is configured
// but the state's data keys are wrapped by a key file not yet imported
// ('cmkd platform-key migrate --from-file').
var ErrNeedsMigration = platformkey.ErrNeedsMigration

// ErrPlatformKeyRequired is returned by New without a platform key over a
// state whose system key was moved under one.
var ErrPlatformKeyRequired = errors.New("the state's system key is under a platform key")

// PlatformKeyRef parses cfg.PlatformKey: the zero KeyRef when it is unset.
// An Azure key is checked against the vault host allowlist and must name no
// version (the newest is always used); an AWS key needs AWS configured.
func PlatformKeyRef(cfg Config) (kms.KeyRef, error) {
	s := strings.TrimSpace(cfg.PlatformKey)
	if s == "" {
		return kms.KeyRef{}, nil
	}
	if strings.HasPrefix(s, "arn:") {
		if cfg.AWS == nil {
			return kms.KeyRef{}, fmt.Errorf("platform key %s is an AWS KMS key, but AWS KMS is not configured (set --aws-region and --aws-account)", s)
		}
		regions := cfg.AWS.Client.Regions
		if len(regions) == 0 {
			regions = []string{cfg.AWS.Client.Region}
		}
		a, err := awskms.ParseARN(s, regions)
		if err != nil {
			return kms.KeyRef{}, fmt.Errorf("platform key: %w", err)
		}
		return a.Ref(), nil
	}
	id, err := keyid.Policy{ExtraSuffixes: cfg.ExtraVaultSuffixes}.Parse(s)
	if err != nil {
		return kms.KeyRef{}, fmt.Errorf("platform key: %w", err)
	}
	if id.Version != "" {
		return kms.KeyRef{}, fmt.Errorf("platform key %s names version %s; give the key without a version (the newest version is always used)", s, id.Version)
	}
	return id.Ref(), nil
}

// buildProviders makes the service's key provider: the router to the Azure
// provider (the platform app's credentials) and, when configured, AWS KMS.
// azure is the Azure provider itself, for its other roles (consent codes, a
// vault's tenant).
func buildProviders(ctx context.Context, cfg Config) (rt *router, azure kms.Provider, err error) {
	azure = cfg.Provider
	if azure == nil && cfg.ClientID != "" {
		azure, err = azurekv.New(azurekv.Config{
			TenantID: cfg.TenantID, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, CertificatePEM: cfg.CertificatePEM,
			AuthorityHost: cfg.AuthorityHost, HTTPClient: cfg.HTTPClient, DisableInstanceDiscovery: cfg.DisableInstanceDiscovery,
			ExtraVaultSuffixes: cfg.ExtraVaultSuffixes, Timeout: cfg.VaultTimeout,
		})
		if err != nil {
			return nil, nil, err
		}
	}
	if azure == nil {
		azure = unconfigured{}
	}
	rt = &router{azure: azure}
	if cfg.AWS != nil {
		if !validAWSAccount(cfg.AWS.Account) {
			return nil, nil, fmt.Errorf("AWS KMS: the platform's AWS account %q is not a twelve-digit account id: set --aws-account", cfg.AWS.Account)
		}
		if rt.aws, err = awskms.New(ctx, cfg.AWS.Client); err != nil {
			return nil, nil, err
		}
	}
	return rt, azure, nil
}

func openStore(ctx context.Context, cfg Config) (*store.Store, error) {
	if cfg.DatabaseDSN != "" {
		return store.OpenPostgres(ctx, cfg.DatabaseDSN)
	}
	return store.Open(ctx, filepath.Join(cfg.DataDir, "cmk.db"))
}

func systemKeyFile(cfg Config) string {
	if cfg.SystemKeyFile == "" {
		return filepath.Join(cfg.DataDir, "system.key")
	}
	return cfg.SystemKeyFile
}

// openRing loads the system key: the generations under the platform key
// when ref is set, the key file otherwise.
func openRing(ctx context.Context, cfg Config, st *store.Store, p kms.Provider, ref kms.KeyRef, noCreate bool) (*platformkey.Ring, error) {
	if ref.Name == "" {
		// After a migration the data keys move off the file's key: a
		// replica started without the platform key could not open them.
		gens, err := st.PlatformGenerations(ctx)
		if err != nil {
			return nil, err
		}
		if n := len(gens); n > 0 {
			return nil, fmt.Errorf("%w %s (%d generations): set --platform-key (CMK_PLATFORM_KEY) to it; the key file alone no longer opens every data key", ErrPlatformKeyRequired, gens[n-1].KMSKey, n)
		}
		if _, err := os.Stat(systemKeyFile(cfg)); noCreate && err != nil {
			return nil, fmt.Errorf("system key file: %w", err)
		}
		sys, err := systemkey.LoadOrCreate(systemKeyFile(cfg))
		if err != nil {
			return nil, err
		}
		return platformkey.FromFile(sys), nil
	}
	r, err := platformkey.Open(ctx, platformkey.Config{Store: st, Provider: p, Key: ref, Log: cfg.Log, NoCreate: noCreate})
	if errors.Is(err, platformkey.ErrNeedsMigration) {
		return nil, fmt.Errorf("platform key %s: %w; import the key file first: cmkd platform-key migrate --from-file %s", ref, err, systemKeyFile(cfg))
	}
	if err != nil {
		return nil, fmt.Errorf("platform key %s: %w", ref, err)
	}
	return r, nil
}

// PlatformKeyTool is what the platform-key commands work with: the state
// store and the platform's key provider, without the rest of the service.
type PlatformKeyTool struct {
	Store *store.Store
	Key   kms.KeyRef // zero when no platform key is configured
	cfg   Config
	p     kms.Provider
}

// OpenPlatformKeyTool opens the state store and the key provider cfg names.
func OpenPlatformKeyTool(ctx context.Context, cfg Config) (*PlatformKeyTool, error) {
	ref, err := PlatformKeyRef(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.DatabaseDSN == "" {
		// A mistyped --data-dir must not get a fresh, empty state.
		if _, err := os.Stat(filepath.Join(cfg.DataDir, "cmk.db")); err != nil {
			return nil, fmt.Errorf("no state database at %s (set --data-dir or --database to the service's): %w", filepath.Join(cfg.DataDir, "cmk.db"), err)
		}
	}
	rt, _, err := buildProviders(ctx, cfg)
	if err != nil {
		return nil, err
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &PlatformKeyTool{Store: st, Key: ref, cfg: cfg, p: rt}, nil
}

// Ring loads the system key as the service would, but creates nothing: no
// key file, no first generation.
func (t *PlatformKeyTool) Ring(ctx context.Context) (*platformkey.Ring, error) {
	return openRing(ctx, t.cfg, t.Store, t.p, t.Key, true)
}

// Migrate imports the key file at path under the platform key and rotates
// to a fresh generation (platformkey.Migrate).
func (t *PlatformKeyTool) Migrate(ctx context.Context, path string) (*platformkey.Ring, error) {
	if t.Key.Name == "" {
		return nil, fmt.Errorf("%w: set --platform-key (CMK_PLATFORM_KEY) to the key to move to", platformkey.ErrNoPlatformKey)
	}
	sys, err := systemkey.ReadFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(sys)
	r, _, err := platformkey.Migrate(ctx, platformkey.Config{Store: t.Store, Provider: t.p, Key: t.Key, Log: t.cfg.Log}, sys)
	return r, err
}

// Close closes the state store.
func (t *PlatformKeyTool) Close() error { return t.Store.Close() }
