package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/monitor"
)

// fastEnv is a local cmk whose monitor checks every 250 ms, with a short
// grace, short-lived tokens and a short vault timeout, so faults show fast.
func fastEnv(t *testing.T, mc monitor.Config) *devenv.Env {
	t.Helper()
	if mc.Interval == 0 {
		mc.Interval = 250 * time.Millisecond
	}
	if mc.Grace == 0 {
		mc.Grace = 1500 * time.Millisecond
	}
	if mc.WrapEvery == 0 {
		mc.WrapEvery = 1
	}
	env, err := devenv.Start(context.Background(), devenv.Options{
		DataDir: t.TempDir(), Poll: 50 * time.Millisecond, Monitor: mc,
		TokenLifetime: 2 * time.Second, VaultTimeout: time.Second, WebhookBackoff: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	return env
}

func getHealth(c *client) cmkapi.Health {
	c.t.Helper()
	code, body := c.do("GET", "/data/infrastructure/manager/byok/health", nil)
	if code != 200 {
		c.t.Fatalf("GET health = %d %v", code, body)
	}
	raw, _ := json.Marshal(body)
	var h cmkapi.Health
	json.Unmarshal(raw, &h)
	return h
}

func waitHealth(t *testing.T, c *client, state, cause string, within time.Duration) cmkapi.Health {
	t.Helper()
	deadline := time.Now().Add(within)
	var h cmkapi.Health
	for time.Now().Before(deadline) {
		if h = getHealth(c); h.State == state && (cause == "" || h.Cause == cause) {
			return h
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("health = %s/%s, want %s/%s within %s", h.State, h.Cause, state, cause, within)
	return h
}

func openAlerts(c *client) []cmkapi.Alert {
	c.t.Helper()
	code, body := c.do("GET", "/data/infrastructure/manager/byok/alerts?status=OPEN", nil)
	if code != 200 {
		c.t.Fatalf("GET alerts = %d %v", code, body)
	}
	raw, _ := json.Marshal(body["alerts"])
	var out []cmkapi.Alert
	json.Unmarshal(raw, &out)
	return out
}

// seeded is data written before the faults, to be read back byte for byte.
type seeded struct {
	files    map[string][]byte
	profiles map[string]string
}

func seed(t *testing.T, c *client) seeded {
	t.Helper()
	s := seeded{files: map[string][]byte{}, profiles: map[string]string{}}
	for i, n := range []int{0, 1000, 200_000} {
		name := fmt.Sprintf("file%d", i)
		s.files[name] = pattern(n, byte(i+1))
		if code, body := c.raw("PUT", "/data/lake/datasets/ds/files/"+name, "prod", bytes.NewReader(s.files[name])); code != 201 {
			t.Fatalf("PUT %s = %d %s", name, code, body)
		}
	}
	for i := range 5 {
		id := fmt.Sprintf("p%d", i)
		s.profiles[id] = fmt.Sprintf(`{"id":"%s","n":%d}`, id, i)
		if code, body := c.raw("PUT", "/data/profiles/"+id, "prod", strings.NewReader(s.profiles[id])); code != 200 {
			t.Fatalf("PUT %s = %d %s", id, code, body)
		}
	}
	return s
}

// access reads everything through lake, profile store and its cache and
// reports what happened: all served identical (true), or all refused with
// a locked-data error (false). Anything else fails the test.
func (s seeded) access(t *testing.T, c *client) (served bool) {
	t.Helper()
	var ok, refused int
	count := func(code int, body []byte, want []byte, what string) {
		switch {
		case code == 200 && bytes.Equal(body, want):
			ok++
		case code == 403 && strings.HasPrefix(errorCode(body), "CMK_KEY_"):
			refused++
			if bytes.Contains(body, want) && len(want) > 8 {
				t.Errorf("%s: refusal leaked the data", what)
			}
		default:
			t.Errorf("%s = %d %.200s", what, code, body)
		}
	}
	for name, want := range s.files {
		code, body := c.raw("GET", "/data/lake/datasets/ds/files/"+name, "prod", nil)
		count(code, body, want, "lake "+name)
	}
	for id, want := range s.profiles {
		code, body := c.raw("GET", "/data/profiles/"+id, "prod", nil) // p0..p4 are in the read cache
		count(code, body, []byte(want), "profile "+id)
	}
	code, body := c.raw("PUT", "/data/profiles/new-one", "prod", strings.NewReader(`{"new":true}`))
	if code == 200 {
		ok++
	} else {
		count(code, body, nil, "profile write")
	}
	if ok > 0 && refused > 0 {
		t.Errorf("mixed outcome: %d served, %d refused", ok, refused)
	}
	return refused == 0
}

// TestFaultMatrix breaks the customer's key in every way the seeds list,
// checks the health state, error code, alert kind and whether data is
// blocked, then fixes it and checks recovery: alert resolved, every record
// and file byte-identical.
func TestFaultMatrix(t *testing.T) {
	env := fastEnv(t, monitor.Config{FlapCount: 1000})
	c := adminClient(t, env, env.Org)
	data := seed(t, c)
	enable(t, env, c)
	waitHealth(t, c, "HEALTHY", "", 5*time.Second)
	emu := env.Emu
	v, k := devenv.Vault, devenv.KeyName
	yes, no := true, false
	past := time.Now().Add(-time.Hour)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	principal := env.PrincipalID

	rows := []struct {
		name           string
		breakIt, fixIt func()
		state, cause   string
		alertKind      string // "" = no alert expected
		blocked        bool
		alsoAfterGrace string // cause once the grace runs out (transient rows)
		stayHealthyFor time.Duration
	}{
		{name: "key disabled", breakIt: func() { must(emu.UpdateKey(v, k, azemu.KeyUpdate{Enabled: &no})) }, fixIt: func() { must(emu.UpdateKey(v, k, azemu.KeyUpdate{Enabled: &yes})) },
			state: "REVOKED", cause: "KEY_DISABLED", alertKind: "KEY_ACCESS_DISABLED", blocked: true},
		{name: "role removed", breakIt: func() { must(emu.RemoveRole(v, principal, devenv.Role)) }, fixIt: func() { must(emu.AssignRole(v, principal, devenv.Role)) },
			state: "REVOKED", cause: "IDENTITY_UNAUTHORIZED", alertKind: "KEY_ACCESS_FAILURE", blocked: true},
		{name: "key deleted", breakIt: func() { must(emu.DeleteKey(v, k)) }, fixIt: func() { must(emu.RecoverKey(v, k)) },
			state: "REVOKED", cause: "KEY_NOT_FOUND", alertKind: "KEY_ACCESS_FAILURE", blocked: true},
		{name: "key deleted, purge refused by purge protection", breakIt: func() {
			must(emu.DeleteKey(v, k))
			if err := emu.PurgeKey(v, k); err == nil {
				t.Error("purge of a purge-protected key succeeded")
			}
		}, fixIt: func() { must(emu.RecoverKey(v, k)) },
			state: "REVOKED", cause: "KEY_NOT_FOUND", alertKind: "KEY_ACCESS_FAILURE", blocked: true},
		{name: "vault deleted (DNS)", breakIt: func() { must(emu.DeleteVault(v)) }, fixIt: func() { must(emu.RecoverVault(v)) },
			state: "REVOKED", cause: "VAULT_DNS_UNRESOLVABLE", alertKind: "KEY_ACCESS_FAILURE", blocked: true},
		{name: "firewall denies", breakIt: func() { must(emu.SetFirewall(v, true)) }, fixIt: func() { must(emu.SetFirewall(v, false)) },
			state: "REVOKED", cause: "NETWORK_DENIED", alertKind: "KEY_ACCESS_FAILURE", blocked: true},
		{name: "consent withdrawn", breakIt: func() { must(emu.RevokeConsent(devenv.CustomerTenant, devenv.ClientID)) }, fixIt: func() {
			p, err := emu.GrantConsent(devenv.CustomerTenant, devenv.ClientID)
			must(err)
			must(emu.AssignRole(v, p, devenv.Role))
			principal = p
		}, state: "REVOKED", cause: "IDENTITY_INVALID", alertKind: "KEY_ACCESS_FAILURE", blocked: true},
		{name: "app secret wrong", breakIt: func() {
			must(emu.RegisterApp(azemu.App{HomeTenant: devenv.HomeTenant, ClientID: devenv.ClientID, ClientSecret: "rotated-elsewhere", Name: devenv.AppName, RedirectURI: devenv.AppURI}))
		}, fixIt: func() {
			must(emu.RegisterApp(azemu.App{HomeTenant: devenv.HomeTenant, ClientID: devenv.ClientID, ClientSecret: env.Secret, Name: devenv.AppName, RedirectURI: devenv.AppURI}))
		}, // The platform's own secret is wrong: not the customer's doing, and every org at once. It coasts like an outage.
			state: "COASTING", cause: "TOKEN_ACQUISITION_FAILED", alertKind: "ALERT_NOTIFICATION", blocked: false, alsoAfterGrace: "GRACE_EXHAUSTED"},
		{name: "token endpoint failing", breakIt: func() { emu.SetTokenEndpointFault(503) }, fixIt: func() { emu.SetTokenEndpointFault(0) },
			state: "COASTING", cause: "TRANSIENT", alertKind: "ALERT_NOTIFICATION", blocked: false, alsoAfterGrace: "GRACE_EXHAUSTED"},
		{name: "key expired", breakIt: func() { must(emu.UpdateKey(v, k, azemu.KeyUpdate{Expires: &past})) }, fixIt: func() { must(emu.UpdateKey(v, k, azemu.KeyUpdate{ClearExpires: true})) },
			state: "DEGRADED", cause: "KEY_NOT_ACTIVE", alertKind: "KEY_ACCESS_FAILURE", blocked: false},
		{name: "wrapKey removed from key_ops", breakIt: func() { must(emu.UpdateKey(v, k, azemu.KeyUpdate{Ops: []string{"unwrapKey"}})) },
			fixIt: func() { must(emu.UpdateKey(v, k, azemu.KeyUpdate{Ops: []string{"wrapKey", "unwrapKey"}})) },
			state: "DEGRADED", cause: "KEY_OPERATION_FORBIDDEN", alertKind: "KEY_ACCESS_FAILURE", blocked: false},
		{name: "unwrapKey removed from key_ops", breakIt: func() { must(emu.UpdateKey(v, k, azemu.KeyUpdate{Ops: []string{"wrapKey"}})) },
			fixIt: func() { must(emu.UpdateKey(v, k, azemu.KeyUpdate{Ops: []string{"wrapKey", "unwrapKey"}})) },
			state: "REVOKED", cause: "KEY_OPERATION_FORBIDDEN", alertKind: "KEY_ACCESS_FAILURE", blocked: true},
		{name: "vault 503s", breakIt: func() { emu.SetVaultFault(v, 503, 0) }, fixIt: func() { emu.SetVaultFault(v, 0, 0) },
			state: "COASTING", cause: "TRANSIENT", alertKind: "ALERT_NOTIFICATION", blocked: false},
		{name: "vault times out", breakIt: func() { emu.SetVaultFault(v, 0, 3*time.Second) }, fixIt: func() { emu.SetVaultFault(v, 0, 0) },
			state: "COASTING", cause: "TRANSIENT", alertKind: "ALERT_NOTIFICATION", blocked: false},
		// As Key Vault answers: 429 with no Retry-After (cmk backs off 1, 2, 4, 8, 16 s), and with one.
		// The monitor's checks back off while throttled; a re-check after the
		// fix starts the next row from a fresh schedule.
		{name: "vault throttles, no Retry-After", breakIt: func() { emu.SetThrottle(v, 1, 10*time.Second) }, fixIt: func() { emu.SetThrottle(v, 0, 0); recheck(c) },
			state: "HEALTHY", stayHealthyFor: 2 * time.Second},
		{name: "vault throttles, with Retry-After", breakIt: func() {
			must(emu.SetVaultThrottle(v, azemu.Throttle{Limit: 1, Window: 10 * time.Second, RetryAfter: true}))
		},
			fixIt: func() { emu.SetThrottle(v, 0, 0); recheck(c) }, state: "HEALTHY", stayHealthyFor: 2 * time.Second},
		// A cloud that lags (sovereign, Azure Stack) answers 400 BadParameter to the SDK's
		// api-version: not a verdict on the key, so it coasts and says so.
		{name: "api-version not accepted by the vault", breakIt: func() { must(emu.SetAPIVersions(v, "7.2")) }, fixIt: func() { must(emu.SetAPIVersions(v)) },
			state: "COASTING", cause: "INVALID_REQUEST", alertKind: "ALERT_NOTIFICATION", blocked: false, alsoAfterGrace: "GRACE_EXHAUSTED"},
		// Role changes take a while to reach the vault (here 1 s): the removal revokes once it
		// has, and the grant restores once it has; nothing flips before.
		{name: "role removed, with propagation delay", breakIt: func() {
			must(emu.SetPropagationDelay(time.Second))
			must(emu.RemoveRole(v, principal, devenv.Role))
			if h := getHealth(c); h.State != "HEALTHY" {
				t.Errorf("health %s/%s before the role removal reached the vault", h.State, h.Cause)
			}
		}, fixIt: func() { must(emu.AssignRole(v, principal, devenv.Role)) },
			state: "REVOKED", cause: "IDENTITY_UNAUTHORIZED", alertKind: "KEY_ACCESS_FAILURE", blocked: true},
	}
	t.Cleanup(func() { emu.SetPropagationDelay(0) })
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			fixed := false
			defer func() {
				if !fixed { // a failed row must not break the next ones
					row.fixIt()
				}
			}()
			row.breakIt()
			if row.stayHealthyFor > 0 {
				end := time.Now().Add(row.stayHealthyFor)
				for time.Now().Before(end) {
					if h := getHealth(c); h.State != "HEALTHY" {
						t.Fatalf("health became %s/%s under %s; throttling must never revoke", h.State, h.Cause, row.name)
					}
					time.Sleep(50 * time.Millisecond)
				}
				if len(openAlerts(c)) != 0 {
					t.Errorf("alerts opened under %s: %v", row.name, openAlerts(c))
				}
			} else {
				h := waitHealth(t, c, row.state, row.cause, 8*time.Second)
				if h.DataBlocked != row.blocked {
					t.Errorf("dataBlocked = %v, want %v", h.DataBlocked, row.blocked)
				}
				if served := data.access(t, c); served == row.blocked {
					t.Errorf("data served = %v, want %v", served, !row.blocked)
				}
				// The alert is raised right after the health row is saved:
				// give it the moment that takes.
				found := false
				for deadline := time.Now().Add(3 * time.Second); !found && time.Now().Before(deadline); time.Sleep(25 * time.Millisecond) {
					for _, a := range openAlerts(c) {
						if a.Kind == row.alertKind && a.Cause == row.cause {
							found = true
							if len(a.Steps) < 2 || a.Title == "" {
								t.Errorf("alert %s lacks title or steps: %+v", a.Kind, a)
							}
						}
					}
				}
				if !found {
					t.Errorf("no open %s alert with cause %s; open: %+v", row.alertKind, row.cause, openAlerts(c))
				}
				if row.alsoAfterGrace != "" {
					waitHealth(t, c, "REVOKED", row.alsoAfterGrace, 8*time.Second)
					if served := data.access(t, c); served {
						t.Error("data still served after the grace ran out")
					}
				}
			}
			row.fixIt()
			fixed = true
			waitHealth(t, c, "HEALTHY", "", 8*time.Second)
			open := openAlerts(c)
			for deadline := time.Now().Add(3 * time.Second); len(open) != 0 && time.Now().Before(deadline); open = openAlerts(c) {
				time.Sleep(25 * time.Millisecond) // alerts resolve right after the health row is saved
			}
			if len(open) != 0 {
				t.Errorf("alerts still open after recovery: %+v", open)
			}
			if !data.access(t, c) {
				t.Error("data not served after recovery")
			}
		})
	}
}

// recheck asks for a check of the org's key now.
func recheck(c *client) {
	c.t.Helper()
	if code, body := c.do("POST", "/data/infrastructure/manager/byok/health/check", nil); code != 200 {
		c.t.Fatalf("POST health/check = %d %v", code, body)
	}
}
