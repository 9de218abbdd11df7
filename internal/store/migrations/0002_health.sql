-- Key health, alerts, webhooks, audit trail, and data-key rotation state.

-- One row per org that uses its customer key: what the monitor last saw.
CREATE TABLE key_health (
    org_id          TEXT PRIMARY KEY REFERENCES orgs(id) ON DELETE CASCADE,
    state           TEXT NOT NULL,                -- HEALTHY | DEGRADED | COASTING | REVOKED
    cause           TEXT NOT NULL DEFAULT '',     -- a failure kind when not HEALTHY
    message         TEXT NOT NULL DEFAULT '',
    key_version     TEXT NOT NULL DEFAULT '',     -- newest version seen in the vault
    since           BIGINT NOT NULL,              -- when the state began
    last_check      BIGINT NOT NULL DEFAULT 0,
    last_ok         BIGINT NOT NULL DEFAULT 0,
    next_check      BIGINT NOT NULL DEFAULT 0,
    lease_owner     TEXT NOT NULL DEFAULT '',
    lease_until     BIGINT NOT NULL DEFAULT 0,
    transitions     TEXT NOT NULL DEFAULT '',     -- JSON: recent state-change times, for flapping
    probe           BLOB,                         -- a probe wrapped by the key, to prove unwrap access
    probe_version   TEXT NOT NULL DEFAULT '',
    rotate_to       TEXT NOT NULL DEFAULT '',     -- key version data keys are being re-wrapped to
    rotate_owner    TEXT NOT NULL DEFAULT '',     -- lease on the re-wrap, separate from the check lease
    rotate_until    BIGINT NOT NULL DEFAULT 0,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX key_health_due ON key_health (next_check);

CREATE TABLE alerts (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,                -- KEY_ACCESS_DISABLED | KEY_ACCESS_FAILURE | ALERT_NOTIFICATION
    cause           TEXT NOT NULL,
    detail          TEXT NOT NULL,                -- JSON: title, message, probable causes, steps
    status          TEXT NOT NULL,                -- OPEN | RESOLVED
    open_key        TEXT,                         -- org/kind/cause while OPEN, NULL after: one open alert per cause
    occurrences     INTEGER NOT NULL DEFAULT 1,
    first_seen      BIGINT NOT NULL,
    last_seen       BIGINT NOT NULL,
    resolved_at     BIGINT NOT NULL DEFAULT 0,
    acknowledged_at BIGINT NOT NULL DEFAULT 0,
    acknowledged_by TEXT NOT NULL DEFAULT '',
    UNIQUE (open_key)
);
CREATE INDEX alerts_org ON alerts (org_id, first_seen);

CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX webhooks_org ON webhooks (org_id);

-- Outbox of webhook deliveries; an event is delivered at least once and
-- carries a stable id so receivers can drop duplicates.
CREATE TABLE deliveries (
    id           TEXT PRIMARY KEY,
    webhook_id   TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id     TEXT NOT NULL,
    payload      TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      BIGINT NOT NULL,
    status       TEXT NOT NULL,                  -- PENDING | DELIVERED | GAVE_UP
    last_error   TEXT NOT NULL DEFAULT '',
    lease_until  BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX deliveries_due ON deliveries (status, next_at);

CREATE TABLE audit (
    id          TEXT PRIMARY KEY,
    at          BIGINT NOT NULL,
    org_id      TEXT NOT NULL,
    op          TEXT NOT NULL,                   -- wrap | unwrap | describe | rotation | revocation | recovery | enablement
    key_ref     TEXT NOT NULL DEFAULT '',
    key_version TEXT NOT NULL DEFAULT '',
    outcome     TEXT NOT NULL,                   -- ok, or a failure kind
    request_id  TEXT NOT NULL DEFAULT '',
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_org ON audit (org_id, at);
