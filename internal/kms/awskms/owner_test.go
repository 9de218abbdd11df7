package awskms_test

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	sdkkms "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/cmk-project/cmk/internal/awsemu"
)

// ownerKMS returns a function that schedules a key's deletion (seven
// days) as the key's owner, with the SDK.
func ownerKMS(e *env, owner awsemu.Credentials) func(context.Context, string) error {
	c := sdkkms.New(sdkkms.Options{
		Region: region, BaseEndpoint: aws.String(e.srv.URL), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(owner.AccessKeyID, owner.SecretAccessKey, owner.SessionToken),
	})
	return func(ctx context.Context, arn string) error {
		_, err := c.ScheduleKeyDeletion(ctx, &sdkkms.ScheduleKeyDeletionInput{KeyId: aws.String(arn), PendingWindowInDays: aws.Int32(7)})
		return err
	}
}
