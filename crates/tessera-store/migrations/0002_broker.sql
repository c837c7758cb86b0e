-- Tessera schema, version 2: the credential broker's storage.
-- Same portability rules as version 1 (TEXT / INTEGER / BIGINT, unix-second timestamps).

-- A user's credential for one upstream server. server_key = <name>_<first 16 hex of
-- SHA-256("<name>|<url>")>. Tokens are sealed with AAD credential|<user_id>|<server_key>
-- (the refresh token with a further |refresh field), so a row copied to another user or
-- server does not open.
CREATE TABLE credentials (
    user_id              TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    server_key           TEXT NOT NULL,
    access_token_sealed  TEXT NOT NULL,
    refresh_token_sealed TEXT,
    expires_at           BIGINT,
    scopes               TEXT NOT NULL DEFAULT '',
    token_type           TEXT NOT NULL DEFAULT 'Bearer',
    source               TEXT NOT NULL CHECK (source IN ('exchange', 'obo', 'connect', 'refresh')),
    audience             TEXT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    PRIMARY KEY (user_id, server_key)
);

-- Pending connect (authorization code + PKCE) flows, persisted so a restart loses nothing.
-- state_hash = hex SHA-256 of the state; the code verifier is sealed with AAD
-- connect_flow|<state_hash>|<user_id>|<server_key>. Single use: deleted when taken.
CREATE TABLE connect_flows (
    state_hash           TEXT PRIMARY KEY,
    user_id              TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    server_key           TEXT NOT NULL,
    code_verifier_sealed TEXT NOT NULL,
    redirect_uri         TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    expires_at           BIGINT NOT NULL
);
CREATE INDEX connect_flows_user ON connect_flows (user_id, expires_at);
CREATE INDEX connect_flows_expires ON connect_flows (expires_at);

-- Broker audit records. Deliberately no column that can hold a token. user_id has no foreign
-- key: the audit trail outlives the user, and some events (an unknown state) have no user.
CREATE TABLE activity (
    id          TEXT PRIMARY KEY,
    ts          BIGINT NOT NULL,
    user_id     TEXT,
    server      TEXT NOT NULL,
    request_id  TEXT,
    method      TEXT NOT NULL CHECK (method IN ('token_exchange', 'entra_obo', 'connect')),
    action      TEXT NOT NULL CHECK (action IN ('acquire', 'refresh', 'inject', 'connect_start',
                    'connect_finish', 'connect_deny', 'policy_deny', 'disconnect')),
    outcome     TEXT NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    reason      TEXT,
    duration_ms BIGINT
);
CREATE INDEX activity_ts ON activity (ts);
CREATE INDEX activity_user_ts ON activity (user_id, ts);
CREATE INDEX activity_server_ts ON activity (server, ts);
