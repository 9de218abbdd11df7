package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/awsemu"
	"github.com/cmk-project/cmk/internal/control"
	"github.com/cmk-project/cmk/internal/devenv"
)

// Environment variables naming a running local AWS KMS and its key
// owner's credentials, printed by 'cmk aws-emulator' and 'cmk dev'.
const (
	envAWSEmulatorURL    = "CMK_AWS_EMULATOR_URL"
	envAWSOwnerKeyID     = "CMK_AWS_OWNER_ACCESS_KEY_ID"
	envAWSOwnerSecretKey = "CMK_AWS_OWNER_SECRET_ACCESS_KEY"
)

// newAWSEmulatorCmd is "cmk aws-emulator": run the local AWS KMS, or act
// on a running one as the key's owner would (with the AWS KMS API itself).
func newAWSEmulatorCmd() *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:     "aws-emulator",
		Aliases: []string{"awsemu"},
		Short:   "Run a local AWS KMS, or change a running one's keys as their owner",
		Long: `Without a subcommand, run the local AWS KMS in the foreground, in memory.

It serves the AWS KMS JSON protocol on a loopback address, verifies Signature
Version 4 and evaluates key policies. It starts with two accounts: the
customer's (` + devenv.AWSCustomerAccount + `, which owns keys) and the platform's
(` + devenv.AWSPlatformAccount + `, which cmk runs as), and prints the credentials of both:
the platform's in the standard AWS_* variables for 'cmk serve --emulator-aws',
the owner's for the subcommands.

The subcommands act as the key's owner through the AWS KMS API, as
'aws kms ...' would: create a key for an org (its policy holding that org's
statements), disable, enable, schedule or cancel its deletion, rotate it,
remove the platform's statements from its policy. They find the emulator
through CMK_AWS_EMULATOR_URL and the owner's credentials through
CMK_AWS_OWNER_ACCESS_KEY_ID and CMK_AWS_OWNER_SECRET_ACCESS_KEY.`,
		Example: `  cmk aws-emulator --addr 127.0.0.1:4566

  # in another shell, with the export line it printed
  cmk aws-emulator key create --org 'MYORG@CmkOrg'
  cmk aws-emulator key disable <key ARN>
  cmk aws-emulator key schedule-deletion <key ARN> --days 7
  cmk aws-emulator key cancel-deletion <key ARN>
  cmk aws-emulator policy remove-statements <key ARN>`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return awsemuRun(cmd, addr) },
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:4566", "listen address, loopback only (port 0 picks a free one)")
	cmd.AddCommand(awsemuKeyCmd(), awsemuPolicyCmd())
	return cmd
}

func awsemuRun(cmd *cobra.Command, addr string) error {
	emu := awsemu.New(awsemu.Options{})
	for _, a := range []string{devenv.AWSCustomerAccount, devenv.AWSPlatformAccount} {
		if err := emu.CreateAccount(a); err != nil {
			return err
		}
	}
	owner, err := emu.CreateUser(devenv.AWSCustomerAccount, devenv.AWSOwnerUser)
	if err != nil {
		return err
	}
	platform, err := emu.CreateUser(devenv.AWSPlatformAccount, devenv.AWSPlatformUser)
	if err != nil {
		return err
	}
	srv, err := emu.Serve(addr, false)
	if err != nil {
		return withHint(err, "the emulator listens on loopback only; is the port free?")
	}
	defer srv.Close()
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "AWS KMS emulator listening on %s (Region %s; in memory)\n", srv.URL, emu.Region())
	fmt.Fprintf(out, "  customer account %s (key owner %s), platform account %s (user %s)\n\n",
		devenv.AWSCustomerAccount, owner.Principal, devenv.AWSPlatformAccount, platform.Principal)
	fmt.Fprintf(out, "For the subcommands (as the key owner):\n\nexport %s=%s %s=%s %s=%s\n\n", envAWSEmulatorURL, srv.URL, envAWSOwnerKeyID, owner.AccessKeyID, envAWSOwnerSecretKey, owner.SecretAccessKey)
	fmt.Fprintf(out, "For cmk (as the platform, through AWS's standard credential variables):\n\n"+
		"AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s cmk serve --dev-token-issuer --emulator-aws %s --aws-region %s --aws-account %s\n\n",
		platform.AccessKeyID, platform.SecretAccessKey, srv.URL, emu.Region(), devenv.AWSPlatformAccount)
	fmt.Fprintln(out, "Press Ctrl-C to stop.")
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	fmt.Fprintln(out, "stopping")
	return nil
}

// awsOwner is a KMS client of the running emulator with the key owner's
// credentials.
func awsOwner() (*awskms.Client, error) {
	url, id, secret := os.Getenv(envAWSEmulatorURL), os.Getenv(envAWSOwnerKeyID), os.Getenv(envAWSOwnerSecretKey)
	if url == "" || id == "" || secret == "" {
		return nil, withHint(errors.New("no AWS KMS emulator: "+envAWSEmulatorURL+", "+envAWSOwnerKeyID+" and "+envAWSOwnerSecretKey+" are not all set"),
			"run the export line 'cmk aws-emulator' (or 'cmk dev') printed")
	}
	return awskms.New(awskms.Options{
		Region: awsemu.DefaultRegion, BaseEndpoint: aws.String(url), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(id, secret, ""),
	}), nil
}

// awsemuAction is a leaf command calling the emulator as the key owner.
func awsemuAction(use, short string, args cobra.PositionalArgs, run func(ctx context.Context, cmd *cobra.Command, c *awskms.Client, args []string) error) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Args: args,
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := awsOwner()
			if err != nil {
				return err
			}
			return run(cmd.Context(), cmd, c, a)
		}}
}

func awsemuKeyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "key", Short: "Create, disable, enable, delete or rotate keys as their owner", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
	var org string
	create := awsemuAction("create", "Create a symmetric key whose policy holds an org's statements; prints its ARN", cobra.NoArgs,
		func(ctx context.Context, cmd *cobra.Command, c *awskms.Client, _ []string) error {
			if org == "" {
				return usageError(errors.New("--org is required"), "name the org whose statements the key policy holds: the key can serve that org only")
			}
			p, err := (&control.AWS{Account: devenv.AWSPlatformAccount, Region: awsemu.DefaultRegion}).KeyPolicy(org)
			if err != nil {
				return err
			}
			doc, err := devenv.KeyPolicy(devenv.AWSCustomerAccount, p.Statements)
			if err != nil {
				return err
			}
			out, err := c.CreateKey(ctx, &awskms.CreateKeyInput{Policy: aws.String(doc), Description: aws.String("cmk key of " + org),
				KeySpec: types.KeySpecSymmetricDefault, KeyUsage: types.KeyUsageTypeEncryptDecrypt})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), aws.ToString(out.KeyMetadata.Arn))
			return nil
		})
	create.Flags().StringVar(&org, "org", "", "the org the key is for (its statements go into the key policy)")
	simple := func(use, short string, call func(ctx context.Context, c *awskms.Client, arn string) error) *cobra.Command {
		return awsemuAction(use+" KEY_ARN", short, cobra.ExactArgs(1), func(ctx context.Context, cmd *cobra.Command, c *awskms.Client, a []string) error {
			if err := call(ctx, c, a[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s done\n", a[0], use)
			return nil
		})
	}
	var days int32
	schedule := simple("schedule-deletion", "Schedule the key's deletion (ScheduleKeyDeletion)", func(ctx context.Context, c *awskms.Client, arn string) error {
		_, err := c.ScheduleKeyDeletion(ctx, &awskms.ScheduleKeyDeletionInput{KeyId: aws.String(arn), PendingWindowInDays: aws.Int32(days)})
		return err
	})
	schedule.Flags().Int32Var(&days, "days", 7, "the waiting period, 7 to 30 days")
	cmd.AddCommand(create,
		simple("disable", "Disable the key (DisableKey)", func(ctx context.Context, c *awskms.Client, arn string) error {
			_, err := c.DisableKey(ctx, &awskms.DisableKeyInput{KeyId: aws.String(arn)})
			return err
		}),
		simple("enable", "Enable the key (EnableKey)", func(ctx context.Context, c *awskms.Client, arn string) error {
			_, err := c.EnableKey(ctx, &awskms.EnableKeyInput{KeyId: aws.String(arn)})
			return err
		}),
		schedule,
		simple("cancel-deletion", "Cancel the key's deletion (CancelKeyDeletion); the key stays disabled until enabled", func(ctx context.Context, c *awskms.Client, arn string) error {
			_, err := c.CancelKeyDeletion(ctx, &awskms.CancelKeyDeletionInput{KeyId: aws.String(arn)})
			return err
		}),
		simple("rotate", "Rotate the key's material now (RotateKeyOnDemand); the ARN stays and old ciphertexts still decrypt", func(ctx context.Context, c *awskms.Client, arn string) error {
			_, err := c.RotateKeyOnDemand(ctx, &awskms.RotateKeyOnDemandInput{KeyId: aws.String(arn)})
			return err
		}),
	)
	return cmd
}

func awsemuPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Show a key's policy or remove the platform's statements from it", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
	cmd.AddCommand(
		awsemuAction("show KEY_ARN", "Print the key policy", cobra.ExactArgs(1), func(ctx context.Context, cmd *cobra.Command, c *awskms.Client, a []string) error {
			out, err := c.GetKeyPolicy(ctx, &awskms.GetKeyPolicyInput{KeyId: aws.String(a[0]), PolicyName: aws.String("default")})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), aws.ToString(out.Policy))
			return nil
		}),
		awsemuAction("remove-statements KEY_ARN", "Remove the platform's statements (Sid "+control.AWSStatementPrefix+"*) from the key policy: the customer's revocation", cobra.ExactArgs(1),
			func(ctx context.Context, cmd *cobra.Command, c *awskms.Client, a []string) error {
				out, err := c.GetKeyPolicy(ctx, &awskms.GetKeyPolicyInput{KeyId: aws.String(a[0]), PolicyName: aws.String("default")})
				if err != nil {
					return err
				}
				doc, removed, err := withoutPlatform(aws.ToString(out.Policy))
				if err != nil {
					return err
				}
				if _, err := c.PutKeyPolicy(ctx, &awskms.PutKeyPolicyInput{KeyId: aws.String(a[0]), PolicyName: aws.String("default"), Policy: aws.String(doc)}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: removed %d statement(s) of the platform\n", a[0], removed)
				return nil
			}),
	)
	return cmd
}

// withoutPlatform removes the statements whose Sid starts with
// control.AWSStatementPrefix from a key policy document.
func withoutPlatform(doc string) (string, int, error) {
	var p map[string]any
	if err := json.Unmarshal([]byte(doc), &p); err != nil {
		return "", 0, fmt.Errorf("the key policy is not JSON: %w", err)
	}
	stmts, _ := p["Statement"].([]any)
	var keep []any
	for _, s := range stmts {
		if m, ok := s.(map[string]any); ok {
			if sid, _ := m["Sid"].(string); strings.HasPrefix(sid, control.AWSStatementPrefix) {
				continue
			}
		}
		keep = append(keep, s)
	}
	p["Statement"] = keep
	b, err := json.Marshal(p)
	return string(b), len(stmts) - len(keep), err
}
