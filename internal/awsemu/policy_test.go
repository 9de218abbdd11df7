package awsemu

import (
	"fmt"
	"strings"
	"testing"
)

func TestPolicyEvaluation(t *testing.T) {
	const (
		owner    = "111122223333"
		platform = "444455556666"
		keyARN   = "arn:aws:kms:us-east-1:111122223333:key/0b4b6a51-8d8c-4b6f-9a6e-2f1c7a4e9d10"
	)
	userA := &credential{principal: "arn:aws:iam::" + owner + ":user/admin", caller: "arn:aws:iam::" + owner + ":user/admin", account: owner}
	role := "arn:aws:iam::" + platform + ":role/cmk"
	platformRole := &credential{principal: role, caller: "arn:aws:sts::" + platform + ":assumed-role/cmk/s", account: platform}
	platformUser := &credential{principal: "arn:aws:iam::" + platform + ":user/other", caller: "arn:aws:iam::" + platform + ":user/other", account: platform}
	stranger := &credential{principal: "arn:aws:iam::777788889999:user/x", caller: "arn:aws:iam::777788889999:user/x", account: "777788889999"}

	ownerStmt := fmt.Sprintf(`{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::%s:root"},"Action":"kms:*","Resource":"*"}`, owner)
	platformStmt := fmt.Sprintf(`{"Sid":"cmk","Effect":"Allow","Principal":{"AWS":"%s"},
	  "Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey"],"Resource":"*",
	  "Condition":{"StringEquals":{"aws:PrincipalAccount":"%s","kms:EncryptionContext:cmk:org":"org-a"}}}`, role, platform)
	doc := func(stmts ...string) string {
		return `{"Version":"2012-10-17","Statement":[` + strings.Join(stmts, ",") + `]}`
	}
	orgA := map[string]string{"cmk:org": "org-a", "cmk:store": "lake"}
	orgB := map[string]string{"cmk:org": "org-b", "cmk:store": "lake"}

	for _, tc := range []struct {
		name   string
		policy string
		c      *credential
		action string
		ec     map[string]string
		want   decision
	}{
		{"owner's root allows its users", doc(ownerStmt), userA, "kms:PutKeyPolicy", nil, allowed},
		{"default deny for another account", doc(ownerStmt), platformRole, "kms:Encrypt", orgA, implicitDeny},
		{"platform role, its org's context", doc(ownerStmt, platformStmt), platformRole, "kms:Encrypt", orgA, allowed},
		{"platform role, another org's context (confused deputy)", doc(ownerStmt, platformStmt), platformRole, "kms:Encrypt", orgB, implicitDeny},
		{"platform role, no context", doc(ownerStmt, platformStmt), platformRole, "kms:Decrypt", nil, implicitDeny},
		{"ReEncrypt* covers ReEncryptFrom", doc(ownerStmt, platformStmt), platformRole, "kms:ReEncryptFrom", orgA, allowed},
		{"GenerateDataKey* covers GenerateDataKeyWithoutPlaintext", doc(platformStmt), platformRole, "kms:GenerateDataKeyWithoutPlaintext", orgA, allowed},
		{"action not granted", doc(platformStmt), platformRole, "kms:DisableKey", orgA, implicitDeny},
		{"actions are case-insensitive", doc(strings.Replace(platformStmt, "kms:Encrypt", "KMS:ENCRYPT", 1)), platformRole, "kms:Encrypt", orgA, allowed},
		{"another principal of the platform account", doc(platformStmt), platformUser, "kms:Encrypt", orgA, implicitDeny},
		{"a stranger", doc(ownerStmt, platformStmt), stranger, "kms:Encrypt", orgA, implicitDeny},
		{"account id as principal", doc(fmt.Sprintf(`{"Effect":"Allow","Principal":{"AWS":"%s"},"Action":"kms:Encrypt","Resource":"*"}`, platform)), platformUser, "kms:Encrypt", nil, allowed},
		{"explicit deny wins", doc(ownerStmt, fmt.Sprintf(`{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"StringNotEquals":{"kms:CallerAccount":"%s"}}}`, owner), platformStmt), platformRole, "kms:Encrypt", orgA, explicitDeny},
		{"deny by negation spares the owner", doc(ownerStmt, fmt.Sprintf(`{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"StringNotEquals":{"kms:CallerAccount":"%s"}}}`, owner)), userA, "kms:Encrypt", nil, allowed},
		{"wildcard principal with an account condition", doc(fmt.Sprintf(`{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*","Condition":{"StringEquals":{"kms:CallerAccount":"%s"}}}`, platform)), platformUser, "kms:Decrypt", nil, allowed},
		{"resource must match", doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"arn:aws:kms:us-east-1:111122223333:key/other"}`), userA, "kms:Decrypt", nil, implicitDeny},
		{"resource pattern", doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"arn:aws:kms:us-east-1:111122223333:key/*"}`), userA, "kms:Decrypt", nil, allowed},
		{"ForAllValues keys: only allowed keys", doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*","Condition":{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["cmk:org","cmk:store"]}}}`), userA, "kms:Encrypt", orgA, allowed},
		{"ForAllValues keys: an extra key", doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*","Condition":{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["cmk:org"]}}}`), userA, "kms:Encrypt", orgA, implicitDeny},
		{"ForAnyValue keys", doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*","Condition":{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"cmk:org"}}}`), userA, "kms:Encrypt", orgA, allowed},
		{"ForAnyValue keys, no context", doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*","Condition":{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"cmk:org"}}}`), userA, "kms:Encrypt", nil, implicitDeny},
		{"StringLike on the context", doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*","Condition":{"StringLike":{"kms:EncryptionContext:cmk:org":"org-*"}}}`), userA, "kms:Encrypt", orgB, allowed},
		{"IfExists without the key", doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*","Condition":{"StringEqualsIfExists":{"kms:EncryptionContext:cmk:org":"org-a"}}}`), userA, "kms:Encrypt", nil, allowed},
		{"IfExists with another value", doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*","Condition":{"StringEqualsIfExists":{"kms:EncryptionContext:cmk:org":"org-a"}}}`), userA, "kms:Encrypt", orgB, implicitDeny},
		{"Null: context required", doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*","Condition":{"Null":{"kms:EncryptionContextKeys":"false"}}}`), userA, "kms:Encrypt", nil, implicitDeny},
		{"condition keys are case-insensitive", doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*","Condition":{"StringEquals":{"AWS:PrincipalAccount":"111122223333"}}}`), userA, "kms:Encrypt", nil, allowed},
		{"values are case-sensitive", doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*","Condition":{"StringEquals":{"kms:EncryptionContext:cmk:org":"ORG-A"}}}`), userA, "kms:Encrypt", orgA, implicitDeny},
		{"session ARN as principal", doc(`{"Effect":"Allow","Principal":{"AWS":"arn:aws:sts::444455556666:assumed-role/cmk/s"},"Action":"kms:Encrypt","Resource":"*"}`), platformRole, "kms:Encrypt", nil, allowed},
		{"one statement object", fmt.Sprintf(`{"Statement":%s}`, ownerStmt), userA, "kms:Decrypt", nil, allowed},
	} {
		p, err := parsePolicy(tc.policy)
		if err != nil {
			t.Errorf("%s: parsePolicy: %v", tc.name, err)
			continue
		}
		if got := p.evaluate(newRequest(tc.c, tc.action, keyARN, tc.ec)); got != tc.want {
			t.Errorf("%s: evaluate = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestParsePolicyRefuses(t *testing.T) {
	for _, tc := range []struct{ name, policy, want string }{
		{"not JSON", `{`, "not a JSON object"},
		{"no statement", `{"Version":"2012-10-17"}`, "no Statement"},
		{"bad effect", `{"Statement":[{"Effect":"Maybe","Principal":"*","Action":"kms:*","Resource":"*"}]}`, "effect"},
		{"no principal", `{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}`, "no Principal"},
		{"service principal", `{"Statement":[{"Effect":"Allow","Principal":{"Service":"s3.amazonaws.com"},"Action":"kms:*","Resource":"*"}]}`, "principal type"},
		{"bad principal", `{"Statement":[{"Effect":"Allow","Principal":{"AWS":"bob"},"Action":"kms:*","Resource":"*"}]}`, "principal \"bob\""},
		{"non-kms action", `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"*"}]}`, "kms: actions"},
		{"NotAction", `{"Statement":[{"Effect":"Allow","Principal":"*","NotAction":"kms:Decrypt","Resource":"*"}]}`, "NotAction"},
		{"unknown operator", `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"NumericLessThan":{"kms:x":"1"}}}]}`, "NumericLessThan"},
		{"unknown qualifier", `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"ForSome:StringEquals":{"kms:x":"1"}}}]}`, "qualifier"},
		{"too large", `{"Statement":[` + strings.Repeat(" ", maxPolicyBytes) + `]}`, "at most"},
	} {
		_, err := parsePolicy(tc.policy)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: parsePolicy error = %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestGlob(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true}, {"kms:*", "kms:decrypt", true}, {"kms:reencrypt*", "kms:reencryptfrom", true},
		{"kms:reencrypt*", "kms:encrypt", false}, {"a?c", "abc", true}, {"a?c", "ac", false},
		{"*a*b*", "xxaxxbxx", true}, {"*a*b", "xxaxxbx", false}, {"", "", true}, {"", "a", false},
	} {
		if got := glob(tc.pattern, tc.s); got != tc.want {
			t.Errorf("glob(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}
