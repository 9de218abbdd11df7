package awsemu

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// maxPolicyBytes is AWS's limit on a key policy document.
const maxPolicyBytes = 32 * 1024

type policy struct {
	statements []statement
}

type statement struct {
	sid        string
	allow      bool
	anyone     bool     // Principal "*"
	principals []string // account ids, root ARNs, user/role/session ARNs
	actions    []string
	resources  []string
	conditions []condition
}

type condition struct {
	qualifier string // "", "ForAnyValue", "ForAllValues"
	op        string // base operator without IfExists
	ifExists  bool
	key       string // lower case
	values    []string
}

// strings accepts a JSON string, a list of strings, or (for condition
// values) booleans and numbers.
type stringList []string

func (s *stringList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		var raw []json.RawMessage
		if err := json.Unmarshal(b, &raw); err != nil {
			return err
		}
		for _, r := range raw {
			v, err := scalar(r)
			if err != nil {
				return err
			}
			*s = append(*s, v)
		}
		return nil
	}
	v, err := scalar(b)
	if err != nil {
		return err
	}
	*s = stringList{v}
	return nil
}

func scalar(b []byte) (string, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return "", err
	}
	switch v := v.(type) {
	case string:
		return v, nil
	case bool, float64:
		return strings.TrimSpace(string(b)), nil
	}
	return "", fmt.Errorf("want a string or a list of strings, got %s", b)
}

type rawStatement struct {
	Sid          string                           `json:"Sid"`
	Effect       string                           `json:"Effect"`
	Principal    json.RawMessage                  `json:"Principal"`
	NotPrincipal json.RawMessage                  `json:"NotPrincipal"`
	Action       stringList                       `json:"Action"`
	NotAction    stringList                       `json:"NotAction"`
	Resource     stringList                       `json:"Resource"`
	NotResource  stringList                       `json:"NotResource"`
	Condition    map[string]map[string]stringList `json:"Condition"`
}

var knownOps = map[string]bool{
	"StringEquals": true, "StringNotEquals": true, "StringEqualsIgnoreCase": true, "StringNotEqualsIgnoreCase": true,
	"StringLike": true, "StringNotLike": true, "Bool": true, "Null": true,
}

// parsePolicy reads a key policy document. It refuses what it would not
// evaluate faithfully, so a policy is never half understood.
func parsePolicy(text string) (*policy, error) {
	if len(text) > maxPolicyBytes {
		return nil, fmt.Errorf("the policy is %d bytes; at most %d are allowed", len(text), maxPolicyBytes)
	}
	var doc struct {
		Version   string          `json:"Version"`
		Statement json.RawMessage `json:"Statement"`
	}
	if err := json.Unmarshal([]byte(text), &doc); err != nil {
		return nil, fmt.Errorf("the policy is not a JSON object: %v", err)
	}
	var raws []rawStatement
	st := bytes.TrimSpace(doc.Statement)
	switch {
	case len(st) == 0:
		return nil, errors.New("the policy has no Statement")
	case st[0] == '[':
		if err := json.Unmarshal(st, &raws); err != nil {
			return nil, fmt.Errorf("the Statement: %v", err)
		}
	default:
		var one rawStatement
		if err := json.Unmarshal(st, &one); err != nil {
			return nil, fmt.Errorf("the Statement: %v", err)
		}
		raws = []rawStatement{one}
	}
	p := &policy{}
	for i, r := range raws {
		s, err := parseStatement(r)
		if err != nil {
			return nil, fmt.Errorf("statement %d (%q): %v", i, r.Sid, err)
		}
		p.statements = append(p.statements, s)
	}
	return p, nil
}

func parseStatement(r rawStatement) (statement, error) {
	s := statement{sid: r.Sid, actions: r.Action, resources: r.Resource}
	switch r.Effect {
	case "Allow":
		s.allow = true
	case "Deny":
	default:
		return s, fmt.Errorf("effect %q: want Allow or Deny", r.Effect)
	}
	if len(r.NotPrincipal) > 0 || len(r.NotAction) > 0 || len(r.NotResource) > 0 {
		return s, errors.New("this emulator does not support NotPrincipal, NotAction or NotResource")
	}
	if len(s.actions) == 0 {
		return s, errors.New("no Action")
	}
	for _, a := range s.actions {
		if a != "*" && !strings.HasPrefix(strings.ToLower(a), "kms:") {
			return s, fmt.Errorf("action %q: key policies name kms: actions", a)
		}
	}
	if len(s.resources) == 0 {
		return s, errors.New("no Resource")
	}
	pr := bytes.TrimSpace(r.Principal)
	if len(pr) == 0 {
		return s, errors.New("no Principal")
	}
	if string(pr) == `"*"` {
		s.anyone = true
	} else {
		var m map[string]stringList
		if err := json.Unmarshal(pr, &m); err != nil {
			return s, fmt.Errorf("principal: want \"*\" or {\"AWS\": …}: %v", err)
		}
		for typ, vals := range m {
			if typ != "AWS" {
				return s, fmt.Errorf("principal type %q is not supported (only AWS)", typ)
			}
			for _, v := range vals {
				if v == "*" {
					s.anyone = true
					continue
				}
				if !validPrincipal(v) {
					return s, fmt.Errorf("principal %q: want an account id, an account root ARN, or an IAM user, role or assumed-role ARN", v)
				}
				s.principals = append(s.principals, v)
			}
		}
	}
	for opName, keys := range r.Condition {
		c := condition{op: opName}
		if q, rest, ok := strings.Cut(opName, ":"); ok {
			if q != "ForAnyValue" && q != "ForAllValues" {
				return s, fmt.Errorf("condition qualifier %q: want ForAnyValue or ForAllValues", q)
			}
			c.qualifier, c.op = q, rest
		}
		if base, ok := strings.CutSuffix(c.op, "IfExists"); ok {
			c.op, c.ifExists = base, true
		}
		if !knownOps[c.op] {
			return s, fmt.Errorf("condition operator %q is not supported by this emulator", opName)
		}
		for k, vals := range keys {
			cc := c
			cc.key, cc.values = strings.ToLower(k), vals
			s.conditions = append(s.conditions, cc)
		}
	}
	return s, nil
}

func validPrincipal(v string) bool {
	if accountIDPattern.MatchString(v) {
		return true
	}
	rest, ok := strings.CutPrefix(v, "arn:aws:iam::")
	if !ok {
		rest, ok = strings.CutPrefix(v, "arn:aws:sts::")
		if !ok || !strings.Contains(rest, ":assumed-role/") {
			return false
		}
	}
	acct, res, ok := strings.Cut(rest, ":")
	if !ok || !accountIDPattern.MatchString(acct) {
		return false
	}
	return res == "root" || strings.HasPrefix(res, "user/") || strings.HasPrefix(res, "role/") || strings.HasPrefix(res, "assumed-role/")
}

// request is what a key policy is evaluated against.
type request struct {
	principal string // user or role ARN
	caller    string // user ARN or assumed-role session ARN
	account   string // the caller's account
	action    string // e.g. kms:Decrypt
	resource  string // key ARN
	keys      map[string][]string
}

func newRequest(c *credential, action, resource string, ec map[string]string) request {
	r := request{principal: c.principal, caller: c.caller, account: c.account, action: action, resource: resource,
		keys: map[string][]string{
			"aws:principalaccount": {c.account},
			"aws:principalarn":     {c.principal},
			"kms:calleraccount":    {c.account},
		}}
	if ec != nil {
		var names []string
		for k, v := range ec {
			r.keys["kms:encryptioncontext:"+strings.ToLower(k)] = []string{v}
			names = append(names, k)
		}
		if len(names) > 0 {
			r.keys["kms:encryptioncontextkeys"] = names
		}
	}
	return r
}

type decision int

const (
	implicitDeny decision = iota
	allowed
	explicitDeny
)

func (p *policy) evaluate(r request) decision {
	d := implicitDeny
	for _, s := range p.statements {
		if !s.matches(r) {
			continue
		}
		if !s.allow {
			return explicitDeny
		}
		d = allowed
	}
	return d
}

func (s statement) matches(r request) bool {
	if !s.anyone && !anyOf(s.principals, func(p string) bool { return principalMatches(p, r) }) {
		return false
	}
	if !anyOf(s.actions, func(a string) bool { return glob(strings.ToLower(a), strings.ToLower(r.action)) }) {
		return false
	}
	if !anyOf(s.resources, func(res string) bool { return glob(res, r.resource) }) {
		return false
	}
	for _, c := range s.conditions {
		if !c.holds(r) {
			return false
		}
	}
	return true
}

func principalMatches(p string, r request) bool {
	if p == r.account || p == "arn:aws:iam::"+r.account+":root" {
		return true
	}
	return p == r.principal || p == r.caller
}

func (c condition) holds(r request) bool {
	vals, present := r.keys[c.key]
	if c.op == "Null" {
		return len(c.values) == 1 && (c.values[0] == "true") != present
	}
	negated := strings.HasPrefix(c.op, "StringNot")
	if !present {
		return c.ifExists || c.qualifier == "ForAllValues" || negated
	}
	one := func(v string) bool {
		m := anyOf(c.values, func(w string) bool { return compare(c.op, v, w) })
		if negated {
			return !m
		}
		return m
	}
	if c.qualifier == "ForAllValues" {
		for _, v := range vals {
			if !one(v) {
				return false
			}
		}
		return true
	}
	return anyOf(vals, one)
}

func compare(op, got, want string) bool {
	switch op {
	case "StringEquals", "StringNotEquals":
		return got == want
	case "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase", "Bool":
		return strings.EqualFold(got, want)
	case "StringLike", "StringNotLike":
		return glob(want, got)
	}
	return false
}

func anyOf(xs []string, f func(string) bool) bool {
	for _, x := range xs {
		if f(x) {
			return true
		}
	}
	return false
}

// glob matches s against pattern, where * is any run of characters and ?
// any one character. Iterative, linear in practice.
func glob(pattern, s string) bool {
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
