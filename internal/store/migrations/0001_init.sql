-- Orgs, sandboxes and their stores; the data keys that protect each store;
-- CMK configurations, which double as the enablement job.
-- Kept to SQL that SQLite and PostgreSQL both accept.

CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    kek_mode    TEXT NOT NULL DEFAULT 'SYSTEM',   -- SYSTEM | CUSTOMER (never goes back)
    vault_url   TEXT NOT NULL DEFAULT '',
    key_name    TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL
);

CREATE TABLE sandboxes (
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, name)
);

-- One row per data-encryption key. kek says which key-encryption key wraps it
-- right now; the swap from one wrapping to the next is a single-row update,
-- so a key is never without a durable wrapping.
CREATE TABLE data_keys (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL,
    sandbox     TEXT NOT NULL,
    store       TEXT NOT NULL,                    -- lake | profile | cache
    kek         TEXT NOT NULL,                    -- system | customer
    kek_ref     TEXT NOT NULL,                    -- system key id, or vault URL + key name
    kek_version TEXT NOT NULL,
    alg         TEXT NOT NULL,
    wrapped     BLOB NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    FOREIGN KEY (org_id, sandbox) REFERENCES sandboxes(org_id, name) ON DELETE CASCADE
);
CREATE INDEX data_keys_org_kek ON data_keys (org_id, kek, id);
CREATE INDEX data_keys_store ON data_keys (org_id, sandbox, store);

CREATE TABLE configs (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    type            TEXT NOT NULL,
    provider_type   TEXT NOT NULL,
    key_identifier  TEXT NOT NULL,
    vault_url       TEXT NOT NULL,
    key_name        TEXT NOT NULL,
    key_version     TEXT NOT NULL,
    status          TEXT NOT NULL,                -- NEW | RUNNING | UPDATE_EXISTING_RESOURCES | COMPLETED | FAILED
    active          INTEGER,                      -- 1 while the job is unfinished, NULL after: one active job per org
    checks          TEXT NOT NULL DEFAULT '',     -- JSON: validation results
    failure         TEXT NOT NULL DEFAULT '',     -- JSON: why the job FAILED
    last_error      TEXT NOT NULL DEFAULT '',     -- JSON: latest retryable problem
    progress_done   INTEGER NOT NULL DEFAULT 0,
    progress_total  INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    lease_owner     TEXT NOT NULL DEFAULT '',
    lease_until     BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (org_id, name),
    UNIQUE (org_id, active)
);
CREATE INDEX configs_runnable ON configs (active, next_attempt_at);
