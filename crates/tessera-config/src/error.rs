//! The error type: every problem found, each with its JSON path.

use std::fmt;

/// One thing wrong with a configuration file.
///
/// `path` is the JSON path of the offending value (`mcpServers[2].auth_broker.token_endpoint`,
/// `mcpServers.github.url`), the file name for problems with the file as a whole (unreadable,
/// malformed JSON), or `(root)` when the top-level value itself is wrong. `message` says what is
/// wrong and how to fix it. Neither ever contains a secret or an interpolated value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a configuration file, in the order the walk met them (per object: key
/// problems first, then values). Displays one line per problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<Problem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// The JSON paths of the problems, in order.
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|p| p.path.as_str()).collect()
    }
}
