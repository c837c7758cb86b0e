//! Entry points: read, parse, interpolate, validate.

use std::path::Path;

use crate::json::Node;
use crate::{Config, ConfigErrors, Problem, validate};

/// The path reported for problems with the text as a whole when there is no file name.
const TEXT_ORIGIN: &str = "<file>";

/// Reads the file at `path`, replaces `${VAR}` references from the process environment, parses and
/// validates it. Problems with the file as a whole (unreadable, malformed JSON) carry the file's
/// path as their `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![Problem {
            path: origin.clone(),
            message: format!("cannot read the config file: {e} (check the path and permissions)"),
        }])
    })?;
    let env = |name: &str| std::env::var(name).ok();
    load_text(&text, &env, &origin)
}

/// Parses and validates `text`, resolving `${VAR}` references through `env`. Problems with the
/// text as a whole (malformed JSON) carry the path `<file>`.
pub fn load_str(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    load_text(text, env, TEXT_ORIGIN)
}

fn load_text(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    origin: &str,
) -> Result<Config, ConfigErrors> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Ok(Config::default());
    }
    let root: Node = serde_json::from_str(text).map_err(|e| {
        let full = e.to_string();
        let what = full
            .rsplit_once(" at line ")
            .map_or(full.as_str(), |(what, _)| what);
        ConfigErrors(vec![Problem {
            path: origin.to_string(),
            message: format!(
                "invalid JSON at line {}, column {}: {what} (fix the syntax; JSON allows no comments and no trailing commas)",
                e.line(),
                e.column()
            ),
        }])
    })?;
    validate::config(&root, env)
}
