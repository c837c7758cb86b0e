//! A user's personal (HTTP) servers and their on/off switches for shared servers.
//!
//! A personal server's headers are one JSON object (`{"<name>": "<value>", …}`) sealed with AAD
//! `user_server|<user_id>|<id>`, so a value copied to another row does not open. Only
//! [`Store::user_server_headers`] and [`Store::open_user_servers`] open them; everything else
//! sees the header *names*.
//!
//! A personal server's `auth_broker` block (JSON as its owner gave it, possibly with a
//! `client_secret`) is sealed with AAD `user_server_broker|<user_id>|<id>`; only
//! [`Store::user_server_auth_broker`] and [`Store::open_user_servers`] open it, and
//! [`UserServer::brokered`] says whether there is one.

use secrecy::{ExposeSecret as _, SecretString};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Store, UnixTime, new_id, now_unix};
use crate::error::StoreError;
use crate::seal::Aad;

/// An enabled personal server with its secrets opened ([`Store::open_user_servers`]). Each
/// secret is opened on its own, so one that does not open (the sealing key was removed, a
/// value copied from another row) makes only that part an error.
#[derive(Debug)]
pub struct OpenedUserServer {
    pub server: UserServer,
    /// The headers, in the order of `header_names`.
    pub headers: Result<Vec<(String, SecretString)>, StoreError>,
    /// The `auth_broker` block (JSON text), `None` when it has none.
    pub auth_broker: Result<Option<SecretString>, StoreError>,
}

/// A personal server as stored, without its header values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserServer {
    /// The row's id (UUIDv7); part of the headers' associated data.
    pub id: String,
    /// The owner.
    pub user_id: String,
    /// The name, unique per user.
    pub name: String,
    /// The upstream URL.
    pub url: String,
    /// `streamable-http`, `sse` or `http`.
    pub protocol: String,
    /// The names of the headers sent upstream (their values are sealed).
    pub header_names: Vec<String>,
    /// Whether the owner has it switched on.
    pub enabled: bool,
    /// Whether it has an `auth_broker` block (sealed; see [`Store::user_server_auth_broker`]).
    pub brokered: bool,
    /// When it was added.
    pub created_at: UnixTime,
    /// When it was last changed.
    pub updated_at: UnixTime,
}

/// A personal server to add with [`Store::create_user_server`].
#[derive(Debug)]
pub struct NewUserServer<'a> {
    /// The name (the caller validates it).
    pub name: &'a str,
    /// The upstream URL (the caller validates it).
    pub url: &'a str,
    /// `streamable-http`, `sse` or `http`.
    pub protocol: &'a str,
    /// Headers sent on every upstream request (sealed at rest).
    pub headers: &'a [(String, SecretString)],
    /// Switched on at creation.
    pub enabled: bool,
    /// The `auth_broker` block as JSON text (the caller validates it; sealed at rest).
    pub auth_broker: Option<&'a SecretString>,
}

/// What [`Store::update_user_server`] changes; `None` = unchanged. `headers: Some(&[])`
/// removes every header.
#[derive(Debug, Default)]
pub struct UserServerUpdate<'a> {
    /// A new URL.
    pub url: Option<&'a str>,
    /// A new protocol.
    pub protocol: Option<&'a str>,
    /// The new headers (replacing all of them).
    pub headers: Option<&'a [(String, SecretString)]>,
    /// Switch on or off.
    pub enabled: Option<bool>,
}

// `sqlx::query` takes a `&'static str` (SqlSafeStr): every statement is a literal.
const SELECT_ONE: &str = "SELECT id, user_id, name, url, protocol, header_names, enabled, \
       CASE WHEN auth_broker_sealed IS NULL THEN 0 ELSE 1 END AS brokered, \
       created_at, updated_at FROM user_servers WHERE user_id = $1 AND name = $2";
const SELECT_ENABLED_SEALED: &str = "SELECT id, user_id, name, url, protocol, header_names, \
       enabled, CASE WHEN auth_broker_sealed IS NULL THEN 0 ELSE 1 END AS brokered, \
       created_at, updated_at, headers_sealed, auth_broker_sealed FROM user_servers \
       WHERE user_id = $1 AND enabled = 1 ORDER BY name";
const SELECT_ALL: &str = "SELECT id, user_id, name, url, protocol, header_names, enabled, \
       CASE WHEN auth_broker_sealed IS NULL THEN 0 ELSE 1 END AS brokered, \
       created_at, updated_at FROM user_servers WHERE user_id = $1 ORDER BY name";

fn server_from_row(row: &AnyRow) -> Result<UserServer, StoreError> {
    let names: String = row.try_get("header_names")?;
    let enabled: i32 = row.try_get("enabled")?;
    let brokered: i32 = row.try_get("brokered")?;
    Ok(UserServer {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        url: row.try_get("url")?,
        protocol: row.try_get("protocol")?,
        header_names: split_names(&names),
        enabled: enabled != 0,
        brokered: brokered != 0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn split_names(stored: &str) -> Vec<String> {
    stored
        .split(',')
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

fn join_names(headers: &[(String, SecretString)]) -> String {
    headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

impl Store {
    /// The sealed JSON object of `headers` for row `id`, or `None` when there are none.
    fn seal_headers(
        &self,
        user_id: &str,
        id: &str,
        headers: &[(String, SecretString)],
    ) -> Result<Option<String>, StoreError> {
        if headers.is_empty() {
            return Ok(None);
        }
        let keyring = self.keyring()?;
        let object: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(n, v)| (n.clone(), v.expose_secret().into()))
            .collect();
        let json = SecretString::from(serde_json::Value::Object(object).to_string());
        Ok(Some(
            keyring.seal_str(&json, &Aad::user_server(user_id, id))?,
        ))
    }

    /// Adds a personal server for `user_id`, unless they already have `max_per_user` (checked
    /// in the same transaction as the insert, with the user's row locked, so two concurrent
    /// adds cannot both pass) or one with this name.
    pub async fn create_user_server(
        &self,
        user_id: &str,
        new: &NewUserServer<'_>,
        max_per_user: usize,
    ) -> Result<UserServer, StoreError> {
        let now = now_unix();
        let server = UserServer {
            id: new_id(),
            user_id: user_id.to_owned(),
            name: new.name.to_owned(),
            url: new.url.to_owned(),
            protocol: new.protocol.to_owned(),
            header_names: new.headers.iter().map(|(n, _)| n.clone()).collect(),
            enabled: new.enabled,
            brokered: new.auth_broker.is_some(),
            created_at: now,
            updated_at: now,
        };
        let sealed = self.seal_headers(user_id, &server.id, new.headers)?;
        let broker_sealed = new
            .auth_broker
            .map(|block| {
                self.keyring()?
                    .seal_str(block, &Aad::user_server_broker(user_id, &server.id))
                    .map_err(StoreError::from)
            })
            .transpose()?;
        let mut tx = self.pool.begin().await?;
        // A write to the user's row: a row lock on PostgreSQL, the write lock on SQLite. Either
        // way the count below cannot change under this transaction.
        let locked = sqlx::query("UPDATE users SET disabled = disabled WHERE id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() == 0 {
            return Err(StoreError::UserNotFound(user_id.to_owned()));
        }
        let exists: Option<String> =
            sqlx::query_scalar("SELECT id FROM user_servers WHERE user_id = $1 AND name = $2")
                .bind(user_id)
                .bind(&server.name)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_some() {
            return Err(StoreError::UserServerExists {
                name: server.name.clone(),
            });
        }
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_servers WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= max_per_user {
            return Err(StoreError::UserServerQuota { max: max_per_user });
        }
        sqlx::query(
            "INSERT INTO user_servers (id, user_id, name, url, protocol, header_names, \
               headers_sealed, enabled, created_at, updated_at, auth_broker_sealed) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10)",
        )
        .bind(&server.id)
        .bind(user_id)
        .bind(&server.name)
        .bind(&server.url)
        .bind(&server.protocol)
        .bind(join_names(new.headers))
        .bind(sealed)
        .bind(i32::from(server.enabled))
        .bind(now)
        .bind(broker_sealed)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::UserServerExists {
                name: server.name.clone(),
            },
            _ => StoreError::Database(e),
        })?;
        tx.commit().await?;
        Ok(server)
    }

    /// Changes one of the user's personal servers.
    pub async fn update_user_server(
        &self,
        user_id: &str,
        name: &str,
        update: &UserServerUpdate<'_>,
    ) -> Result<UserServer, StoreError> {
        let not_found = || StoreError::UserServerNotFound {
            name: name.to_owned(),
        };
        let current = self
            .get_user_server(user_id, name)
            .await?
            .ok_or_else(not_found)?;
        let now = now_unix();
        let done = match update.headers {
            Some(headers) => {
                let sealed = self.seal_headers(user_id, &current.id, headers)?;
                sqlx::query(
                    "UPDATE user_servers SET url = COALESCE($1, url), \
                       protocol = COALESCE($2, protocol), enabled = COALESCE($3, enabled), \
                       header_names = $4, headers_sealed = $5, updated_at = $6 \
                     WHERE id = $7 AND user_id = $8",
                )
                .bind(update.url)
                .bind(update.protocol)
                .bind(update.enabled.map(i32::from))
                .bind(join_names(headers))
                .bind(sealed)
                .bind(now)
                .bind(&current.id)
                .bind(user_id)
                .execute(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "UPDATE user_servers SET url = COALESCE($1, url), \
                       protocol = COALESCE($2, protocol), enabled = COALESCE($3, enabled), \
                       updated_at = $4 \
                     WHERE id = $5 AND user_id = $6",
                )
                .bind(update.url)
                .bind(update.protocol)
                .bind(update.enabled.map(i32::from))
                .bind(now)
                .bind(&current.id)
                .bind(user_id)
                .execute(&self.pool)
                .await?
            }
        };
        if done.rows_affected() == 0 {
            return Err(not_found());
        }
        self.get_user_server(user_id, name)
            .await?
            .ok_or_else(not_found)
    }

    /// Removes one of the user's personal servers. Returns whether it existed.
    pub async fn delete_user_server(&self, user_id: &str, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM user_servers WHERE user_id = $1 AND name = $2")
            .bind(user_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// One of the user's personal servers, by exact name.
    pub async fn get_user_server(
        &self,
        user_id: &str,
        name: &str,
    ) -> Result<Option<UserServer>, StoreError> {
        sqlx::query(SELECT_ONE)
            .bind(user_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(server_from_row)
            .transpose()
    }

    /// The user's personal servers, by name.
    pub async fn list_user_servers(&self, user_id: &str) -> Result<Vec<UserServer>, StoreError> {
        sqlx::query(SELECT_ALL)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(server_from_row)
            .collect()
    }

    /// Opens a personal server's headers (in the order of `header_names`). A value that does
    /// not open for this row is an error.
    pub async fn user_server_headers(
        &self,
        server: &UserServer,
    ) -> Result<Vec<(String, SecretString)>, StoreError> {
        let sealed: Option<Option<String>> = sqlx::query_scalar(
            "SELECT headers_sealed FROM user_servers WHERE id = $1 AND user_id = $2",
        )
        .bind(&server.id)
        .bind(&server.user_id)
        .fetch_optional(&self.pool)
        .await?;
        self.open_headers(server, sealed.flatten())
    }

    fn open_headers(
        &self,
        server: &UserServer,
        sealed: Option<String>,
    ) -> Result<Vec<(String, SecretString)>, StoreError> {
        let Some(sealed) = sealed else {
            return Ok(Vec::new());
        };
        let json = self
            .keyring()?
            .open_string(&sealed, &Aad::user_server(&server.user_id, &server.id))?;
        let corrupt = || StoreError::Corrupt {
            what: "user_servers.headers_sealed",
            value: "(not a JSON object of strings)".to_owned(),
        };
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(json.expose_secret()).map_err(|_| corrupt())?;
        let mut headers = Vec::with_capacity(object.len());
        for (name, value) in object {
            let serde_json::Value::String(value) = value else {
                return Err(corrupt());
            };
            headers.push((name, SecretString::from(value)));
        }
        let position = |n: &str| server.header_names.iter().position(|h| h == n);
        headers.sort_by_key(|(n, _)| position(n).unwrap_or(usize::MAX));
        Ok(headers)
    }

    /// Opens a personal server's `auth_broker` block (JSON text), `None` when it has none. A
    /// value that does not open for this row is an error.
    pub async fn user_server_auth_broker(
        &self,
        server: &UserServer,
    ) -> Result<Option<SecretString>, StoreError> {
        let sealed: Option<Option<String>> = sqlx::query_scalar(
            "SELECT auth_broker_sealed FROM user_servers WHERE id = $1 AND user_id = $2",
        )
        .bind(&server.id)
        .bind(&server.user_id)
        .fetch_optional(&self.pool)
        .await?;
        self.open_auth_broker(server, sealed.flatten())
    }

    fn open_auth_broker(
        &self,
        server: &UserServer,
        sealed: Option<String>,
    ) -> Result<Option<SecretString>, StoreError> {
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        Ok(Some(self.keyring()?.open_string(
            &sealed,
            &Aad::user_server_broker(&server.user_id, &server.id),
        )?))
    }

    /// Every enabled personal server of `user_id` (by name) with its headers and `auth_broker`
    /// block opened, in one query: what the gateway loads on a user's first request and after
    /// each change to their servers.
    pub async fn open_user_servers(
        &self,
        user_id: &str,
    ) -> Result<Vec<OpenedUserServer>, StoreError> {
        let rows = sqlx::query(SELECT_ENABLED_SEALED)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let server = server_from_row(row)?;
            let headers: Option<String> = row.try_get("headers_sealed")?;
            let broker: Option<String> = row.try_get("auth_broker_sealed")?;
            out.push(OpenedUserServer {
                headers: self.open_headers(&server, headers),
                auth_broker: self.open_auth_broker(&server, broker),
                server,
            });
        }
        Ok(out)
    }

    /// Switches a shared server on or off for one user (insert or update).
    pub async fn set_server_preference(
        &self,
        user_id: &str,
        server: &str,
        enabled: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO user_server_prefs (user_id, server, enabled, updated_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, server) DO UPDATE SET enabled = excluded.enabled, \
               updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(server)
        .bind(i32::from(enabled))
        .bind(now_unix())
        .execute(&self.pool)
        .await
        .map_err(super::user_fk(user_id))?;
        Ok(())
    }

    /// The user's switches for shared servers, by server name (servers without one are on).
    pub async fn server_preferences(
        &self,
        user_id: &str,
    ) -> Result<Vec<(String, bool)>, StoreError> {
        let rows: Vec<(String, i32)> = sqlx::query_as(
            "SELECT server, enabled FROM user_server_prefs WHERE user_id = $1 ORDER BY server",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(s, e)| (s, e != 0)).collect())
    }
}
