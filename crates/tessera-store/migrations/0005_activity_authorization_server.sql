-- Tessera schema, version 5: the activity table also records what Tessera's own authorization
-- server does with credentials (method 'authorization_server'; `server` holds the OAuth
-- client's id): a client approved or denied by a user, tokens issued, refreshed or revoked, and
-- a grant revoked because a code was replayed or a refresh token reused. A rebuild as in
-- version 3 (a CHECK constraint changes). Still no column that can hold a token.
CREATE TABLE activity_v5 (
    id          TEXT PRIMARY KEY,
    ts          BIGINT NOT NULL,
    user_id     TEXT,
    server      TEXT NOT NULL,
    tool        TEXT,
    request_id  TEXT,
    method      TEXT NOT NULL CHECK (method IN ('token_exchange', 'entra_obo', 'connect', 'mcp',
                    'authorization_server')),
    action      TEXT NOT NULL CHECK (action IN ('acquire', 'refresh', 'inject', 'connect_start',
                    'connect_finish', 'connect_deny', 'policy_deny', 'disconnect', 'tool_call',
                    'client_approve', 'client_deny', 'token_issue', 'token_refresh',
                    'token_revoke', 'grant_revoke')),
    outcome     TEXT NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    reason      TEXT,
    duration_ms BIGINT
);
INSERT INTO activity_v5 (id, ts, user_id, server, tool, request_id, method, action, outcome,
        reason, duration_ms)
    SELECT id, ts, user_id, server, tool, request_id, method, action, outcome, reason, duration_ms
    FROM activity;
DROP TABLE activity;
ALTER TABLE activity_v5 RENAME TO activity;
CREATE INDEX activity_ts ON activity (ts, id);
CREATE INDEX activity_user_ts ON activity (user_id, ts);
CREATE INDEX activity_server_ts ON activity (server, ts);
