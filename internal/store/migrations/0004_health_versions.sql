-- Replicas learn of state changes by polling changed_at (moved only when
-- the state or cause changes), and order what they learn by version (bumped
-- in SQL on every write, so it does not depend on any replica's clock).
ALTER TABLE key_health ADD COLUMN changed_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE key_health ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
CREATE INDEX key_health_changed ON key_health (changed_at);
