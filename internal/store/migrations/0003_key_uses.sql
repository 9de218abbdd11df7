-- Objects sealed under a data key are counted so the key is retired before
-- its safe-use limit. Processes reserve blocks of uses ahead of time; a crash
-- loses at most a block, which only retires the key a little early.
ALTER TABLE data_keys ADD COLUMN uses_reserved BIGINT NOT NULL DEFAULT 0;
