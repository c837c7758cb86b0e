use super::*;
use serde_json::json;

fn t(name: &'static str, description: &'static str) -> ToolText<'static> {
    ToolText {
        name,
        description: Some(description),
        ..ToolText::default()
    }
}

#[test]
fn stop_words_are_sorted_for_binary_search() {
    let mut sorted = tokenize::STOP_WORDS_FOR_TEST.to_vec();
    sorted.sort_unstable();
    assert_eq!(sorted, tokenize::STOP_WORDS_FOR_TEST);
}

#[test]
fn tokenizer_splits_case_and_separators() {
    assert_eq!(tokenize("getPullRequest"), ["get", "pull", "request"]);
    assert_eq!(tokenize("list_issues"), ["list", "issu"]);
    assert_eq!(
        tokenize("kubectl-rollout-restart"),
        ["kubectl", "rollout", "restart"]
    );
    assert_eq!(
        tokenize("HTTPServer parseJSONBody"),
        ["http", "server", "pars", "json", "bodi"]
    );
    assert_eq!(
        tokenize("sha256 of oauth2Token"),
        ["sha256", "oauth2", "token"]
    );
    assert_eq!(tokenize("  ...  "), Vec::<String>::new());
}

#[test]
fn tokenizer_drops_stop_words_and_stems() {
    assert_eq!(tokenize("Show me the issues"), ["show", "issu"]);
    assert_eq!(tokenize("issue"), tokenize("issues"));
    assert_eq!(tokenize("listing"), tokenize("list"));
    assert_eq!(tokenize("created"), tokenize("create"));
    assert_eq!(tokenize("the and of to what's"), Vec::<String>::new());
}

#[test]
fn from_tool_json_reads_every_field() {
    let tool = json!({
        "name": "create_issue",
        "title": "Create issue",
        "description": "Opens an issue.",
        "inputSchema": {"type": "object", "properties": {
            "title": {"type": "string", "description": "Issue title."},
            "body": {"type": "string"}
        }},
    });
    let text = ToolText::from_tool_json(&tool);
    assert_eq!(text.name, "create_issue");
    assert_eq!(text.title, Some("Create issue"));
    assert_eq!(text.description, Some("Opens an issue."));
    assert_eq!(text.argument_names, ["title", "body"]);
    assert_eq!(text.argument_descriptions, ["Issue title."]);

    let from_annotations = json!({"name": "x", "annotations": {"title": "Ann title"}});
    assert_eq!(
        ToolText::from_tool_json(&from_annotations).title,
        Some("Ann title")
    );
    let bare = json!({"inputSchema": 3});
    assert_eq!(ToolText::from_tool_json(&bare), ToolText::default());
}

fn sample() -> ToolIndex {
    ToolIndex::build([
        t("list_issues", "Lists issues in a repository."),
        t("create_issue", "Creates an issue in a repository."),
        t("create_pull_request", "Opens a pull request from a branch."),
        t(
            "merge_pull_request",
            "Merges a pull request into its base branch.",
        ),
        t("get_file_contents", "Reads a file from a repository."),
    ])
}

#[test]
fn exact_name_ranks_first() {
    let idx = sample();
    for (doc, query) in [
        (0, "list_issues"),
        (1, "create issue"),
        (2, "create_pull_request"),
        (3, "merge pull request"),
        (4, "getFileContents"),
    ] {
        let hits = search(&[&idx], query, 3);
        assert_eq!(hits.first().map(|h| h.doc), Some(doc), "{query}: {hits:?}");
    }
}

#[test]
fn results_are_sorted_limited_and_positive() {
    let idx = sample();
    let hits = search(&[&idx], "pull request repository issue", 10);
    assert!(hits.len() >= 4);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(hits.iter().all(|h| h.score > 0.0));
    assert_eq!(
        search(&[&idx], "pull request repository issue", 2),
        hits[..2]
    );
    assert!(search(&[&idx], "pull request", 0).is_empty());
}

#[test]
fn empty_stop_word_and_unknown_queries_return_nothing() {
    let idx = sample();
    assert!(search(&[&idx], "", 5).is_empty());
    assert!(search(&[&idx], "the of and to", 5).is_empty());
    assert!(search(&[&idx], "zebra", 5).is_empty());
    assert!(search(&[], "issue", 5).is_empty());
    let empty = ToolIndex::build([]);
    assert!(search(&[&empty], "issue", 5).is_empty());
    // An unknown term next to a known one changes nothing.
    assert_eq!(
        search(&[&idx], "merge zebra", 5),
        search(&[&idx], "merge", 5)
    );
}

#[test]
fn union_statistics_make_servers_comparable() {
    let a = sample();
    let b = sample();
    // The same tool in two indexes scores the same, and ties go to the lower index.
    let hits = search(&[&a, &b], "merge pull request", 2);
    assert_eq!(hits.len(), 2);
    assert_eq!((hits[0].index, hits[0].doc), (0, 3));
    assert_eq!((hits[1].index, hits[1].doc), (1, 3));
    assert_eq!(hits[0].score, hits[1].score);

    // Union == one index holding both catalogues.
    let both = ToolIndex::build(
        [
            t("list_issues", "Lists issues in a repository."),
            t("create_issue", "Creates an issue in a repository."),
            t("create_pull_request", "Opens a pull request from a branch."),
            t(
                "merge_pull_request",
                "Merges a pull request into its base branch.",
            ),
            t("get_file_contents", "Reads a file from a repository."),
        ]
        .into_iter()
        .cycle()
        .take(10),
    );
    let union = search(&[&a, &b], "issue in a repository", 10);
    let single = search(&[&both], "issue in a repository", 10);
    assert_eq!(union.len(), single.len());
    for (u, s) in union.iter().zip(&single) {
        assert_eq!(u.index * 5 + u.doc as usize, s.doc as usize);
        assert!((u.score - s.score).abs() < 1e-5);
    }
}

#[test]
fn rare_terms_outweigh_common_ones_across_the_union() {
    // "issue" is everywhere in `a`; "sprint" only in `b`: df is counted over both.
    let a = ToolIndex::build([
        t("list_issues", "Lists issues."),
        t("get_issue", "Gets an issue."),
        t("update_issue", "Updates an issue."),
    ]);
    let b = ToolIndex::build([t("move_issues_to_sprint", "Moves issues into a sprint.")]);
    let hits = search(&[&a, &b], "issue sprint", 5);
    assert_eq!((hits[0].index, hits[0].doc), (1, 0));
}

#[test]
fn server_name_is_searchable_when_given() {
    let gh = ToolIndex::build_for_server("github", [t("search_issues", "Searches issues.")]);
    let jira = ToolIndex::build_for_server("jira", [t("search_issues", "Searches issues.")]);
    let hits = search(&[&gh, &jira], "search jira issues", 2);
    assert_eq!(hits[0].index, 1);
    assert!(hits[0].score > hits[1].score);
}

#[test]
fn sizes() {
    let idx = sample();
    assert_eq!(idx.len(), 5);
    assert!(!idx.is_empty());
    assert!(idx.term_count() > 10);
    assert!(idx.memory_bytes() > 0);
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ToolIndex>();
}
