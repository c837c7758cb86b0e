//! Every `tests/broken/<name>.json` must fail to load with exactly the paths listed in
//! `tests/broken/<name>.paths`, in order. The full messages are snapshot-tested too.

use std::path::{Path, PathBuf};

fn broken_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken")
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(broken_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no broken configs found");
    cases
}

#[test]
fn broken_configs_report_exactly_the_expected_paths() {
    for case in cases() {
        let file = case.display().to_string();
        let expected: Vec<String> = std::fs::read_to_string(case.with_extension("paths"))
            .unwrap_or_else(|e| panic!("{file}: missing .paths sibling: {e}"))
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(str::trim)
            .map(|l| l.replace("<file>", &file))
            .collect();
        let errors = match tessera_config::load_file(&case) {
            Ok(_) => panic!("{file}: loaded, but it should be rejected"),
            Err(e) => e,
        };
        let actual: Vec<&str> = errors.paths();
        assert_eq!(actual, expected, "{file}: reported\n{errors}");
        // One line per problem, each "<path>: <message>".
        let text = errors.to_string();
        assert_eq!(text.lines().count(), expected.len(), "{file}:\n{text}");
        for (line, path) in text.lines().zip(&expected) {
            assert!(line.starts_with(&format!("{path}: ")), "{file}: {line}");
        }
    }
}

#[test]
fn broken_config_messages() {
    for case in cases() {
        let name = case.file_stem().unwrap().to_string_lossy().to_string();
        let errors = tessera_config::load_file(&case).unwrap_err();
        let text = errors
            .to_string()
            .replace(&case.display().to_string(), "<file>");
        insta::assert_snapshot!(name, text);
    }
}

#[test]
fn the_example_config_loads() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tessera.json");
    let config = match tessera_config::load_file(&example) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(config.listen, "127.0.0.1:8080");
    assert_eq!(config.data_dir, PathBuf::from("./data"));
    let demo = config.server("demo").expect("demo server");
    match &demo.transport {
        tessera_config::Transport::Stdio { command, args, .. } => {
            assert_eq!(command, "./target/release/tessera-upstream");
            assert_eq!(args, &["stdio"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unreadable_file_is_one_problem_naming_the_file() {
    let missing = broken_dir().join("does-not-exist.json");
    let errors = tessera_config::load_file(&missing).unwrap_err();
    assert_eq!(errors.paths(), [missing.display().to_string()]);
    assert!(
        errors.0[0]
            .message
            .starts_with("cannot read the config file")
    );
}
