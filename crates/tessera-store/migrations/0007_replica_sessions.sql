-- Tessera schema, version 7: what each replica last reported of its live MCP client sessions,
-- so that an admin's list on any replica shows every replica's sessions. Written only when
-- several replicas share a PostgreSQL database; a row is the replica's whole list (a JSON array
-- of the admin list's rows: session handles — SHA-256 of the ids, never an id — users, client
-- names, times; no token, no secret) and is replaced on every report.
CREATE TABLE replica_sessions (
    replica  TEXT PRIMARY KEY,
    seen_at  BIGINT NOT NULL,
    sessions TEXT NOT NULL
);
