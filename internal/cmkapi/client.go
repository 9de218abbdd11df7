package cmkapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client calls a cmk service as one org. Its methods return the typed
// answer and the raw JSON (for callers that print it as it came); a refusal
// is an *Error, and no answer at all a *ConnError.
type Client struct {
	BaseURL string // e.g. http://127.0.0.1:8080, no trailing slash
	Token   string
	OrgID   string
	APIKey  string
	HTTP    *http.Client // nil = http.DefaultClient
}

// ConnError is a request that got no answer.
type ConnError struct {
	URL string
	Err error
}

func (e *ConnError) Error() string { return fmt.Sprintf("cannot reach cmk at %s: %v", e.URL, e.Err) }
func (e *ConnError) Unwrap() error { return e.Err }

// Request describes one call.
type Request struct {
	Route       Route
	Args        []string   // the route's {name} segments, in order
	Query       url.Values // nil = none
	Sandbox     string     // x-sandbox-name, for data-plane routes
	Body        io.Reader  // nil = none
	ContentType string     // of Body; default application/json
}

// Do sends a request and returns the answer of any status; the caller
// closes its body. Only a failure to get an answer is an error.
func (c *Client) Do(ctx context.Context, r Request) (*http.Response, error) {
	u := c.BaseURL + r.Route.Expand(r.Args...)
	if len(r.Query) > 0 {
		u += "?" + r.Query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, r.Route.Method, u, r.Body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set(HeaderAPIKey, c.APIKey)
	req.Header.Set(HeaderOrgID, c.OrgID)
	if r.Sandbox != "" {
		req.Header.Set(HeaderSandbox, r.Sandbox)
	}
	if r.Body != nil {
		ct := r.ContentType
		if ct == "" {
			ct = "application/json"
		}
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("Accept", "application/json")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, &ConnError{URL: c.BaseURL, Err: err}
	}
	return resp, nil
}

// Call sends a request and returns the body of a 2xx answer; any other
// status becomes an *Error (one of the server's, or one made up for an
// answer that is not cmk's).
func (c *Client) Call(ctx context.Context, r Request) ([]byte, error) {
	resp, err := c.Do(ctx, r)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, &ConnError{URL: c.BaseURL, Err: fmt.Errorf("read %s %s answer: %w", r.Route.Method, r.Route.Path, err)}
	}
	if resp.StatusCode/100 != 2 {
		return nil, ErrorOf(resp.StatusCode, b, r.Route)
	}
	return b, nil
}

// ErrorOf decodes an error answer.
func ErrorOf(status int, body []byte, r Route) *Error {
	e := &Error{}
	if json.Unmarshal(body, e) != nil || e.ErrorCode == "" {
		e = &Error{ErrorCode: fmt.Sprintf("HTTP_%d", status), Title: "Unexpected answer from " + r.Method + " " + r.Path,
			Detail: firstLine(string(body)), Hint: "is the URL the address of cmk and not of another service?"}
	}
	e.Status = status
	return e
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// JSON sends in (when not nil) as JSON and decodes a 2xx answer into out
// (when not nil). The raw answer is returned too.
func (c *Client) JSON(ctx context.Context, r Request, in, out any) ([]byte, error) {
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		r.Body = bytes.NewReader(b)
	}
	raw, err := c.Call(ctx, r)
	if err != nil {
		return nil, err
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return raw, fmt.Errorf("decode the answer of %s %s: %w", r.Route.Method, r.Route.Path, err)
		}
	}
	return raw, nil
}

// AppRegistration returns the platform's app and the org's consent link.
func (c *Client) AppRegistration(ctx context.Context) (*App, []byte, error) {
	var out App
	raw, err := c.JSON(ctx, Request{Route: GetAppRegistration}, nil, &out)
	return &out, raw, err
}

// AWSKeyPolicy returns the key-policy statements the org adds to its AWS
// KMS key.
func (c *Client) AWSKeyPolicy(ctx context.Context) (*AWSKeyPolicy, []byte, error) {
	var out AWSKeyPolicy
	raw, err := c.JSON(ctx, Request{Route: GetAWSKeyPolicy}, nil, &out)
	return &out, raw, err
}

// isARN reports whether a key identifier is an AWS KMS key ARN.
func isARN(keyIdentifier string) bool { return strings.HasPrefix(keyIdentifier, "arn:") }

// Preflight runs every validation check against a key: a Key Vault key
// identifier, or an AWS KMS key ARN.
func (c *Client) Preflight(ctx context.Context, keyIdentifier string) (*PreflightReport, []byte, error) {
	var rep PreflightReport
	req := PreflightRequest{KeyVaultKeyIdentifier: keyIdentifier}
	if isARN(keyIdentifier) {
		req = PreflightRequest{KeyArn: keyIdentifier}
	}
	raw, err := c.JSON(ctx, Request{Route: PreflightKey}, req, &rep)
	return &rep, raw, err
}

// SubmitConfig sends the key identifier (a Key Vault key identifier, or
// an AWS KMS key ARN) under a configuration name; the enablement job
// starts.
func (c *Client) SubmitConfig(ctx context.Context, name, keyIdentifier string) (*ConfigCreated, []byte, error) {
	var out ConfigCreated
	data := ConfigData{ProviderType: ProviderAzureKeyVault, KeyVaultKeyIdentifier: keyIdentifier}
	if isARN(keyIdentifier) {
		data = ConfigData{ProviderType: ProviderAWSKMS, KeyArn: keyIdentifier}
	}
	raw, err := c.JSON(ctx, Request{Route: CreateConfig}, ConfigRequest{
		Name: name, Type: ConfigTypeBYOK, IMSOrgID: c.OrgID, ConfigData: data,
	}, &out)
	return &out, raw, err
}

// Config reads a configuration and its job.
func (c *Client) Config(ctx context.Context, name string) (*Config, []byte, error) {
	var out Config
	raw, err := c.JSON(ctx, Request{Route: GetConfig, Args: []string{name}, Query: url.Values{"configType": {ConfigTypeBYOK}}}, nil, &out)
	return &out, raw, err
}

// Configs lists the org's configurations.
func (c *Client) Configs(ctx context.Context) (*ConfigList, []byte, error) {
	var out ConfigList
	raw, err := c.JSON(ctx, Request{Route: ListConfigs}, nil, &out)
	return &out, raw, err
}

// Health reads the org's key health.
func (c *Client) Health(ctx context.Context) (*Health, []byte, error) {
	var out Health
	raw, err := c.JSON(ctx, Request{Route: GetKeyHealth}, nil, &out)
	return &out, raw, err
}

// Recheck checks the org's key now and returns its health.
func (c *Client) Recheck(ctx context.Context) (*Health, []byte, error) {
	var out Health
	raw, err := c.JSON(ctx, Request{Route: RecheckKey}, nil, &out)
	return &out, raw, err
}

// Alerts lists the org's alerts; status "" means all.
func (c *Client) Alerts(ctx context.Context, status string) (*AlertList, []byte, error) {
	var q url.Values
	if status != "" {
		q = url.Values{"status": {status}}
	}
	var out AlertList
	raw, err := c.JSON(ctx, Request{Route: ListAlerts, Query: q}, nil, &out)
	return &out, raw, err
}

// Alert reads one alert.
func (c *Client) Alert(ctx context.Context, id string) (*Alert, []byte, error) {
	var out Alert
	raw, err := c.JSON(ctx, Request{Route: GetAlert, Args: []string{id}}, nil, &out)
	return &out, raw, err
}

// AcknowledgeAlert records that the caller has seen an alert.
func (c *Client) AcknowledgeAlert(ctx context.Context, id string) (*Alert, []byte, error) {
	var out Alert
	raw, err := c.JSON(ctx, Request{Route: AcknowledgeAlert, Args: []string{id}}, nil, &out)
	return &out, raw, err
}

// AuditParams selects audit entries; zero fields select everything.
type AuditParams struct {
	Operation, Actor string
	Since, Until     time.Time
	Limit            int
}

// Audit lists the org's audit entries, newest first.
func (c *Client) Audit(ctx context.Context, p AuditParams) (*AuditList, []byte, error) {
	q := url.Values{}
	if p.Operation != "" {
		q.Set("operation", p.Operation)
	}
	if p.Actor != "" {
		q.Set("actor", p.Actor)
	}
	if !p.Since.IsZero() {
		q.Set("since", p.Since.UTC().Format(time.RFC3339))
	}
	if !p.Until.IsZero() {
		q.Set("until", p.Until.UTC().Format(time.RFC3339))
	}
	if p.Limit > 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	var out AuditList
	raw, err := c.JSON(ctx, Request{Route: ListAudit, Query: q}, nil, &out)
	return &out, raw, err
}

// HistoryParams selects a period; zero fields are the server's defaults
// (the last 90 days up to now).
type HistoryParams struct {
	Since, Until time.Time
}

func (p HistoryParams) query() url.Values {
	q := url.Values{}
	if !p.Since.IsZero() {
		q.Set("since", p.Since.UTC().Format(time.RFC3339))
	}
	if !p.Until.IsZero() {
		q.Set("until", p.Until.UTC().Format(time.RFC3339))
	}
	return q
}

// History lists the org's key-health episodes, newest first.
func (c *Client) History(ctx context.Context, p HistoryParams) (*History, []byte, error) {
	var out History
	raw, err := c.JSON(ctx, Request{Route: GetHistory, Query: p.query()}, nil, &out)
	return &out, raw, err
}

// AccessReport returns the org's access report as JSON.
func (c *Client) AccessReport(ctx context.Context, p HistoryParams) (*AccessReport, []byte, error) {
	var out AccessReport
	raw, err := c.JSON(ctx, Request{Route: GetAccessReport, Query: p.query()}, nil, &out)
	return &out, raw, err
}

// AccessReportHTML returns the org's access report as a printable HTML page.
func (c *Client) AccessReportHTML(ctx context.Context, p HistoryParams) ([]byte, error) {
	q := p.query()
	q.Set("format", "html")
	return c.Call(ctx, Request{Route: GetAccessReport, Query: q})
}

// pathEscape escapes one path segment.
func pathEscape(s string) string { return url.PathEscape(s) }

// OperatorClient calls the operator listener (cmkapi.OperatorRoutes) with
// the operator token.
type OperatorClient struct {
	BaseURL string
	Token   string
	HTTP    *http.Client
}

// OperatorParams selects orgs of the operator's view.
type OperatorParams struct {
	State      string // a key state or SYSTEM_MANAGED; "" = all
	ActiveJobs bool
	After      string
	Limit      int
}

// Orgs lists orgs by key state with their jobs (one page).
func (c *OperatorClient) Orgs(ctx context.Context, p OperatorParams) (*OperatorOrgList, []byte, error) {
	q := url.Values{}
	if p.State != "" {
		q.Set("state", p.State)
	}
	if p.ActiveJobs {
		q.Set("jobs", "active")
	}
	if p.After != "" {
		q.Set("after", p.After)
	}
	if p.Limit > 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	u := c.BaseURL + OperatorListOrgs.Path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Accept", "application/json")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, nil, &ConnError{URL: c.BaseURL, Err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, nil, &ConnError{URL: c.BaseURL, Err: err}
	}
	if resp.StatusCode/100 != 2 {
		return nil, raw, ErrorOf(resp.StatusCode, raw, OperatorListOrgs)
	}
	var out OperatorOrgList
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, raw, fmt.Errorf("decode the operator's org list: %w", err)
	}
	return &out, raw, nil
}
