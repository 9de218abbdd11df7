package azemu

import (
	"crypto/rand"
	"errors"
	"math/big"
)

// secp256k1 (P-256K, "ES256K") is not in the standard library. The curve
// arithmetic here is plain math/big in affine coordinates: correct but
// neither fast nor constant time. It exists so that the emulator can answer
// for P-256K keys as Key Vault does; it must never guard a real secret.

type k1Point struct{ x, y *big.Int } // nil x = point at infinity

var k1 = struct {
	p, n, gx, gy *big.Int
}{
	p:  mustHex("fffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2f"),
	n:  mustHex("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"),
	gx: mustHex("79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"),
	gy: mustHex("483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8"),
}

func mustHex(s string) *big.Int {
	n, ok := new(big.Int).SetString(s, 16)
	if !ok {
		panic("bad constant " + s)
	}
	return n
}

func k1Add(a, b k1Point) k1Point {
	p := k1.p
	if a.x == nil {
		return b
	}
	if b.x == nil {
		return a
	}
	var lambda *big.Int
	if a.x.Cmp(b.x) == 0 {
		if sum := new(big.Int).Add(a.y, b.y); sum.Mod(sum, p).Sign() == 0 {
			return k1Point{}
		}
		// λ = 3x² / 2y (a = 0 for secp256k1)
		num := new(big.Int).Mul(a.x, a.x)
		num.Mul(num, big.NewInt(3))
		den := new(big.Int).Lsh(a.y, 1)
		den.Mod(den, p)
		lambda = num.Mul(num, new(big.Int).ModInverse(den, p))
	} else {
		num := new(big.Int).Sub(b.y, a.y)
		den := new(big.Int).Sub(b.x, a.x)
		den.Mod(den, p)
		lambda = num.Mul(num, new(big.Int).ModInverse(den, p))
	}
	lambda.Mod(lambda, p)
	x := new(big.Int).Mul(lambda, lambda)
	x.Sub(x, a.x).Sub(x, b.x).Mod(x, p)
	y := new(big.Int).Sub(a.x, x)
	y.Mul(y, lambda).Sub(y, a.y).Mod(y, p)
	return k1Point{x, y}
}

func k1Mul(pt k1Point, k *big.Int) k1Point {
	var r k1Point
	for i := k.BitLen() - 1; i >= 0; i-- {
		r = k1Add(r, r)
		if k.Bit(i) == 1 {
			r = k1Add(r, pt)
		}
	}
	return r
}

func k1Base() k1Point { return k1Point{k1.gx, k1.gy} }

func k1RandScalar() (*big.Int, error) {
	for range 100 {
		k, err := rand.Int(rand.Reader, k1.n)
		if err != nil {
			return nil, err
		}
		if k.Sign() > 0 {
			return k, nil
		}
	}
	return nil, errors.New("secp256k1: no scalar drawn")
}

// k1Sign signs a digest (its leftmost 256 bits, as ECDSA does) with d.
func k1Sign(d *big.Int, digest []byte) (r, s *big.Int, err error) {
	z := k1Digest(digest)
	for range 100 {
		k, err := k1RandScalar()
		if err != nil {
			return nil, nil, err
		}
		R := k1Mul(k1Base(), k)
		r = new(big.Int).Mod(R.x, k1.n)
		if r.Sign() == 0 {
			continue
		}
		s = new(big.Int).Mul(r, d)
		s.Add(s, z).Mul(s, new(big.Int).ModInverse(k, k1.n)).Mod(s, k1.n)
		if s.Sign() != 0 {
			return r, s, nil
		}
	}
	return nil, nil, errors.New("secp256k1: signing failed")
}

func k1Verify(x, y *big.Int, digest []byte, r, s *big.Int) bool {
	if r.Sign() <= 0 || s.Sign() <= 0 || r.Cmp(k1.n) >= 0 || s.Cmp(k1.n) >= 0 {
		return false
	}
	z := k1Digest(digest)
	w := new(big.Int).ModInverse(s, k1.n)
	u1 := new(big.Int).Mul(z, w)
	u1.Mod(u1, k1.n)
	u2 := new(big.Int).Mul(r, w)
	u2.Mod(u2, k1.n)
	X := k1Add(k1Mul(k1Base(), u1), k1Mul(k1Point{x, y}, u2))
	if X.x == nil {
		return false
	}
	return new(big.Int).Mod(X.x, k1.n).Cmp(r) == 0
}

func k1Digest(digest []byte) *big.Int {
	if len(digest) > 32 {
		digest = digest[:32]
	}
	return new(big.Int).SetBytes(digest)
}
