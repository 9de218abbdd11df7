package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/cmk-project/cmk/internal/auth"
)

func Example() {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss := auth.NewIssuer(key, "https://cmk.local", "cmk")
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	iss.Now = func() time.Time { return now }

	token, _ := iss.Mint(auth.Claims{
		Subject:  "alice",
		ClientID: "cmk-cli",
		Orgs:     map[string][]string{"ACME@AdobeOrg": {auth.PermManageCMK}},
	}, time.Hour)

	c, err := iss.Verifier().Verify(context.Background(), token)
	fmt.Println(c.Subject, err)
	fmt.Println(c.Can("ACME@AdobeOrg", auth.PermManageCMK), c.Can("ACME@AdobeOrg", auth.PermDataWrite))
	fmt.Println(c.CheckAPIKey("cmk-cli"))

	now = now.Add(2 * time.Hour)
	_, err = iss.Verifier().Verify(context.Background(), token)
	fmt.Println(errors.Is(err, auth.ErrExpired))
	fmt.Println(err)
	// Output:
	// alice <nil>
	// true false
	// <nil>
	// true
	// token expired: token expired at 2026-01-01T13:00:00Z (now 2026-01-01T14:00:00Z, leeway 30s); mint a new one with `cmk token`
}
