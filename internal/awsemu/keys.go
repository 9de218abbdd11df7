package awsemu

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
)

const (
	stateEnabled         = "Enabled"
	stateDisabled        = "Disabled"
	statePendingDeletion = "PendingDeletion"

	rotationAutomatic = "AUTOMATIC"
	rotationOnDemand  = "ON_DEMAND"

	// AWS's bounds on the pending window of ScheduleKeyDeletion and on the
	// automatic rotation period.
	minPendingDays, maxPendingDays, defaultPendingDays = 7, 30, 30
	minRotationDays, maxRotationDays, defaultRotation  = 90, 2560, 365
)

type key struct {
	id, arn, account string
	description      string
	created          time.Time
	state            string
	deletionDate     time.Time
	pendingDays      int
	policyText       string
	policy           *policy
	materials        []material // oldest first; the last is current

	rotationEnabled bool
	rotationDays    int
	nextRotation    time.Time
	onDemandStarted time.Time
}

type material struct {
	id      string // 64 hex digits, as AWS's KeyMaterialId
	secret  []byte // 32 bytes
	created time.Time
	kind    string // "" for the original material, else how it came
}

func defaultPolicy(acct string) string {
	return fmt.Sprintf(`{"Version":"2012-10-17","Id":"key-default-1","Statement":[{"Sid":"Enable IAM User Permissions",`+
		`"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::%s:root"},"Action":"kms:*","Resource":"*"}]}`, acct)
}

func (e *Emulator) createKeyLocked(acct, description, policyText string) (*key, *apiError) {
	if policyText == "" {
		policyText = defaultPolicy(acct)
	}
	p, err := parsePolicy(policyText)
	if err != nil {
		return nil, errMalformedPolicy(err)
	}
	id, err := e.newUUID()
	if err != nil {
		return nil, errInternal(err)
	}
	now := e.now().UTC()
	k := &key{
		id: id, arn: fmt.Sprintf("arn:aws:kms:%s:%s:key/%s", e.region, acct, id), account: acct,
		description: description, created: now, state: stateEnabled, policyText: policyText, policy: p,
	}
	m, err := e.newMaterial(now, "")
	if err != nil {
		return nil, errInternal(err)
	}
	k.materials = []material{m}
	e.keys[id] = k
	return k, nil
}

func (e *Emulator) newMaterial(now time.Time, kind string) (material, error) {
	b, err := e.randomBytes(64)
	if err != nil {
		return material{}, err
	}
	return material{id: hex.EncodeToString(b[:32]), secret: b[32:], created: now, kind: kind}, nil
}

func (e *Emulator) rotateLocked(k *key, kind string, at time.Time) error {
	m, err := e.newMaterial(at.UTC(), kind)
	if err != nil {
		return err
	}
	k.materials = append(k.materials, m)
	if kind == rotationOnDemand {
		k.onDemandStarted = at.UTC()
	}
	return nil
}

// expireLocked brings a key up to the clock: deletes it when its deletion
// date has passed (reporting true) and applies the automatic rotations
// that fell due.
func (e *Emulator) expireLocked(k *key) bool {
	now := e.now()
	if k.state == statePendingDeletion && !now.Before(k.deletionDate) {
		delete(e.keys, k.id)
		if a := e.accounts[k.account]; a != nil {
			for name, id := range a.aliases {
				if id == k.id {
					delete(a.aliases, name)
				}
			}
		}
		return true
	}
	// Bounded: one rotation per period, and the period is at least 90 days.
	for i := 0; k.rotationEnabled && k.state == stateEnabled && !now.Before(k.nextRotation) && i < 1000; i++ {
		if e.rotateLocked(k, rotationAutomatic, k.nextRotation) != nil {
			break
		}
		k.nextRotation = k.nextRotation.AddDate(0, 0, k.rotationDays)
	}
	return false
}

type arnParts struct {
	region, account, resource string // resource: key/{id} or alias/{name}
}

var kmsARN = regexp.MustCompile(`^arn:aws:kms:([a-z0-9-]+):([0-9]{12}):((?:key/[A-Za-z0-9-]+)|(?:alias/[A-Za-z0-9/_-]+))$`)

func parseKeyARN(s string) (arnParts, error) {
	m := kmsARN.FindStringSubmatch(s)
	if m == nil {
		return arnParts{}, errors.New("not a KMS key or alias ARN")
	}
	return arnParts{region: m[1], account: m[2], resource: m[3]}, nil
}

// resolveLocked finds a key of acct by resource: key/{id}, alias/{name},
// a bare key id or an alias name. Keys past their deletion date are gone.
func (e *Emulator) resolveLocked(acct, ref string) *key {
	a := e.accounts[acct]
	if a == nil {
		return nil
	}
	var id string
	switch {
	case strings.HasPrefix(ref, "alias/"):
		id = a.aliases[ref]
	case strings.HasPrefix(ref, "key/"):
		id = strings.TrimPrefix(ref, "key/")
	default:
		id = ref
	}
	k := e.keys[id]
	if k == nil || k.account != acct || e.expireLocked(k) {
		return nil
	}
	return k
}

var aliasPattern = regexp.MustCompile(`^alias/[A-Za-z0-9/_-]{1,250}$`)

func (e *Emulator) createAliasLocked(acct, alias string, k *key) error {
	if !aliasPattern.MatchString(alias) || strings.HasPrefix(alias, "alias/aws/") {
		return errValidation("1 validation error detected: Value '" + alias + "' at 'aliasName' failed to satisfy constraint: " +
			"Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$ and start with alias/ (alias/aws/ is reserved)")
	}
	a := e.accounts[acct]
	if _, ok := a.aliases[alias]; ok {
		return &apiError{status: 400, code: "AlreadyExistsException",
			msg: fmt.Sprintf("An alias with the name arn:aws:kms:%s:%s:%s already exists", e.region, acct, alias)}
	}
	a.aliases[alias] = k.id
	return nil
}

// Ciphertext blob: version byte, key id (16 bytes), material id (32
// bytes), GCM nonce (12 bytes), then AES-256-GCM of the plaintext. The
// additional data is the header followed by the encryption context, each
// pair length-prefixed in key order, so neither can change.
const (
	blobVersion = 0x01
	blobHeader  = 1 + 16 + 32 + 12
)

func contextAAD(header []byte, ec map[string]string) []byte {
	aad := append([]byte(nil), header...)
	names := make([]string, 0, len(ec))
	for k := range ec {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		aad = binary.BigEndian.AppendUint32(aad, uint32(len(k)))
		aad = append(aad, k...)
		aad = binary.BigEndian.AppendUint32(aad, uint32(len(ec[k])))
		aad = append(aad, ec[k]...)
	}
	return aad
}

func (e *Emulator) seal(k *key, plaintext []byte, ec map[string]string) ([]byte, error) {
	m := k.materials[len(k.materials)-1]
	kid, err := hex.DecodeString(strings.ReplaceAll(k.id, "-", ""))
	if err != nil {
		return nil, err
	}
	mid, err := hex.DecodeString(m.id)
	if err != nil {
		return nil, err
	}
	nonce, err := e.randomBytes(12)
	if err != nil {
		return nil, err
	}
	header := append(append(append([]byte{blobVersion}, kid...), mid...), nonce...)
	aead, err := gcm(m.secret)
	if err != nil {
		return nil, err
	}
	return aead.Seal(header, nonce, plaintext, contextAAD(header, ec)), nil
}

// blobKeyID reads the key id a blob names, or "" when it is not a blob.
func blobKeyID(blob []byte) string {
	if len(blob) < blobHeader+16 || blob[0] != blobVersion {
		return ""
	}
	h := hex.EncodeToString(blob[1:17])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// open decrypts a blob of k; it reports the material used.
func open(k *key, blob []byte, ec map[string]string) ([]byte, string, bool) {
	if len(blob) < blobHeader+16 || blob[0] != blobVersion {
		return nil, "", false
	}
	mid := hex.EncodeToString(blob[17:49])
	for _, m := range k.materials {
		if m.id != mid {
			continue
		}
		aead, err := gcm(m.secret)
		if err != nil {
			return nil, "", false
		}
		pt, err := aead.Open(nil, blob[49:blobHeader], blob[blobHeader:], contextAAD(blob[:blobHeader], ec))
		if err != nil {
			return nil, "", false
		}
		return pt, mid, true
	}
	return nil, "", false
}

func gcm(secret []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(secret)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}
