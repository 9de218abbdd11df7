-- Deleted orgs, so every replica can forget what it holds of them in memory.
CREATE TABLE org_deletions (
    org_id      TEXT NOT NULL,
    deleted_at  BIGINT NOT NULL
);
CREATE INDEX org_deletions_at ON org_deletions (deleted_at);
