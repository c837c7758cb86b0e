//! Tessera's storage and sealing.
//!
//! - [`Store`]: a SQLite file (`<data_dir>/tessera.db`, WAL, foreign keys on) or a PostgreSQL
//!   database, chosen by a storage URL ([`Store::connect`]), with versioned migrations embedded
//!   in the binary and run at start-up. One code path for both (sqlx's `Any` driver): every
//!   statement is a runtime query in SQL both accept (`$n` placeholders, TEXT/INTEGER/BIGINT
//!   columns, unix-second timestamps).
//! - [`seal`]: AES-256-GCM sealing of secrets at rest, bound to their record by associated data,
//!   with a key id in every sealed value.
//!
//! Invariants a reviewer should hold this crate to:
//!
//! - **Only this crate encrypts or decrypts**, and within it only [`seal`]. No other crate names
//!   an AEAD cipher; they hand a secret and an [`Aad`] to a [`Keyring`] or to a [`Store`] method.
//! - **Secrets are hashed or sealed at rest, never plain.** Session cookies and personal access
//!   tokens are stored as their SHA-256 (the plaintext is returned once, at creation); provider
//!   tokens are sealed with the user's id in the associated data, so a row copied to another user
//!   does not open.
//! - **Secrets in memory are `secrecy` types**: callers pass and receive `SecretString`s, and
//!   `Debug` of keys and keyrings prints key ids only. Errors never contain a key, a token or a
//!   plaintext.
//! - No `unwrap`/`expect` outside tests.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod error;
pub mod seal;
mod store;

pub use error::{PatRejection, StoreError};
pub use seal::{Aad, IdpTokenKind, KeyError, Keyring, SealError, SealingKey};
pub use store::{
    ACCESS_TOKEN_PREFIX, ALL_PERMISSIONS, ActivityAction, ActivityEntry, ActivityFilter,
    ActivityMethod, ActivityOutcome, ActivityRecord, Backend, CHANGES_CHANNEL,
    COORDINATION_POOL_SIZE, Change, CodeGrant, CodeRedemption, ConnectFlow, CredentialRecord,
    CredentialSource, CredentialSummary, DB_FILE, DashboardCounts, IdpTokens, IssuedTokens,
    LISTENER_BACKOFF_MAX, LISTENER_BACKOFF_MIN, LockGuard, MAX_PENDING_CONNECT_FLOWS,
    MAX_REASON_LEN, NewConnectFlow, NewOauthClient, NewPat, NewSession, NewUserServer, OauthClient,
    OauthClientSource, OauthTokenRejection, OpenedCredential, OpenedUserServer, PAT_PREFIX,
    PersonalAccessToken, REFRESH_TOKEN_PREFIX, RefreshLock, RefreshRefused, ReplicaReport,
    ResealReport, Role, RotatedGrant, SUBSCRIBER_QUEUE, Session, SessionInfo, Store,
    StoredIdpTokens, TokenGrant, UnixTime, UnreadableRow, User, UserLogin, UserServer,
    UserServerUpdate, VerifiedAccessToken, VerifiedPat, now_unix, parse_url, redact, server_key,
};
