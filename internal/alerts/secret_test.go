package alerts

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/store"
	"github.com/cmk-project/cmk/internal/systemkey"
)

func newBox(t *testing.T, seed byte) *SecretBox {
	t.Helper()
	sys, err := systemkey.New(bytes.Repeat([]byte{seed}, 32))
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSecretBox(sys)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const testSecret = "5f1c0a9e3b7d42e8a6c1f0b9d8e7a6c5b4a3928170f6e5d4c3b2a19080706050"

func TestSecretBox(t *testing.T) {
	box := newBox(t, 7)
	sealed, err := box.Seal("org-a", "hook-1", testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sealed, sealedPrefix) {
		t.Errorf("Seal = %q, want the %q prefix", sealed, sealedPrefix)
	}
	raw, _ := hex.DecodeString(testSecret)
	if strings.Contains(sealed, testSecret) || strings.Contains(sealed, string(raw)) {
		t.Errorf("Seal = %q holds the secret", sealed)
	}
	if got, err := box.Open("org-a", "hook-1", sealed); err != nil || got != testSecret {
		t.Errorf("Open(own org and webhook) = %q, %v; want the secret", got, err)
	}
	if again, _ := box.Seal("org-a", "hook-1", testSecret); again == sealed {
		t.Error("Seal twice gave the same value; the nonce must be fresh")
	}

	unreadable := []struct{ name, org, hook, stored string }{
		{"another org's row", "org-b", "hook-1", sealed},
		{"another webhook's row", "org-a", "hook-2", sealed},
		{"org and webhook ids shifted", "org-ah", "ook-1", sealed},
		{"truncated", "org-a", "hook-1", sealed[:len(sealed)-4]},
		{"prefix only", "org-a", "hook-1", sealedPrefix},
		{"not base64", "org-a", "hook-1", sealedPrefix + "!!!!"},
		{"unknown version", "org-a", "hook-1", "cmkws2." + strings.TrimPrefix(sealed, sealedPrefix)},
		{"empty", "org-a", "hook-1", ""},
		{"plaintext in capitals", "org-a", "hook-1", strings.ToUpper(testSecret)},
	}
	for _, c := range unreadable {
		if got, err := box.Open(c.org, c.hook, c.stored); !errors.Is(err, ErrSecretUnreadable) {
			t.Errorf("Open(%s) = %q, %v; want ErrSecretUnreadable", c.name, got, err)
		}
	}
	if _, err := newBox(t, 8).Open("org-a", "hook-1", sealed); !errors.Is(err, ErrSecretUnreadable) {
		t.Errorf("Open under another system key = %v, want ErrSecretUnreadable", err)
	}
	body := []byte(strings.TrimPrefix(sealed, sealedPrefix))
	for i := range body {
		for _, c := range []byte("AQ") { // two replacements, so one of them differs
			if body[i] == c {
				continue
			}
			bad := bytes.Clone(body)
			bad[i] = c
			if got, err := box.Open("org-a", "hook-1", sealedPrefix+string(bad)); err == nil {
				t.Fatalf("Open with character %d changed to %c = %q, want an error", i, c, got)
			}
		}
	}

	// A row from before secrets were sealed opens as itself.
	if got, err := box.Open("org-a", "hook-1", testSecret); err != nil || got != testSecret {
		t.Errorf("Open(plaintext row) = %q, %v; want the secret", got, err)
	}
}

// deliveryWorld is a store with two orgs and a deliverer whose log is kept.
type deliveryWorld struct {
	st  *store.Store
	box *SecretBox
	d   *Deliverer
	log bytes.Buffer
}

func newDeliveryWorld(t *testing.T) *deliveryWorld {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "cmk.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, org := range []string{"org-a", "org-b"} {
		if _, err := st.EnsureOrg(ctx, org); err != nil {
			t.Fatal(err)
		}
	}
	w := &deliveryWorld{st: st, box: newBox(t, 7)}
	w.d = &Deliverer{Store: st, Secrets: w.box, Client: URLPolicy{AllowHTTP: true, AllowPrivateNetworks: true}.Client(5 * time.Second),
		Log: slog.New(slog.NewTextHandler(&w.log, nil)), MaxAttempts: 3, Backoff: time.Millisecond}
	return w
}

// receiver counts deliveries whose signature verifies under secret.
type receiver struct {
	secret    string
	good, bad atomic.Int32
}

func (rv *receiver) serve(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if Verify(rv.secret, r.Header.Get(HeaderSignature), body, time.Now(), time.Minute) != nil {
			rv.bad.Add(1)
			w.WriteHeader(401)
			return
		}
		rv.good.Add(1)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestDeliverySignsWithSealedSecret(t *testing.T) {
	ctx := context.Background()
	w := newDeliveryWorld(t)
	rvA, rvB := &receiver{secret: testSecret}, &receiver{secret: testSecret}
	urlA, urlB := rvA.serve(t).URL, rvB.serve(t).URL

	sealed, err := w.box.Seal("org-a", "hook-a", testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.st.CreateWebhook(ctx, &store.Webhook{ID: "hook-a", OrgID: "org-a", URL: urlA, SealedSecret: sealed}); err != nil {
		t.Fatal(err)
	}
	// org-a's sealed secret copied onto a webhook of org-b.
	if err := w.st.CreateWebhook(ctx, &store.Webhook{ID: "hook-b", OrgID: "org-b", URL: urlB, SealedSecret: sealed}); err != nil {
		t.Fatal(err)
	}
	hooks, err := w.st.AllWebhooks(ctx)
	if err != nil || len(hooks) != 2 {
		t.Fatalf("AllWebhooks = %v, %v", hooks, err)
	}
	for _, h := range hooks {
		if strings.Contains(h.SealedSecret, testSecret) {
			t.Errorf("webhook %s is stored with its secret in plaintext: %q", h.ID, h.SealedSecret)
		}
	}

	for _, org := range []string{"org-a", "org-b"} {
		if _, err := w.st.EnqueueEvent(ctx, org, "ev-"+org, `{"type":"alert.opened"}`); err != nil {
			t.Fatal(err)
		}
	}
	w.d.DeliverDue(ctx)
	if g, b := rvA.good.Load(), rvA.bad.Load(); g != 1 || b != 0 {
		t.Errorf("org-a's receiver verified %d deliveries and refused %d; want 1 and 0", g, b)
	}
	if n := rvB.good.Load() + rvB.bad.Load(); n != 0 {
		t.Errorf("org-b's receiver got %d deliveries signed with a secret copied from org-a; want none", n)
	}
	if st, _, _ := w.st.DeliveryStatus(ctx, "hook-b", "ev-org-b"); st != store.DeliveryGaveUp {
		t.Errorf("delivery to the copied row is %s, want %s at once (the secret never opens)", st, store.DeliveryGaveUp)
	}
	if strings.Contains(w.log.String(), testSecret) {
		t.Errorf("the log holds the secret:\n%s", w.log.String())
	}
}

func TestSealPlaintextSecrets(t *testing.T) {
	ctx := context.Background()
	w := newDeliveryWorld(t)
	rv := &receiver{secret: testSecret}
	// A row written before secrets were sealed.
	if err := w.st.CreateWebhook(ctx, &store.Webhook{ID: "hook-a", OrgID: "org-a", URL: rv.serve(t).URL, SealedSecret: testSecret}); err != nil {
		t.Fatal(err)
	}
	if n, err := SealPlaintextSecrets(ctx, w.st, w.box); n != 1 || err != nil {
		t.Fatalf("SealPlaintextSecrets = %d, %v; want 1, nil", n, err)
	}
	hooks, _ := w.st.Webhooks(ctx, "org-a")
	if len(hooks) != 1 || !strings.HasPrefix(hooks[0].SealedSecret, sealedPrefix) {
		t.Fatalf("after sealing, webhooks = %+v; want one sealed secret", hooks)
	}
	if got, err := w.box.Open("org-a", "hook-a", hooks[0].SealedSecret); err != nil || got != testSecret {
		t.Errorf("Open(sealed plaintext row) = %q, %v; want the original secret", got, err)
	}
	if n, err := SealPlaintextSecrets(ctx, w.st, w.box); n != 0 || err != nil {
		t.Errorf("SealPlaintextSecrets again = %d, %v; want 0, nil", n, err)
	}
	// The receiver still verifies with the secret it was given.
	if _, err := w.st.EnqueueEvent(ctx, "org-a", "ev-1", `{"type":"alert.opened"}`); err != nil {
		t.Fatal(err)
	}
	w.d.DeliverDue(ctx)
	if g, b := rv.good.Load(), rv.bad.Load(); g != 1 || b != 0 {
		t.Errorf("receiver verified %d deliveries and refused %d; want 1 and 0", g, b)
	}
}

// TestDeliveryLogsNoURL: a receiver's URL can carry its own credential, so
// a failed delivery is logged and recorded without it.
func TestDeliveryLogsNoURL(t *testing.T) {
	ctx := context.Background()
	w := newDeliveryWorld(t)
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close() // connections are refused
	const token = "T0KEN-in-the-path"
	sealed, _ := w.box.Seal("org-a", "hook-a", testSecret)
	if err := w.st.CreateWebhook(ctx, &store.Webhook{ID: "hook-a", OrgID: "org-a", URL: srv.URL + "/hooks/" + token + "?sig=" + token, SealedSecret: sealed}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.st.EnqueueEvent(ctx, "org-a", "ev-1", `{"type":"alert.opened"}`); err != nil {
		t.Fatal(err)
	}
	w.d.DeliverDue(ctx)
	out := w.log.String()
	if !strings.Contains(out, "webhook delivery failed") {
		t.Fatalf("log = %q; want the failed delivery logged", out)
	}
	if strings.Contains(out, token) || strings.Contains(out, testSecret) {
		t.Errorf("the log names the receiver's URL or the secret:\n%s", out)
	}
}
