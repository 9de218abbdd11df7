package azemu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// AdminClient drives a running emulator's admin API from another process.
// Errors wrap ErrNotFound, ErrInvalid, ErrConflict or ErrForbidden by status.
type AdminClient struct {
	base string
	hc   *http.Client
}

// NewAdminClient returns a client for the emulator at baseURL (its URL()).
// httpClient must trust the emulator's CA (see NewTransport); nil means
// http.DefaultClient.
func NewAdminClient(baseURL string, httpClient *http.Client) *AdminClient {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &AdminClient{base: strings.TrimSuffix(baseURL, "/"), hc: httpClient}
}

// NewAdminClientCA is NewAdminClient with an HTTP client built by
// NewTransport from the CA PEM.
func NewAdminClientCA(baseURL string, caPEM []byte) (*AdminClient, error) {
	t, err := NewTransport(baseURL, caPEM, "")
	if err != nil {
		return nil, err
	}
	return NewAdminClient(baseURL, &http.Client{Transport: t, Timeout: 60 * time.Second}), nil
}

func (c *AdminClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var eb adminErrBody
		_ = json.Unmarshal(b, &eb)
		msg := eb.Error.Message
		if msg == "" {
			msg = strings.TrimSpace(string(b))
		}
		var base error
		switch resp.StatusCode {
		case http.StatusNotFound:
			base = ErrNotFound
		case http.StatusBadRequest:
			base = ErrInvalid
		case http.StatusConflict:
			base = ErrConflict
		case http.StatusForbidden:
			base = ErrForbidden
		default:
			return fmt.Errorf("azemu admin %s %s: HTTP %d: %s", method, path, resp.StatusCode, msg)
		}
		return &AdminError{Status: resp.StatusCode, Message: msg, base: base}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("azemu admin %s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// AdminError is an admin API failure; errors.Is matches the sentinel errors.
type AdminError struct {
	Status  int
	Message string
	base    error
}

func (e *AdminError) Error() string { return e.Message }
func (e *AdminError) Unwrap() error { return e.base }

func p(parts ...string) string {
	var b strings.Builder
	for _, s := range parts {
		b.WriteString("/")
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

var bg = context.Background

// CreateTenant mirrors Emulator.CreateTenant.
func (c *AdminClient) CreateTenant(tenantID string) error {
	return c.do(bg(), http.MethodPost, "/admin/tenants", tenantReq{tenantID}, nil)
}

// RegisterApp mirrors Emulator.RegisterApp.
func (c *AdminClient) RegisterApp(app App) error {
	return c.do(bg(), http.MethodPost, "/admin/apps", app, nil)
}

// GrantConsent mirrors Emulator.GrantConsent.
func (c *AdminClient) GrantConsent(tenantID, clientID string) (string, error) {
	var r principalResp
	err := c.do(bg(), http.MethodPost, "/admin/tenants"+p(tenantID, "consents", clientID), nil, &r)
	return r.PrincipalObjectID, err
}

// RevokeConsent mirrors Emulator.RevokeConsent.
func (c *AdminClient) RevokeConsent(tenantID, clientID string) error {
	return c.do(bg(), http.MethodDelete, "/admin/tenants"+p(tenantID, "consents", clientID), nil, nil)
}

// ServicePrincipal mirrors Emulator.ServicePrincipal.
func (c *AdminClient) ServicePrincipal(tenantID, clientID string) (string, bool, error) {
	var r principalResp
	err := c.do(bg(), http.MethodGet, "/admin/tenants"+p(tenantID, "consents", clientID), nil, &r)
	if err != nil {
		if isNotFound(err) {
			return "", false, nil
		}
		return "", false, err
	}
	return r.PrincipalObjectID, true, nil
}

func isNotFound(err error) bool {
	ae, ok := err.(*AdminError)
	return ok && ae.Status == http.StatusNotFound
}

// SetTokenEndpointFault mirrors Emulator.SetTokenEndpointFault.
func (c *AdminClient) SetTokenEndpointFault(status int) error {
	return c.do(bg(), http.MethodPut, "/admin/token-fault", statusReq{Status: status}, nil)
}

// SetPropagationDelay mirrors Emulator.SetPropagationDelay.
func (c *AdminClient) SetPropagationDelay(d time.Duration) error {
	return c.do(bg(), http.MethodPut, "/admin/propagation", propagationReq{d.Milliseconds()}, nil)
}

// PropagationDelay mirrors Emulator.PropagationDelay.
func (c *AdminClient) PropagationDelay() (time.Duration, error) {
	var r propagationReq
	err := c.do(bg(), http.MethodGet, "/admin/propagation", nil, &r)
	return time.Duration(r.DelayMs) * time.Millisecond, err
}

// CreateVault mirrors Emulator.CreateVault.
func (c *AdminClient) CreateVault(v Vault) error {
	return c.do(bg(), http.MethodPost, "/admin/vaults", v, nil)
}

// GetVault mirrors Emulator.GetVault.
func (c *AdminClient) GetVault(name string) (VaultInfo, error) {
	var v VaultInfo
	err := c.do(bg(), http.MethodGet, "/admin/vaults"+p(name), nil, &v)
	return v, err
}

// PatchVault mirrors Emulator.PatchVault (UpdateVault over HTTP).
func (c *AdminClient) PatchVault(name string, patch VaultPatch) error {
	return c.do(bg(), http.MethodPatch, "/admin/vaults"+p(name), patch, nil)
}

// SetAPIVersions mirrors Emulator.SetAPIVersions.
func (c *AdminClient) SetAPIVersions(vault string, versions ...string) error {
	if versions == nil {
		versions = []string{}
	}
	return c.PatchVault(vault, VaultPatch{APIVersions: versions})
}

// SetFirewall turns the vault firewall on (deny) or off.
func (c *AdminClient) SetFirewall(name string, deny bool) error {
	return c.PatchVault(name, VaultPatch{FirewallDeny: &deny})
}

// DeleteVault mirrors Emulator.DeleteVault.
func (c *AdminClient) DeleteVault(name string) error {
	return c.do(bg(), http.MethodDelete, "/admin/vaults"+p(name), nil, nil)
}

// RecoverVault mirrors Emulator.RecoverVault.
func (c *AdminClient) RecoverVault(name string) error {
	return c.do(bg(), http.MethodPost, "/admin/vaults"+p(name, "recover"), nil, nil)
}

// PurgeVault mirrors Emulator.PurgeVault.
func (c *AdminClient) PurgeVault(name string) error {
	return c.do(bg(), http.MethodPost, "/admin/vaults"+p(name, "purge"), nil, nil)
}

// AssignRole mirrors Emulator.AssignRole.
func (c *AdminClient) AssignRole(vault, principalObjectID, role string) error {
	return c.do(bg(), http.MethodPost, "/admin/vaults"+p(vault, "roles"), roleReq{principalObjectID, role}, nil)
}

// RemoveRole mirrors Emulator.RemoveRole.
func (c *AdminClient) RemoveRole(vault, principalObjectID, role string) error {
	return c.do(bg(), http.MethodDelete, "/admin/vaults"+p(vault, "roles"), roleReq{principalObjectID, role}, nil)
}

// SetThrottle mirrors Emulator.SetThrottle (429s without Retry-After).
func (c *AdminClient) SetThrottle(vault string, limit int, window time.Duration) error {
	return c.SetVaultThrottle(vault, Throttle{Limit: limit, Window: window})
}

// SetVaultThrottle mirrors Emulator.SetVaultThrottle.
func (c *AdminClient) SetVaultThrottle(vault string, t Throttle) error {
	return c.do(bg(), http.MethodPut, "/admin/vaults"+p(vault, "throttle"), throttleReq{t.Limit, t.Window.Milliseconds(), t.RetryAfter}, nil)
}

// SetVaultFault mirrors Emulator.SetVaultFault.
func (c *AdminClient) SetVaultFault(vault string, status int, delay time.Duration) error {
	return c.do(bg(), http.MethodPut, "/admin/vaults"+p(vault, "fault"), statusReq{status, delay.Milliseconds()}, nil)
}

// SetVaultReset mirrors Emulator.SetVaultReset; an unknown vault is
// ErrNotFound.
func (c *AdminClient) SetVaultReset(vault string, on bool) error {
	return c.do(bg(), http.MethodPut, "/admin/vaults"+p(vault, "reset"), resetReq{on}, nil)
}

// CreateKey mirrors Emulator.CreateKey.
func (c *AdminClient) CreateKey(vault, name string, o KeyOptions) (string, error) {
	var r versionResp
	err := c.do(bg(), http.MethodPost, "/admin/vaults"+p(vault, "keys", name), o, &r)
	return r.Version, err
}

// RotateKey mirrors Emulator.RotateKey.
func (c *AdminClient) RotateKey(vault, name string) (string, error) {
	var r versionResp
	err := c.do(bg(), http.MethodPost, "/admin/vaults"+p(vault, "keys", name, "rotate"), nil, &r)
	return r.Version, err
}

// GetKey mirrors Emulator.Key.
func (c *AdminClient) GetKey(vault, name string) (KeyInfo, error) {
	var k KeyInfo
	err := c.do(bg(), http.MethodGet, "/admin/vaults"+p(vault, "keys", name), nil, &k)
	return k, err
}

// UpdateKey mirrors Emulator.UpdateKey.
func (c *AdminClient) UpdateKey(vault, name string, u KeyUpdate) error {
	return c.do(bg(), http.MethodPatch, "/admin/vaults"+p(vault, "keys", name), u, nil)
}

// DeleteKey mirrors Emulator.DeleteKey.
func (c *AdminClient) DeleteKey(vault, name string) error {
	return c.do(bg(), http.MethodDelete, "/admin/vaults"+p(vault, "keys", name), nil, nil)
}

// RecoverKey mirrors Emulator.RecoverKey.
func (c *AdminClient) RecoverKey(vault, name string) error {
	return c.do(bg(), http.MethodPost, "/admin/vaults"+p(vault, "keys", name, "recover"), nil, nil)
}

// PurgeKey mirrors Emulator.PurgeKey.
func (c *AdminClient) PurgeKey(vault, name string) error {
	return c.do(bg(), http.MethodPost, "/admin/vaults"+p(vault, "keys", name, "purge"), nil, nil)
}

// Stats mirrors Emulator.Stats.
func (c *AdminClient) Stats() (Stats, error) {
	var s Stats
	err := c.do(bg(), http.MethodGet, "/admin/stats", nil, &s)
	return s, err
}

// State mirrors Emulator.State.
func (c *AdminClient) State() (State, error) {
	var s State
	err := c.do(bg(), http.MethodGet, "/admin/state", nil, &s)
	return s, err
}

// VaultResolves asks whether "{vault}.{suffix}" resolves (GET /admin/dns).
func (c *AdminClient) VaultResolves(host string) (bool, error) {
	err := c.do(bg(), http.MethodGet, "/admin/dns"+p(host), nil, nil)
	if err == nil {
		return true, nil
	}
	if isNotFound(err) {
		return false, nil
	}
	return false, err
}
