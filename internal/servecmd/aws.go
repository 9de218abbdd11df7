package servecmd

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/cmk-project/cmk/internal/kms/awskms"
	"github.com/cmk-project/cmk/internal/service"
)

// awsFlags turn on customer keys in AWS KMS. The platform's credentials
// come from AWS's standard chain (AWS_ACCESS_KEY_ID and friends, shared
// config and credentials files, web identity, instance or task role),
// never from a flag.
type awsFlags struct {
	region, regions, account, partition, endpoint string
}

func (a *awsFlags) register(f *pflag.FlagSet) {
	f.StringVar(&a.region, "aws-region", "", "turn on customer keys in AWS KMS (providerType AWS_KMS): the platform's AWS Region, where customers create their keys; credentials come from AWS's standard chain")
	f.StringVar(&a.regions, "aws-allowed-regions", "", "comma-separated Regions a customer key may be in (default: --aws-region only)")
	f.StringVar(&a.account, "aws-account", "", "the platform's AWS account id: the generated key-policy statements grant its principals")
	f.StringVar(&a.partition, "aws-partition", "aws", "the platform account's partition: aws, aws-us-gov or aws-cn")
	f.StringVar(&a.endpoint, "aws-endpoint", "", "send AWS KMS requests to this endpoint instead of AWS's (a VPC endpoint; plain http only on loopback)")
}

// apply sets cfg.AWS from the flags, or leaves it nil when --aws-region is
// not set.
func (a *awsFlags) apply(cfg *service.Config) error {
	if a.region == "" {
		if a.account != "" || a.regions != "" || a.endpoint != "" {
			return WithHint(fmt.Errorf("--aws-account, --aws-allowed-regions and --aws-endpoint need --aws-region"), "set --aws-region (or CMK_AWS_REGION) to the platform's AWS Region, e.g. eu-west-1")
		}
		return nil
	}
	var regions []string
	for _, r := range strings.Split(a.regions, ",") {
		if r = strings.TrimSpace(r); r != "" {
			regions = append(regions, r)
		}
	}
	if a.account == "" {
		return WithHint(fmt.Errorf("--aws-region needs --aws-account"), "set --aws-account (or CMK_AWS_ACCOUNT) to the platform's twelve-digit AWS account id")
	}
	cfg.AWS = &service.AWSConfig{Account: a.account, Partition: a.partition,
		Client: awskms.Config{Region: a.region, Regions: regions, Endpoint: a.endpoint}}
	return nil
}
