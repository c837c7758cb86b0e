//! The policy hook: runs before any acquisition (and before any token request). The default,
//! [`ConfigPolicy`], reads the server's `auth_broker` allow-lists: `allowed_users` (store user
//! ids or IdP subjects), `allowed_emails` (exact, case-insensitive, or `*@domain`),
//! `allowed_groups`. All three empty = everyone is allowed; otherwise matching any one entry of
//! any list allows.

use crate::resolver::{BrokeredServer, Requester};

/// Whether a user may obtain a credential for a server.
pub trait Policy: Send + Sync + 'static {
    fn allows(&self, who: &Requester<'_>, server: &BrokeredServer) -> bool;
}

/// Allows everyone.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Policy for AllowAll {
    fn allows(&self, _: &Requester<'_>, _: &BrokeredServer) -> bool {
        true
    }
}

/// The per-server allow-lists of the configuration (the resolver's default policy).
#[derive(Debug, Clone, Copy, Default)]
pub struct ConfigPolicy;

fn email_matches(pattern: &str, email: &str) -> bool {
    match pattern.strip_prefix("*@") {
        Some(domain) => email
            .rsplit_once('@')
            .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain)),
        None => pattern.eq_ignore_ascii_case(email),
    }
}

impl Policy for ConfigPolicy {
    fn allows(&self, who: &Requester<'_>, server: &BrokeredServer) -> bool {
        let cfg = server.config();
        if cfg.allowed_users.is_empty()
            && cfg.allowed_emails.is_empty()
            && cfg.allowed_groups.is_empty()
        {
            return true;
        }
        cfg.allowed_users
            .iter()
            .any(|u| u == who.user_id || who.subject.is_some_and(|s| s == u))
            || who
                .email
                .is_some_and(|e| cfg.allowed_emails.iter().any(|p| email_matches(p, e)))
            || cfg
                .allowed_groups
                .iter()
                .any(|g| who.groups.iter().any(|mine| mine == g))
    }
}

#[cfg(test)]
mod tests {
    use super::email_matches;

    #[test]
    fn email_patterns() {
        assert!(email_matches("Alice@Example.com", "alice@example.com"));
        assert!(email_matches("*@example.com", "bob@EXAMPLE.com"));
        assert!(!email_matches("*@example.com", "bob@evil-example.com"));
        assert!(!email_matches("*@example.com", "bob@sub.example.com"));
        assert!(!email_matches(
            "alice@example.com",
            "alice@example.com.evil"
        ));
    }
}
