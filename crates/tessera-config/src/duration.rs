//! Durations as Go writes them (`"30s"`, `"2m"`, `"1h30m"`, `"1.5h"`, `"250ms"`), which is what
//! the reference's files hold, with humantime's longer forms (`"2 minutes"`) as a fallback.

use std::time::Duration;

/// Parses a duration string. Negative durations are rejected.
pub(crate) fn parse(s: &str) -> Option<Duration> {
    let s = s.trim();
    parse_go(s).or_else(|| humantime::parse_duration(s).ok())
}

fn parse_go(s: &str) -> Option<Duration> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let len = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                a.split_at(len)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        nanos = nanos.checked_add(int.checked_mul(scale)?)?;
        // Fractions: at most 18 digits count, which is beyond nanosecond precision for any unit.
        let frac_digits = &frac_part[..frac_part.len().min(18)];
        if !frac_digits.is_empty() {
            let frac: u128 = frac_digits.parse().ok()?;
            let denom = 10u128.checked_pow(u32::try_from(frac_digits.len()).ok()?)?;
            nanos = nanos.checked_add(frac.checked_mul(scale)? / denom)?;
        }
        rest = after;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    let sub = u32::try_from(nanos % 1_000_000_000).ok()?;
    Some(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(parse("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse("10us"), Some(Duration::from_micros(10)));
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse("2 minutes"), Some(Duration::from_secs(120)));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "s", "30", "-5s", "5x", "1..5s", "abc", "1h-3m"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
