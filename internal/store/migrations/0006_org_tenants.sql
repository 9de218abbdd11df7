-- Key ownership (docs/security.md): the Azure tenants whose administrators
-- consented for an org through the org's own consent link. The org may use
-- keys only from vaults of these tenants.
CREATE TABLE org_tenants (
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    tenant_id   TEXT NOT NULL,                    -- lowercase GUID
    bound_at    BIGINT NOT NULL,
    PRIMARY KEY (org_id, tenant_id)
);

-- The tenant the org's vault was found in when its key passed validation
-- ('' for orgs enabled before this column existed).
ALTER TABLE orgs ADD COLUMN vault_tenant TEXT NOT NULL DEFAULT '';
