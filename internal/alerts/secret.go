package alerts

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/cmk-project/cmk/internal/store"
	"github.com/cmk-project/cmk/internal/systemkey"
)

// Webhook signing secrets at rest.
//
// A stored secret is sealedPrefix followed by unpadded base64url of a
// 12-byte nonce and the AES-256-GCM ciphertext of the secret, under a key
// derived from the system key for this use alone (secretKeyLabel). The
// associated data names the org and the webhook, so a sealed secret copied
// onto another webhook's row — another org's, or another of the same
// org's — does not open.
//
// Rows written before secrets were sealed hold the secret itself: 64
// lowercase hex digits, which never contain the prefix's '.'. They still
// open, and the deliverer seals them when it starts (SealPlaintextSecrets).
const (
	sealedPrefix = "cmkws1."
	// secretKeyLabel names the derived key. Changing it makes every stored
	// secret unreadable.
	secretKeyLabel = "cmk webhook signing secret v1"
	// secretAAD prefixes the associated data, so nothing else sealed under
	// a key from the same label could pass for a webhook secret.
	secretAAD = "cmk webhook secret\x00"
)

// ErrSecretUnreadable is returned by SecretBox.Open when a stored secret
// does not open: it was sealed for another webhook or org or under another
// system key, or it is damaged.
var ErrSecretUnreadable = errors.New("webhook signing secret does not open")

// SecretBox seals webhook signing secrets for storage and opens them to
// sign deliveries.
type SecretBox struct {
	aead cipher.AEAD
	rand io.Reader
}

// NewSecretBox derives the webhook secret key from the system key.
func NewSecretBox(sys *systemkey.Key) (*SecretBox, error) {
	aead, err := sys.DeriveAEAD(secretKeyLabel)
	if err != nil {
		return nil, fmt.Errorf("webhook secret key: %w", err)
	}
	return &SecretBox{aead: aead, rand: rand.Reader}, nil
}

// secretAD binds a sealed secret to its org and webhook; each part is
// length-prefixed so no two (org, webhook) pairs share associated data.
func secretAD(org, webhookID string) []byte {
	b := []byte(secretAAD)
	for _, s := range []string{org, webhookID} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

// Seal returns secret in its stored form, bound to org and webhookID.
func (b *SecretBox) Seal(org, webhookID, secret string) (string, error) {
	nonce := make([]byte, b.aead.NonceSize(), b.aead.NonceSize()+len(secret)+b.aead.Overhead())
	if _, err := io.ReadFull(b.rand, nonce); err != nil {
		return "", fmt.Errorf("seal webhook secret: nonce: %w", err)
	}
	out := b.aead.Seal(nonce, nonce, []byte(secret), secretAD(org, webhookID))
	return sealedPrefix + base64.RawURLEncoding.EncodeToString(out), nil
}

// Open returns the secret of a stored value that Seal made for the same org
// and webhook, or the secret itself from a row written before secrets were
// sealed. Anything else is ErrSecretUnreadable.
func (b *SecretBox) Open(org, webhookID, stored string) (string, error) {
	if isPlaintextSecret(stored) {
		return stored, nil
	}
	enc, ok := strings.CutPrefix(stored, sealedPrefix)
	if !ok {
		return "", ErrSecretUnreadable
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(enc)
	n := b.aead.NonceSize()
	if err != nil || len(raw) < n+b.aead.Overhead() {
		return "", ErrSecretUnreadable
	}
	pt, err := b.aead.Open(nil, raw[:n], raw[n:], secretAD(org, webhookID))
	if err != nil {
		return "", ErrSecretUnreadable
	}
	return string(pt), nil
}

// isPlaintextSecret reports whether stored is a secret as rows held it
// before secrets were sealed: 64 lowercase hex digits.
func isPlaintextSecret(stored string) bool {
	if len(stored) != 64 {
		return false
	}
	for _, c := range []byte(stored) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// SecretStore is the part of the state store that SealPlaintextSecrets uses
// (*store.Store implements it).
type SecretStore interface {
	// AllWebhooks lists every org's webhooks.
	AllWebhooks(ctx context.Context) ([]store.Webhook, error)
	// ReplaceWebhookSecret swaps a webhook's stored secret from old to sealed
	// in one compare-and-swap; it reports false when the webhook is gone or
	// its secret is no longer old.
	ReplaceWebhookSecret(ctx context.Context, id, old, sealed string) (bool, error)
}

var _ SecretStore = (*store.Store)(nil)

// SealPlaintextSecrets seals every secret still stored as plaintext and
// returns how many it sealed. Each row is replaced by compare-and-swap, so
// replicas starting together do not overwrite each other.
func SealPlaintextSecrets(ctx context.Context, st SecretStore, box *SecretBox) (int, error) {
	hooks, err := st.AllWebhooks(ctx)
	if err != nil {
		return 0, fmt.Errorf("seal plaintext webhook secrets: %w", err)
	}
	n := 0
	for _, w := range hooks {
		if !isPlaintextSecret(w.SealedSecret) {
			continue
		}
		sealed, err := box.Seal(w.OrgID, w.ID, w.SealedSecret)
		if err != nil {
			return n, err
		}
		ok, err := st.ReplaceWebhookSecret(ctx, w.ID, w.SealedSecret, sealed)
		if err != nil {
			return n, fmt.Errorf("seal plaintext webhook secrets: %w", err)
		}
		if ok {
			n++
		}
	}
	return n, nil
}
