//! "did you mean …?" for misspelt keys and values.

fn normalise(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev_diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (row[j] + 1).min(row[j + 1] + 1).min(prev_diag + cost);
            prev_diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The candidate `input` was most likely meant to be, if any is close enough.
pub(crate) fn did_you_mean<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let norm = normalise(input);
    // Same word in another case or spelling style: `workingDir`, `Working-Dir`.
    if let Some(c) = candidates.iter().find(|c| normalise(c) == norm) {
        return Some(c);
    }
    let lower = input.to_lowercase();
    let limit = (lower.chars().count() / 3).clamp(1, 3);
    let best = candidates
        .iter()
        .map(|c| (levenshtein(&lower, &c.to_lowercase()), *c))
        .min_by_key(|(d, _)| *d);
    if let Some((d, c)) = best
        && d <= limit
    {
        return Some(c);
    }
    // A prefix or suffix missing: `servers` for `mcpServers` (the closest in length, so not
    // `max_user_servers`).
    if norm.chars().count() >= 5 {
        return candidates
            .iter()
            .filter(|c| {
                let n = normalise(c);
                n.contains(&norm) || norm.contains(&n)
            })
            .min_by_key(|c| c.len().abs_diff(input.len()))
            .copied();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_spellings() {
        let keys = ["url", "command", "working_dir", "auth_broker", "mcpServers"];
        assert_eq!(did_you_mean("urll", &keys), Some("url"));
        assert_eq!(did_you_mean("comand", &keys), Some("command"));
        assert_eq!(did_you_mean("workingDir", &keys), Some("working_dir"));
        assert_eq!(did_you_mean("authBroker", &keys), Some("auth_broker"));
        assert_eq!(did_you_mean("servers", &keys), Some("mcpServers"));
        assert_eq!(did_you_mean("xyz", &keys), None);
        assert_eq!(did_you_mean("frobnicate", &keys), None);
    }
}
