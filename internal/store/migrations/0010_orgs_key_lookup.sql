-- Key Vault events name a vault and a key; the orgs using it are found by
-- their names compared case-insensitively (as Key Vault compares them), so
-- the lookup needs an index on the lowered names rather than a scan of
-- every org (store.OrgsUsingKey).
CREATE INDEX orgs_vault_key_lower ON orgs (LOWER(vault_url), LOWER(key_name));
