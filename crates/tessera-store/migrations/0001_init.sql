-- Tessera schema, version 1.
-- Portable between SQLite and PostgreSQL: TEXT / INTEGER / BIGINT only; every timestamp is
-- BIGINT unix seconds (UTC); booleans are INTEGER 0/1; ids are UUIDv7 text.
-- Secrets are never stored plain: session ids and token hashes are hex SHA-256 of the secret,
-- provider tokens are sealed values (tsv1.<kid>.<nonce>.<ciphertext>).

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    issuer        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    email         TEXT,
    display_name  TEXT,
    role          TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'user')),
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    last_login_at BIGINT,
    UNIQUE (issuer, subject)
);
CREATE INDEX users_email ON users (email);

-- Browser sign-in sessions. id = hex SHA-256 of the cookie value.
CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    user_agent TEXT,
    ip         TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- Personal access tokens. token_hash = hex SHA-256 of the token; the token is shown once.
CREATE TABLE personal_access_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    scopes       TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX personal_access_tokens_user ON personal_access_tokens (user_id);

-- The user's identity-provider tokens, sealed with AAD idp_token|<user_id>|<kind>.
CREATE TABLE idp_tokens (
    user_id              TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    access_token_sealed  TEXT NOT NULL,
    refresh_token_sealed TEXT,
    id_token_sealed      TEXT,
    expires_at           BIGINT,
    scopes               TEXT NOT NULL DEFAULT '',
    updated_at           BIGINT NOT NULL
);

-- Dynamic client registrations (RFC 7591) for Tessera's own authorization server (later).
CREATE TABLE oauth_clients (
    client_id  TEXT PRIMARY KEY,
    metadata   TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- What a user granted an OAuth client (later).
CREATE TABLE oauth_grants (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    scopes     TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX oauth_grants_user ON oauth_grants (user_id);
