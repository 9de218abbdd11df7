-- Key ownership (docs/security.md): consent states already used. A state
-- binds once: after its code was redeemed, the same state is refused. Rows
-- are kept until the state expires (it is refused as expired after that)
-- and pruned by expires_at.
CREATE TABLE used_consent_states (
    state_id    TEXT PRIMARY KEY,                 -- consent.StateID
    expires_at  BIGINT NOT NULL                   -- Unix milliseconds
);
CREATE INDEX used_consent_states_expiry ON used_consent_states (expires_at);
