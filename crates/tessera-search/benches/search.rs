//! Tool search on tests/data/tool-corpus.json (500+ tools, one index per server): the time to
//! build every server's index, and `search` latency over the union of all of them.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;
use tessera_search::{SearchOptions, ToolIndex, ToolText, search, search_with};

fn corpus() -> Vec<(String, Vec<Value>)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/tool-corpus.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: Value = serde_json::from_str(&text).unwrap();
    json["servers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, tools)| (name.clone(), tools.as_array().unwrap().clone()))
        .collect()
}

fn build_all(servers: &[(String, Vec<Value>)]) -> Vec<ToolIndex> {
    servers
        .iter()
        .map(|(name, tools)| {
            ToolIndex::build_for_server(name, tools.iter().map(ToolText::from_tool_json))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let servers = corpus();
    let tools: usize = servers.iter().map(|(_, t)| t.len()).sum();
    c.bench_function(
        &format!("build {} indexes, {tools} tools", servers.len()),
        |b| b.iter(|| build_all(black_box(&servers))),
    );

    let indexes = build_all(&servers);
    let refs: Vec<&ToolIndex> = indexes.iter().collect();
    let bytes: usize = indexes.iter().map(ToolIndex::memory_bytes).sum();
    eprintln!(
        "{tools} tools in {} indexes, ~{} KiB",
        indexes.len(),
        bytes / 1024
    );
    for query in [
        "merge pull request",
        "restart the pods of the payments deployment",
        "find unread emails from my manager with attachments",
        "give the customer their money back for the duplicate charge",
    ] {
        let words = query.split(' ').count();
        c.bench_function(&format!("search {words} words, top 5: {query}"), |b| {
            b.iter(|| search(black_box(&refs), black_box(query), 5))
        });
    }
    let query = "restart the pods of the payments deployment";
    c.bench_function(
        "search without synonyms, top 5: restart the pods …",
        |b| {
            b.iter(|| {
                search_with(
                    black_box(&refs),
                    black_box(query),
                    5,
                    SearchOptions { synonyms: false },
                )
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
