-- Tessera's own OAuth 2.1 authorization server for MCP clients (issue #8).

-- Clients: registered through RFC 7591 (`registered`, a secret hash unless public) or known by
-- their client ID metadata document (`metadata_document`, client_id = the document's URL).
ALTER TABLE oauth_clients ADD COLUMN secret_hash TEXT;
ALTER TABLE oauth_clients ADD COLUMN source TEXT NOT NULL DEFAULT 'registered';
ALTER TABLE oauth_clients ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;

-- oauth_grants holds the user's consent: one row per (user, client).
CREATE UNIQUE INDEX oauth_grants_user_client ON oauth_grants (user_id, client_id);

-- Authorization codes: one-time (used_at), short-lived, stored as a SHA-256 hash. `family_id`
-- names the tokens issued for the code, so a replayed code revokes them (RFC 6749 §4.1.2).
CREATE TABLE oauth_codes (
    code_hash      TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    scopes         TEXT NOT NULL DEFAULT '',
    resource       TEXT NOT NULL,
    family_id      TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT
);

-- Access and refresh tokens (opaque, SHA-256 hashed). A family is every token descending from
-- one authorization code; a refresh token used twice revokes its family.
CREATE TABLE oauth_tokens (
    token_hash TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    family_id  TEXT NOT NULL,
    client_id  TEXT NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    scopes     TEXT NOT NULL DEFAULT '',
    resource   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    revoked_at BIGINT
);
CREATE INDEX oauth_tokens_family ON oauth_tokens (family_id);
CREATE INDEX oauth_tokens_user ON oauth_tokens (user_id);
