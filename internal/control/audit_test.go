package control

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/store"
)

// TestAdminActionsAudited checks that administrators' actions land in the
// acting org's trail with their actor and outcome, that a refused attempt on
// another org's object is recorded for the attempting org only, that no
// webhook secret reaches the trail, and the trail's filters.
func TestAdminActionsAudited(t *testing.T) {
	s, st := newService(t)
	s.AuditLog = &audit.Recorder{Store: st}
	s.WebhookPolicy.AllowHTTP, s.WebhookPolicy.AllowPrivateNetworks = true, true
	alice := audit.WithActor(context.Background(), audit.UserActor("alice"))
	mallory := audit.WithActor(context.Background(), audit.UserActor("mallory"))

	if _, err := st.RaiseAlert(alice, &store.Alert{ID: "alert-1", OrgID: orgA, Kind: "KEY_ACCESS_DISABLED", Cause: "KEY_DISABLED"}); err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	if _, err := s.AcknowledgeAlert(alice, orgA, "alert-1", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AcknowledgeAlert(mallory, orgB, "alert-1", "mallory"); err == nil {
		t.Fatal("another org acknowledged org A's alert")
	}
	hook, err := s.CreateWebhook(alice, orgA, "http://127.0.0.1:9/services/T0/B0/SECRETPATH?token=abc")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteWebhook(alice, orgA, hook.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.SubmitConfig(alice, orgA, ConfigInput{Name: "c1", Type: "nope", OrgID: orgA})
	wantProblem(t, "SubmitConfig(bad type)", err, ErrInvalidConfigType)

	trail := func(ctx context.Context, org string, q AuditQuery) []store.AuditEntry {
		t.Helper()
		if q.Limit == 0 {
			q.Limit = DefaultAuditLimit
		}
		es, err := s.Audit(ctx, org, q)
		if err != nil {
			t.Fatalf("Audit(%s, %+v) = %v", org, q, err)
		}
		return es
	}
	got := map[string]store.AuditEntry{}
	for _, e := range trail(alice, orgA, AuditQuery{}) {
		got[e.Op] = e
		if strings.Contains(e.Detail, "SECRETPATH") || strings.Contains(e.Detail, "abc") || strings.Contains(e.Detail, hook.Secret) {
			t.Errorf("audit entry %s holds a webhook secret: %q", e.Op, e.Detail)
		}
		if e.Actor == audit.UserActor("mallory") {
			t.Errorf("org A's trail holds org B's attempt: %+v", e)
		}
	}
	for op, want := range map[string]string{
		audit.OpAlertAck:      "ok",
		audit.OpWebhookAdd:    "ok",
		audit.OpWebhookDelete: "ok",
		audit.OpConfigSubmit:  "refused: " + ErrInvalidConfigType.Error(),
	} {
		e, ok := got[op]
		if !ok {
			t.Errorf("org A's trail has no %s entry; has %v", op, got)
			continue
		}
		if e.Outcome != want || e.Actor != "user:alice" {
			t.Errorf("%s entry: outcome %q by %q, want %q by user:alice", op, e.Outcome, e.Actor, want)
		}
	}
	if d := got[audit.OpWebhookAdd].Detail; d != "webhook "+hook.ID {
		t.Errorf("webhook.add detail = %q, want the webhook id only", d)
	}

	b := trail(mallory, orgB, AuditQuery{})
	if len(b) != 1 || b[0].Op != audit.OpAlertAck || b[0].Actor != "user:mallory" || !strings.HasPrefix(b[0].Outcome, "refused: ") {
		t.Errorf("org B's trail = %+v, want its one refused acknowledgement by user:mallory", b)
	}

	if es := trail(alice, orgA, AuditQuery{Actor: "user:alice", Operation: audit.OpWebhookAdd}); len(es) != 1 {
		t.Errorf("Audit(actor alice, op webhook.add) = %d entries, want 1", len(es))
	}
	if es := trail(alice, orgA, AuditQuery{Actor: "system"}); len(es) != 0 {
		t.Errorf("Audit(actor system) = %+v, want none", es)
	}
	if es := trail(alice, orgA, AuditQuery{Until: before}); len(es) != 0 {
		t.Errorf("Audit(until before the actions) = %+v, want none", es)
	}
	if es := trail(alice, orgA, AuditQuery{Since: before, Until: time.Now().Add(time.Minute)}); len(es) != 4 {
		t.Errorf("Audit(since..until around the actions) = %d entries, want 4", len(es))
	}
	_, err = s.Audit(alice, orgA, AuditQuery{Since: before, Until: before, Limit: 10})
	wantProblem(t, "Audit(until = since)", err, ErrInvalidField)
}

// TestRefusedAttemptsBounded: an org calling refused operations in a loop
// leaves a bounded number of entries, and a raw key identifier that does not
// parse never reaches the trail.
func TestRefusedAttemptsBounded(t *testing.T) {
	s, st := newService(t)
	s.AuditLog = &audit.Recorder{Store: st}
	ctx := audit.WithActor(context.Background(), audit.UserActor("mallory"))
	for i := range 200 {
		if _, err := s.AcknowledgeAlert(ctx, orgB, fmt.Sprintf("no-such-alert-%d", i), "mallory"); err == nil {
			t.Fatal("acknowledged an alert that does not exist")
		}
	}
	_, err := s.SubmitConfig(audit.WithActor(context.Background(), audit.UserActor("alice")), orgA,
		ConfigInput{Name: "c", Type: ConfigTypeBYOK, OrgID: orgA, ProviderType: ProviderAzure, KeyIdentifier: "https://login.example/consent?state=SECRET-STATE"})
	wantProblem(t, "SubmitConfig(a link, not a key)", err, ErrInvalidKeyID)

	b, err := s.Audit(ctx, orgB, AuditQuery{Limit: MaxAuditLimit})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(b); n < 10 || n > refusedAuditLimit.N {
		t.Errorf("200 refused attempts left %d entries, want some and at most %d", n, refusedAuditLimit.N)
	}
	a, _ := s.Audit(ctx, orgA, AuditQuery{Limit: 10})
	if len(a) != 1 || strings.Contains(a[0].Detail, "SECRET") || !strings.Contains(a[0].Detail, "(not a valid key identifier)") {
		t.Errorf("org A's trail = %+v, want one config.submit without the raw identifier", a)
	}
}
