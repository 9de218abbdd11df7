-- Key-health episodes: each stretch of an org's key not being HEALTHY,
-- written by the check that holds the org's lease in the transaction that
-- saves its health (so replicas never write one twice). ended_at = 0 while
-- the episode goes on; at most one such row per org.
CREATE TABLE key_episodes (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    ended_at      BIGINT NOT NULL DEFAULT 0,
    worst         TEXT NOT NULL,
    key_ref       TEXT NOT NULL DEFAULT '',
    causes        TEXT NOT NULL DEFAULT '[]',
    blocked_from  BIGINT NOT NULL DEFAULT 0,
    blocked_until BIGINT NOT NULL DEFAULT 0,
    blocked_at    BIGINT NOT NULL DEFAULT 0,
    blocked_ms    BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX key_episodes_open ON key_episodes (org_id) WHERE ended_at = 0;
CREATE INDEX key_episodes_org ON key_episodes (org_id, started_at);
-- Refused requests per episode and store, one row per replica (each
-- flushes its own counts; readers sum the counts and take the earliest
-- first and the latest last refusal). resumed_at is the first request the
-- replica served after its refusals.
CREATE TABLE key_episode_stores (
    episode_id    TEXT NOT NULL,
    store         TEXT NOT NULL,
    replica       TEXT NOT NULL,
    first_refused BIGINT NOT NULL DEFAULT 0,
    last_refused  BIGINT NOT NULL DEFAULT 0,
    refused       BIGINT NOT NULL DEFAULT 0,
    resumed_at    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (episode_id, store, replica)
);
