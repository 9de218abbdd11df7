package azemu

import (
	"bytes"
	"crypto/aes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
)

func TestSecp256k1Arithmetic(t *testing.T) {
	two := k1Mul(k1Base(), big.NewInt(2))
	wantX := mustHex("c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5")
	wantY := mustHex("1ae168fea63dc339a3c58419466ceaeef7f632653266d0e1236431a950cfe52a")
	if two.x.Cmp(wantX) != 0 || two.y.Cmp(wantY) != 0 {
		t.Errorf("2G = (%x, %x), want (%x, %x)", two.x, two.y, wantX, wantY)
	}
	if inf := k1Mul(k1Base(), k1.n); inf.x != nil {
		t.Errorf("nG = (%x, %x), want the point at infinity", inf.x, inf.y)
	}
	if sum := k1Add(k1Base(), k1Base()); sum.x.Cmp(wantX) != 0 {
		t.Errorf("G+G x = %x, want %x", sum.x, wantX)
	}
}

// RFC 3394 section 4.1: 128 bits of key data wrapped with a 128-bit KEK.
func TestAESKeyWrapVector(t *testing.T) {
	kek, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f")
	data, _ := hex.DecodeString("00112233445566778899aabbccddeeff")
	want, _ := hex.DecodeString("1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5")
	block, _ := aes.NewCipher(kek)
	got, err := aesKeyWrap(block, data)
	must(t, err)
	if !bytes.Equal(got, want) {
		t.Fatalf("wrap = %x, want %x", got, want)
	}
	back, err := aesKeyUnwrap(block, got)
	must(t, err)
	if !bytes.Equal(back, data) {
		t.Fatalf("unwrap = %x, want %x", back, data)
	}
	for i := range got {
		bad := bytes.Clone(got)
		bad[i] ^= 1
		if _, err := aesKeyUnwrap(block, bad); err == nil {
			t.Errorf("unwrap with byte %d flipped succeeded", i)
		}
	}
}

// Every curve signs digests whose signatures verify, as r||s, and that an
// independent verifier (crypto/ecdsa for the NIST curves) accepts;
// tampered signatures fail.
func TestECSignVerifyAllCurves(t *testing.T) {
	for crv, c := range ecCurves {
		t.Run(crv, func(t *testing.T) {
			ver := &keyVersion{Kty: "EC"}
			must(t, generateMaterial(ver, 0, crv))
			digest := make([]byte, c.hash.Size())
			switch c.hash.Size() {
			case 32:
				s := sha256.Sum256([]byte("plaintext"))
				digest = s[:]
			case 48:
				s := sha512.Sum384([]byte("plaintext"))
				digest = s[:]
			case 64:
				s := sha512.Sum512([]byte("plaintext"))
				digest = s[:]
			}
			out, err := runOp(ver, "kid", opRequest{op: "sign", alg: c.alg, value: digest})
			must(t, err)
			sig, err := decodeB64URL(out.(opResult).Value)
			must(t, err)
			if len(sig) != 2*c.size {
				t.Fatalf("signature is %d bytes, want %d (r||s)", len(sig), 2*c.size)
			}
			if c.std != nil {
				// ParseUncompressedPublicKey also checks that the point is on the curve.
				pt := append([]byte{4}, append(padBytes(ver.ec.x, c.size), padBytes(ver.ec.y, c.size)...)...)
				pub, err := ecdsa.ParseUncompressedPublicKey(c.std, pt)
				must(t, err)
				r, s := new(big.Int).SetBytes(sig[:c.size]), new(big.Int).SetBytes(sig[c.size:])
				if !ecdsa.Verify(pub, digest, r, s) {
					t.Fatal("crypto/ecdsa rejects the emulator's signature")
				}
			}
			ok, err := runOp(ver, "kid", opRequest{op: "verify", alg: c.alg, value: sig, digest: digest})
			must(t, err)
			if !ok.(map[string]bool)["value"] {
				t.Fatal("verify of a fresh signature = false, want true")
			}
			bad := bytes.Clone(sig)
			bad[len(bad)-1] ^= 1
			ok, err = runOp(ver, "kid", opRequest{op: "verify", alg: c.alg, value: bad, digest: digest})
			must(t, err)
			if ok.(map[string]bool)["value"] {
				t.Fatal("verify of a tampered signature = true, want false")
			}
			if _, err := runOp(ver, "kid", opRequest{op: "sign", alg: "RS256", value: digest}); err == nil {
				t.Fatal("RS256 with an EC key succeeded")
			}
			// The key survives a state save and load.
			copyVer := &keyVersion{Kty: "EC", Curve: ver.Curve, ECKey: ver.ECKey}
			must(t, copyVer.loadMaterial())
			if copyVer.ec.x.Cmp(ver.ec.x) != 0 {
				t.Fatal("reloaded key has another public point")
			}
		})
	}
}

func TestSymmetricAlgorithms(t *testing.T) {
	ver := &keyVersion{Kty: "oct-HSM"}
	must(t, generateMaterial(ver, 256, ""))
	plain := []byte("plaintext of odd length")
	for _, alg := range []string{"A256GCM", "A256CBCPAD"} {
		enc, err := runOp(ver, "kid", opRequest{op: "encrypt", alg: alg, value: plain, aad: []byte("aad")})
		must(t, err)
		r := enc.(opResult)
		ct, _ := decodeB64URL(r.Value)
		iv, _ := decodeB64URL(r.IV)
		tag, _ := decodeB64URL(r.Tag)
		dec, err := runOp(ver, "kid", opRequest{op: "decrypt", alg: alg, value: ct, iv: iv, tag: tag, aad: []byte("aad")})
		must(t, err)
		if got, _ := decodeB64URL(dec.(opResult).Value); !bytes.Equal(got, plain) {
			t.Errorf("%s round trip = %q, want %q", alg, got, plain)
		}
		if alg == "A256GCM" {
			ct[0] ^= 1
			if _, err := runOp(ver, "kid", opRequest{op: "decrypt", alg: alg, value: ct, iv: iv, tag: tag, aad: []byte("aad")}); err == nil {
				t.Error("A256GCM decrypt of a tampered ciphertext succeeded")
			}
		}
	}
	if _, err := runOp(ver, "kid", opRequest{op: "encrypt", alg: "A128GCM", value: plain}); err == nil {
		t.Error("A128GCM with a 256-bit key succeeded")
	}
	if _, err := runOp(ver, "kid", opRequest{op: "encrypt", alg: "A256CBC", value: plain}); err == nil {
		t.Error("A256CBC (no padding) of a value that is not a multiple of 16 bytes succeeded")
	}
	if _, err := runOp(ver, "kid", opRequest{op: "wrapKey", alg: "A256GCM", value: plain}); err == nil {
		t.Error("wrapKey with A256GCM succeeded; only the KW algorithms wrap")
	}
}

func TestHSMRoleModel(t *testing.T) {
	const me, other = "oid-me", "oid-other"
	cases := []struct {
		role, scope, action, key string
		want                     bool
	}{
		{RoleHSMCryptoServiceEncryptionUser, "/", hsmRead, "k", true},
		{RoleHSMCryptoServiceEncryptionUser, "/", hsmWrap, "k", true},
		{RoleHSMCryptoServiceEncryptionUser, "/", hsmUnwrap, "k", true},
		{RoleHSMCryptoServiceEncryptionUser, "/", hsmEncrypt, "k", false},
		{RoleHSMCryptoServiceEncryptionUser, "/", hsmSign, "k", false},
		{RoleHSMCryptoServiceEncryptionUser, "/", hsmCreate, "k", false},
		{RoleHSMCryptoServiceEncryptionUser, "/", hsmDelete, "k", false},
		{RoleHSMCryptoUser, "/", hsmEncrypt, "k", true},
		{RoleHSMCryptoUser, "/", hsmCreate, "k", true},
		{RoleHSMCryptoUser, "/", hsmRandom, "", true},
		{RoleHSMCryptoUser, "/", hsmDeletedPurge, "k", false},
		{RoleHSMCryptoUser, "/", hsmDeletedRecov, "k", false},
		{RoleHSMCryptoOfficer, "/", hsmDeletedPurge, "k", true},
		{RoleHSMCryptoOfficer, "/", hsmDeletedRecov, "k", true},
		{RoleHSMCryptoOfficer, "/", hsmUnwrap, "k", false},
		{RoleHSMCryptoOfficer, "/", hsmSign, "k", false},
		{RoleHSMAdministrator, "/", hsmRead, "k", false},
		{RoleHSMAdministrator, "/", hsmUnwrap, "k", false},
		{RoleHSMCryptoAuditor, "/", hsmRead, "k", true},
		{RoleHSMCryptoAuditor, "/", hsmUnwrap, "k", false},
		{RoleHSMCryptoServiceEncryptionUser, "/keys/k", hsmUnwrap, "k", true},
		{RoleHSMCryptoServiceEncryptionUser, "/keys/k", hsmUnwrap, "K", true},
		{RoleHSMCryptoServiceEncryptionUser, "/keys/k", hsmUnwrap, "other", false},
		{RoleHSMCryptoUser, "/keys/k", hsmRandom, "", false},
		{RoleHSMCryptoServiceEncryptionUser, "/keys", hsmUnwrap, "other", true},
	}
	for _, c := range cases {
		roles := []RoleAssignment{{PrincipalObjectID: me, Role: c.role, Scope: c.scope}}
		if got := hsmAllows(roles, me, c.action, c.key); got != c.want {
			t.Errorf("hsmAllows(%s at %s, %s on %q) = %v, want %v", c.role, c.scope, c.action, c.key, got, c.want)
		}
		if hsmAllows(roles, other, c.action, c.key) {
			t.Errorf("hsmAllows(%s at %s, %s) granted another principal", c.role, c.scope, c.action)
		}
	}
	for _, bad := range []string{"/vaults", "/keys/", "/keys/a/b", "keys/k"} {
		if _, ok := canonicalHSMScope(bad); ok {
			t.Errorf("canonicalHSMScope(%q) accepted", bad)
		}
	}
}

// hsmFixture adds Managed HSM "hsm1" in the customer tenant to the fixture.
func (f *fixture) hsm(t *testing.T) *azkeys.Client {
	t.Helper()
	must(t, f.emu.CreateManagedHSM(ManagedHSM{Name: "hsm1", TenantID: customerTenant}))
	c, err := azkeys.NewClient(f.emu.HSMURL("hsm1"), f.cred(customerTenant, appSecret),
		&azkeys.ClientOptions{ClientOptions: f.clientOptions()})
	must(t, err)
	return c
}

func TestManagedHSMDataPlane(t *testing.T) {
	f := newFixture(t)
	c := f.hsm(t)
	// No role: 403.
	_, err := c.CreateKey(ctx, "k1", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSA)}, nil)
	if st, _, _, msg := kvFailure(t, err); st != http.StatusForbidden || !strings.Contains(msg, hsmCreate) {
		t.Fatalf("create without a role = %d %q, want 403 naming %s", st, msg, hsmCreate)
	}
	must(t, f.emu.AssignHSMRole("hsm1", f.oid, RoleHSMCryptoOfficer, "/"))
	created, err := c.CreateKey(ctx, "k1", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSA), KeySize: to.Ptr(int32(2048))}, nil)
	must(t, err)
	if got := *created.Key.Kty; got != azkeys.KeyTypeRSAHSM {
		t.Errorf("kty of an RSA key in a Managed HSM = %s, want RSA-HSM", got)
	}
	if got, want := string(*created.Key.KID), "https://hsm1."+DefaultHSMSuffix+"/keys/k1/"; !strings.HasPrefix(got, want) {
		t.Errorf("kid = %s, want prefix %s", got, want)
	}
	if got := *created.Attributes.RecoveryLevel; got != "Recoverable+Purgeable" {
		t.Errorf("recoveryLevel = %s, want Recoverable+Purgeable", got)
	}
	// The Crypto Officer cannot use keys; the Service Encryption User at the
	// key's scope can wrap with that key only.
	if _, err := wrap(c, "k1", "", dek()); err == nil {
		t.Fatal("Crypto Officer wrapped a key")
	}
	must(t, f.emu.AssignHSMRole("hsm1", f.oid, RoleHSMCryptoServiceEncryptionUser, "/keys/k1"))
	w, err := wrap(c, "k1", "", dek())
	must(t, err)
	if _, err := unwrap(c, "k1", "", w.Result); err != nil {
		t.Fatalf("unwrap with Crypto Service Encryption User at /keys/k1: %v", err)
	}
	if _, err := c.Encrypt(ctx, "k1", "", azkeys.KeyOperationParameters{Algorithm: oaep256(), Value: []byte("x")}, nil); err == nil {
		t.Fatal("Crypto Service Encryption User encrypted")
	}
	_, err = c.CreateKey(ctx, "k2", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSA), KeySize: to.Ptr(int32(2048))}, nil)
	must(t, err)
	if _, err := wrap(c, "k2", "", dek()); err == nil {
		t.Fatal("an assignment at /keys/k1 allowed wrapping with k2")
	}
	// An HSM is not reachable on a vault host, and a vault token does not
	// open an HSM.
	vc, err := azkeys.NewClient("https://hsm1."+f.emu.VaultSuffix(), f.cred(customerTenant, appSecret), &azkeys.ClientOptions{ClientOptions: f.clientOptions()})
	must(t, err)
	if _, err := vc.GetKey(ctx, "k1", "", nil); err == nil {
		t.Fatal("the HSM answered on a vault host")
	}
	tok, err := f.emu.IssueToken(customerTenant, appClientID, f.oid, f.emu.VaultResource(), f.clock.Now())
	must(t, err)
	req, _ := http.NewRequest(http.MethodGet, f.emu.HSMURL("hsm1")+"/keys/k1?api-version=7.6", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := f.emu.HTTPClient().Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `resource="`+f.emu.HSMResource()+`"`) {
		t.Fatalf("HSM with a vault token = %d %q, want 401 naming %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), f.emu.HSMResource())
	}
	// Random bytes.
	rb, err := c.GetRandomBytes(ctx, azkeys.GetRandomBytesParameters{Count: to.Ptr(int32(16))}, nil)
	if err == nil {
		t.Fatalf("random bytes without a role that allows them: %d bytes", len(rb.Value))
	}
	must(t, f.emu.AssignHSMRole("hsm1", f.oid, RoleHSMCryptoUser, "/"))
	rb, err = c.GetRandomBytes(ctx, azkeys.GetRandomBytesParameters{Count: to.Ptr(int32(16))}, nil)
	must(t, err)
	if len(rb.Value) != 16 {
		t.Fatalf("random bytes: got %d, want 16", len(rb.Value))
	}
}

func TestManagedHSMPurgeProtectionIsOneWay(t *testing.T) {
	f := newFixture(t)
	f.hsm(t)
	ac := NewAdminClient(f.emu.URL(), f.emu.HTTPClient())
	must(t, ac.EnableHSMPurgeProtection("hsm1"))
	info, err := f.emu.GetVault("hsm1")
	must(t, err)
	if !info.PurgeProtection || info.RecoveryLevel != "Recoverable" {
		t.Fatalf("after enabling: purge protection %v, recoveryLevel %s; want true, Recoverable", info.PurgeProtection, info.RecoveryLevel)
	}
	body := strings.NewReader(`{"purgeProtection":false}`)
	req, _ := http.NewRequest(http.MethodPatch, f.emu.URL()+"/admin/managedhsms/hsm1", body)
	resp, err := f.emu.HTTPClient().Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("switching purge protection off = %d, want 403", resp.StatusCode)
	}
	if err := f.emu.UpdateVault("hsm1", func(v *Vault) { v.PurgeProtection = false }); err == nil {
		t.Fatal("UpdateVault switched an HSM's purge protection off")
	}
	if err := f.emu.CreateVault(Vault{Name: "hsm2", TenantID: customerTenant, ManagedHSM: true}); err == nil {
		t.Fatal("CreateVault created a Managed HSM")
	}
}

// A delete settles after Options.KeyStateDelay: the key is gone at once but
// the deleted key shows only later; a recover likewise.
func TestKeyDeleteAndRecoverSettleLater(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.KeyStateDelay = 5 * time.Second })
	c := f.keys("v1")
	must(t, f.emu.AssignRole("v1", f.oid, RoleCryptoOfficer))
	_, err := c.DeleteKey(ctx, "cmk", nil)
	must(t, err)
	if _, err := c.GetKey(ctx, "cmk", "", nil); err == nil {
		t.Fatal("GET of a key being deleted succeeded")
	}
	if _, err := c.GetDeletedKey(ctx, "cmk", nil); err == nil {
		t.Fatal("GET /deletedkeys before the delete settled succeeded, want 404")
	} else if st, _, _, _ := kvFailure(t, err); st != http.StatusNotFound {
		t.Fatalf("GET /deletedkeys before the delete settled = %d, want 404", st)
	}
	pager := c.NewListDeletedKeyPropertiesPager(nil)
	page, err := pager.NextPage(ctx)
	must(t, err)
	if len(page.Value) != 0 {
		t.Fatalf("deleted keys listed before the delete settled: %d", len(page.Value))
	}
	f.clock.Advance(5 * time.Second)
	d, err := c.GetDeletedKey(ctx, "cmk", nil)
	must(t, err)
	if d.RecoveryID == nil || d.DeletedDate == nil || d.ScheduledPurgeDate == nil {
		t.Fatalf("deleted key lacks recoveryId/deletedDate/scheduledPurgeDate: %+v", d)
	}
	rec, err := c.RecoverDeletedKey(ctx, "cmk", nil)
	must(t, err)
	if _, err := c.GetKey(ctx, "cmk", rec.Key.KID.Version(), nil); err == nil {
		t.Fatal("GET of a key being recovered succeeded, want 404")
	} else if st, _, _, _ := kvFailure(t, err); st != http.StatusNotFound {
		t.Fatalf("GET of a key being recovered = %d, want 404", st)
	}
	f.clock.Advance(5 * time.Second)
	if _, err := c.GetKey(ctx, "cmk", rec.Key.KID.Version(), nil); err != nil {
		t.Fatalf("GET after the recover settled: %v", err)
	}
}

func TestBackupRestoreBoundToTenant(t *testing.T) {
	f := newFixture(t)
	must(t, f.emu.AssignRole("v1", f.oid, RoleCryptoOfficer))
	c := f.keys("v1")
	b, err := c.BackupKey(ctx, "cmk", nil)
	must(t, err)
	if bytes.Contains(b.Value, []byte("privateKey")) {
		t.Fatal("backup blob shows its content")
	}
	_, err = c.RestoreKey(ctx, azkeys.RestoreKeyParameters{KeyBackup: b.Value}, nil)
	if st, _, _, _ := kvFailure(t, err); st != http.StatusConflict {
		t.Fatalf("restore over a live key = %d, want 409", st)
	}
	// Another tenant's vault (the app consented there too) refuses it.
	oid2, err := f.emu.GrantConsent(otherTenant, appClientID)
	must(t, err)
	must(t, f.emu.CreateVault(Vault{Name: "v2", TenantID: otherTenant}))
	must(t, f.emu.AssignRole("v2", oid2, RoleCryptoOfficer))
	c2, err := azkeys.NewClient(f.emu.VaultURL("v2"), f.cred(otherTenant, appSecret), &azkeys.ClientOptions{ClientOptions: f.clientOptions()})
	must(t, err)
	_, err = c2.RestoreKey(ctx, azkeys.RestoreKeyParameters{KeyBackup: b.Value}, nil)
	if st, _, _, _ := kvFailure(t, err); st != http.StatusBadRequest {
		t.Fatalf("restore into another tenant's vault = %d, want 400", st)
	}
	tampered := bytes.Clone(b.Value)
	tampered[len(tampered)-1] ^= 1
	_, err = c.RestoreKey(ctx, azkeys.RestoreKeyParameters{KeyBackup: tampered}, nil)
	if st, _, _, _ := kvFailure(t, err); st != http.StatusBadRequest {
		t.Fatalf("restore of a tampered blob = %d, want 400", st)
	}
	// Same tenant, name free: the key comes back with its versions.
	ver, _ := f.emu.KeyVersion("v1", "cmk")
	must(t, f.emu.UpdateVault("v1", func(v *Vault) { v.PurgeProtection = false }))
	must(t, f.emu.DeleteKey("v1", "cmk"))
	must(t, f.emu.PurgeKey("v1", "cmk"))
	r, err := c.RestoreKey(ctx, azkeys.RestoreKeyParameters{KeyBackup: b.Value}, nil)
	must(t, err)
	if got := r.Key.KID.Version(); got != ver {
		t.Fatalf("restored version %s, want %s", got, ver)
	}
}

func TestRotationPolicy(t *testing.T) {
	f := newFixture(t)
	must(t, f.emu.AssignRole("v1", f.oid, RoleCryptoOfficer))
	c := f.keys("v1")
	def, err := c.GetKeyRotationPolicy(ctx, "cmk", nil)
	must(t, err)
	if len(def.LifetimeActions) != 1 || *def.LifetimeActions[0].Action.Type != azkeys.KeyRotationPolicyActionNotify ||
		*def.LifetimeActions[0].Trigger.TimeBeforeExpiry != "P30D" {
		t.Fatalf("default policy = %+v, want Notify 30 days before expiry", def.LifetimeActions)
	}
	bad := azkeys.KeyRotationPolicy{LifetimeActions: []*azkeys.LifetimeAction{{
		Action:  &azkeys.LifetimeActionType{Type: to.Ptr(azkeys.KeyRotationPolicyActionRotate)},
		Trigger: &azkeys.LifetimeActionTrigger{TimeBeforeExpiry: to.Ptr("P30D")}}}}
	_, err = c.UpdateKeyRotationPolicy(ctx, "cmk", bad, nil)
	if st, _, _, msg := kvFailure(t, err); st != http.StatusBadRequest || !strings.Contains(msg, "expiryTime") {
		t.Fatalf("timeBeforeExpiry without expiryTime = %d %q, want 400 naming expiryTime", st, msg)
	}
	if _, err := c.GetKeyRotationPolicy(ctx, "nokey", nil); err == nil {
		t.Fatal("rotation policy of a missing key answered")
	}
	good := azkeys.KeyRotationPolicy{Attributes: &azkeys.KeyRotationPolicyAttributes{ExpiryTime: to.Ptr("P90D")},
		LifetimeActions: []*azkeys.LifetimeAction{{
			Action:  &azkeys.LifetimeActionType{Type: to.Ptr(azkeys.KeyRotationPolicyActionRotate)},
			Trigger: &azkeys.LifetimeActionTrigger{TimeAfterCreate: to.Ptr("P30D")}}}}
	set, err := c.UpdateKeyRotationPolicy(ctx, "cmk", good, nil)
	must(t, err)
	got, err := c.GetKeyRotationPolicy(ctx, "cmk", nil)
	must(t, err)
	if *got.Attributes.ExpiryTime != "P90D" || *got.LifetimeActions[0].Trigger.TimeAfterCreate != "P30D" || *got.ID != *set.ID {
		t.Fatalf("stored policy = %+v, want expiry P90D and rotate after P30D", got)
	}
	rot, err := c.RotateKey(ctx, "cmk", nil)
	must(t, err)
	want := f.clock.Now().UTC().AddDate(0, 0, 90)
	if rot.Attributes.Expires == nil || !rot.Attributes.Expires.Equal(want) {
		t.Fatalf("rotated version expires %v, want %v (now + the policy's expiryTime)", rot.Attributes.Expires, want)
	}
	for _, d := range []string{"P", "30D", "P99999Y", "PT1H"} {
		bad := good
		bad.Attributes = &azkeys.KeyRotationPolicyAttributes{ExpiryTime: to.Ptr(d)}
		if _, err := c.UpdateKeyRotationPolicy(ctx, "cmk", bad, nil); err == nil {
			t.Errorf("expiryTime %q accepted", d)
		}
	}
}

func TestImportChecksKeyParts(t *testing.T) {
	f := newFixture(t)
	must(t, f.emu.AssignRole("v1", f.oid, RoleCryptoOfficer))
	c := f.keys("v1")
	ver := &keyVersion{Kty: "EC"}
	must(t, generateMaterial(ver, 0, "P-256K"))
	jwk := &azkeys.JSONWebKey{Kty: to.Ptr(azkeys.KeyTypeEC), Crv: to.Ptr(azkeys.CurveNameP256K), D: ver.ec.d.Bytes(),
		X: padBytes(ver.ec.x, 32), Y: padBytes(ver.ec.y, 32), KeyOps: to.SliceOfPtrs(azkeys.KeyOperationSign, azkeys.KeyOperationVerify)}
	r, err := c.ImportKey(ctx, "imported", azkeys.ImportKeyParameters{Key: jwk}, nil)
	must(t, err)
	if !bytes.Equal(r.Key.X, jwk.X) || r.Key.D != nil {
		t.Fatalf("imported key shows x %x (want %x) and d %x (want none)", r.Key.X, jwk.X, r.Key.D)
	}
	jwk.Y = padBytes(new(big.Int).Add(ver.ec.y, big.NewInt(1)), 32)
	_, err = c.ImportKey(ctx, "imported2", azkeys.ImportKeyParameters{Key: jwk}, nil)
	if st, _, _, _ := kvFailure(t, err); st != http.StatusBadRequest {
		t.Fatalf("import with a y that does not match d = %d, want 400", st)
	}
	_, err = c.ImportKey(ctx, "imported3", azkeys.ImportKeyParameters{Key: &azkeys.JSONWebKey{Kty: to.Ptr(azkeys.KeyTypeOct), K: make([]byte, 32)}}, nil)
	if st, _, _, _ := kvFailure(t, err); st != http.StatusBadRequest {
		t.Fatalf("import of an oct key into a vault = %d, want 400 (Managed HSM only)", st)
	}
}

func TestInstanceDiscovery(t *testing.T) {
	f := newFixture(t)
	get := func(authz string) (int, map[string]any) {
		t.Helper()
		u := f.emu.URL() + "/common/discovery/instance?api-version=1.1&authorization_endpoint=" + url.QueryEscape(authz)
		resp, err := f.emu.HTTPClient().Get(u)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return resp.StatusCode, m
	}
	st, m := get(f.emu.URL() + "/" + customerTenant + "/oauth2/v2.0/authorize")
	if want := f.emu.URL() + "/" + customerTenant + "/v2.0/.well-known/openid-configuration"; st != 200 || m["tenant_discovery_endpoint"] != want {
		t.Fatalf("discovery for the emulator = %d %v, want 200 with %s", st, m, want)
	}
	if md, _ := m["metadata"].([]any); len(md) != 1 {
		t.Fatalf("metadata = %v, want one entry", m["metadata"])
	}
	if st, m := get("https://evil.example/" + customerTenant + "/oauth2/v2.0/authorize"); st != 400 || m["error"] != "invalid_instance" {
		t.Fatalf("discovery for another host = %d %v, want 400 invalid_instance", st, m)
	}
	// A default ClientSecretCredential (instance discovery on) gets a token.
	c, err := azkeys.NewClient(f.emu.VaultURL("v1"), f.credWithDiscovery(), &azkeys.ClientOptions{ClientOptions: f.clientOptions()})
	must(t, err)
	if _, err := c.GetKey(ctx, "cmk", "", nil); err != nil {
		t.Fatalf("GetKey with instance discovery on: %v", err)
	}
}

func (f *fixture) credWithDiscovery() *azidentity.ClientSecretCredential {
	f.t.Helper()
	c, err := azidentity.NewClientSecretCredential(customerTenant, appClientID, appSecret, &azidentity.ClientSecretCredentialOptions{
		ClientOptions: f.clientOptions(),
	})
	must(f.t, err)
	return c
}

// Another process creates a Managed HSM and assigns a role with
// AdminClient, and reaches the HSM through NewTransport like a vault; an
// unknown HSM name does not resolve.
func TestNewTransportRoutesHSM(t *testing.T) {
	f := newFixture(t)
	ac, err := NewAdminClientCA(f.emu.URL(), f.emu.CAPEM())
	must(t, err)
	must(t, ac.CreateManagedHSM(ManagedHSM{Name: "hsm1", TenantID: customerTenant}))
	if err := ac.AssignHSMRole("hsm1", f.oid, "Managed HSM Wizard", "/"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown role: got %v, want ErrInvalid", err)
	}
	if err := ac.AssignHSMRole("hsm1", f.oid, RoleHSMCryptoUser, "/secrets"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad scope: got %v, want ErrInvalid", err)
	}
	must(t, ac.AssignHSMRole("hsm1", f.oid, RoleHSMCryptoUser, "/"))
	tr, err := NewTransport(f.emu.URL(), f.emu.CAPEM(), "")
	must(t, err)
	opts := f.clientOptions()
	opts.Transport = &http.Client{Transport: tr}
	cred, err := azidentity.NewClientSecretCredential(customerTenant, appClientID, appSecret, &azidentity.ClientSecretCredentialOptions{ClientOptions: opts})
	must(t, err)
	c, err := azkeys.NewClient(f.emu.HSMURL("hsm1"), cred, &azkeys.ClientOptions{ClientOptions: opts})
	must(t, err)
	_, err = c.CreateKey(ctx, "k", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeECHSM), Curve: to.Ptr(azkeys.CurveNameP384)}, nil)
	must(t, err)
	missing, err := azkeys.NewClient(f.emu.HSMURL("nohsm"), cred, &azkeys.ClientOptions{ClientOptions: opts})
	must(t, err)
	_, err = missing.GetKey(ctx, "k", "", nil)
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Fatalf("unknown HSM: got %v, want a DNS not-found error", err)
	}
}
