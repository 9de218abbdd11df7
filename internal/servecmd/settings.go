package servecmd

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/cmk-project/cmk/internal/config"
	"github.com/cmk-project/cmk/internal/enablement"
	"github.com/cmk-project/cmk/internal/service"
)

// Bounds of lease. A holder renews its lease every third of it, so a
// lease under a second would have a replica renew several times a second
// per job and lose its jobs to one slow database write; above ten minutes
// a job held by a dead replica would wait longer than a tenant admin
// watching it would believe.
const (
	MinLease = time.Second
	MaxLease = 10 * time.Minute
)

// Secrets are the settings read only from the environment or from a file
// named by a *-file setting, never from the configuration file or a flag.
var Secrets = []config.Secret{
	{Name: "azure-client-secret", Env: "CMK_AZURE_CLIENT_SECRET", FileKey: "azure-client-secret-file"},
	{Name: "lake-azure-account-key", Env: "CMK_LAKE_AZURE_ACCOUNT_KEY", FileKey: "lake-azure-account-key-file"},
	{Name: "operator-token", Env: "CMK_OPERATOR_TOKEN", FileKey: "operator-token-file"},
}

// validate checks the settings that have rules beyond their type, naming
// the setting, its value and what is allowed.
func validate(cfg *service.Config, proxies []string) error {
	for _, d := range []struct {
		key string
		v   fmt.Stringer
		ok  bool
	}{
		{"shutdown-timeout", cfg.ShutdownTimeout, cfg.ShutdownTimeout > 0},
		{"check-interval", cfg.Monitor.Interval, cfg.Monitor.Interval > 0},
		{"grace", cfg.Monitor.Grace, cfg.Monitor.Grace >= 0},
		{"read-header-timeout", cfg.ReadHeaderTimeout, cfg.ReadHeaderTimeout > 0},
		{"idle-timeout", cfg.IdleTimeout, cfg.IdleTimeout > 0},
		{"body-read-timeout", cfg.BodyReadTimeout, cfg.BodyReadTimeout > 0},
		{"write-timeout", cfg.WriteTimeout, cfg.WriteTimeout > 0},
	} {
		if !d.ok {
			return &config.Error{Setting: d.key, Value: d.v.String(), Problem: "must be a positive duration", Advice: fmt.Sprintf("set %s to a duration above zero, such as 30s", d.key)}
		}
	}
	for _, n := range []struct {
		key string
		v   int
		min int
	}{{"vault-concurrency", cfg.Concurrency, 1}, {"check-concurrency", cfg.Monitor.Concurrency, 1}, {"min-transfer-bytes", cfg.MinTransferBytes, 1}, {"lake-min-free-mib", cfg.LakeMinFreeMiB, 0}} {
		if n.v < n.min {
			return &config.Error{Setting: n.key, Value: fmt.Sprint(n.v), Problem: fmt.Sprintf("must be at least %d", n.min), Advice: fmt.Sprintf("set %s to a whole number of at least %d", n.key, n.min)}
		}
	}
	if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
		missing, given := "tls-key", "tls-cert"
		if cfg.TLSCertFile == "" {
			missing, given = given, missing
		}
		return &config.Error{Setting: missing, Problem: "is not set while " + given + " is", Advice: "set tls-cert and tls-key together (a PEM certificate and its private key), or neither to serve plain HTTP behind a proxy"}
	}
	if cfg.Lease < MinLease || cfg.Lease > MaxLease {
		return &config.Error{Setting: "lease", Value: cfg.Lease.String(), Problem: fmt.Sprintf("must be from %s to %s", MinLease, MaxLease),
			Advice: fmt.Sprintf("set lease to a duration from %s to %s, such as %s", MinLease, MaxLease, enablement.DefaultLease)}
	}
	cfg.TrustedProxies = nil
	for _, p := range proxies {
		p = strings.TrimSpace(p)
		pr, err := netip.ParsePrefix(p)
		if err != nil {
			a, aerr := netip.ParseAddr(p)
			if aerr != nil {
				return &config.Error{Setting: "trusted-proxies", Value: p, Problem: "not a CIDR or an IP address", Advice: "list the proxies' networks as CIDRs, e.g. 10.0.0.0/8,fd00::/8, or single addresses"}
			}
			pr = netip.PrefixFrom(a, a.BitLen())
		}
		cfg.TrustedProxies = append(cfg.TrustedProxies, pr.Masked())
	}
	return nil
}
