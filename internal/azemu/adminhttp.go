package azemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

type adminErrBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeAdminError(w http.ResponseWriter, err error) {
	status, code := http.StatusInternalServerError, "Internal"
	switch {
	case errors.Is(err, ErrNotFound):
		status, code = http.StatusNotFound, "NotFound"
	case errors.Is(err, ErrInvalid):
		status, code = http.StatusBadRequest, "Invalid"
	case errors.Is(err, ErrConflict):
		status, code = http.StatusConflict, "Conflict"
	case errors.Is(err, ErrForbidden):
		status, code = http.StatusForbidden, "Forbidden"
	}
	var b adminErrBody
	b.Error.Code, b.Error.Message = code, err.Error()
	writeJSON(w, status, b)
}

func readJSON(r *http.Request, v any) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return err
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

// adminFunc is a handler returning a JSON result or an error.
type adminFunc func(r *http.Request) (any, error)

func adminHandler(f adminFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := f(r)
		if err != nil {
			writeAdminError(w, err)
			return
		}
		if v == nil {
			v = map[string]bool{"ok": true}
		}
		writeJSON(w, http.StatusOK, v)
	}
}

type tenantReq struct {
	TenantID string `json:"tenantId"`
}

// resetReq switches a vault's connection resets on or off.
type resetReq struct {
	Reset bool `json:"reset"`
}

type statusReq struct {
	Status  int   `json:"status"`
	DelayMs int64 `json:"delayMs,omitempty"`
}

type roleReq struct {
	PrincipalObjectID string `json:"principalObjectId"`
	Role              string `json:"role"`
}

type throttleReq struct {
	Limit      int   `json:"limit"`
	WindowMs   int64 `json:"windowMs"`
	RetryAfter bool  `json:"retryAfter,omitempty"`
}

type propagationReq struct {
	DelayMs int64 `json:"delayMs"`
}

type versionResp struct {
	Version string `json:"version"`
	KID     string `json:"kid"`
}

type principalResp struct {
	PrincipalObjectID string `json:"principalObjectId"`
}

func (e *Emulator) adminRoutes(m *http.ServeMux) {
	h := func(pattern string, f adminFunc) { m.Handle(pattern, adminHandler(f)) }
	e.hsmAdminRoutes(m)
	h("GET /admin/state", func(r *http.Request) (any, error) { return e.State(), nil })
	h("GET /admin/stats", func(r *http.Request) (any, error) { return e.Stats(), nil })
	m.HandleFunc("GET /admin/dns/{host}", func(w http.ResponseWriter, r *http.Request) {
		name, ok := vaultFromHost(r.PathValue("host"), e.suffix)
		ok = ok && !e.isHSMName(name)
		if !ok {
			name, ok = vaultFromHost(r.PathValue("host"), e.hsmSuffix)
			ok = ok && e.isHSMName(name)
		}
		if ok && e.VaultResolves(name) {
			writeJSON(w, http.StatusOK, map[string]string{"host": r.PathValue("host"), "address": e.host})
			return
		}
		writeJSON(w, http.StatusNotFound, map[string]string{"host": r.PathValue("host"), "error": "no such host"})
	})
	h("POST /admin/tenants", func(r *http.Request) (any, error) {
		var q tenantReq
		if err := readJSON(r, &q); err != nil {
			return nil, err
		}
		return nil, e.CreateTenant(q.TenantID)
	})
	h("POST /admin/apps", func(r *http.Request) (any, error) {
		var a App
		if err := readJSON(r, &a); err != nil {
			return nil, err
		}
		return nil, e.RegisterApp(a)
	})
	h("PUT /admin/token-fault", func(r *http.Request) (any, error) {
		var q statusReq
		if err := readJSON(r, &q); err != nil {
			return nil, err
		}
		e.SetTokenEndpointFault(q.Status)
		return nil, nil
	})
	h("GET /admin/propagation", func(r *http.Request) (any, error) {
		return propagationReq{DelayMs: e.PropagationDelay().Milliseconds()}, nil
	})
	h("PUT /admin/propagation", func(r *http.Request) (any, error) {
		var q propagationReq
		if err := readJSON(r, &q); err != nil {
			return nil, err
		}
		return nil, e.SetPropagationDelay(time.Duration(q.DelayMs) * time.Millisecond)
	})
	h("GET /admin/tenants/{tenant}/consents/{client}", func(r *http.Request) (any, error) {
		oid, ok := e.ServicePrincipal(r.PathValue("tenant"), r.PathValue("client"))
		if !ok {
			return nil, fmt.Errorf("%w: no service principal for %s in %s", ErrNotFound, r.PathValue("client"), r.PathValue("tenant"))
		}
		return principalResp{oid}, nil
	})
	h("POST /admin/tenants/{tenant}/consents/{client}", func(r *http.Request) (any, error) {
		oid, err := e.GrantConsent(r.PathValue("tenant"), r.PathValue("client"))
		return principalResp{oid}, err
	})
	h("DELETE /admin/tenants/{tenant}/consents/{client}", func(r *http.Request) (any, error) {
		return nil, e.RevokeConsent(r.PathValue("tenant"), r.PathValue("client"))
	})
	h("POST /admin/vaults", func(r *http.Request) (any, error) {
		var v Vault
		if err := readJSON(r, &v); err != nil {
			return nil, err
		}
		if err := e.CreateVault(v); err != nil {
			return nil, err
		}
		return e.GetVault(v.Name)
	})
	h("GET /admin/vaults/{vault}", func(r *http.Request) (any, error) { return e.GetVault(r.PathValue("vault")) })
	h("PATCH /admin/vaults/{vault}", func(r *http.Request) (any, error) {
		var p VaultPatch
		if err := readJSON(r, &p); err != nil {
			return nil, err
		}
		if err := e.PatchVault(r.PathValue("vault"), p); err != nil {
			return nil, err
		}
		return e.GetVault(r.PathValue("vault"))
	})
	h("DELETE /admin/vaults/{vault}", func(r *http.Request) (any, error) { return nil, e.DeleteVault(r.PathValue("vault")) })
	h("POST /admin/vaults/{vault}/recover", func(r *http.Request) (any, error) { return nil, e.RecoverVault(r.PathValue("vault")) })
	h("POST /admin/vaults/{vault}/purge", func(r *http.Request) (any, error) { return nil, e.PurgeVault(r.PathValue("vault")) })
	h("POST /admin/vaults/{vault}/roles", func(r *http.Request) (any, error) {
		var q roleReq
		if err := readJSON(r, &q); err != nil {
			return nil, err
		}
		return nil, e.AssignRole(r.PathValue("vault"), q.PrincipalObjectID, q.Role)
	})
	h("DELETE /admin/vaults/{vault}/roles", func(r *http.Request) (any, error) {
		var q roleReq
		if err := readJSON(r, &q); err != nil {
			return nil, err
		}
		return nil, e.RemoveRole(r.PathValue("vault"), q.PrincipalObjectID, q.Role)
	})
	h("PUT /admin/vaults/{vault}/throttle", func(r *http.Request) (any, error) {
		var q throttleReq
		if err := readJSON(r, &q); err != nil {
			return nil, err
		}
		return nil, e.SetVaultThrottle(r.PathValue("vault"), Throttle{Limit: q.Limit,
			Window: time.Duration(q.WindowMs) * time.Millisecond, RetryAfter: q.RetryAfter})
	})
	h("PUT /admin/vaults/{vault}/fault", func(r *http.Request) (any, error) {
		var q statusReq
		if err := readJSON(r, &q); err != nil {
			return nil, err
		}
		e.SetVaultFault(r.PathValue("vault"), q.Status, time.Duration(q.DelayMs)*time.Millisecond)
		return nil, nil
	})
	h("PUT /admin/vaults/{vault}/reset", func(r *http.Request) (any, error) {
		var q resetReq
		if err := readJSON(r, &q); err != nil {
			return nil, err
		}
		if !e.VaultExists(r.PathValue("vault")) {
			return nil, fmt.Errorf("%w: vault %q", ErrNotFound, r.PathValue("vault"))
		}
		e.SetVaultReset(r.PathValue("vault"), q.Reset)
		return nil, nil
	})
	h("POST /admin/vaults/{vault}/keys/{key}", func(r *http.Request) (any, error) {
		var o KeyOptions
		if err := readJSON(r, &o); err != nil {
			return nil, err
		}
		v, err := e.CreateKey(r.PathValue("vault"), r.PathValue("key"), o)
		if err != nil {
			return nil, err
		}
		return versionResp{v, e.VaultURL(r.PathValue("vault")) + "/keys/" + r.PathValue("key") + "/" + v}, nil
	})
	h("GET /admin/vaults/{vault}/keys/{key}", func(r *http.Request) (any, error) {
		return e.Key(r.PathValue("vault"), r.PathValue("key"))
	})
	h("PATCH /admin/vaults/{vault}/keys/{key}", func(r *http.Request) (any, error) {
		var u KeyUpdate
		if err := readJSON(r, &u); err != nil {
			return nil, err
		}
		if err := e.UpdateKey(r.PathValue("vault"), r.PathValue("key"), u); err != nil {
			return nil, err
		}
		return e.Key(r.PathValue("vault"), r.PathValue("key"))
	})
	h("DELETE /admin/vaults/{vault}/keys/{key}", func(r *http.Request) (any, error) {
		return nil, e.DeleteKey(r.PathValue("vault"), r.PathValue("key"))
	})
	h("POST /admin/vaults/{vault}/keys/{key}/rotate", func(r *http.Request) (any, error) {
		v, err := e.RotateKey(r.PathValue("vault"), r.PathValue("key"))
		if err != nil {
			return nil, err
		}
		return versionResp{v, e.VaultURL(r.PathValue("vault")) + "/keys/" + r.PathValue("key") + "/" + v}, nil
	})
	h("POST /admin/vaults/{vault}/keys/{key}/recover", func(r *http.Request) (any, error) {
		return nil, e.RecoverKey(r.PathValue("vault"), r.PathValue("key"))
	})
	h("POST /admin/vaults/{vault}/keys/{key}/purge", func(r *http.Request) (any, error) {
		return nil, e.PurgeKey(r.PathValue("vault"), r.PathValue("key"))
	})
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeAdminError(w, fmt.Errorf("%w: no admin endpoint %s %s", ErrNotFound, r.Method, r.URL.Path))
	})
}

// VaultExists reports whether a vault exists, live or soft-deleted.
func (e *Emulator) VaultExists(name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st.Vaults[strings.ToLower(name)] != nil
}
