//! `tessera users list`: every user of the gateway (`GET /api/v1/admin/users`, admins only).

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::table::{self, col};
use super::{Api, Failure, Outcome, OutputFormat, Remote, print_json};

#[derive(Args, Debug)]
#[command(after_help = super::EXIT_CODES)]
pub(crate) struct UsersArgs {
    #[command(flatten)]
    pub(crate) remote: Remote,
    #[command(subcommand)]
    pub(crate) command: UsersCommand,
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub(crate) enum UsersCommand {
    /// List users: email, name, role, status, last sign-in (admins only).
    #[command(after_help = super::EXIT_CODES)]
    List,
}

/// The fields of a user that are shown.
const SHOWN: &[&str] = &[
    "id",
    "email",
    "display_name",
    "role",
    "disabled",
    "issuer",
    "subject",
    "created_at",
    "last_login_at",
];

pub(crate) fn users(body: &Value) -> Vec<Value> {
    body["users"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| {
            let mut out = Map::new();
            for key in SHOWN {
                if let Some(v) = u.get(*key).filter(|v| !v.is_null()) {
                    out.insert((*key).to_owned(), v.clone());
                }
            }
            Value::Object(out)
        })
        .collect()
}

fn time(v: &Value) -> String {
    match v.as_i64() {
        Some(s) => super::activity::rfc3339(s),
        None => table::cell(v),
    }
}

pub(crate) fn render(list: &[Value]) -> String {
    if list.is_empty() {
        return "No users.\n".to_owned();
    }
    let columns = [
        col("ID", 36),
        col("EMAIL", 32),
        col("NAME", 24),
        col("ROLE", 8),
        col("STATUS", 8),
        col("LAST SIGN-IN", 25),
    ];
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|u| {
            vec![
                table::cell(&u["id"]),
                table::cell(&u["email"]),
                table::cell(&u["display_name"]),
                table::cell(&u["role"]),
                if u["disabled"].as_bool() == Some(true) {
                    "disabled"
                } else {
                    "active"
                }
                .to_owned(),
                time(&u["last_login_at"]),
            ]
        })
        .collect();
    table::render(&columns, &rows)
}

pub(crate) async fn run(args: UsersArgs) -> Outcome {
    let api = Api::new(&args.remote)?;
    match args.command {
        UsersCommand::List => {
            let body = api.get("/api/v1/admin/users").await.map_err(|f| match f {
                Failure::Refused(m) if m.starts_with("permission denied") => Failure::Refused(
                    "permission denied: listing users needs an admin account".to_owned(),
                ),
                other => other,
            })?;
            let list = users(&body);
            match args.remote.output {
                OutputFormat::Json => print_json(&json!({ "users": list })),
                OutputFormat::Table => print!("{}", render(&list)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_role_and_status_and_nothing_else() {
        let body = json!({"users": [{"id": "u1", "email": "carol@example.com", "display_name": "Carol",
            "role": "admin", "disabled": false, "last_login_at": 0, "password_hash": "SECRET"}]});
        let list = users(&body);
        assert!(!serde_json::to_string(&list).unwrap().contains("SECRET"));
        let text = render(&list);
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "u1",
                "carol@example.com",
                "Carol",
                "admin",
                "active",
                "1970-01-01T00:00:00Z"
            ]
        );
    }
}
