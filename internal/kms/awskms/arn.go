package awskms

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/cmk-project/cmk/internal/kms"
)

// Partitions are the AWS partitions a customer key may live in.
var Partitions = []string{"aws", "aws-us-gov", "aws-cn"}

// maxARNLength bounds what is parsed at all; AWS's own limit on a KMS ARN
// is 2048 characters.
const maxARNLength = 2048

// KeyARN is a parsed KMS key ARN or alias ARN.
type KeyARN struct {
	Partition string // aws, aws-us-gov or aws-cn
	Region    string // e.g. eu-west-1
	Account   string // twelve digits
	Alias     bool   // alias/{name} rather than key/{id}
	ID        string // key id (UUID) or alias name (without alias/)
}

// String is the ARN: arn:{partition}:kms:{region}:{account}:key/{id} or
// …:alias/{name}.
func (a KeyARN) String() string {
	return a.scope() + ":" + a.resource()
}

func (a KeyARN) scope() string {
	return "arn:" + a.Partition + ":kms:" + a.Region + ":" + a.Account
}

func (a KeyARN) resource() string {
	if a.Alias {
		return "alias/" + a.ID
	}
	return "key/" + a.ID
}

// Ref is the kms.KeyRef of the ARN: VaultURL holds the scope
// (arn:{partition}:kms:{region}:{account}), the AWS counterpart of a
// vault, and Name the resource (key/{id} or alias/{name}). ParseRef
// reverses it.
func (a KeyARN) Ref() kms.KeyRef { return kms.KeyRef{VaultURL: a.scope(), Name: a.resource()} }

// SameAccount reports whether b lives in a's partition, Region and account.
func (a KeyARN) SameAccount(b KeyARN) bool {
	return a.Partition == b.Partition && a.Region == b.Region && a.Account == b.Account
}

var (
	regionPattern  = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$`)
	accountPattern = regexp.MustCompile(`^[0-9]{12}$`)
	keyIDPattern   = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	aliasPattern   = regexp.MustCompile(`^[A-Za-z0-9/_-]{1,250}$`)
)

// ParseARN checks that s is a KMS key ARN or alias ARN of an allowed
// partition in one of regions, and splits it. It calls nothing: a
// malformed or disallowed identifier never leads to a request. The error
// says what is wrong and what a valid identifier looks like.
func ParseARN(s string, regions []string) (KeyARN, error) {
	const example = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	var a KeyARN
	if len(s) > maxARNLength {
		return a, fmt.Errorf("the key ARN is %d characters; at most %d are allowed", len(s), maxARNLength)
	}
	if strings.TrimSpace(s) != s || s == "" {
		return a, fmt.Errorf("the key ARN %q is empty or has surrounding spaces; paste it as shown by AWS, e.g. %s", s, example)
	}
	f := strings.SplitN(s, ":", 6)
	if len(f) != 6 || f[0] != "arn" {
		return a, fmt.Errorf("%q is not an ARN; use the key ARN from the AWS KMS console, e.g. %s", s, example)
	}
	a.Partition, a.Region, a.Account = f[1], f[3], f[4]
	if !slices.Contains(Partitions, a.Partition) {
		return a, fmt.Errorf("partition %q in %q: only %s are allowed", a.Partition, s, strings.Join(Partitions, ", "))
	}
	if f[2] != "kms" {
		return a, fmt.Errorf("%q is an ARN of service %q, not of a KMS key (arn:%s:kms:…)", s, f[2], a.Partition)
	}
	if !regionPattern.MatchString(a.Region) {
		return a, fmt.Errorf("region %q in %q is not an AWS Region name such as eu-west-1", a.Region, s)
	}
	if !regionInPartition(a.Region, a.Partition) {
		return a, fmt.Errorf("region %s does not belong to partition %s", a.Region, a.Partition)
	}
	if !slices.Contains(regions, a.Region) {
		return a, fmt.Errorf("the key is in %s; the platform uses keys in %s only: create the key there (keys are regional)",
			a.Region, strings.Join(regions, ", "))
	}
	if !accountPattern.MatchString(a.Account) {
		return a, fmt.Errorf("account %q in %q: an AWS account id is twelve digits", a.Account, s)
	}
	typ, id, ok := strings.Cut(f[5], "/")
	switch {
	case !ok:
		return a, fmt.Errorf("resource %q in %q: want key/{key id} or alias/{alias name}", f[5], s)
	case typ == "key":
		if strings.HasPrefix(id, "mrk-") {
			return a, fmt.Errorf("%s is a multi-Region key; the platform needs a single-Region key", s)
		}
		if !keyIDPattern.MatchString(id) {
			return a, fmt.Errorf("key id %q in %q: want a key id such as 1234abcd-12ab-34cd-56ef-1234567890ab", id, s)
		}
	case typ == "alias":
		a.Alias = true
		if !aliasPattern.MatchString(id) {
			return a, fmt.Errorf("alias %q in %q: an alias name is 1 to 250 letters, digits, /, _ or -", id, s)
		}
		if strings.HasPrefix(id, "aws/") {
			return a, fmt.Errorf("alias/%s is a key AWS manages for a service; use a customer managed key", id)
		}
	default:
		return a, fmt.Errorf("resource type %q in %q: want key/{key id} or alias/{alias name}", typ, s)
	}
	a.ID = id
	return a, nil
}

// regionInPartition tells the partitions apart by their Region names:
// cn-* is aws-cn, us-gov-* is aws-us-gov, the rest is aws.
func regionInPartition(region, partition string) bool {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return partition == "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return partition == "aws-us-gov"
	}
	return partition == "aws"
}

// ParseRef parses a reference made by KeyARN.Ref.
func ParseRef(ref kms.KeyRef, regions []string) (KeyARN, error) {
	return ParseARN(ref.VaultURL+":"+ref.Name, regions)
}
