//! Which keys exist where: the ones Tessera reads, and the ones the reference (mcpproxy-go) writes
//! that Tessera accepts without using (reported in `Config::ignored`).

/// Top-level keys Tessera reads.
pub(crate) const TOP: &[&str] = &[
    "listen",
    "public_url",
    "data_dir",
    "storage",
    "tool_separator",
    "call_tool_timeout",
    "init_timeout",
    "list_page_size",
    "allowed_origins",
    "session_idle_timeout",
    "upstream_idle_timeout",
    "max_upstream_sessions_per_user",
    "max_upstream_sessions",
    "activity_retention_days",
    "activity_max_records",
    "routing_mode",
    "tools_limit",
    "max_user_servers",
    "user_server_allowed_networks",
    "mcpServers",
    "auth",
    "server_edition",
    "teams",
];

/// Top-level keys accepted silently: editor schema hints.
pub(crate) const TOP_SILENT: &[&str] = &["$schema"];

/// Top-level keys of the reference's config file that Tessera does not use.
pub(crate) const TOP_REFERENCE: &[&str] = &[
    "activity_cleanup_interval_min",
    "activity_max_response_size",
    "activity_max_size_mb",
    "aggregate_upstream_prompts",
    "allow_private_registry_fetch",
    "allow_server_add",
    "allow_server_remove",
    "api_key",
    "check_server_repo",
    "code_execution_max_parallel",
    "code_execution_max_tool_calls",
    "code_execution_pool_size",
    "code_execution_timeout_ms",
    "debug_search",
    "disable_management",
    "docker_isolation",
    "docker_recovery",
    "enable_code_execution",
    "enable_prompts",
    "enable_socket",
    "enable_tray",
    "environment",
    "features",
    "forward_proxy_env",
    "health_check_interval",
    "http_idle_timeout",
    "http_read_timeout",
    "http_write_timeout",
    "instructions",
    "intent_declaration",
    "logging",
    "max_concurrent_requests",
    "max_result_size_chars",
    "oauth_expiry_warning_hours",
    "observability",
    "output_sanitisation",
    "output_validation",
    "profiles",
    "quarantine_enabled",
    "queue_size",
    "queue_timeout",
    "read_only_mode",
    "registries",
    "registries_locked",
    "require_mcp_auth",
    "reveal_secret_headers",
    "security",
    "sensitive_data_detection",
    "server_concurrency_defaults",
    "telemetry",
    "tls",
    "tokenizer",
    "tool_discovery_interval",
    "tool_response_limit",
    "tool_response_mode",
    "tool_response_session_risk_warning",
    "toon_min_savings_pct",
    "toon_output",
    "top_k",
    "tray_endpoint",
    "trusted_hosts",
    "update_check",
];

/// Top-level key prefixes of the reference that Tessera does not use (`code_execution_*`).
pub(crate) const TOP_REFERENCE_PREFIXES: &[&str] = &["code_execution_"];

/// Per-server keys Tessera reads.
pub(crate) const SERVER: &[&str] = &[
    "name",
    "url",
    "protocol",
    "type",
    "command",
    "args",
    "env",
    "working_dir",
    "headers",
    "enabled",
    "timeout",
    "init_timeout",
    "auth_broker",
];

/// Per-server keys of the reference that Tessera does not use.
pub(crate) const SERVER_REFERENCE: &[&str] = &[
    "oauth",
    "quarantined",
    "skip_quarantine",
    "auto_approve_tool_changes",
    "trust_mode",
    "shared",
    "created",
    "updated",
    "isolation",
    "reconnect_on_use",
    "expose_prompts",
    "launcher_wait_timeout",
    "health_check_interval",
    "tool_discovery_interval",
    "max_concurrent_requests",
    "queue_size",
    "queue_timeout",
    "toon_output",
    "enabled_tools",
    "disabled_tools",
    "source_registry_id",
    "source_registry_provenance",
];

/// Keys of an `auth_broker` block.
pub(crate) const BROKER: &[&str] = &[
    "mode",
    "token_endpoint",
    "authorization_endpoint",
    "resource",
    "scopes",
    "client_id",
    "client_secret",
    "header",
    "header_format",
    "audience",
    "subject_token_type",
    "client_auth",
    "private_key_file",
    "revocation_endpoint",
    "issuer",
    "allowed_users",
    "allowed_emails",
    "allowed_groups",
];

/// Keys of the `auth` object.
pub(crate) const AUTH: &[&str] = &[
    "provider",
    "issuer",
    "client_id",
    "client_secret",
    "tenant_id",
    "scopes",
    "resource",
    "audience",
    "algorithms",
    "introspection_endpoint",
    "introspection_cache",
    "jwks_cache",
    "scopes_required",
    "admin_emails",
    "admin_claim",
    "allowed_domains",
    "store_idp_tokens",
    "session_ttl",
    "authorization_server",
];

/// Keys of `auth.authorization_server`.
pub(crate) const AUTHORIZATION_SERVER: &[&str] = &[
    "access_token_ttl",
    "refresh_token_ttl",
    "code_ttl",
    "dynamic_registration",
    "client_metadata_documents",
    "registration_rate_limit",
];

/// Keys of `auth.authorization_server.registration_rate_limit`.
pub(crate) const RATE_LIMIT: &[&str] = &["per_minute", "burst"];

/// Keys of `auth.admin_claim`.
pub(crate) const ADMIN_CLAIM: &[&str] = &["claim", "value"];

/// Keys of the reference's `server_edition` (alias `teams`) block that Tessera reads.
pub(crate) const SERVER_EDITION: &[&str] = &[
    "enabled",
    "admin_emails",
    "oauth",
    "session_ttl",
    "credential_encryption_key",
    "store_idp_tokens",
    "max_user_servers",
];

/// Keys of `server_edition` that Tessera accepts without using.
pub(crate) const SERVER_EDITION_REFERENCE: &[&str] =
    &["bearer_token_ttl", "workspace_idle_timeout"];

/// Keys of `server_edition.oauth`.
pub(crate) const SERVER_EDITION_OAUTH: &[&str] = &[
    "provider",
    "client_id",
    "client_secret",
    "tenant_id",
    "allowed_domains",
];
