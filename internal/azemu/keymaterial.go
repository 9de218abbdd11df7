package azemu

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// Key material of a key version: exactly one of priv (RSA), ec (EC) or
// Secret (oct) is set. Material never changes after a version is created,
// so handlers may use it outside the emulator's lock.

// ecKey is an EC private key on one of Key Vault's curves.
type ecKey struct {
	crv  string
	d    *big.Int
	x, y *big.Int
	std  *ecdsa.PrivateKey // nil for P-256K
}

// ecCurves maps Key Vault curve names to their size in bytes and the
// standard-library curve (nil for P-256K, which has its own arithmetic).
var ecCurves = map[string]struct {
	size int
	std  elliptic.Curve
	hash crypto.Hash
	alg  string
}{
	"P-256":  {32, elliptic.P256(), crypto.SHA256, "ES256"},
	"P-256K": {32, nil, crypto.SHA256, "ES256K"},
	"P-384":  {48, elliptic.P384(), crypto.SHA384, "ES384"},
	"P-521":  {66, elliptic.P521(), crypto.SHA512, "ES512"},
}

func canonicalCurve(crv string) (string, bool) {
	for c := range ecCurves {
		if strings.EqualFold(c, crv) {
			return c, true
		}
	}
	return "", false
}

func stdECDH(crv string) ecdh.Curve {
	switch crv {
	case "P-256":
		return ecdh.P256()
	case "P-384":
		return ecdh.P384()
	case "P-521":
		return ecdh.P521()
	}
	return nil
}

// newECKey builds an EC key from its private scalar (big-endian), checking
// that it lies in [1, n-1].
func newECKey(crv string, d []byte) (*ecKey, error) {
	c, ok := ecCurves[crv]
	if !ok {
		return nil, fmt.Errorf("%w: curve %q (P-256, P-256K, P-384 or P-521)", ErrInvalid, crv)
	}
	if c.std == nil {
		dd := new(big.Int).SetBytes(d)
		if dd.Sign() == 0 || dd.Cmp(k1.n) >= 0 {
			return nil, fmt.Errorf("%w: private scalar out of range for %s", ErrInvalid, crv)
		}
		q := k1Mul(k1Base(), dd)
		return &ecKey{crv: crv, d: dd, x: q.x, y: q.y}, nil
	}
	pad := make([]byte, c.size)
	if len(d) > c.size {
		return nil, fmt.Errorf("%w: private scalar too long for %s", ErrInvalid, crv)
	}
	copy(pad[c.size-len(d):], d)
	priv, err := ecdsa.ParseRawPrivateKey(c.std, pad)
	if err != nil {
		return nil, fmt.Errorf("%w: EC private key for %s: %v", ErrInvalid, crv, err)
	}
	pub, err := priv.PublicKey.Bytes() // uncompressed point 04||X||Y
	if err != nil {
		return nil, err
	}
	x := new(big.Int).SetBytes(pub[1 : 1+c.size])
	y := new(big.Int).SetBytes(pub[1+c.size:])
	return &ecKey{crv: crv, d: new(big.Int).SetBytes(pad), x: x, y: y, std: priv}, nil
}

func generateEC(crv string) (*ecKey, error) {
	c, ok := ecCurves[crv]
	if !ok {
		return nil, fmt.Errorf("%w: curve %q (P-256, P-256K, P-384 or P-521)", ErrInvalid, crv)
	}
	if c.std == nil {
		d, err := k1RandScalar()
		if err != nil {
			return nil, err
		}
		return newECKey(crv, d.Bytes())
	}
	k, err := stdECDH(crv).GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return newECKey(crv, k.Bytes())
}

// keyFamily is "RSA", "EC" or "oct" for any Key Vault kty.
func keyFamily(kty string) string {
	return strings.TrimSuffix(kty, "-HSM")
}

// canonicalKty spells a key type as Key Vault does, or reports it unknown.
func canonicalKty(kty string) (string, bool) {
	for _, k := range []string{"RSA", "RSA-HSM", "EC", "EC-HSM", "oct", "oct-HSM"} {
		if strings.EqualFold(k, kty) {
			return k, true
		}
	}
	return "", false
}

// generateMaterial fills ver's key material for its Kty: bits for RSA
// (2048, 3072 default, 4096) and oct (128, 192, 256 default), crv for EC
// (P-256 default).
func generateMaterial(ver *keyVersion, bits int, crv string) error {
	switch keyFamily(ver.Kty) {
	case "RSA":
		if bits == 0 {
			bits = 3072
		}
		if bits != 2048 && bits != 3072 && bits != 4096 {
			return fmt.Errorf("%w: key size %d (2048, 3072 or 4096)", ErrInvalid, bits)
		}
		priv, err := generateRSA(bits)
		if err != nil {
			return err
		}
		ver.PrivateKey, ver.priv = x509.MarshalPKCS1PrivateKey(priv), priv
	case "EC":
		if crv == "" {
			crv = "P-256"
		}
		c, ok := canonicalCurve(crv)
		if !ok {
			return fmt.Errorf("%w: curve %q (P-256, P-256K, P-384 or P-521)", ErrInvalid, crv)
		}
		k, err := generateEC(c)
		if err != nil {
			return err
		}
		ver.Curve, ver.ECKey, ver.ec = c, k.d.Bytes(), k
	case "oct":
		if bits == 0 {
			bits = 256
		}
		if bits != 128 && bits != 192 && bits != 256 {
			return fmt.Errorf("%w: key size %d (128, 192 or 256 for oct keys)", ErrInvalid, bits)
		}
		ver.Secret = make([]byte, bits/8)
		if _, err := rand.Read(ver.Secret); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: key type %q (RSA, RSA-HSM, EC, EC-HSM, oct or oct-HSM)", ErrInvalid, ver.Kty)
	}
	return nil
}

// loadMaterial rebuilds the parsed key from the persisted fields.
func (v *keyVersion) loadMaterial() error {
	switch keyFamily(v.Kty) {
	case "RSA", "":
		p, err := x509.ParsePKCS1PrivateKey(v.PrivateKey)
		if err != nil {
			return err
		}
		v.priv = p
	case "EC":
		k, err := newECKey(v.Curve, v.ECKey)
		if err != nil {
			return err
		}
		v.ec = k
	case "oct":
		if n := len(v.Secret); n != 16 && n != 24 && n != 32 {
			return fmt.Errorf("oct key of %d bytes", n)
		}
	default:
		return fmt.Errorf("unknown key type %q", v.Kty)
	}
	return nil
}

// bits is the key size: the RSA modulus, the curve or the AES key.
func (v *keyVersion) bits() int {
	switch {
	case v.priv != nil:
		return v.priv.N.BitLen()
	case v.ec != nil:
		if v.ec.crv == "P-521" {
			return 521
		}
		return ecCurves[v.ec.crv].size * 8
	}
	return len(v.Secret) * 8
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func padBytes(n *big.Int, size int) []byte {
	b := make([]byte, size)
	return n.FillBytes(b)
}

// publicJWK is the key as Key Vault shows it: public parts only. An oct
// key shows no material at all.
func publicJWK(kid string, v *keyVersion) *jsonWebKey {
	j := &jsonWebKey{KID: kid, Kty: v.Kty, KeyOps: append([]string{}, v.Ops...)}
	switch {
	case v.priv != nil:
		j.N = b64(v.priv.N.Bytes())
		j.E = b64(big.NewInt(int64(v.priv.E)).Bytes())
	case v.ec != nil:
		size := ecCurves[v.ec.crv].size
		j.Crv, j.X, j.Y = v.ec.crv, b64(padBytes(v.ec.x, size)), b64(padBytes(v.ec.y, size))
	}
	return j
}

// importRSA gives ver the RSA key priv, checked as an imported key is.
func importRSA(ver *keyVersion, priv *rsa.PrivateKey) error {
	if keyFamily(ver.Kty) != "RSA" {
		return fmt.Errorf("%w: RSA material for a key of type %s", ErrInvalid, ver.Kty)
	}
	if err := priv.Validate(); err != nil {
		return fmt.Errorf("%w: the imported RSA key is inconsistent: %v", ErrInvalid, err)
	}
	if b := priv.N.BitLen(); b != 2048 && b != 3072 && b != 4096 {
		return fmt.Errorf("%w: the imported RSA key has %d bits (2048, 3072 or 4096)", ErrInvalid, b)
	}
	priv.Precompute()
	ver.PrivateKey, ver.priv = x509.MarshalPKCS1PrivateKey(priv), priv
	return nil
}

// importJWK is the body of PUT /keys/{name}: a JSON web key with its
// private parts.
type importJWK struct {
	Kty    string   `json:"kty"`
	KeyOps []string `json:"key_ops"`
	N      string   `json:"n"`
	E      string   `json:"e"`
	D      string   `json:"d"`
	P      string   `json:"p"`
	Q      string   `json:"q"`
	DP     string   `json:"dp"`
	DQ     string   `json:"dq"`
	QI     string   `json:"qi"`
	Crv    string   `json:"crv"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
	K      string   `json:"k"`
}

// materialFromJWK fills ver's material from an imported key, checking that
// the parts agree (the public key must match the private one).
func materialFromJWK(ver *keyVersion, j importJWK) error {
	dec := func(name, s string) (*big.Int, error) {
		if s == "" {
			return nil, fmt.Errorf("%w: the imported %s key has no %q", ErrInvalid, ver.Kty, name)
		}
		b, err := decodeB64URL(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %q of the imported key is not base64url", ErrInvalid, name)
		}
		return new(big.Int).SetBytes(b), nil
	}
	switch keyFamily(ver.Kty) {
	case "RSA":
		var parts [5]*big.Int
		for i, f := range []struct{ n, s string }{{"n", j.N}, {"e", j.E}, {"d", j.D}, {"p", j.P}, {"q", j.Q}} {
			v, err := dec(f.n, f.s)
			if err != nil {
				return err
			}
			parts[i] = v
		}
		if !parts[1].IsInt64() || parts[1].Int64() > 1<<31-1 {
			return fmt.Errorf("%w: public exponent too large", ErrInvalid)
		}
		priv := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: parts[0], E: int(parts[1].Int64())}, D: parts[2],
			Primes: []*big.Int{parts[3], parts[4]}}
		return importRSA(ver, priv)
	case "EC":
		crv, ok := canonicalCurve(j.Crv)
		if !ok {
			return fmt.Errorf("%w: curve %q (P-256, P-256K, P-384 or P-521)", ErrInvalid, j.Crv)
		}
		d, err := dec("d", j.D)
		if err != nil {
			return err
		}
		k, err := newECKey(crv, d.Bytes())
		if err != nil {
			return err
		}
		if j.X != "" || j.Y != "" {
			x, err1 := dec("x", j.X)
			y, err2 := dec("y", j.Y)
			if err1 != nil || err2 != nil || x.Cmp(k.x) != 0 || y.Cmp(k.y) != 0 {
				return fmt.Errorf("%w: the imported EC key's x and y do not match its d", ErrInvalid)
			}
		}
		ver.Curve, ver.ECKey, ver.ec = crv, k.d.Bytes(), k
	case "oct":
		b, err := decodeB64URL(j.K)
		if err != nil || (len(b) != 16 && len(b) != 24 && len(b) != 32) {
			return fmt.Errorf("%w: the imported oct key needs \"k\": 16, 24 or 32 bytes, base64url", ErrInvalid)
		}
		ver.Secret = b
	default:
		return fmt.Errorf("%w: key type %q (RSA, RSA-HSM, EC, EC-HSM, oct or oct-HSM)", ErrInvalid, ver.Kty)
	}
	return nil
}

// ---- operations ----

// errBadAlg and errUndecryptable are answered as Key Vault does (400).
var (
	errBadAlg        = errors.New("algorithm does not fit the operation or key")
	errUndecryptable = errors.New("value cannot be decrypted with this key")
)

// opRequest is a crypto request's decoded fields.
type opRequest struct {
	op, alg       string
	value, digest []byte
	iv, aad, tag  []byte
}

// opResult is the JSON of a crypto answer.
type opResult struct {
	KID   string `json:"kid,omitempty"`
	Value string `json:"value,omitempty"`
	IV    string `json:"iv,omitempty"`
	Tag   string `json:"tag,omitempty"`
	AAD   string `json:"aad,omitempty"`
}

// algFits reports whether alg is a known algorithm for op on a key of the
// given family.
func algFits(family, op, alg string) bool {
	switch op {
	case "sign", "verify":
		switch family {
		case "RSA":
			_, ok := signAlgs[alg]
			return ok
		case "EC":
			for _, c := range ecCurves {
				if c.alg == alg {
					return true
				}
			}
		}
		return false
	}
	switch family {
	case "RSA":
		_, _, ok := oaepHash(alg)
		return ok
	case "oct":
		_, ok := aesAlgs[alg]
		if !ok {
			return false
		}
		kw := strings.HasSuffix(alg, "KW")
		return kw == (op == "wrapKey" || op == "unwrapKey")
	}
	return false
}

// aesAlgs maps the symmetric algorithms to the AES key size they need.
var aesAlgs = map[string]int{
	"A128KW": 16, "A192KW": 24, "A256KW": 32,
	"A128GCM": 16, "A192GCM": 24, "A256GCM": 32,
	"A128CBC": 16, "A192CBC": 24, "A256CBC": 32,
	"A128CBCPAD": 16, "A192CBCPAD": 24, "A256CBCPAD": 32,
}

// runOp performs a crypto operation with ver's material. Errors wrapping
// ErrInvalid, errBadAlg or errUndecryptable are the caller's fault (400).
func runOp(ver *keyVersion, kid string, q opRequest) (any, error) {
	family := keyFamily(ver.Kty)
	if !algFits(family, q.op, q.alg) {
		return nil, errBadAlg
	}
	switch family {
	case "RSA":
		return rsaOp(ver.priv, kid, q)
	case "EC":
		return ecOp(ver.ec, kid, q)
	case "oct":
		return aesOp(ver.Secret, kid, q)
	}
	return nil, errBadAlg
}

func rsaOp(priv *rsa.PrivateKey, kid string, q opRequest) (any, error) {
	switch q.op {
	case "wrapKey", "encrypt":
		h, _, _ := oaepHash(q.alg)
		ct, err := rsa.EncryptOAEP(h, rand.Reader, &priv.PublicKey, q.value, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: the value is too long for this key and algorithm", ErrInvalid)
		}
		return opResult{KID: kid, Value: b64(ct)}, nil
	case "unwrapKey", "decrypt":
		h, _, _ := oaepHash(q.alg)
		pt, err := rsa.DecryptOAEP(h, nil, priv, q.value, nil)
		if err != nil {
			return nil, errUndecryptable
		}
		return opResult{KID: kid, Value: b64(pt)}, nil
	case "sign":
		sa := signAlgs[q.alg]
		if len(q.value) != sa.h.Size() {
			return nil, fmt.Errorf("%w: invalid digest length for algorithm %s: %d bytes, want %d", ErrInvalid, q.alg, len(q.value), sa.h.Size())
		}
		var sig []byte
		var err error
		if sa.pss {
			sig, err = rsa.SignPSS(rand.Reader, priv, sa.h, q.value, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			sig, err = rsa.SignPKCS1v15(nil, priv, sa.h, q.value)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		return opResult{KID: kid, Value: b64(sig)}, nil
	case "verify":
		sa := signAlgs[q.alg]
		var err error
		if sa.pss {
			err = rsa.VerifyPSS(&priv.PublicKey, sa.h, q.digest, q.value, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
		} else {
			err = rsa.VerifyPKCS1v15(&priv.PublicKey, sa.h, q.digest, q.value)
		}
		return map[string]bool{"value": err == nil}, nil
	}
	return nil, errBadAlg
}

// ecOp signs and verifies with the JWS signature encoding: r || s, each
// padded to the curve's size.
func ecOp(k *ecKey, kid string, q opRequest) (any, error) {
	c := ecCurves[k.crv]
	if c.alg != q.alg {
		return nil, fmt.Errorf("%w: algorithm %s does not fit a %s key (use %s)", ErrInvalid, q.alg, k.crv, c.alg)
	}
	switch q.op {
	case "sign":
		if len(q.value) != c.hash.Size() {
			return nil, fmt.Errorf("%w: invalid digest length for algorithm %s: %d bytes, want %d", ErrInvalid, q.alg, len(q.value), c.hash.Size())
		}
		var r, s *big.Int
		var err error
		if k.std != nil {
			r, s, err = ecdsa.Sign(rand.Reader, k.std, q.value)
		} else {
			r, s, err = k1Sign(k.d, q.value)
		}
		if err != nil {
			return nil, err
		}
		return opResult{KID: kid, Value: b64(append(padBytes(r, c.size), padBytes(s, c.size)...))}, nil
	case "verify":
		if len(q.value) != 2*c.size {
			return map[string]bool{"value": false}, nil
		}
		r := new(big.Int).SetBytes(q.value[:c.size])
		s := new(big.Int).SetBytes(q.value[c.size:])
		var ok bool
		if k.std != nil {
			ok = ecdsa.Verify(&k.std.PublicKey, q.digest, r, s)
		} else {
			ok = k1Verify(k.x, k.y, q.digest, r, s)
		}
		return map[string]bool{"value": ok}, nil
	}
	return nil, errBadAlg
}

func aesOp(secret []byte, kid string, q opRequest) (any, error) {
	if aesAlgs[q.alg] != len(secret) {
		return nil, fmt.Errorf("%w: algorithm %s needs a %d-bit key; this key has %d bits", ErrInvalid, q.alg, aesAlgs[q.alg]*8, len(secret)*8)
	}
	block, err := aes.NewCipher(secret)
	if err != nil {
		return nil, err
	}
	switch {
	case strings.HasSuffix(q.alg, "KW"):
		if q.op == "wrapKey" {
			out, err := aesKeyWrap(block, q.value)
			if err != nil {
				return nil, err
			}
			return opResult{KID: kid, Value: b64(out)}, nil
		}
		out, err := aesKeyUnwrap(block, q.value)
		if err != nil {
			return nil, errUndecryptable
		}
		return opResult{KID: kid, Value: b64(out)}, nil
	case strings.HasSuffix(q.alg, "GCM"):
		gcm, _ := cipher.NewGCM(block)
		if q.op == "encrypt" {
			// Key Vault chooses the nonce for GCM.
			iv := make([]byte, gcm.NonceSize())
			if _, err := rand.Read(iv); err != nil {
				return nil, err
			}
			sealed := gcm.Seal(nil, iv, q.value, q.aad)
			n := len(sealed) - gcm.Overhead()
			res := opResult{KID: kid, Value: b64(sealed[:n]), IV: b64(iv), Tag: b64(sealed[n:])}
			if len(q.aad) > 0 {
				res.AAD = b64(q.aad)
			}
			return res, nil
		}
		if len(q.iv) != gcm.NonceSize() || len(q.tag) != gcm.Overhead() {
			return nil, fmt.Errorf("%w: %s decryption needs the iv (%d bytes) and tag (%d bytes) that encryption returned", ErrInvalid, q.alg, gcm.NonceSize(), gcm.Overhead())
		}
		pt, err := gcm.Open(nil, q.iv, append(append([]byte{}, q.value...), q.tag...), q.aad)
		if err != nil {
			return nil, errUndecryptable
		}
		return opResult{KID: kid, Value: b64(pt)}, nil
	default: // CBC and CBCPAD
		pad := strings.HasSuffix(q.alg, "PAD")
		iv := q.iv
		if q.op == "encrypt" && len(iv) == 0 {
			iv = make([]byte, aes.BlockSize)
			if _, err := rand.Read(iv); err != nil {
				return nil, err
			}
		}
		if len(iv) != aes.BlockSize {
			return nil, fmt.Errorf("%w: %s needs a %d-byte iv", ErrInvalid, q.alg, aes.BlockSize)
		}
		if q.op == "encrypt" {
			pt := q.value
			if pad {
				n := aes.BlockSize - len(pt)%aes.BlockSize
				pt = append(append([]byte{}, pt...), bytesOf(byte(n), n)...)
			}
			if len(pt)%aes.BlockSize != 0 {
				return nil, fmt.Errorf("%w: %s needs a value whose length is a multiple of %d bytes (use %sPAD for other lengths)", ErrInvalid, q.alg, aes.BlockSize, q.alg)
			}
			ct := make([]byte, len(pt))
			cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, pt)
			return opResult{KID: kid, Value: b64(ct), IV: b64(iv)}, nil
		}
		if len(q.value) == 0 || len(q.value)%aes.BlockSize != 0 {
			return nil, errUndecryptable
		}
		pt := make([]byte, len(q.value))
		cipher.NewCBCDecrypter(block, iv).CryptBlocks(pt, q.value)
		if pad {
			n := int(pt[len(pt)-1])
			if n == 0 || n > aes.BlockSize || subtle.ConstantTimeCompare(pt[len(pt)-n:], bytesOf(byte(n), n)) != 1 {
				return nil, errUndecryptable
			}
			pt = pt[:len(pt)-n]
		}
		return opResult{KID: kid, Value: b64(pt)}, nil
	}
}

func bytesOf(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

// aesKeyWrap is RFC 3394 key wrap with the default IV.
func aesKeyWrap(block cipher.Block, key []byte) ([]byte, error) {
	if len(key) < 16 || len(key)%8 != 0 {
		return nil, fmt.Errorf("%w: a wrapped key must be at least 16 bytes and a multiple of 8", ErrInvalid)
	}
	n := len(key) / 8
	a := []byte{0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6}
	r := append([]byte{}, key...)
	buf := make([]byte, 16)
	for j := range 6 {
		for i := range n {
			copy(buf, a)
			copy(buf[8:], r[i*8:i*8+8])
			block.Encrypt(buf, buf)
			t := uint64(n*j + i + 1)
			for k := range 8 {
				buf[7-k] ^= byte(t >> (8 * k))
			}
			copy(a, buf[:8])
			copy(r[i*8:], buf[8:])
		}
	}
	return append(a, r...), nil
}

func aesKeyUnwrap(block cipher.Block, wrapped []byte) ([]byte, error) {
	if len(wrapped) < 24 || len(wrapped)%8 != 0 {
		return nil, errUndecryptable
	}
	n := len(wrapped)/8 - 1
	a := append([]byte{}, wrapped[:8]...)
	r := append([]byte{}, wrapped[8:]...)
	buf := make([]byte, 16)
	for j := 5; j >= 0; j-- {
		for i := n - 1; i >= 0; i-- {
			t := uint64(n*j + i + 1)
			copy(buf, a)
			for k := range 8 {
				buf[7-k] ^= byte(t >> (8 * k))
			}
			copy(buf[8:], r[i*8:i*8+8])
			block.Decrypt(buf, buf)
			copy(a, buf[:8])
			copy(r[i*8:], buf[8:])
		}
	}
	if subtle.ConstantTimeCompare(a, []byte{0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6}) != 1 {
		return nil, errUndecryptable
	}
	return r, nil
}
