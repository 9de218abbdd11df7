package awskms

import (
	"strings"
	"testing"
)

const testKeyID = "1234abcd-12ab-34cd-56ef-1234567890ab"

func TestParseARN(t *testing.T) {
	regions := []string{"eu-west-1", "us-east-1", "cn-north-1", "us-gov-west-1"}
	for _, tc := range []struct {
		in      string
		want    KeyARN
		wantErr string
	}{
		{in: "arn:aws:kms:eu-west-1:111122223333:key/" + testKeyID, want: KeyARN{"aws", "eu-west-1", "111122223333", false, testKeyID}},
		{in: "arn:aws:kms:eu-west-1:111122223333:alias/cmk/prod_1", want: KeyARN{"aws", "eu-west-1", "111122223333", true, "cmk/prod_1"}},
		{in: "arn:aws-cn:kms:cn-north-1:111122223333:key/" + testKeyID, want: KeyARN{"aws-cn", "cn-north-1", "111122223333", false, testKeyID}},
		{in: "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/" + testKeyID, want: KeyARN{"aws-us-gov", "us-gov-west-1", "111122223333", false, testKeyID}},
		{in: "", wantErr: "empty"},
		{in: " arn:aws:kms:eu-west-1:111122223333:key/" + testKeyID, wantErr: "spaces"},
		{in: testKeyID, wantErr: "not an ARN"},
		{in: "alias/cmk", wantErr: "not an ARN"},
		{in: "arn:aws:kms:eu-west-1:111122223333", wantErr: "not an ARN"},
		{in: "arn:aws-iso:kms:eu-west-1:111122223333:key/" + testKeyID, wantErr: "partition"},
		{in: "arn:aws:s3:eu-west-1:111122223333:key/" + testKeyID, wantErr: "service"},
		{in: "arn:aws:kms:EU-WEST-1:111122223333:key/" + testKeyID, wantErr: "Region name"},
		{in: "arn:aws:kms:cn-north-1:111122223333:key/" + testKeyID, wantErr: "partition aws"},
		{in: "arn:aws-cn:kms:eu-west-1:111122223333:key/" + testKeyID, wantErr: "partition aws-cn"},
		{in: "arn:aws:kms:ap-south-1:111122223333:key/" + testKeyID, wantErr: "keys in eu-west-1"},
		{in: "arn:aws:kms:eu-west-1:11112222333:key/" + testKeyID, wantErr: "twelve digits"},
		{in: "arn:aws:kms:eu-west-1:111122223333:key/not-a-uuid", wantErr: "key id"},
		{in: "arn:aws:kms:eu-west-1:111122223333:key/" + strings.ToUpper(testKeyID), wantErr: "key id"},
		{in: "arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab", wantErr: "multi-Region"},
		{in: "arn:aws:kms:eu-west-1:111122223333:alias/aws/ebs", wantErr: "AWS manages"},
		{in: "arn:aws:kms:eu-west-1:111122223333:alias/", wantErr: "alias"},
		{in: "arn:aws:kms:eu-west-1:111122223333:alias/a:b", wantErr: "alias"},
		{in: "arn:aws:kms:eu-west-1:111122223333:grant/x", wantErr: "resource type"},
		{in: "arn:aws:kms:eu-west-1:111122223333:" + testKeyID, wantErr: "resource"},
		{in: "arn:aws:kms:eu-west-1:111122223333:key/" + testKeyID + strings.Repeat("x", maxARNLength), wantErr: "at most"},
	} {
		got, err := ParseARN(tc.in, regions)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseARN(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseARN(%q) = %+v, %v, want %+v", tc.in, got, err, tc.want)
			continue
		}
		if got.String() != tc.in {
			t.Errorf("ParseARN(%q).String() = %q", tc.in, got.String())
		}
		back, err := ParseRef(got.Ref(), regions)
		if err != nil || back != got {
			t.Errorf("ParseRef(%+v) = %+v, %v, want %+v", got.Ref(), back, err, got)
		}
	}
}

func FuzzParseARN(f *testing.F) {
	for _, s := range []string{
		"arn:aws:kms:eu-west-1:111122223333:key/" + testKeyID,
		"arn:aws:kms:eu-west-1:111122223333:alias/cmk/prod",
		"arn:aws-cn:kms:cn-north-1:111122223333:key/" + testKeyID,
		"arn:aws:kms:eu-west-1:111122223333:key/mrk-1234",
		"arn::::::", "arn:aws:kms:eu-west-1:111122223333:alias/aws/x",
	} {
		f.Add(s)
	}
	regions := []string{"eu-west-1", "cn-north-1", "us-gov-west-1"}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseARN(s, regions)
		if err != nil {
			return
		}
		// Whatever parses names exactly what was given, in an allowed
		// partition and Region, and survives the KeyRef round trip.
		if a.String() != s {
			t.Fatalf("ParseARN(%q).String() = %q", s, a.String())
		}
		if !strings.HasPrefix(s, "arn:") || !strings.Contains(strings.Join(Partitions, " "), a.Partition) {
			t.Fatalf("ParseARN(%q) accepted partition %q", s, a.Partition)
		}
		if b, err := ParseRef(a.Ref(), regions); err != nil || b != a {
			t.Fatalf("ParseRef(Ref(%q)) = %+v, %v", s, b, err)
		}
	})
}
