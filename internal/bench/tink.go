package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/profile"
)

// TinkConfig sizes the comparison with Tink's KMS envelope AEAD.
type TinkConfig struct {
	Common
	// OurRecords and TinkRecords are the records each side encrypts and
	// decrypts per round. Tink calls the vault twice per record, so it gets
	// fewer. Defaults 20,000 and 200.
	OurRecords, TinkRecords int
	// RecordSize is the size of each JSON record. Default 1 KiB.
	RecordSize int
	// Rounds is the number of interleaved pairs. Default 3.
	Rounds int
}

func (c *TinkConfig) defaults() {
	if c.OurRecords == 0 {
		c.OurRecords = 20_000
	}
	if c.TinkRecords == 0 {
		c.TinkRecords = 200
	}
	if c.RecordSize == 0 {
		c.RecordSize = 1 << 10
	}
	if c.Rounds == 0 {
		c.Rounds = 3
	}
}

// RecordPath is one side of the Tink comparison.
type RecordPath struct {
	Records        int     `json:"records"` // over all rounds
	PerSecond      Spread  `json:"recordsPerSecond"`
	VaultCalls     int     `json:"vaultCalls"`
	CallsPerRecord float64 `json:"vaultCallsPerRecord"`
}

// TinkResult compares our profile-record path with Tink's KMS envelope
// AEAD, per record encrypted and decrypted.
type TinkResult struct {
	RecordSize int        `json:"recordSize"`
	Ours       RecordPath `json:"ours"`
	Tink       RecordPath `json:"tink"`
	// Speedup is ours over Tink in records per second, round by round.
	Speedup Spread `json:"speedup"`
	// WarmupCalls are our first use of the data key (one unwrap), not counted.
	WarmupCalls VaultOps `json:"warmupCalls"`
}

// Tink measures encrypt+decrypt of JSON records on our profile-record path
// (profile.Store Upsert then Get, with the service's key resolver, on an
// in-memory backend so no database is timed) against Tink-Go's KMS
// envelope AEAD with an AES-256-GCM DEK per record, whose key-encryption
// AEAD is the same Key Vault key reached through the service's provider.
// Tink wraps a fresh DEK for every record and unwraps it to decrypt, so it
// calls the vault twice per record; our path unwraps a data key once and
// keeps it.
func Tink(ctx context.Context, cfg TinkConfig) (*TinkResult, error) {
	cfg.defaults()
	w, _, done, err := enabledWorld(ctx, cfg.Common, "tink", devenv.Options{NoMonitor: true})
	if err != nil {
		return nil, err
	}
	defer done()
	org, emu := w.env.Org, w.env.Emu
	store := &profile.Store{Backend: newMemRecords(), Keys: w.env.Svc.Keys}
	remote := &vaultAEAD{ctx: ctx, provider: w.env.Svc.Provider, ref: kms.KeyRef{VaultURL: emu.VaultURL(devenv.Vault), Name: devenv.KeyName}}
	env := aead.NewKMSEnvelopeAEAD2(aead.AES256GCMKeyTemplate(), remote)

	doc := jsonRecord("tink", cfg.RecordSize)
	before := vaultOps(emu)
	if err := store.Upsert(ctx, org, "prod", "warm", doc); err != nil {
		return nil, err
	}
	res := &TinkResult{RecordSize: cfg.RecordSize, WarmupCalls: vaultOps(emu).sub(before)}

	side := func(n int, p *RecordPath, one func(i int) error) func(int) (float64, error) {
		return func(round int) (float64, error) {
			before := vaultOps(emu)
			start := time.Now()
			for i := range n {
				if err := one(round*n + i); err != nil {
					return 0, err
				}
			}
			rate := float64(n) / time.Since(start).Seconds()
			p.Records += n
			p.VaultCalls += vaultOps(emu).sub(before).Total()
			return rate, nil
		}
	}
	ours := func(i int) error {
		id := fmt.Sprintf("r%d", i)
		if err := store.Upsert(ctx, org, "prod", id, doc); err != nil {
			return err
		}
		got, err := store.Get(ctx, org, "prod", id)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, doc) {
			return errors.New("our record path returned other bytes")
		}
		return nil
	}
	theirs := func(i int) error {
		ad := []byte(org + "/prod/profile/" + fmt.Sprintf("r%d", i))
		ct, err := env.Encrypt(doc, ad)
		if err != nil {
			return fmt.Errorf("tink encrypt: %w", err)
		}
		got, err := env.Decrypt(ct, ad)
		if err != nil {
			return fmt.Errorf("tink decrypt: %w", err)
		}
		if !bytes.Equal(got, doc) {
			return errors.New("tink returned other bytes")
		}
		return nil
	}
	cfg.progress("tink: %d rounds of %d records (ours) and %d records (Tink)", cfg.Rounds, cfg.OurRecords, cfg.TinkRecords)
	o, t, r, err := pairs(cfg.Rounds, side(cfg.OurRecords, &res.Ours, ours), side(cfg.TinkRecords, &res.Tink, theirs))
	if err != nil {
		return nil, err
	}
	res.Ours.PerSecond, res.Tink.PerSecond, res.Speedup = spreadOf(o), spreadOf(t), spreadOf(r)
	for _, p := range []*RecordPath{&res.Ours, &res.Tink} {
		p.CallsPerRecord = float64(p.VaultCalls) / float64(p.Records)
	}
	return res, nil
}

// vaultAEAD is the key-encryption AEAD Tink's envelope calls: Encrypt is
// wrapKey and Decrypt is unwrapKey of a Key Vault key, through a
// kms.Provider. RSA-OAEP cannot bind associated data, so it refuses any
// (Tink's envelope passes none). The ciphertext carries the key version
// and algorithm the wrap reported, each behind a length byte.
type vaultAEAD struct {
	ctx      context.Context
	provider kms.Provider
	ref      kms.KeyRef
}

var _ tink.AEAD = (*vaultAEAD)(nil)

var errAssociatedData = errors.New("key vault wrapKey cannot bind associated data")

func (a *vaultAEAD) Encrypt(plaintext, associatedData []byte) ([]byte, error) {
	if len(associatedData) > 0 {
		return nil, errAssociatedData
	}
	w, err := a.provider.Wrap(a.ctx, a.ref, plaintext)
	if err != nil {
		return nil, err
	}
	if len(w.KeyVersion) > 255 || len(w.Alg) > 255 {
		return nil, fmt.Errorf("wrap of %s: key version or algorithm longer than 255 bytes", a.ref)
	}
	out := append([]byte{byte(len(w.KeyVersion))}, w.KeyVersion...)
	out = append(append(out, byte(len(w.Alg))), w.Alg...)
	return append(out, w.Ciphertext...), nil
}

func (a *vaultAEAD) Decrypt(ciphertext, associatedData []byte) ([]byte, error) {
	if len(associatedData) > 0 {
		return nil, errAssociatedData
	}
	field := func(b []byte) (string, []byte, bool) {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return "", nil, false
		}
		return string(b[1 : 1+b[0]]), b[1+b[0]:], true
	}
	version, rest, ok := field(ciphertext)
	alg, rest, ok2 := field(rest)
	if !ok || !ok2 {
		return nil, fmt.Errorf("unwrap with %s: ciphertext too short", a.ref)
	}
	return a.provider.Unwrap(a.ctx, a.ref, kms.Wrapped{KeyVersion: version, Alg: alg, Ciphertext: rest})
}

func (r *TinkResult) String() string {
	t := newTable(fmt.Sprintf("tink: encrypt+decrypt of one %s record, our profile-record path vs Tink KMS envelope AEAD (vault wrap/unwrap per record)", humanBytes(int64(r.RecordSize))))
	t.row("", "records/s (median [min – max])", "vault calls / record", "records")
	t.row("ours", r.Ours.PerSecond.format("%.0f"), fmt.Sprintf("%.4f", r.Ours.CallsPerRecord), fmt.Sprint(r.Ours.Records))
	t.row("tink", r.Tink.PerSecond.format("%.1f"), fmt.Sprintf("%.4f", r.Tink.CallsPerRecord), fmt.Sprint(r.Tink.Records))
	t.row("ours / tink", r.Speedup.format("%.0f×"))
	t.row("our warm-up (not counted)", r.WarmupCalls.String())
	return t.String()
}
