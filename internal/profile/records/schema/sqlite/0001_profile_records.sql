-- One row per profile record. value is ciphertext from the layer above.
-- updated_at is Unix milliseconds. The primary key serves every query:
-- point lookups, keyset pagination within a sandbox, and org deletion.
CREATE TABLE IF NOT EXISTS profile_records (
    org_id     TEXT NOT NULL,
    sandbox    TEXT NOT NULL,
    id         TEXT NOT NULL,
    value      BLOB NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, sandbox, id)
);
