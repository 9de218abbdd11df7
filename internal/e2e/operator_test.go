package e2e

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/monitor"
)

// TestOperatorView: the operator listener lists orgs by key state with
// cause, since and job progress; it answers only to the operator token
// (an org's token and no token get 401), and the tenants' API does not
// know its paths.
func TestOperatorView(t *testing.T) {
	env, err := devenv.Start(context.Background(), devenv.Options{
		DataDir: t.TempDir(), Poll: 50 * time.Millisecond, Operator: true,
		Monitor: monitor.Config{Interval: 250 * time.Millisecond, Grace: 2 * time.Second, WrapEvery: 1, FlapCount: 1000},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	c := adminClient(t, env, env.Org)
	op := &cmkapi.OperatorClient{BaseURL: env.Svc.OperatorURL(), Token: env.OperatorToken}
	ctx := context.Background()

	list, _, err := op.Orgs(ctx, cmkapi.OperatorParams{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Orgs) != 0 {
		t.Errorf("before enabling: %+v, want no org listed (system-managed orgs without a job are not)", list.Orgs)
	}

	enable(t, env, c)
	no, yes := false, true
	if err := env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &no}); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, c, "REVOKED", "KEY_DISABLED", 5*time.Second)
	list, _, err = op.Orgs(ctx, cmkapi.OperatorParams{State: "REVOKED"})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Orgs) != 1 || list.Orgs[0].OrgID != env.Org || list.Orgs[0].Cause != "KEY_DISABLED" || list.Orgs[0].Since == nil ||
		list.Orgs[0].Key != env.Emu.VaultURL(devenv.Vault)+"/keys/"+devenv.KeyName || list.Counts["REVOKED"] != 1 {
		t.Errorf("REVOKED orgs = %+v (counts %v), want the demo org with its cause, since and key", list.Orgs, list.Counts)
	}
	if l, _, _ := op.Orgs(ctx, cmkapi.OperatorParams{State: "HEALTHY"}); len(l.Orgs) != 0 {
		t.Errorf("HEALTHY orgs = %+v, want none", l.Orgs)
	}
	if err := env.Emu.UpdateKey(devenv.Vault, devenv.KeyName, azemu.KeyUpdate{Enabled: &yes}); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, c, "HEALTHY", "", 5*time.Second)

	var ae *cmkapi.Error
	for name, tok := range map[string]string{"no token": "", "an org's token": c.token, "a wrong token": env.OperatorToken + "x"} {
		bad := &cmkapi.OperatorClient{BaseURL: env.Svc.OperatorURL(), Token: tok}
		if _, _, err := bad.Orgs(ctx, cmkapi.OperatorParams{}); !errors.As(err, &ae) || ae.Status != 401 {
			t.Errorf("operator listener with %s = %v, want 401", name, err)
		}
	}
	if _, _, err := op.Orgs(ctx, cmkapi.OperatorParams{State: "LOCKED"}); !errors.As(err, &ae) || ae.Status != 400 {
		t.Errorf("operator listener with state LOCKED = %v, want 400", err)
	}
	req, _ := http.NewRequest("GET", env.Svc.URL()+cmkapi.OperatorListOrgs.Path, nil)
	req.Header.Set("Authorization", "Bearer "+env.OperatorToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("the tenants' API answers %s with %d, want 404", cmkapi.OperatorListOrgs.Path, resp.StatusCode)
	}

	// The fleet's metrics are the operators' too: with an operator
	// listener, the tenants' API no longer serves them.
	get := func(url, token string) (int, string) {
		req, _ := http.NewRequest("GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get(env.Svc.URL()+cmkapi.Metrics.Path, c.token); code != 404 {
		t.Errorf("the tenants' API answers /metrics with %d, want 404 while the operator listener serves them", code)
	}
	if code, _ := get(env.Svc.OperatorURL()+cmkapi.OperatorMetrics.Path, c.token); code != 401 {
		t.Errorf("the operator listener answers /metrics to an org's token with %d, want 401", code)
	}
	if code, body := get(env.Svc.OperatorURL()+cmkapi.OperatorMetrics.Path, env.OperatorToken); code != 200 || !strings.Contains(body, "cmk_orgs_by_key_state") {
		t.Errorf("the operator listener answers /metrics with %d (%d bytes), want 200 with cmk_orgs_by_key_state", code, len(body))
	}
}
