package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"filippo.io/age"

	"github.com/cmk-project/cmk/internal/envelope"
)

// AgeTarget is the least ratio of our file encryption throughput to age's.
const AgeTarget = 1.0

// AgeConfig sizes the comparison with age.
type AgeConfig struct {
	Common
	// Size of the file. Default 1 GiB.
	Size int64
	// Trials is the number of interleaved pairs. Default 5.
	Trials int
}

func (c *AgeConfig) defaults() {
	if c.Size == 0 {
		c.Size = 1 << 30
	}
	if c.Trials == 0 {
		c.Trials = 5
	}
}

// AgeResult compares the envelope format's file encryption with age's
// (X25519 recipient), in MiB/s.
type AgeResult struct {
	Size    int64      `json:"size"`
	Encrypt Comparison `json:"encrypt"`
	Decrypt Comparison `json:"decrypt"`
}

// Age encrypts and decrypts the same file with the envelope format (a
// stream under a random data key, as the lake seals files) and with
// filippo.io/age to one X25519 recipient, alternating pair by pair. The
// plaintext and both ciphertexts are files read from the page cache;
// output goes to io.Discard, so the figures are of the crypto and the
// copying around it, not of the disk.
func Age(ctx context.Context, cfg AgeConfig) (*AgeResult, error) {
	cfg.defaults()
	dir, cleanup, err := cfg.workDir("age")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	src := filepath.Join(dir, "plain")
	cfg.progress("age: writing a %s file", humanBytes(cfg.Size))
	if err := writeFile(src, cfg.Size, 3); err != nil {
		return nil, err
	}
	dek := make([]byte, 32)
	rand.Read(dek)
	const keyID = "0b6f2c1e-8a51-4d2e-9b7a-3f6c2d9e1a40"
	bind := envelope.Binding{Org: "BENCH@CmkOrg", Sandbox: "prod", Store: "lake", Object: "bench/file"}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, err
	}

	ours := func(dst io.Writer) (io.WriteCloser, error) { return envelope.NewWriter(dst, dek, keyID, bind) }
	theirs := func(dst io.Writer) (io.WriteCloser, error) { return age.Encrypt(dst, id.Recipient()) }
	oursOpen := func(src io.Reader) (io.Reader, error) {
		return envelope.NewReader(src, bind, func(string) ([]byte, error) { return dek, nil })
	}
	theirsOpen := func(src io.Reader) (io.Reader, error) { return age.Decrypt(src, id) }

	// The ciphertexts the decryption reads.
	for _, c := range []struct {
		path string
		enc  func(io.Writer) (io.WriteCloser, error)
	}{{src + ".envelope", ours}, {src + ".age", theirs}} {
		if err := encryptFile(src, c.path, c.enc); err != nil {
			return nil, err
		}
		if err := readAll(c.path); err != nil {
			return nil, err
		}
	}
	if err := readAll(src); err != nil {
		return nil, err
	}

	encrypt := func(enc func(io.Writer) (io.WriteCloser, error)) func(int) (float64, error) {
		return func(int) (float64, error) {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			start := time.Now()
			if err := encryptFile(src, "", enc); err != nil {
				return 0, err
			}
			return mbps(cfg.Size, time.Since(start)), nil
		}
	}
	decrypt := func(path string, open func(io.Reader) (io.Reader, error)) func(int) (float64, error) {
		return func(int) (float64, error) {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			f, err := os.Open(path)
			if err != nil {
				return 0, err
			}
			defer f.Close()
			start := time.Now()
			r, err := open(f)
			if err != nil {
				return 0, err
			}
			n, err := io.Copy(io.Discard, r)
			if err != nil {
				return 0, fmt.Errorf("decrypt %s: %w", path, err)
			}
			if n != cfg.Size {
				return 0, fmt.Errorf("decrypt %s: %d bytes, want %d", path, n, cfg.Size)
			}
			return mbps(n, time.Since(start)), nil
		}
	}

	res := &AgeResult{Size: cfg.Size}
	cfg.progress("age: encryption, %d interleaved pairs", cfg.Trials)
	o, b, r, err := pairs(cfg.Trials, encrypt(ours), encrypt(theirs))
	if err != nil {
		return nil, err
	}
	res.Encrypt = compare("encrypt", "MiB/s", AgeTarget, o, b, r)
	cfg.progress("age: decryption, %d interleaved pairs", cfg.Trials)
	o, b, r, err = pairs(cfg.Trials, decrypt(src+".envelope", oursOpen), decrypt(src+".age", theirsOpen))
	if err != nil {
		return nil, err
	}
	res.Decrypt = compare("decrypt", "MiB/s", AgeTarget, o, b, r)
	return res, nil
}

// encryptFile encrypts the file src into dst, or into io.Discard when dst
// is empty.
func encryptFile(src, dst string, enc func(io.Writer) (io.WriteCloser, error)) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	var out io.Writer = io.Discard
	if dst != "" {
		f, err := os.Create(dst)
		if err != nil {
			return err
		}
		defer f.Close()
		out = f
	}
	w, err := enc(out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, in); err != nil {
		return fmt.Errorf("encrypt %s: %w", src, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("encrypt %s: %w", src, err)
	}
	if f, ok := out.(*os.File); ok {
		return f.Close()
	}
	return nil
}

func (r *AgeResult) String() string {
	return comparisonTable(fmt.Sprintf("age: one %s file, envelope format (AES-256-GCM) vs filippo.io/age (X25519, ChaCha20-Poly1305)", humanBytes(r.Size)),
		"envelope", "age", r.Encrypt, r.Decrypt).String()
}
