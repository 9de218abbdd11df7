-- Audit entries name who acted: the subject of the caller's token for an
-- administrator's action, "system" for the monitor, the enablement job and
-- rotation, and the consenting administrator for a tenant binding. Entries
-- written before this column existed read as "system" (they were all key
-- calls of the service itself).
ALTER TABLE audit ADD COLUMN actor TEXT NOT NULL DEFAULT 'system';
