package awsemu

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// DefaultRegion is the Region an emulator serves when Options.Region is empty.
const DefaultRegion = "us-east-1"

// Options configures an emulator. Zero values are usable.
type Options struct {
	Region string           // the one Region served; DefaultRegion when empty
	Now    func() time.Time // the clock; time.Now when nil
	Rand   io.Reader        // randomness for key material, ids and nonces; crypto/rand when nil
}

// Emulator is a local AWS KMS. It is safe for concurrent use; serve it with
// net/http (it implements http.Handler).
type Emulator struct {
	region string
	now    func() time.Time
	rand   io.Reader
	randMu sync.Mutex // Options.Rand need not be safe for concurrent use

	mu         sync.Mutex
	accounts   map[string]*account
	principals map[string]*principal // by ARN
	creds      map[string]*credential
	keys       map[string]*key // by key id (UUID)
	throttled  bool
	faultCode  int
	latency    time.Duration
	limits     map[string]*rateLimit // by account id
	requests   int
}

type account struct {
	id      string
	aliases map[string]string // alias name (alias/…) → key id
}

type principal struct {
	arn     string
	account string
	role    bool
}

type credential struct {
	accessKeyID string
	secret      string
	token       string // session token; empty for long-term keys
	expires     time.Time
	principal   string // policy principal: user or role ARN
	caller      string // the ARN AWS reports: user ARN or assumed-role session ARN
	account     string
}

type rateLimit struct {
	limit  int
	window time.Duration
	start  time.Time
	count  int
}

// Credentials are an access key the emulator issued.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string    // set for role sessions
	Expires         time.Time // zero for long-term keys
	Principal       string    // the user or role ARN key policies name
	Caller          string    // the ARN the emulator reports for the caller
	Account         string
}

// New returns an emulator with no accounts.
func New(o Options) *Emulator {
	if o.Region == "" {
		o.Region = DefaultRegion
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	return &Emulator{
		region: o.Region, now: o.Now, rand: o.Rand,
		accounts: map[string]*account{}, principals: map[string]*principal{},
		creds: map[string]*credential{}, keys: map[string]*key{}, limits: map[string]*rateLimit{},
	}
}

// Region is the Region the emulator serves.
func (e *Emulator) Region() string { return e.region }

var (
	accountIDPattern = regexp.MustCompile(`^[0-9]{12}$`)
	iamNamePattern   = regexp.MustCompile(`^[A-Za-z0-9+=,.@_-]{1,64}$`)
)

// CreateAccount adds an AWS account (twelve digits).
func (e *Emulator) CreateAccount(id string) error {
	if !accountIDPattern.MatchString(id) {
		return fmt.Errorf("account id %q: want twelve digits, e.g. 111122223333", id)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.accounts[id]; ok {
		return fmt.Errorf("account %s already exists", id)
	}
	e.accounts[id] = &account{id: id, aliases: map[string]string{}}
	return nil
}

func (e *Emulator) addPrincipal(acct, kind, name string) (*principal, error) {
	if _, ok := e.accounts[acct]; !ok {
		return nil, fmt.Errorf("account %s does not exist: create it with CreateAccount first", acct)
	}
	if !iamNamePattern.MatchString(name) {
		return nil, fmt.Errorf("%s name %q: use 1 to 64 letters, digits or +=,.@_-", kind, name)
	}
	arn := fmt.Sprintf("arn:aws:iam::%s:%s/%s", acct, kind, name)
	if _, ok := e.principals[arn]; ok {
		return nil, fmt.Errorf("%s already exists", arn)
	}
	p := &principal{arn: arn, account: acct, role: kind == "role"}
	e.principals[arn] = p
	return p, nil
}

// CreateUser adds an IAM user to an account and issues it a long-term
// access key.
func (e *Emulator) CreateUser(acct, name string) (Credentials, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p, err := e.addPrincipal(acct, "user", name)
	if err != nil {
		return Credentials{}, err
	}
	return e.issueLocked(p, p.arn, "", 0)
}

// CreateRole adds an IAM role to an account and returns its ARN. Roles
// have no long-term keys: AssumeRole issues session credentials.
func (e *Emulator) CreateRole(acct, name string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p, err := e.addPrincipal(acct, "role", name)
	if err != nil {
		return "", err
	}
	return p.arn, nil
}

// AssumeRole issues session credentials (with a session token) for a role,
// valid for ttl. Key policies name the role ARN; the caller is reported as
// arn:aws:sts::{account}:assumed-role/{role}/{session}.
func (e *Emulator) AssumeRole(roleARN, session string, ttl time.Duration) (Credentials, error) {
	if !iamNamePattern.MatchString(session) {
		return Credentials{}, fmt.Errorf("session name %q: use 1 to 64 letters, digits or +=,.@_-", session)
	}
	if ttl < 15*time.Minute || ttl > 12*time.Hour {
		return Credentials{}, fmt.Errorf("session duration %v: AWS allows 15 minutes to 12 hours", ttl)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	p, ok := e.principals[roleARN]
	if !ok || !p.role {
		return Credentials{}, fmt.Errorf("role %s does not exist: create it with CreateRole first", roleARN)
	}
	name := roleARN[strings.LastIndex(roleARN, "/")+1:]
	caller := fmt.Sprintf("arn:aws:sts::%s:assumed-role/%s/%s", p.account, name, session)
	return e.issueLocked(p, caller, session, ttl)
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

func (e *Emulator) issueLocked(p *principal, caller, session string, ttl time.Duration) (Credentials, error) {
	b, err := e.randomBytes(10 + 30 + 32)
	if err != nil {
		return Credentials{}, err
	}
	prefix := "AKIA"
	if session != "" {
		prefix = "ASIA"
	}
	c := &credential{
		accessKeyID: prefix + idEncoding.EncodeToString(b[:10]),
		secret:      base64.RawStdEncoding.EncodeToString(b[10:40]),
		principal:   p.arn, caller: caller, account: p.account,
	}
	if session != "" {
		c.token = base64.RawStdEncoding.EncodeToString(b[40:])
		c.expires = e.now().Add(ttl).UTC()
	}
	e.creds[c.accessKeyID] = c
	return Credentials{AccessKeyID: c.accessKeyID, SecretAccessKey: c.secret, SessionToken: c.token,
		Expires: c.expires, Principal: c.principal, Caller: c.caller, Account: c.account}, nil
}

// DeleteAccessKey makes an access key unknown (requests signed with it are
// answered UnrecognizedClientException).
func (e *Emulator) DeleteAccessKey(accessKeyID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.creds, accessKeyID)
}

// KeyOptions are the settings of a new key made through the admin API.
type KeyOptions struct {
	Description string
	Policy      string // key policy JSON; empty for the default policy (the account's root may do everything)
}

// KeyInfo is what the admin API reports about a key.
type KeyInfo struct {
	KeyID           string
	ARN             string
	Account         string
	State           string // Enabled, Disabled, PendingDeletion
	Policy          string
	MaterialIDs     []string // oldest first; the last is current
	RotationEnabled bool
	DeletionDate    time.Time
}

// CreateKey makes a symmetric encryption key in an account.
func (e *Emulator) CreateKey(acct string, o KeyOptions) (KeyInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.accounts[acct]; !ok {
		return KeyInfo{}, fmt.Errorf("account %s does not exist: create it with CreateAccount first", acct)
	}
	k, apiErr := e.createKeyLocked(acct, o.Description, o.Policy)
	if apiErr != nil {
		return KeyInfo{}, apiErr
	}
	return k.info(), nil
}

// PutKeyPolicy replaces a key's policy (key id, key ARN or alias ARN).
func (e *Emulator) PutKeyPolicy(keyRef, policy string) error {
	return e.adminKey(keyRef, func(k *key) error {
		p, err := parsePolicy(policy)
		if err != nil {
			return err
		}
		k.policyText, k.policy = policy, p
		return nil
	})
}

// SetKeyEnabled enables or disables a key, as EnableKey and DisableKey do.
func (e *Emulator) SetKeyEnabled(keyRef string, enabled bool) error {
	return e.adminKey(keyRef, func(k *key) error {
		if k.state == statePendingDeletion {
			return errors.New("the key is pending deletion: cancel the deletion first")
		}
		k.state = stateDisabled
		if enabled {
			k.state = stateEnabled
		}
		return nil
	})
}

// RotateKey gives a key new key material (an on-demand rotation).
func (e *Emulator) RotateKey(keyRef string) error {
	return e.adminKey(keyRef, func(k *key) error {
		return e.rotateLocked(k, rotationOnDemand, e.now())
	})
}

// Key reports a key's state.
func (e *Emulator) Key(keyRef string) (KeyInfo, error) {
	var info KeyInfo
	err := e.adminKey(keyRef, func(k *key) error { info = k.info(); return nil })
	return info, err
}

// CreateAlias points alias/{name} of the key's account at the key.
func (e *Emulator) CreateAlias(alias, keyRef string) error {
	return e.adminKey(keyRef, func(k *key) error {
		return e.createAliasLocked(k.account, alias, k)
	})
}

func (e *Emulator) adminKey(keyRef string, fn func(*key) error) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var k *key
	if a, err := parseKeyARN(keyRef); err == nil {
		k = e.resolveLocked(a.account, a.resource)
	} else {
		k = e.keys[keyRef]
		if k != nil && e.expireLocked(k) {
			k = nil
		}
	}
	if k == nil {
		return fmt.Errorf("key %s does not exist", keyRef)
	}
	if err := fn(k); err != nil {
		return err
	}
	return nil
}

// SetThrottled makes every request answer ThrottlingException while on.
func (e *Emulator) SetThrottled(on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.throttled = on
}

// SetFault makes every request wait latency (or until the client gives up)
// and, when status is not zero, answer that HTTP status with a service
// error (KMSInternalException for 500, ServiceUnavailableException
// otherwise). SetFault(0, 0) turns faults off.
func (e *Emulator) SetFault(status int, latency time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faultCode, e.latency = status, latency
}

// SetRateLimit allows an account limit requests per window (on the
// emulator's clock); beyond that it is answered ThrottlingException.
// A limit of zero removes the limit.
func (e *Emulator) SetRateLimit(acct string, limit int, window time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if limit <= 0 || window <= 0 {
		delete(e.limits, acct)
		return
	}
	e.limits[acct] = &rateLimit{limit: limit, window: window}
}

// Requests counts the requests that passed authentication.
func (e *Emulator) Requests() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.requests
}

func (e *Emulator) randomBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	e.randMu.Lock()
	defer e.randMu.Unlock()
	if _, err := io.ReadFull(e.rand, b); err != nil {
		return nil, fmt.Errorf("read randomness: %w", err)
	}
	return b, nil
}

func (e *Emulator) newUUID() (string, error) {
	b, err := e.randomBytes(16)
	if err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

func (k *key) info() KeyInfo {
	ids := make([]string, len(k.materials))
	for i, m := range k.materials {
		ids[i] = m.id
	}
	return KeyInfo{KeyID: k.id, ARN: k.arn, Account: k.account, State: k.state, Policy: k.policyText,
		MaterialIDs: ids, RotationEnabled: k.rotationEnabled, DeletionDate: k.deletionDate}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
