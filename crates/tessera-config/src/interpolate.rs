//! `${VAR}` references in string values, replaced from the environment. `$${` is a literal `${`.

/// Why a string could not be interpolated. Messages never contain a resolved value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InterpolateError {
    Unset(String),
    Unterminated,
    BadName(String),
}

impl InterpolateError {
    pub(crate) fn message(&self) -> String {
        match self {
            InterpolateError::Unset(name) => {
                format!(
                    "environment variable {name} is not set (export it or remove the reference)"
                )
            }
            InterpolateError::Unterminated => {
                "unterminated \"${\" (close it with \"}\", or write \"$${\" for a literal \"${\")"
                    .to_string()
            }
            InterpolateError::BadName(name) => format!(
                "invalid variable name {} in \"${{…}}\" (use letters, digits and _, not starting with a digit; write \"$${{\" for a literal \"${{\")",
                crate::path::quote(name)
            ),
        }
    }
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Replaces every `${NAME}` in `s`; returns all the problems if any reference cannot be resolved.
pub(crate) fn interpolate(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<InterpolateError>> {
    if !s.contains("${") {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut errors = Vec::new();
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            match after.find('}') {
                Some(end) => {
                    let name = &after[..end];
                    if !is_var_name(name) {
                        errors.push(InterpolateError::BadName(name.to_string()));
                    } else if let Some(value) = env(name) {
                        out.push_str(&value);
                    } else {
                        errors.push(InterpolateError::Unset(name.to_string()));
                    }
                    rest = &after[end + 1..];
                }
                None => {
                    errors.push(InterpolateError::Unterminated);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cr3t".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_references_and_keeps_escapes() {
        assert_eq!(
            interpolate("Bearer ${TOKEN}", &env).as_deref(),
            Ok("Bearer s3cr3t")
        );
        assert_eq!(
            interpolate("${TOKEN}${TOKEN}", &env).as_deref(),
            Ok("s3cr3ts3cr3t")
        );
        assert_eq!(interpolate("a${EMPTY}b", &env).as_deref(), Ok("ab"));
        assert_eq!(interpolate("$${TOKEN}", &env).as_deref(), Ok("${TOKEN}"));
        assert_eq!(interpolate("cost $5 $x", &env).as_deref(), Ok("cost $5 $x"));
        assert_eq!(interpolate("$$", &env).as_deref(), Ok("$$"));
    }

    #[test]
    fn reports_every_bad_reference() {
        assert_eq!(
            interpolate("${A} ${TOKEN} ${1x} ${B", &env),
            Err(vec![
                InterpolateError::Unset("A".to_string()),
                InterpolateError::BadName("1x".to_string()),
                InterpolateError::Unterminated,
            ])
        );
    }
}
