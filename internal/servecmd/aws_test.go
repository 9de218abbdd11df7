package servecmd

import (
	"slices"
	"strings"
	"testing"

	"github.com/cmk-project/cmk/internal/service"
)

func TestAWSFlags(t *testing.T) {
	for _, c := range []struct {
		name    string
		flags   awsFlags
		wantErr string
		on      bool
	}{
		{"off", awsFlags{}, "", false},
		{"on", awsFlags{region: "eu-west-1", account: "444455556666", regions: "eu-west-1, eu-central-1", partition: "aws"}, "", true},
		{"no account", awsFlags{region: "eu-west-1"}, "--aws-region needs --aws-account", false},
		{"account without region", awsFlags{account: "444455556666"}, "need --aws-region", false},
	} {
		var cfg service.Config
		err := c.flags.apply(&cfg)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) || HintOf(err) == "" {
				t.Errorf("%s: apply = %v, want %q with a hint", c.name, err, c.wantErr)
			}
			continue
		}
		if err != nil || (cfg.AWS != nil) != c.on {
			t.Errorf("%s: apply = %v, AWS %+v", c.name, err, cfg.AWS)
		}
		if c.on && (cfg.AWS.Account != "444455556666" || !slices.Equal(cfg.AWS.Client.Regions, []string{"eu-west-1", "eu-central-1"})) {
			t.Errorf("%s: AWS config = %+v", c.name, cfg.AWS)
		}
	}
}
