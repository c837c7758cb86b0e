//! Benchmark tooling for Tessera.
//!
//! * [`upstream`] — a fast hand-written MCP server (JSON-RPC on `serde_json`), served over streamable HTTP or stdio;
//! * [`barehop`] — the thinnest possible HTTP pass-through proxy, the floor a gateway is compared with;
//! * [`load`] — an MCP load generator (sessions, fixed-rate or flat-out `tools/call`, latency histograms);
//! * [`idp`] — a mini identity provider and RFC 8693 token endpoint (caller JWTs, JWKS, token exchange);
//! * [`procfs`] — CPU time and RSS of a process from `/proc`;
//! * [`child`] — starting the helper binaries and waiting for their `listening on` line;
//! * [`gateway`] — starting `tessera serve` with a temporary config and waiting for `/readyz`.

pub mod barehop;
pub mod child;
pub mod gateway;
pub mod idp;
pub mod load;
pub mod procfs;
pub mod upstream;

/// Parses a human duration such as `10s`, `500ms` or `2m` (clap value parser).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}
