package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/azemu"
)

// newAzureEmulatorCmd is "cmk azure-emulator": run the local Azure emulator,
// or change a running one through its admin API.
func newAzureEmulatorCmd() *cobra.Command {
	var addr, stateFile, suffix, caOut string
	var seed bool
	cmd := &cobra.Command{
		Use:     "azure-emulator",
		Aliases: []string{"azemu"},
		Short:   "Run a local Entra ID + Key Vault emulator, or break a running one on purpose",
		Long: `Without a subcommand, run the local Azure emulator in the foreground.

The emulator serves, over HTTPS on one port, an Entra ID-like authority
(client-credential tokens, admin consent) and the Key Vault keys API for
vaults at https://{vault}.{suffix}. The official Azure SDKs work against it
once their HTTP transport trusts its CA and routes vault hosts to it (cmk
serve --emulator does this). Vault hosts need no DNS entries.

With --state the emulator keeps tenants, apps, vaults and keys in that JSON
file across restarts, and writes its CA certificate to <state>.ca.pem.

The subcommands (key, vault, role, consent, ...) change a running emulator
through its admin API, so a demo or a test can disable a key, remove a role
or delete a vault and watch cmk react. They find the emulator through
--emulator/--ca or the CMK_EMULATOR_URL / CMK_EMULATOR_CA environment variables.`,
		Example: `  # run it, keeping state in emu.json (CA in emu.json.ca.pem)
  cmk azure-emulator --state emu.json

  # in another shell
  export CMK_EMULATOR_URL=https://127.0.0.1:8443 CMK_EMULATOR_CA=emu.json.ca.pem
  cmk azure-emulator key disable demo cmk
  cmk azure-emulator role remove demo <principal-object-id>
  cmk azure-emulator vault delete demo`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return azemuRun(cmd, addr, stateFile, suffix, caOut, seed)
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "127.0.0.1:8443", "listen address (host:port; port 0 picks a free one)")
	f.StringVar(&stateFile, "state", "", "JSON file to load state from and save it to (CA goes to <state>.ca.pem)")
	f.StringVar(&suffix, "vault-suffix", azemu.DefaultVaultSuffix, "DNS suffix of vault hosts")
	f.StringVar(&caOut, "ca-out", "", "also write the CA certificate here")
	f.BoolVar(&seed, "seed", false, "when the state is empty, create a demo tenant, app, vault \"demo\" and key \"cmk\"")

	cmd.AddCommand(azemuKeyCmd(), azemuVaultCmd(), azemuRoleCmd(), azemuConsentCmd(),
		azemuTenantCmd(), azemuAppCmd(), azemuTokenFaultCmd(), azemuStateCmd(), azemuStatsCmd())
	return cmd
}

// Demo identities used by --seed.
const (
	azemuSeedHomeTenant     = "11111111-1111-4111-8111-111111111111"
	azemuSeedCustomerTenant = "22222222-2222-4222-8222-222222222222"
	azemuSeedClientID       = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
)

func azemuRun(cmd *cobra.Command, addr, stateFile, suffix, caOut string, seed bool) error {
	emu, err := azemu.Start(azemu.Options{Addr: addr, StateFile: stateFile, VaultSuffix: suffix})
	if err != nil {
		return err
	}
	defer emu.Close()
	caPath := emu.CAFile()
	if caOut != "" {
		if err := os.WriteFile(caOut, emu.CAPEM(), 0o644); err != nil {
			return err
		}
		caPath = caOut
	}
	if caPath == "" {
		tmp, err := os.CreateTemp("", "cmk-azemu-ca-*.pem")
		if err != nil {
			return err
		}
		_, _ = tmp.Write(emu.CAPEM())
		tmp.Close()
		defer os.Remove(tmp.Name())
		caPath = tmp.Name()
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "Azure emulator listening on %s\n", emu.URL())
	fmt.Fprintf(out, "  authority host: %s\n", emu.AuthorityHost())
	fmt.Fprintf(out, "  vaults:         https://{vault}.%s (token resource %s)\n", emu.VaultSuffix(), emu.VaultResource())
	fmt.Fprintf(out, "  CA certificate: %s\n", caPath)
	if stateFile != "" {
		fmt.Fprintf(out, "  state file:     %s\n", stateFile)
	} else {
		fmt.Fprintln(out, "  state:          in memory only (use --state FILE to keep it)")
	}
	if seed && len(emu.State().Tenants) == 0 {
		if err := azemuSeed(out, emu); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
	}
	fmt.Fprintf(out, "\nexport CMK_EMULATOR_URL=%s CMK_EMULATOR_CA=%s\n", emu.URL(), caPath)
	fmt.Fprintln(out, "Press Ctrl-C to stop.")
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	fmt.Fprintln(out, "stopping")
	return nil
}

func azemuSeed(out io.Writer, emu *azemu.Emulator) error {
	secret := strconv.FormatInt(time.Now().UnixNano(), 36) + "-demo"
	for _, t := range []string{azemuSeedHomeTenant, azemuSeedCustomerTenant} {
		if err := emu.CreateTenant(t); err != nil {
			return err
		}
	}
	if err := emu.RegisterApp(azemu.App{HomeTenant: azemuSeedHomeTenant, ClientID: azemuSeedClientID,
		ClientSecret: secret, Name: "Data Platform CMK (demo)"}); err != nil {
		return err
	}
	oid, err := emu.GrantConsent(azemuSeedCustomerTenant, azemuSeedClientID)
	if err != nil {
		return err
	}
	if err := emu.CreateVault(azemu.Vault{Name: "demo", TenantID: azemuSeedCustomerTenant, SoftDelete: true, PurgeProtection: true}); err != nil {
		return err
	}
	if err := emu.AssignRole("demo", oid, azemu.RoleCryptoServiceEncryptionUser); err != nil {
		return err
	}
	if _, err := emu.CreateKey("demo", "cmk", azemu.KeyOptions{}); err != nil {
		return err
	}
	kid, _ := emu.KeyID("demo", "cmk")
	fmt.Fprintf(out, "\nSeeded demo data:\n  home tenant:     %s\n  customer tenant: %s\n  client id:       %s\n  client secret:   %s\n  principal oid:   %s\n  key identifier:  %s\n",
		azemuSeedHomeTenant, azemuSeedCustomerTenant, azemuSeedClientID, secret, oid, kid)
	return nil
}

// ---- admin client plumbing ----

type azemuConn struct {
	url, ca string
}

func (c *azemuConn) flags(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&c.url, "emulator", os.Getenv("CMK_EMULATOR_URL"), "emulator URL (env CMK_EMULATOR_URL)")
	pf.StringVar(&c.ca, "ca", os.Getenv("CMK_EMULATOR_CA"), "emulator CA certificate file (env CMK_EMULATOR_CA)")
}

func (c *azemuConn) client() (*azemu.AdminClient, error) {
	if c.url == "" {
		return nil, errors.New("no emulator: set --emulator or CMK_EMULATOR_URL (printed by 'cmk azure-emulator' at start)")
	}
	if c.ca == "" {
		return nil, errors.New("no CA: set --ca or CMK_EMULATOR_CA (the emulator writes <state>.ca.pem)")
	}
	pem, err := os.ReadFile(c.ca)
	if err != nil {
		return nil, fmt.Errorf("read emulator CA: %w", err)
	}
	return azemu.NewAdminClientCA(c.url, pem)
}

// azemuGroup makes a subcommand group carrying the --emulator/--ca flags.
func azemuGroup(use, short, example string, conn *azemuConn) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Example: example, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
	conn.flags(cmd)
	return cmd
}

// azemuAction is a leaf command calling the admin client.
func azemuAction(conn *azemuConn, use, short string, args cobra.PositionalArgs, run func(cmd *cobra.Command, c *azemu.AdminClient, args []string) error) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Args: args,
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := conn.client()
			if err != nil {
				return err
			}
			return run(cmd, c, a)
		}}
}

func azemuDone(cmd *cobra.Command, format string, a ...any) error {
	fmt.Fprintf(cmd.OutOrStdout(), format+"\n", a...)
	return nil
}

func azemuPrintJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// azemuKeyArgs accepts "VAULT KEY" or one key identifier
// "https://{vault}.{suffix}/keys/{key}[/{version}]".
func azemuKeyArgs(args []string) (vault, key string, rest []string, err error) {
	if len(args) >= 1 && strings.HasPrefix(args[0], "https://") {
		u, perr := url.Parse(args[0])
		parts := strings.Split(strings.Trim(u.Path, "/"), "/")
		if perr != nil || len(parts) < 2 || parts[0] != "keys" || !strings.Contains(u.Hostname(), ".") {
			return "", "", nil, fmt.Errorf("%q is not a key identifier (https://{vault}.{suffix}/keys/{name}[/{version}])", args[0])
		}
		return strings.SplitN(u.Hostname(), ".", 2)[0], parts[1], args[1:], nil
	}
	if len(args) < 2 {
		return "", "", nil, errors.New("need VAULT KEY or a key identifier URL")
	}
	return args[0], args[1], args[2:], nil
}

func azemuKeyCmd() *cobra.Command {
	conn := &azemuConn{}
	cmd := azemuGroup("key", "Create, disable, rotate, delete... keys in a running emulator",
		`  cmk azure-emulator key create demo cmk --bits 3072
  cmk azure-emulator key disable demo cmk
  cmk azure-emulator key enable https://demo.vault.azure.localhost/keys/cmk
  cmk azure-emulator key set-ops demo cmk unwrapKey,decrypt
  cmk azure-emulator key expire demo cmk --at 2020-01-01T00:00:00Z
  cmk azure-emulator key rotate demo cmk
  cmk azure-emulator key delete demo cmk && cmk azure-emulator key recover demo cmk`, conn)

	keyArgs := cobra.RangeArgs(1, 2)
	simple := func(use, short string, run func(c *azemu.AdminClient, vault, key string) (string, error)) *cobra.Command {
		return azemuAction(conn, use+" (VAULT KEY | KEY-ID)", short, keyArgs, func(cmd *cobra.Command, c *azemu.AdminClient, args []string) error {
			vault, key, _, err := azemuKeyArgs(args)
			if err != nil {
				return err
			}
			msg, err := run(c, vault, key)
			if err != nil {
				return err
			}
			return azemuDone(cmd, "%s", msg)
		})
	}
	t, f := true, false
	cmd.AddCommand(
		simple("disable", "Disable the newest version (get/wrap/unwrap then fail with 403 KeyDisabled)", func(c *azemu.AdminClient, v, k string) (string, error) {
			return "key " + v + "/" + k + " disabled", c.UpdateKey(v, k, azemu.KeyUpdate{Enabled: &f})
		}),
		simple("enable", "Enable the newest version", func(c *azemu.AdminClient, v, k string) (string, error) {
			return "key " + v + "/" + k + " enabled", c.UpdateKey(v, k, azemu.KeyUpdate{Enabled: &t})
		}),
		simple("rotate", "Add a new version (becomes the one GET /keys/{name} returns)", func(c *azemu.AdminClient, v, k string) (string, error) {
			ver, err := c.RotateKey(v, k)
			return "key " + v + "/" + k + " rotated, new version " + ver, err
		}),
		simple("delete", "Delete the key (soft delete when the vault has it)", func(c *azemu.AdminClient, v, k string) (string, error) {
			return "key " + v + "/" + k + " deleted", c.DeleteKey(v, k)
		}),
		simple("recover", "Recover a soft-deleted key", func(c *azemu.AdminClient, v, k string) (string, error) {
			return "key " + v + "/" + k + " recovered", c.RecoverKey(v, k)
		}),
		simple("purge", "Purge a soft-deleted key (refused under purge protection, as in Azure)", func(c *azemu.AdminClient, v, k string) (string, error) {
			return "key " + v + "/" + k + " purged", c.PurgeKey(v, k)
		}),
	)
	show := azemuAction(conn, "show (VAULT KEY | KEY-ID)", "Print a key's versions and attributes as JSON", keyArgs,
		func(cmd *cobra.Command, c *azemu.AdminClient, args []string) error {
			vault, key, _, err := azemuKeyArgs(args)
			if err != nil {
				return err
			}
			k, err := c.GetKey(vault, key)
			if err != nil {
				return err
			}
			return azemuPrintJSON(cmd, k)
		})
	setOps := azemuAction(conn, "set-ops (VAULT KEY | KEY-ID) OPS", "Set the permitted operations, comma-separated (e.g. unwrapKey,decrypt; \"none\" for none)", cobra.RangeArgs(2, 3),
		func(cmd *cobra.Command, c *azemu.AdminClient, args []string) error {
			vault, key, rest, err := azemuKeyArgs(args)
			if err != nil {
				return err
			}
			if len(rest) != 1 {
				return errors.New("need the operations list, e.g. wrapKey,unwrapKey")
			}
			ops := []string{}
			if rest[0] != "none" {
				for _, o := range strings.Split(rest[0], ",") {
					if o = strings.TrimSpace(o); o != "" {
						ops = append(ops, o)
					}
				}
			}
			if err := c.UpdateKey(vault, key, azemu.KeyUpdate{Ops: ops}); err != nil {
				return err
			}
			return azemuDone(cmd, "key %s/%s operations: %s", vault, key, strings.Join(ops, ","))
		})
	var at, nbf string
	expire := azemuAction(conn, "expire (VAULT KEY | KEY-ID)", "Set or clear the expiry / activation dates (RFC 3339, or \"none\")", keyArgs,
		func(cmd *cobra.Command, c *azemu.AdminClient, args []string) error {
			vault, key, _, err := azemuKeyArgs(args)
			if err != nil {
				return err
			}
			var u azemu.KeyUpdate
			if err := azemuDateFlag(at, &u.Expires, &u.ClearExpires); err != nil {
				return fmt.Errorf("--at: %w", err)
			}
			if err := azemuDateFlag(nbf, &u.NotBefore, &u.ClearNotBefore); err != nil {
				return fmt.Errorf("--not-before: %w", err)
			}
			if err := c.UpdateKey(vault, key, u); err != nil {
				return err
			}
			return azemuDone(cmd, "key %s/%s dates updated", vault, key)
		})
	expire.Flags().StringVar(&at, "at", "", "expiry time (RFC 3339), \"now\" or \"none\"")
	expire.Flags().StringVar(&nbf, "not-before", "", "activation time (RFC 3339), \"now\" or \"none\"")

	var ko struct {
		kty, ops, expires, notBefore string
		bits                         int
		disabled                     bool
	}
	create := azemuAction(conn, "create VAULT KEY", "Create a key, or a new version of an existing one", cobra.ExactArgs(2),
		func(cmd *cobra.Command, c *azemu.AdminClient, args []string) error {
			o := azemu.KeyOptions{Kty: ko.kty, Bits: ko.bits}
			if ko.ops != "" {
				o.Ops = strings.Split(ko.ops, ",")
			}
			if ko.disabled {
				o.Enabled = &f
			}
			var clear bool
			if err := azemuDateFlag(ko.expires, &o.Expires, &clear); err != nil {
				return fmt.Errorf("--expires: %w", err)
			}
			if err := azemuDateFlag(ko.notBefore, &o.NotBefore, &clear); err != nil {
				return fmt.Errorf("--not-before: %w", err)
			}
			ver, err := c.CreateKey(args[0], args[1], o)
			if err != nil {
				return err
			}
			return azemuDone(cmd, "key %s/%s version %s", args[0], args[1], ver)
		})
	cf := create.Flags()
	cf.StringVar(&ko.kty, "kty", "RSA", "key type: RSA or RSA-HSM")
	cf.IntVar(&ko.bits, "bits", 3072, "key size: 2048, 3072 or 4096")
	cf.StringVar(&ko.ops, "ops", "", "permitted operations, comma-separated (default all RSA operations)")
	cf.StringVar(&ko.expires, "expires", "", "expiry time (RFC 3339)")
	cf.StringVar(&ko.notBefore, "not-before", "", "activation time (RFC 3339)")
	cf.BoolVar(&ko.disabled, "disabled", false, "create the key disabled")
	cmd.AddCommand(show, setOps, expire, create)
	return cmd
}

func azemuDateFlag(s string, dst **time.Time, clear *bool) error {
	switch s {
	case "":
		return nil
	case "none":
		*clear = true
		return nil
	case "now":
		t := time.Now()
		*dst = &t
		return nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return err
	}
	*dst = &t
	return nil
}

func azemuVaultCmd() *cobra.Command {
	conn := &azemuConn{}
	cmd := azemuGroup("vault", "Create, firewall, delete, throttle... vaults in a running emulator",
		`  cmk azure-emulator vault create demo2 --tenant 22222222-2222-4222-8222-222222222222
  cmk azure-emulator vault firewall demo on
  cmk azure-emulator vault throttle demo --limit 5 --window 10s
  cmk azure-emulator vault fault demo --status 503
  cmk azure-emulator vault fault demo --reset
  cmk azure-emulator vault delete demo     # its host stops resolving
  cmk azure-emulator vault recover demo`, conn)

	var v azemu.Vault
	create := azemuAction(conn, "create NAME", "Create a vault owned by a tenant", cobra.ExactArgs(1),
		func(cmd *cobra.Command, c *azemu.AdminClient, args []string) error {
			nv := v
			nv.Name = args[0]
			if err := c.CreateVault(nv); err != nil {
				return err
			}
			return azemuDone(cmd, "vault %s created", args[0])
		})
	cf := create.Flags()
	cf.StringVar(&v.TenantID, "tenant", "", "owning tenant id (required)")
	cf.StringVar(&v.SKU, "sku", "standard", "standard or premium")
	cf.BoolVar(&v.SoftDelete, "soft-delete", true, "enable soft delete")
	cf.BoolVar(&v.PurgeProtection, "purge-protection", true, "enable purge protection")
	cf.IntVar(&v.RetentionDays, "retention-days", 90, "soft-delete retention (7-90)")
	_ = create.MarkFlagRequired("tenant")

	firewall := azemuAction(conn, "firewall NAME on|off", "Deny (on) or allow (off) public access: requests get 403 ForbiddenByFirewall", cobra.ExactArgs(2),
		func(cmd *cobra.Command, c *azemu.AdminClient, args []string) error {
			var deny bool
			switch args[1] {
			case "on", "deny", "true":
				deny = true
			case "off", "allow", "false":
			default:
				return fmt.Errorf("want on or off, got %q", args[1])
			}
			if err := c.SetFirewall(args[0], deny); err != nil {
				return err
			}
			return azemuDone(cmd, "vault %s firewall %s", args[0], args[1])
		})
	nameOnly := func(use, short, done string, run func(c *azemu.AdminClient, name string) error) *cobra.Command {
		return azemuAction(conn, use+" NAME", short, cobra.ExactArgs(1), func(cmd *cobra.Command, c *azemu.AdminClient, args []string) error {
			if err := run(c, args[0]); err != nil {
				return err
			}
			return azemuDone(cmd, "vault %s %s", args[0], done)
		})
	}
	var limit int
	var window time.Duration
	var retryAfter bool
	throttle := azemuAction(conn, "throttle NAME", "Limit requests per fixed window (429 Throttled, without Retry-After as Key Vault answers, unless --retry-after); --limit 0 turns it off", cobra.ExactArgs(1),
		func(cmd *cobra.Command, c *azemu.AdminClient, args []string) error {
			if err := c.SetVaultThrottle(args[0], azemu.Throttle{Limit: limit, Window: window, RetryAfter: retryAfter}); err != nil {
				return err
			}
			if limit <= 0 {
				return azemuDone(cmd, "vault %s throttling off", args[0])
			}
			return azemuDone(cmd, "vault %s throttled to %d requests per %s", args[0], limit, window)
		})
	throttle.Flags().IntVar(&limit, "limit", 0, "requests allowed per window (0 = off)")
	throttle.Flags().BoolVar(&retryAfter, "retry-after", false, "send a Retry-After header with each 429 (Key Vault was seen sending none)")
	throttle.Flags().DurationVar(&window, "window", 10*time.Second, "window length")

	var status int
	var delay time.Duration
	var reset bool
	fault := azemuAction(conn, "fault NAME", "Make the vault slow (--delay), fail (--status 500/503) or reset connections (--reset); no flags = healthy again", cobra.ExactArgs(1),
		func(cmd *cobra.Command, c *azemu.AdminClient, args []string) error {
			if err := c.SetVaultReset(args[0], reset); err != nil {
				return err
			}
			if err := c.SetVaultFault(args[0], status, delay); err != nil {
				return err
			}
			if reset {
				return azemuDone(cmd, "vault %s fault: connections reset", args[0])
			}
			return azemuDone(cmd, "vault %s fault: status %d, delay %s", args[0], status, delay)
		})
	fault.Flags().IntVar(&status, "status", 0, "HTTP status to answer with (0 = normal)")
	fault.Flags().DurationVar(&delay, "delay", 0, "delay before answering")
	fault.Flags().BoolVar(&reset, "reset", false, "reset every request's connection (TCP RST) instead of answering")

	show := azemuAction(conn, "show NAME", "Print a vault (settings, roles, keys) as JSON", cobra.ExactArgs(1),
		func(cmd *cobra.Command, c *azemu.AdminClient, args []string) error {
			vi, err := c.GetVault(args[0])
			if err != nil {
				return err
			}
			return azemuPrintJSON(cmd, vi)
		})
	cmd.AddCommand(create, firewall, throttle, fault, show,
		nameOnly("delete", "Delete the vault: its host stops resolving (soft delete keeps it recoverable)", "deleted", (*azemu.AdminClient).DeleteVault),
		nameOnly("recover", "Recover a soft-deleted vault", "recovered", (*azemu.AdminClient).RecoverVault),
		nameOnly("purge", "Purge a soft-deleted vault (refused under purge protection)", "purged", (*azemu.AdminClient).PurgeVault),
	)
	return cmd
}

func azemuRoleCmd() *cobra.Command {
	conn := &azemuConn{}
	cmd := azemuGroup("role", "Assign or remove Key Vault data-plane roles",
		`  cmk azure-emulator role assign demo 0f6c...-principal-object-id
  cmk azure-emulator role remove demo 0f6c...-principal-object-id
  cmk azure-emulator role assign demo 0f6c... --role "Key Vault Crypto Officer"`, conn)
	var role string
	for _, assign := range []bool{true, false} {
		use, short := "assign VAULT PRINCIPAL-OBJECT-ID", "Give a principal a role on a vault"
		if !assign {
			use, short = "remove VAULT PRINCIPAL-OBJECT-ID", "Remove a principal's role (its calls then get 403 ForbiddenByRbac)"
		}
		sub := azemuAction(conn, use, short, cobra.ExactArgs(2), func(cmd *cobra.Command, c *azemu.AdminClient, args []string) error {
			if assign {
				if err := c.AssignRole(args[0], args[1], role); err != nil {
					return err
				}
				return azemuDone(cmd, "assigned %q on %s to %s", role, args[0], args[1])
			}
			if err := c.RemoveRole(args[0], args[1], role); err != nil {
				return err
			}
			return azemuDone(cmd, "removed %q on %s from %s", role, args[0], args[1])
		})
		sub.Flags().StringVar(&role, "role", azemu.RoleCryptoServiceEncryptionUser,
			"role: \""+azemu.RoleCryptoServiceEncryptionUser+"\", \""+azemu.RoleCryptoUser+"\", \""+azemu.RoleCryptoOfficer+"\", \""+azemu.RoleAdministrator+"\" or \""+azemu.RoleReader+"\"")
		cmd.AddCommand(sub)
	}
	return cmd
}

func azemuConsentCmd() *cobra.Command {
	conn := &azemuConn{}
	cmd := azemuGroup("consent", "Grant or revoke an app's admin consent in a tenant",
		`  cmk azure-emulator consent grant 22222222-2222-4222-8222-222222222222 aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa
  cmk azure-emulator consent revoke 22222222-2222-4222-8222-222222222222 aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa`, conn)
	cmd.AddCommand(
		azemuAction(conn, "grant TENANT CLIENT-ID", "Add the app's service principal to the tenant (what Accept on the consent page does)", cobra.ExactArgs(2),
			func(cmd *cobra.Command, c *azemu.AdminClient, args []string) error {
				oid, err := c.GrantConsent(args[0], args[1])
				if err != nil {
					return err
				}
				return azemuDone(cmd, "service principal object id: %s", oid)
			}),
		azemuAction(conn, "revoke TENANT CLIENT-ID", "Remove the app's service principal (tokens then fail with AADSTS700016)", cobra.ExactArgs(2),
			func(cmd *cobra.Command, c *azemu.AdminClient, args []string) error {
				if err := c.RevokeConsent(args[0], args[1]); err != nil {
					return err
				}
				return azemuDone(cmd, "consent of %s revoked in %s", args[1], args[0])
			}),
	)
	return cmd
}

func azemuTenantCmd() *cobra.Command {
	conn := &azemuConn{}
	cmd := azemuGroup("tenant", "Create tenants (directories)", `  cmk azure-emulator tenant create 22222222-2222-4222-8222-222222222222`, conn)
	cmd.AddCommand(azemuAction(conn, "create TENANT-ID", "Create a tenant", cobra.ExactArgs(1),
		func(cmd *cobra.Command, c *azemu.AdminClient, args []string) error {
			if err := c.CreateTenant(args[0]); err != nil {
				return err
			}
			return azemuDone(cmd, "tenant %s created", args[0])
		}))
	return cmd
}

func azemuAppCmd() *cobra.Command {
	conn := &azemuConn{}
	cmd := azemuGroup("app", "Register the platform's app",
		`  cmk azure-emulator app register --tenant 11111111-1111-4111-8111-111111111111 \
      --client-id aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa --secret s3cret --name "Data Platform CMK"`, conn)
	var a azemu.App
	var expires string
	reg := azemuAction(conn, "register", "Register (or replace) an app in its home tenant", cobra.NoArgs,
		func(cmd *cobra.Command, c *azemu.AdminClient, _ []string) error {
			app := a
			if expires != "" {
				t, err := time.Parse(time.RFC3339, expires)
				if err != nil {
					return fmt.Errorf("--secret-expires: %w", err)
				}
				app.SecretExpires = t
			}
			if err := c.RegisterApp(app); err != nil {
				return err
			}
			return azemuDone(cmd, "app %s registered in %s", app.ClientID, app.HomeTenant)
		})
	f := reg.Flags()
	f.StringVar(&a.HomeTenant, "tenant", "", "home tenant id (required)")
	f.StringVar(&a.ClientID, "client-id", "", "application (client) id (required)")
	f.StringVar(&a.ClientSecret, "secret", "", "client secret (required)")
	f.StringVar(&a.Name, "name", "", "display name shown on the consent page")
	f.StringVar(&a.RedirectURI, "redirect-uri", "", "consent redirect URI")
	f.StringVar(&expires, "secret-expires", "", "secret expiry (RFC 3339); expired secrets get AADSTS7000222")
	for _, n := range []string{"tenant", "client-id", "secret"} {
		_ = reg.MarkFlagRequired(n)
	}
	cmd.AddCommand(reg)
	return cmd
}

func azemuTokenFaultCmd() *cobra.Command {
	conn := &azemuConn{}
	cmd := azemuAction(conn, "token-fault STATUS", "Make the token endpoint fail with STATUS (e.g. 503); 0 restores it", cobra.ExactArgs(1),
		func(cmd *cobra.Command, c *azemu.AdminClient, args []string) error {
			st, err := strconv.Atoi(args[0])
			if err != nil {
				return fmt.Errorf("status: %w", err)
			}
			if err := c.SetTokenEndpointFault(st); err != nil {
				return err
			}
			return azemuDone(cmd, "token endpoint fault: %d", st)
		})
	cmd.Example = "  cmk azure-emulator token-fault 503\n  cmk azure-emulator token-fault 0"
	conn.flags(cmd)
	return cmd
}

func azemuStateCmd() *cobra.Command {
	conn := &azemuConn{}
	cmd := azemuAction(conn, "state", "Print the emulator's tenants, apps (no secrets), vaults, roles and keys as JSON", cobra.NoArgs,
		func(cmd *cobra.Command, c *azemu.AdminClient, _ []string) error {
			s, err := c.State()
			if err != nil {
				return err
			}
			return azemuPrintJSON(cmd, s)
		})
	conn.flags(cmd)
	return cmd
}

func azemuStatsCmd() *cobra.Command {
	conn := &azemuConn{}
	cmd := azemuAction(conn, "stats", "Print counters: tokens issued, key operations per vault, 429s", cobra.NoArgs,
		func(cmd *cobra.Command, c *azemu.AdminClient, _ []string) error {
			s, err := c.Stats()
			if err != nil {
				return err
			}
			return azemuPrintJSON(cmd, s)
		})
	conn.flags(cmd)
	return cmd
}
