-- One row per profile record. value is ciphertext from the layer above.
-- updated_at is Unix milliseconds. The primary key serves every query:
-- point lookups, keyset pagination within a sandbox, and org deletion.
--
-- Ids use the "C" collation so pagination follows byte order, the same as
-- SQLite, whatever locale the database was created with.
CREATE TABLE IF NOT EXISTS profile_records (
    org_id     TEXT COLLATE "C" NOT NULL,
    sandbox    TEXT COLLATE "C" NOT NULL,
    id         TEXT COLLATE "C" NOT NULL,
    value      BYTEA NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, sandbox, id)
);

-- Ciphertext does not compress; EXTERNAL stores large values out of line
-- without first trying to compress them.
ALTER TABLE profile_records ALTER COLUMN value SET STORAGE EXTERNAL;
