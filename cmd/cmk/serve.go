package main

import (
	"crypto/x509"
	"fmt"
	"net/http"
	"os"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/awsemu"
	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/config"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/kms/awskms"
	"github.com/cmk-project/cmk/internal/servecmd"
	"github.com/cmk-project/cmk/internal/service"
)

// emulatorWarning is printed on stderr (and logged) when 'cmk serve' runs
// against a local emulator.
const emulatorWarning = "WARNING: development mode: cmk is using the local Azure emulator at %s instead of Azure; never run this in production"

// newServeCmd is the production server's command (cmd/cmkd) plus the
// flags that point it at a local Azure emulator. Emulator mode is entered
// by --emulator alone, never by environment variables: the CMK_EMULATOR_*
// variables 'cmk dev' suggests exporting are for 'cmk azure-emulator'.
func newServeCmd() *cobra.Command {
	return newServeCmdWith("cmk serve", nil)
}

// newPlatformKeyCmd is 'cmkd platform-key' with the emulator flags of
// 'cmk serve' as well.
func newPlatformKeyCmd() *cobra.Command {
	return servecmd.PlatformKeyCommand("cmk", newServeCmdWith)
}

// newServeCmdWith is 'cmk serve' (path names it) running run in place of
// the service; nil runs the service.
func newServeCmdWith(path string, run servecmd.RunFunc) *cobra.Command {
	var emulatorURL, emulatorCA, emulatorSuffix, emulatorAWS string
	hook := func(cmd *cobra.Command, cfg *service.Config) error {
		if emulatorAWS != "" {
			useAWSEmulator(cmd, cfg, emulatorAWS)
		}
		if emulatorURL == "" {
			return nil
		}
		if err := useEmulator(cfg, emulatorURL, emulatorCA, emulatorSuffix); err != nil {
			return err
		}
		cfg.Log.Warn("development mode: using a local Azure emulator instead of Azure; never run this in production", "emulator", emulatorURL, "vault_suffix", emulatorSuffix)
		fmt.Fprintf(cmd.ErrOrStderr(), emulatorWarning+"\n", emulatorURL)
		return nil
	}
	var cmd *cobra.Command
	if run == nil {
		cmd = servecmd.New(path, hook)
	} else {
		cmd = servecmd.NewWith(path, run, hook)
	}
	cmd.Example += `

  # against a local emulator started with 'cmk azure-emulator --state emu.json'
  cmk serve --emulator https://127.0.0.1:8443 --emulator-ca emu.json.ca.pem \
    --azure-tenant-id platform-tenant --azure-client-id <app-id>`
	f := cmd.Flags()
	f.StringVar(&emulatorURL, "emulator", "", "use a local Azure emulator at this URL (development only)")
	f.StringVar(&emulatorCA, "emulator-ca", "", "CA certificate of the emulator")
	f.StringVar(&emulatorSuffix, "emulator-vault-suffix", azemu.DefaultVaultSuffix, "vault host suffix the emulator serves")
	f.StringVar(&emulatorAWS, "emulator-aws", "", "use a local AWS KMS ('cmk aws-emulator') at this URL for AWS_KMS keys (development only; --aws-region and --aws-account default to the emulator's)")
	config.MarkFlagOnly(f, "emulator", "emulator-ca", "emulator-vault-suffix", "emulator-aws")
	return cmd
}

// useAWSEmulator points the service's AWS KMS provider at a local AWS KMS.
// The platform's credentials still come from AWS's standard chain (the
// AWS_* variables 'cmk aws-emulator' prints).
func useAWSEmulator(cmd *cobra.Command, cfg *service.Config, url string) {
	if cfg.AWS == nil {
		cfg.AWS = &service.AWSConfig{Account: devenv.AWSPlatformAccount, Client: awskms.Config{Region: awsemu.DefaultRegion}}
	}
	cfg.AWS.Client.Endpoint = url
	cfg.Log.Warn("development mode: using a local AWS KMS instead of AWS; never run this in production", "emulator", url)
	fmt.Fprintf(cmd.ErrOrStderr(), "WARNING: development mode: cmk is using the local AWS KMS at %s instead of AWS; never run this in production\n", url)
}

// useEmulator points the service at a local Azure emulator.
func useEmulator(cfg *service.Config, url, caFile, suffix string) error {
	if caFile == "" {
		return withHint(fmt.Errorf("--emulator needs --emulator-ca"), "the emulator writes its CA next to its state file (<state>.ca.pem)")
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(ca) {
		return fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	tr, err := azemu.NewTransport(url, ca, suffix)
	if err != nil {
		return err
	}
	cfg.HTTPClient = &http.Client{Transport: tr}
	cfg.AuthorityHost = url + "/"
	cfg.DisableInstanceDiscovery = true
	cfg.ExtraVaultSuffixes = []string{suffix}
	return nil
}
