-- Tessera schema, version 6: personal servers, per-user switches for shared servers, and
-- scoped personal access tokens (agent tokens). Same portability rules as version 1.

-- A user's own upstream servers (HTTP only). The headers are one JSON object sealed with AAD
-- user_server|<user_id>|<id>, so a value copied to another row does not open; header_names
-- (comma-joined) lets lists show which headers exist without opening anything. An auth_broker
-- block (JSON, as the owner gave it; it may hold a client_secret) is sealed likewise with AAD
-- user_server_broker|<user_id>|<id>.
CREATE TABLE user_servers (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    url            TEXT NOT NULL,
    protocol       TEXT NOT NULL CHECK (protocol IN ('streamable-http', 'sse', 'http')),
    header_names   TEXT NOT NULL DEFAULT '',
    headers_sealed TEXT,
    auth_broker_sealed TEXT,
    enabled        INTEGER NOT NULL DEFAULT 1,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    UNIQUE (user_id, name)
);

-- A user's on/off switch for a shared (configured) server. No row = on.
CREATE TABLE user_server_prefs (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    server     TEXT NOT NULL,
    enabled    INTEGER NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, server)
);

-- Agent tokens: the servers a token may reach (NULL = all; else comma-joined names) and what
-- it may do with their tools (comma-joined subset of read, write, destructive).
ALTER TABLE personal_access_tokens ADD COLUMN allowed_servers TEXT;
ALTER TABLE personal_access_tokens ADD COLUMN permissions TEXT NOT NULL
    DEFAULT 'read,write,destructive';
