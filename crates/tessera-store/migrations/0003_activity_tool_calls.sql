-- Tessera schema, version 3: the activity table also holds MCP tool calls (method 'mcp',
-- action 'tool_call', with the tool's name in the new `tool` column). Changing a CHECK
-- constraint needs a table rebuild in SQLite: create the new table, copy, drop, rename.
-- Same portability rules as versions 1 and 2. Still no column that can hold a token, an
-- argument or a result.
CREATE TABLE activity_v3 (
    id          TEXT PRIMARY KEY,
    ts          BIGINT NOT NULL,
    user_id     TEXT,
    server      TEXT NOT NULL,
    tool        TEXT,
    request_id  TEXT,
    method      TEXT NOT NULL CHECK (method IN ('token_exchange', 'entra_obo', 'connect', 'mcp')),
    action      TEXT NOT NULL CHECK (action IN ('acquire', 'refresh', 'inject', 'connect_start',
                    'connect_finish', 'connect_deny', 'policy_deny', 'disconnect', 'tool_call')),
    outcome     TEXT NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    reason      TEXT,
    duration_ms BIGINT
);
INSERT INTO activity_v3 (id, ts, user_id, server, tool, request_id, method, action, outcome,
        reason, duration_ms)
    SELECT id, ts, user_id, server, NULL, request_id, method, action, outcome, reason, duration_ms
    FROM activity;
DROP TABLE activity;
ALTER TABLE activity_v3 RENAME TO activity;
CREATE INDEX activity_ts ON activity (ts, id);
CREATE INDEX activity_user_ts ON activity (user_id, ts);
CREATE INDEX activity_server_ts ON activity (server, ts);
