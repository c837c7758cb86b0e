//! Where a browser goes after sign-in: only a same-origin relative path, never another site.

/// The fallback target.
pub const DEFAULT: &str = "/";

/// Longest accepted target; anything longer falls back to [`DEFAULT`].
const MAX_LEN: usize = 2048;

/// Returns `target` when it is a same-origin relative path (`/x`, `/x?y#z`), else `/`.
///
/// Rejected: anything not starting with exactly one `/` (absolute URLs, `//host`
/// protocol-relative URLs, relative paths), a backslash anywhere (browsers read `/\host` as
/// `//host`), control characters and whitespace (browsers strip tabs and newlines, so `/\t/host`
/// becomes `//host`), and overlong values.
pub fn validate(target: Option<&str>) -> &str {
    match target {
        Some(t) if is_safe(t) => t,
        _ => DEFAULT,
    }
}

fn is_safe(t: &str) -> bool {
    let bytes = t.as_bytes();
    bytes.len() <= MAX_LEN
        && bytes.first() == Some(&b'/')
        && bytes.get(1) != Some(&b'/')
        && !t
            .chars()
            .any(|c| c == '\\' || c.is_control() || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn same_origin_paths_are_kept() {
        for ok in ["/", "/ui/", "/ui/servers?tab=1#top", "/a/b%2F..", "/é"] {
            assert_eq!(validate(Some(ok)), ok, "{ok}");
        }
    }

    #[test]
    fn other_origins_and_tricks_fall_back_to_root() {
        for bad in [
            "https://evil.example",
            "http://evil.example/x",
            "//evil.example",
            "//evil.example/path",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/x\r\nSet-Cookie: a=b",
            "/ /evil.example",
            "javascript:alert(1)",
            "evil.example",
            "",
            " /x",
            "/x\u{0}",
            "/x\u{2028}",
        ] {
            assert_eq!(validate(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(validate(None), "/");
        assert_eq!(validate(Some(&format!("/{}", "a".repeat(3000)))), "/");
    }
}
