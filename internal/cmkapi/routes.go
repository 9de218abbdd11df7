package cmkapi

import "strings"

// Access says what a route requires of the caller.
type Access int

const (
	// Public routes need no token.
	Public Access = iota
	// Org routes need a verified token, x-api-key and x-gw-ims-org-id (an
	// org the token holds), and Route.Permission in that org when set.
	Org
	// Sandboxed routes are Org routes that also need x-sandbox-name naming a
	// sandbox of the org.
	Sandboxed
	// ServiceCaller routes are called by another service, not for an org: a
	// token from that service's own issuer (configured apart from the one
	// of people and integrations), checked by the route itself; no org
	// headers. A token for an org is refused like any token of another
	// issuer.
	ServiceCaller
)

// Route is one operation of the API. Routes is the only list of them: the
// server registers exactly these, and a test checks the OpenAPI document
// against it.
type Route struct {
	ID         string // the OpenAPI operationId
	Method     string
	Path       string // a net/http pattern path: {name} segments
	Access     Access
	Permission string // needed in the org ("" = any member of it)
	Store      string // data-plane routes: "lake" or "profile"
	// Limit is the rate-limit class of a route that reaches the org's key
	// vault on demand ("" = not limited): the server charges each call to
	// the org's allowance for the class, and the vault calls it makes to the
	// vault's cap across orgs. Over either, it answers 429 with Retry-After.
	Limit string
}

// Rate-limit classes (Route.Limit). The value names the limit in a 429's
// detail ("preflight per org: 6 per minute (burst 3)").
const (
	LimitPreflight = "preflight"
	LimitRecheck   = "re-check"
	LimitConfig    = "config submission"
	LimitSandbox   = "sandbox creation"
	// LimitWebhookTest bounds the test events an org can make the platform
	// send (each is a call to a URL the org chose).
	LimitWebhookTest = "webhook test"
)

// Pattern is the route as a net/http ServeMux pattern.
func (r Route) Pattern() string { return r.Method + " " + r.Path }

// Expand fills the route's {name} segments with args, in order, escaped.
func (r Route) Expand(args ...string) string {
	p := r.Path
	for _, a := range args {
		i := strings.IndexByte(p, '{')
		j := strings.IndexByte(p, '}')
		if i < 0 || j < i {
			break
		}
		p = p[:i] + pathEscape(a) + p[j+1:]
	}
	return p
}

const (
	manager = "/data/infrastructure/manager"
	byok    = manager + "/byok"
)

// The routes, by operationId.
var (
	GetAppRegistration = Route{"getAppRegistration", "GET", byok + "/app-registration", Org, PermManageCMK, "", ""}
	GetAWSKeyPolicy    = Route{"getAwsKeyPolicy", "GET", byok + "/aws-key-policy", Org, PermManageCMK, "", ""}
	PreflightKey       = Route{"preflightKey", "POST", byok + "/preflight", Org, PermManageCMK, "", LimitPreflight}
	CreateConfig       = Route{"createConfig", "POST", manager + "/customer/config", Org, PermManageCMK, "", LimitConfig}
	ListConfigs        = Route{"listConfigs", "GET", manager + "/customer/config", Org, PermManageCMK, "", ""}
	GetConfig          = Route{"getConfig", "GET", manager + "/customer/config/{name}", Org, PermManageCMK, "", ""}
	DeleteConfig       = Route{"deleteConfig", "DELETE", manager + "/customer/config/{name}", Org, PermManageCMK, "", ""}
	DeleteOrg          = Route{"deleteOrg", "DELETE", manager + "/org", Org, PermManageCMK, "", ""}
	GetKeyHealth       = Route{"getKeyHealth", "GET", byok + "/health", Org, PermManageCMK, "", ""}
	RecheckKey         = Route{"recheckKey", "POST", byok + "/health/check", Org, PermManageCMK, "", LimitRecheck}
	ListAlerts         = Route{"listAlerts", "GET", byok + "/alerts", Org, PermManageCMK, "", ""}
	GetAlert           = Route{"getAlert", "GET", byok + "/alerts/{id}", Org, PermManageCMK, "", ""}
	AcknowledgeAlert   = Route{"acknowledgeAlert", "POST", byok + "/alerts/{id}/acknowledge", Org, PermManageCMK, "", ""}
	ListWebhooks       = Route{"listWebhooks", "GET", byok + "/webhooks", Org, PermManageCMK, "", ""}
	CreateWebhook      = Route{"createWebhook", "POST", byok + "/webhooks", Org, PermManageCMK, "", ""}
	DeleteWebhook      = Route{"deleteWebhook", "DELETE", byok + "/webhooks/{id}", Org, PermManageCMK, "", ""}
	TestWebhook        = Route{"testWebhook", "POST", byok + "/webhooks/{id}/test", Org, PermManageCMK, "", LimitWebhookTest}
	ListAudit          = Route{"listAudit", "GET", byok + "/audit", Org, PermManageCMK, "", ""}
	GetHistory         = Route{"getHistory", "GET", byok + "/history", Org, PermManageCMK, "", ""}
	GetAccessReport    = Route{"getAccessReport", "GET", byok + "/history/report", Org, PermManageCMK, "", ""}
	ListSandboxes      = Route{"listSandboxes", "GET", "/data/foundation/sandbox-management/sandboxes", Org, "", "", ""}
	CreateSandbox      = Route{"createSandbox", "POST", "/data/foundation/sandbox-management/sandboxes", Org, PermManageSandboxes, "", LimitSandbox}

	ListLakeFiles    = Route{"listLakeFiles", "GET", "/data/lake/files", Sandboxed, PermDataRead, "lake", ""}
	ListDatasetFiles = Route{"listDatasetFiles", "GET", "/data/lake/datasets/{dataset}/files", Sandboxed, PermDataRead, "lake", ""}
	PutLakeFile      = Route{"putLakeFile", "PUT", "/data/lake/datasets/{dataset}/files/{file}", Sandboxed, PermDataWrite, "lake", ""}
	GetLakeFile      = Route{"getLakeFile", "GET", "/data/lake/datasets/{dataset}/files/{file}", Sandboxed, PermDataRead, "lake", ""}
	DeleteLakeFile   = Route{"deleteLakeFile", "DELETE", "/data/lake/datasets/{dataset}/files/{file}", Sandboxed, PermDataWrite, "lake", ""}
	ListProfiles     = Route{"listProfiles", "GET", "/data/profiles", Sandboxed, PermDataRead, "profile", ""}
	PutProfile       = Route{"putProfile", "PUT", "/data/profiles/{id}", Sandboxed, PermDataWrite, "profile", ""}
	GetProfile       = Route{"getProfile", "GET", "/data/profiles/{id}", Sandboxed, PermDataRead, "profile", ""}
	DeleteProfile    = Route{"deleteProfile", "DELETE", "/data/profiles/{id}", Sandboxed, PermDataWrite, "profile", ""}

	// ConsentCallback is where Microsoft Entra ID sends the administrator's
	// browser back after the admin consent of an org's consent link: public,
	// since a browser redirect carries no bearer token; the sealed state in
	// the link says which org, the authorization code which tenant.
	ConsentCallback = Route{"consentCallback", "GET", byok + "/consent/callback", Public, "", "", ""}

	// KeyVaultEvents receives Azure Key Vault's events through Event Grid,
	// authenticated with a Microsoft Entra token issued to Event Grid.
	KeyVaultEvents = Route{"keyVaultEvents", "POST", byok + "/events/keyvault", ServiceCaller, "", "", ""}

	OpenAPIDocument = Route{"openapi", "GET", "/openapi.json", Public, "", "", ""}
	Healthz         = Route{"healthz", "GET", "/healthz", Public, "", "", ""}
	// Livez answers 200 while the process serves requests; Readyz answers
	// 200 only while the database, the storage and the platform's key are
	// usable and the process is not draining, else 503 naming what failed.
	// Both are public, for load balancers and orchestrators; neither says
	// more than a check's name and whether it passed.
	Livez  = Route{"livez", "GET", "/livez", Public, "", "", ""}
	Readyz = Route{"readyz", "GET", "/readyz", Public, "", "", ""}
	// Metrics are the fleet's figures (orgs per key state, vault calls),
	// not one org's: served here only while no operator listener is
	// configured, else there (OperatorMetrics), out of tenants' reach.
	Metrics = Route{"metrics", "GET", "/metrics", Public, "", "", ""}
	UI      = Route{"ui", "GET", "/ui/", Public, "", "", ""}
)

// Routes lists every route.
var Routes = []Route{
	GetAppRegistration, GetAWSKeyPolicy, PreflightKey, CreateConfig, ListConfigs, GetConfig, DeleteConfig, DeleteOrg,
	GetKeyHealth, RecheckKey, ListAlerts, GetAlert, AcknowledgeAlert, ListWebhooks, CreateWebhook, DeleteWebhook, TestWebhook, ListAudit,
	GetHistory, GetAccessReport,
	ListSandboxes, CreateSandbox,
	ListLakeFiles, ListDatasetFiles, PutLakeFile, GetLakeFile, DeleteLakeFile,
	ListProfiles, PutProfile, GetProfile, DeleteProfile,
	ConsentCallback, KeyVaultEvents, OpenAPIDocument, Healthz, Livez, Readyz, Metrics, UI,
}

// Operator routes are served on the operator listener only
// (--operator-addr), never on the API's: they answer across orgs, for the
// platform's operators, with the operator token (Authorization: Bearer).
// No org's token is accepted there, and the API's listener does not know
// these paths.
var (
	OperatorListOrgs = Route{"operatorListOrgs", "GET", "/operator/v1/orgs", Public, "", "", ""}
	OperatorMetrics  = Route{"operatorMetrics", "GET", "/metrics", Public, "", "", ""}
)

// OperatorRoutes lists the operator listener's routes.
var OperatorRoutes = []Route{OperatorListOrgs, OperatorMetrics}
