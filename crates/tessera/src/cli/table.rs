//! Plain aligned tables: a header row, fixed maximum widths, long cells cut with `...`.

/// The allow-listed `fields` of the object `v` (`null`s kept): command output is built from
/// named fields only, so it never carries one the command does not name (a token, a secret).
pub(crate) fn pick(v: &serde_json::Value, fields: &[&str]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for key in fields {
        if let Some(x) = v.get(*key) {
            out.insert((*key).to_owned(), x.clone());
        }
    }
    serde_json::Value::Object(out)
}

/// `body[key]`'s objects, each cut down to `fields` by [`pick`].
pub(crate) fn pick_each(
    body: &serde_json::Value,
    key: &str,
    fields: &[&str],
) -> Vec<serde_json::Value> {
    body[key]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| pick(v, fields))
        .collect()
}

/// `list` as a table of `columns`, a row per item made by `row`; `empty` when there is none.
pub(crate) fn render_each(
    list: &[serde_json::Value],
    empty: &str,
    columns: &[Column],
    row: impl Fn(&serde_json::Value) -> Vec<String>,
) -> String {
    if list.is_empty() {
        return format!("{empty}\n");
    }
    let rows: Vec<Vec<String>> = list.iter().map(row).collect();
    render(columns, &rows)
}

/// One column: its header and the widest a cell may be (the last column is never padded).
pub(crate) struct Column {
    pub(crate) header: &'static str,
    pub(crate) max: usize,
}

pub(crate) const fn col(header: &'static str, max: usize) -> Column {
    Column { header, max }
}

/// `s` cut to `max` characters, ending in `...` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_owned();
    }
    if max <= 3 {
        return s.chars().take(max).collect();
    }
    let mut out: String = s.chars().take(max - 3).collect();
    out.push_str("...");
    out
}

/// Renders `rows` under `columns`: each column as wide as its widest (cut) cell or header,
/// at most its `max`; two spaces between columns; no trailing spaces.
pub(crate) fn render(columns: &[Column], rows: &[Vec<String>]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| truncate(row.get(i).map(String::as_str).unwrap_or(""), c.max))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain(std::iter::once(c.header.len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut line = |values: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, v) in values.enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(v);
            let pad = widths[i].saturating_sub(v.chars().count());
            l.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut columns.iter().map(|c| c.header));
    for r in &cells {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// A JSON array of strings as one cell, comma-joined (no spaces: a row stays splittable on
/// whitespace); empty or missing `-`.
pub(crate) fn list(v: &serde_json::Value) -> String {
    let items: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .collect();
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(",")
    }
}

/// A JSON value as a cell: strings as they are, numbers and booleans printed, missing `-`.
pub(crate) fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) if !s.is_empty() => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_long_cells_are_cut_with_dots() {
        let cols = [col("SERVER", 8), col("STATUS", 15)];
        let rows = vec![
            vec!["a-very-long-name".into(), "connected".into()],
            vec!["b".into(), "not_connected".into()],
        ];
        assert_eq!(
            render(&cols, &rows),
            "SERVER    STATUS\n\
             a-ver...  connected\n\
             b         not_connected\n"
        );
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate("ééééé", 5), "ééééé");
        assert_eq!(truncate("éééééé", 5), "éé...");
        assert_eq!(truncate("abcdef", 2), "ab");
    }

    #[test]
    fn cells_show_missing_values_as_a_dash() {
        use serde_json::json;
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!("")), "-");
        assert_eq!(cell(&json!(12)), "12");
        assert_eq!(cell(&json!(["a", "b"])), "a b");
    }
}
