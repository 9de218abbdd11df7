package api

import (
	"net/http"
	"time"

	"github.com/cmk-project/cmk/internal/alerts"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/control"
	"github.com/cmk-project/cmk/internal/preflight"
	"github.com/cmk-project/cmk/internal/store"
)

// The encoding of the control plane's results as cmkapi views.

func configDataView(c *store.Config) cmkapi.ConfigData {
	if c.ProviderType == cmkapi.ProviderAWSKMS {
		return cmkapi.ConfigData{KeyArn: c.KeyIdentifier, KeyName: c.KeyName, ProviderType: c.ProviderType}
	}
	return cmkapi.ConfigData{KeyVaultURI: c.VaultURL, KeyVaultKeyIdentifier: c.KeyIdentifier, KeyVersion: c.KeyVersion, KeyName: c.KeyName, ProviderType: c.ProviderType}
}

func configView(c *store.Config) cmkapi.Config {
	v := cmkapi.Config{
		ID: c.ID, Name: c.Name, Type: c.Type, Status: c.Status, ConfigData: configDataView(c), IMSOrgID: c.OrgID, RowType: "BYOK_KEY",
		CreatedAt: c.CreatedAt.Format(time.RFC3339), UpdatedAt: c.UpdatedAt.Format(time.RFC3339),
		Progress: cmkapi.Progress{DataKeysRewrapped: c.ProgressDone, DataKeysTotal: c.ProgressTotal},
		Checks:   checkViews(c.Checks),
	}
	v.Failure, v.LastError = c.Failure, c.LastError
	return v
}

func checkViews(rs []preflight.Result) []cmkapi.Check {
	if rs == nil {
		return nil
	}
	out := make([]cmkapi.Check, len(rs))
	for i, r := range rs {
		out[i] = cmkapi.Check{Check: r.Check, Title: r.Title, Status: string(r.Status), Code: r.Code, Message: r.Message, Remedy: r.Remedy}
	}
	return out
}

func reportView(r *preflight.Report) cmkapi.PreflightReport {
	return cmkapi.PreflightReport{KeyIdentifier: r.KeyIdentifier, CheckedAt: r.CheckedAt, Passed: r.Passed, Retryable: r.Retryable, Results: checkViews(r.Results)}
}

func tp(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func healthView(h *control.Health) cmkapi.Health {
	v := cmkapi.Health{OrgID: h.OrgID, State: cmkapi.StateSystemManaged, Revocation: cmkapi.Revocation{
		CheckInterval: h.CheckInterval.String(), Grace: h.Grace.String(), Explanation: h.RevocationExplanation(),
	}}
	k := h.Health
	if k == nil {
		return v
	}
	v.State, v.Cause, v.Message = k.State, k.Cause, k.Message
	v.KeyVaultURI, v.KeyName, v.KeyVersion = h.Org.VaultURL, h.Org.KeyName, k.KeyVersion
	v.Since, v.LastCheck, v.LastOK, v.NextCheck = tp(k.Since), tp(k.LastCheck), tp(k.LastOK), tp(k.NextCheck)
	v.DataBlocked, v.Remedy = h.DataBlocked, h.Remedy
	v.CoastingUntil = tp(h.CoastingUntil)
	if ro := h.Rotation; ro != nil {
		v.Rotation = &cmkapi.Rotation{TargetVersion: ro.TargetVersion, DataKeysRewrapped: ro.Rewrapped, DataKeysTotal: ro.Total}
	}
	v.AWS = h.AWS
	if v.AWS != nil {
		v.KeyVaultURI = ""
	}
	return v
}

// writeAlert answers one alert, or the error that came instead.
func (s *Server) writeAlert(w http.ResponseWriter, r *http.Request) func(*store.Alert, error) {
	return func(a *store.Alert, err error) {
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, 200, alerts.ViewOf(a))
	}
}
