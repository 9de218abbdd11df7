-- The platform key in a KMS (internal/platformkey): the system key is a set
-- of AES-256 generations, each stored wrapped by the platform's KMS key.
-- A system-wrapped data key names its generation in kek_ref.
CREATE TABLE platform_key_generations (
    id          TEXT PRIMARY KEY,      -- the generation's fingerprint (systemkey.Key.ID), which its unwrapped bytes must match
    root        INTEGER UNIQUE,        -- 1 on the one generation secrets are derived from, NULL on the others
    kms_key     TEXT NOT NULL,         -- the KMS key that wraps it, without version
    kms_version TEXT NOT NULL,         -- the KMS key version of wrapped ('' for AWS KMS)
    alg         TEXT NOT NULL,
    wrapped     BLOB NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT NOT NULL DEFAULT 0 -- when no data key was left under it; 0 while in use
);

-- One replica at a time re-wraps system-managed data keys to the current
-- generation.
CREATE TABLE platform_key_lease (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    lease_until BIGINT NOT NULL
);

CREATE INDEX data_keys_kek_ref ON data_keys (kek, kek_ref, id);
