package awsemu_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/cmk-project/cmk/internal/awsemu"
)

// signedRequest builds a ListKeys request signed by the SDK's own signer
// with the given credentials, scope and time; edit may change it after
// signing.
func signedRequest(t *testing.T, url string, c awsemu.Credentials, region, service string, at time.Time, edit func(*http.Request)) *http.Request {
	t.Helper()
	body := []byte(`{}`)
	req, err := http.NewRequest(http.MethodPost, url+"/", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "TrentService.ListKeys")
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), service, region, at); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(req)
	}
	return req
}

func send(t *testing.T, req *http.Request) (int, string, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
	}
	_ = json.Unmarshal(b, &e)
	return resp.StatusCode, e.Type, e.Message
}

func TestSignatureVerification(t *testing.T) {
	w := newWorld(t)
	now := w.clock.Now()
	role, err := w.emu.CreateRole(acctA, "r")
	if err != nil {
		t.Fatal(err)
	}
	sess, err := w.emu.AssumeRole(role, "s", 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	wrongSecret := w.alice
	wrongSecret.SecretAccessKey = strings.Repeat("x", len(w.alice.SecretAccessKey))
	unknown := w.alice
	unknown.AccessKeyID = "AKIAUNKNOWNUNKNOWN00"
	r := awsemu.DefaultRegion
	for _, tc := range []struct {
		name     string
		c        awsemu.Credentials
		region   string
		service  string
		at       time.Time
		edit     func(*http.Request)
		wantCode string // "" for success
		wantMsg  string
	}{
		{name: "good", c: w.alice, region: r, service: "kms", at: now},
		{name: "four minutes old", c: w.alice, region: r, service: "kms", at: now.Add(-4 * time.Minute)},
		{name: "session", c: sess, region: r, service: "kms", at: now},
		{name: "tampered signature", c: w.alice, region: r, service: "kms", at: now, edit: func(q *http.Request) {
			h := q.Header.Get("Authorization")
			last := h[len(h)-1]
			flip := byte('0')
			if last == '0' {
				flip = '1'
			}
			q.Header.Set("Authorization", h[:len(h)-1]+string(flip))
		}, wantCode: "InvalidSignatureException", wantMsg: "does not match"},
		{name: "wrong secret", c: wrongSecret, region: r, service: "kms", at: now, wantCode: "InvalidSignatureException"},
		{name: "body changed", c: w.alice, region: r, service: "kms", at: now, edit: func(q *http.Request) {
			q.Body = io.NopCloser(strings.NewReader(`{"Limit":1}`))
			q.ContentLength = 11
		}, wantCode: "InvalidSignatureException"},
		{name: "target changed", c: w.alice, region: r, service: "kms", at: now, edit: func(q *http.Request) {
			q.Header.Set("X-Amz-Target", "TrentService.ListAliases")
		}, wantCode: "InvalidSignatureException"},
		{name: "unknown access key", c: unknown, region: r, service: "kms", at: now, wantCode: "UnrecognizedClientException"},
		{name: "stale date", c: w.alice, region: r, service: "kms", at: now.Add(-6 * time.Minute), wantCode: "InvalidSignatureException", wantMsg: "Signature expired"},
		{name: "future date", c: w.alice, region: r, service: "kms", at: now.Add(6 * time.Minute), wantCode: "InvalidSignatureException", wantMsg: "Signature expired"},
		{name: "other region", c: w.alice, region: "eu-west-1", service: "kms", at: now, wantCode: "InvalidSignatureException", wantMsg: "region"},
		{name: "other service", c: w.alice, region: r, service: "s3", at: now, wantCode: "InvalidSignatureException", wantMsg: "'kms'"},
		{name: "no authorization", c: w.alice, region: r, service: "kms", at: now, edit: func(q *http.Request) {
			q.Header.Del("Authorization")
		}, wantCode: "MissingAuthenticationTokenException"},
		{name: "session token dropped", c: sess, region: r, service: "kms", at: now, edit: func(q *http.Request) {
			q.Header.Del("X-Amz-Security-Token")
		}, wantCode: "UnrecognizedClientException"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, code, msg := send(t, signedRequest(t, w.url, tc.c, tc.region, tc.service, tc.at, tc.edit))
			if tc.wantCode == "" {
				if status != 200 {
					t.Fatalf("status = %d %s: %s, want 200", status, code, msg)
				}
				return
			}
			if status != 400 || code != tc.wantCode || !strings.Contains(msg, tc.wantMsg) {
				t.Fatalf("answer = %d %s %q, want 400 %s containing %q", status, code, msg, tc.wantCode, tc.wantMsg)
			}
		})
	}

	// A session past its expiry, signed at the emulator's (moved) time.
	w.clock.Add(16 * time.Minute)
	status, code, _ := send(t, signedRequest(t, w.url, sess, r, "kms", w.clock.Now(), nil))
	if status != 400 || code != "ExpiredTokenException" {
		t.Fatalf("expired session: %d %s, want 400 ExpiredTokenException", status, code)
	}
	// A deleted access key is no longer recognised.
	w.emu.DeleteAccessKey(w.alice.AccessKeyID)
	status, code, _ = send(t, signedRequest(t, w.url, w.alice, r, "kms", w.clock.Now(), nil))
	if status != 400 || code != "UnrecognizedClientException" {
		t.Fatalf("deleted key: %d %s, want 400 UnrecognizedClientException", status, code)
	}
}

func TestProtocolErrors(t *testing.T) {
	w := newWorld(t)
	now := w.clock.Now()
	for _, tc := range []struct {
		name, wantCode string
		wantStatus     int
		edit           func(*http.Request)
	}{
		{"unknown operation", "UnknownOperationException", 400, func(q *http.Request) { q.Header.Set("X-Amz-Target", "TrentService.Nope") }},
		{"GET", "UnknownOperationException", 404, func(q *http.Request) { q.Method = http.MethodGet }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Edit before signing so the signature is valid.
			body := []byte(`{}`)
			req, _ := http.NewRequest(http.MethodPost, w.url+"/", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/x-amz-json-1.1")
			req.Header.Set("X-Amz-Target", "TrentService.ListKeys")
			tc.edit(req)
			sum := sha256.Sum256(body)
			creds := aws.Credentials{AccessKeyID: w.alice.AccessKeyID, SecretAccessKey: w.alice.SecretAccessKey}
			if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "kms", awsemu.DefaultRegion, now); err != nil {
				t.Fatal(err)
			}
			status, code, msg := send(t, req)
			if status != tc.wantStatus || code != tc.wantCode {
				t.Fatalf("answer = %d %s %q, want %d %s", status, code, msg, tc.wantStatus, tc.wantCode)
			}
		})
	}
}
