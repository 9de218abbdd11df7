package azurekv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/cmk-project/cmk/internal/consent"
	"github.com/cmk-project/cmk/internal/keyid"
	"github.com/cmk-project/cmk/internal/kms"
)

// probeAPIVersion is the Key Vault API version of the tenant probe. The
// vault answers the probe before looking at anything but the version.
const probeAPIVersion = "7.5"

// Vault tenants are cached per vault. A vault changes tenant only when its
// subscription is moved to another directory, a rare step an administrator
// takes on purpose; fifteen minutes bounds how long such a move goes unseen
// here, and spares the vault a probe for every check of a job that retries.
// The cache is bounded so that no caller can grow it without limit.
const (
	vaultTenantTTL  = 15 * time.Minute
	maxCachedVaults = 4096
)

// VaultTenant returns the Microsoft Entra tenant a vault belongs to, as the
// vault itself says: a request without a token is answered 401 with a
// challenge, WWW-Authenticate: Bearer authorization="https://{authority}/{tenant}",
// resource="https://vault.azure.net" (the same challenge azkeys follows to
// ask for a token in that tenant). The probe sends no credential, reads no
// key, and goes only to a vault URL the key-identifier policy allows; it
// follows no redirect. The tenant is returned in lowercase and cached per
// vault for vaultTenantTTL.
//
// Errors are *kms.Error (Op "tenant"): KindMalformedKeyURI for a vault URL
// the policy refuses, KindVaultDNSUnresolvable when the host does not
// resolve, KindThrottled or KindTransient when the vault gives no answer to
// act on, and KindInvalidRequest when its answer is not a Key Vault
// challenge naming a tenant.
func (p *Provider) VaultTenant(ctx context.Context, vaultURL string) (string, error) {
	const op = "tenant"
	id, err := p.policy.Parse(vaultURL + "/keys/probe")
	if err != nil || id.VaultURL != vaultURL {
		return "", &kms.Error{Kind: kms.KindMalformedKeyURI, Op: op, Key: vaultURL, Err: errors.New("not a vault URL the key-identifier policy allows")}
	}
	if t, ok := p.tenants.get(vaultURL, time.Now()); ok {
		return t, nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, vaultURL+"/keys?api-version="+probeAPIVersion+"&maxresults=1", nil)
	if err != nil {
		return "", &kms.Error{Kind: kms.KindInvalidRequest, Op: op, Key: vaultURL, Err: err}
	}
	resp, err := p.plain.Do(req)
	if err != nil {
		e := Classify(op, kms.KeyRef{VaultURL: vaultURL}, err).(*kms.Error)
		e.Key = vaultURL
		return "", e
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	e := &kms.Error{Op: op, Key: vaultURL, Status: resp.StatusCode}
	switch s := resp.StatusCode; {
	case s == http.StatusUnauthorized:
		tenant, err := challengeTenant(resp.Header.Get("WWW-Authenticate"), id)
		if err != nil {
			e.Kind, e.Err = kms.KindInvalidRequest, err
			return "", e
		}
		p.tenants.put(vaultURL, tenant, time.Now())
		return tenant, nil
	case s == http.StatusTooManyRequests:
		e.Kind, e.Err = kms.KindThrottled, errors.New("the vault is throttling requests")
		e.RetryAfter = retryAfter(resp.Header, time.Now())
	case s == http.StatusRequestTimeout || s >= 500:
		e.Kind, e.Err = kms.KindTransient, fmt.Errorf("the vault answered HTTP %d", s)
	default:
		e.Kind, e.Err = kms.KindInvalidRequest, fmt.Errorf("the vault answered HTTP %d to a request without a token; Key Vault answers 401 with a challenge", s)
	}
	return "", e
}

var challengeParam = regexp.MustCompile(`([A-Za-z_]+)="([^"]*)"`)

// challengeTenant reads the tenant from a Key Vault challenge for vault id.
// The challenge's resource must be the vault's own domain (the check azkeys
// makes before it trusts a challenge), and the tenant must be a tenant id:
// the first path segment of authorization (or authorization_uri).
func challengeTenant(header string, id keyid.ID) (string, error) {
	scheme, params, _ := strings.Cut(strings.TrimSpace(header), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", errors.New("the vault's 401 answer has no Bearer challenge")
	}
	vals := map[string]string{}
	for _, m := range challengeParam.FindAllStringSubmatch(params, -1) {
		vals[strings.ToLower(m[1])] = m[2]
	}
	resource := vals["resource"]
	if resource == "" {
		resource = vals["scope"]
	}
	ru, err := url.Parse(resource)
	host := strings.TrimPrefix(id.VaultURL, "https://")
	if resource == "" || err != nil || ru.Host == "" || !strings.HasSuffix(host, "."+strings.ToLower(ru.Hostname())) {
		return "", fmt.Errorf("the vault's challenge names the resource %q, which is not the vault's domain", resource)
	}
	authority := vals["authorization"]
	if authority == "" {
		authority = vals["authorization_uri"]
	}
	au, err := url.Parse(authority)
	if authority == "" || err != nil || au.Host == "" {
		return "", errors.New("the vault's challenge names no authority")
	}
	first, _, _ := strings.Cut(strings.TrimPrefix(au.Path, "/"), "/")
	tenant, ok := consent.TenantID(first)
	if !ok {
		return "", fmt.Errorf("the vault's challenge names %q where a tenant id belongs", first)
	}
	return tenant, nil
}

// tenantCache holds vault tenants for vaultTenantTTL, at most
// maxCachedVaults of them.
type tenantCache struct {
	mu sync.Mutex
	m  map[string]cachedTenant
}

type cachedTenant struct {
	tenant string
	at     time.Time
}

func (c *tenantCache) get(vault string, now time.Time) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[vault]
	if !ok || now.Sub(e.at) >= vaultTenantTTL || now.Before(e.at) {
		return "", false
	}
	return e.tenant, true
}

func (c *tenantCache) put(vault, tenant string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]cachedTenant{}
	}
	if len(c.m) >= maxCachedVaults {
		for v, e := range c.m {
			if now.Sub(e.at) >= vaultTenantTTL {
				delete(c.m, v)
			}
		}
		for v := range c.m {
			if len(c.m) < maxCachedVaults {
				break
			}
			delete(c.m, v)
		}
	}
	c.m[vault] = cachedTenant{tenant: tenant, at: now}
}
