-- Accounts and their sessions. Passwords are argon2id PHC strings; session tokens are
-- never stored, only their SHA-256 (a database leak yields no usable session).
CREATE TABLE users (
    id                     BIGSERIAL PRIMARY KEY,
    username               TEXT    NOT NULL UNIQUE,
    display_name           TEXT    NOT NULL,
    role                   TEXT    NOT NULL,   -- admin | operator | parent | investigator | regulator | committee
    password_hash          TEXT    NOT NULL,
    created_at_us          BIGINT  NOT NULL,
    password_changed_at_us BIGINT  NOT NULL,
    disabled_at_us         BIGINT              -- NULL: active
);

CREATE TABLE sessions (
    token_sha256     TEXT    PRIMARY KEY,
    user_id          BIGINT  NOT NULL REFERENCES users (id),
    csrf_token       TEXT    NOT NULL,
    created_at_us    BIGINT  NOT NULL,
    last_seen_at_us  BIGINT  NOT NULL,
    expires_at_us    BIGINT  NOT NULL,
    revoked_at_us    BIGINT,
    addr             TEXT,
    user_agent       TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);
