-- Tessera schema, version 7: what each replica last reported of itself — its live MCP client
-- sessions and its upstreams' state — so that an admin's session list and dashboard on any
-- replica cover every replica. Written only when several replicas share a PostgreSQL database.
-- A row is replaced on every report: `sessions` is a JSON array of the admin list's rows
-- (session handles — SHA-256 of the ids, never an id — users, client names, times), `upstreams`
-- a JSON array of {name, state, error, tools}. No token, no secret.
CREATE TABLE replica_reports (
    replica     TEXT PRIMARY KEY,
    reported_at BIGINT NOT NULL,
    sessions    TEXT NOT NULL,
    upstreams   TEXT NOT NULL
);
