-- The audit log: append-only, each entry chained to the previous one by SHA-256 over
-- (previous hash ‖ canonical entry). See src/audit.rs for the canonical form.
CREATE TABLE audit_log (
    id         BIGSERIAL PRIMARY KEY,
    seq        BIGINT  NOT NULL UNIQUE,     -- 1, 2, 3, … without gaps
    at_us      BIGINT  NOT NULL,            -- UTC µs
    actor      TEXT,                        -- username (NULL: the system or an unknown user)
    actor_role TEXT,
    action     TEXT    NOT NULL,
    target     TEXT,
    addr       TEXT,                        -- client address
    detail     TEXT    NOT NULL,            -- canonical JSON
    prev_hash  TEXT    NOT NULL,            -- hex; 64 zeros for seq 1
    hash       TEXT    NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at_us);
CREATE INDEX audit_log_action ON audit_log (action, seq);
