//! Tessera tool search: BM25 over the names, titles, descriptions and argument names of MCP
//! tools, for a "tool search" routing mode where a client sees one `retrieve_tools` tool instead
//! of a catalogue of hundreds.
//!
//! - [`ToolText`] is the searchable text of one tool ([`ToolText::from_tool_json`] reads an MCP
//!   `Tool` object).
//! - [`ToolIndex`] is the immutable inverted index of one server's tools, built once per
//!   catalogue (`Send + Sync`, share it behind an `Arc`).
//! - [`search`] scores a query over the union of several indexes (the servers one user may call)
//!   with exact BM25: N, the average document length and document frequencies are summed over
//!   the indexes passed, so scores from different servers are comparable.
//!
//! Pure and synchronous: no I/O, no async, no locks. A query allocates its tokens and one score
//! slot per indexed tool, never per posting.

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod synonyms;
mod tokenize;

use std::collections::HashMap;

pub use synonyms::SYNONYM_WEIGHT;
pub use tokenize::tokenize;

/// BM25 term-frequency saturation.
const K1: f32 = 1.2;
/// BM25 length normalisation.
const B: f32 = 0.75;

/// How much one occurrence of a token counts, per field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldWeights {
    pub server: f32,
    pub name: f32,
    pub title: f32,
    pub description: f32,
    pub argument_name: f32,
    pub argument_description: f32,
}

impl Default for FieldWeights {
    fn default() -> Self {
        Self {
            server: 1.0,
            name: 3.0,
            title: 2.0,
            description: 1.0,
            argument_name: 1.0,
            argument_description: 0.5,
        }
    }
}

/// Searchable text of one tool.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolText<'a> {
    pub name: &'a str,
    pub title: Option<&'a str>,
    pub description: Option<&'a str>,
    pub argument_names: Vec<&'a str>,
    pub argument_descriptions: Vec<&'a str>,
}

impl ToolText<'_> {
    /// Reads an MCP `Tool` object: `name`, `title` (or `annotations.title`), `description`, and
    /// the keys of `inputSchema.properties` with each property's `description`. Missing or
    /// mistyped fields are skipped.
    pub fn from_tool_json(tool: &serde_json::Value) -> ToolText<'_> {
        fn str_at(v: Option<&serde_json::Value>) -> Option<&str> {
            v.and_then(serde_json::Value::as_str)
        }
        let mut text = ToolText {
            name: str_at(tool.get("name")).unwrap_or(""),
            title: str_at(tool.get("title"))
                .or_else(|| str_at(tool.get("annotations").and_then(|a| a.get("title")))),
            description: str_at(tool.get("description")),
            ..ToolText::default()
        };
        if let Some(props) = tool
            .get("inputSchema")
            .and_then(|s| s.get("properties"))
            .and_then(serde_json::Value::as_object)
        {
            for (key, schema) in props {
                text.argument_names.push(key.as_str());
                if let Some(d) = str_at(schema.get("description")) {
                    text.argument_descriptions.push(d);
                }
            }
        }
        text
    }
}

#[derive(Debug, Clone, Copy)]
struct Posting {
    doc: u32,
    /// Weighted term frequency (sum of the field weights of each occurrence).
    tf: f32,
}

/// BM25 index of one server's tools: immutable once built, `Send + Sync`.
#[derive(Debug, Clone, Default)]
pub struct ToolIndex {
    /// term -> range in `postings`.
    terms: HashMap<Box<str>, (u32, u32)>,
    /// Every term's postings, back to back, each run sorted by doc.
    postings: Vec<Posting>,
    /// Weighted length of each document.
    doc_len: Vec<f32>,
    /// Sum of `doc_len`.
    total_len: f64,
}

impl ToolIndex {
    /// Indexes `tools` with the default [`FieldWeights`]; a tool's position is its doc id.
    pub fn build<'a>(tools: impl IntoIterator<Item = ToolText<'a>>) -> Self {
        Self::build_with(None, tools, FieldWeights::default())
    }

    /// Like [`build`](Self::build), and also indexes `server` (the server's name, as a client
    /// sees it in `<server>__<tool>`) once per tool, so "the jira ticket …" prefers Jira's tools.
    pub fn build_for_server<'a>(
        server: &str,
        tools: impl IntoIterator<Item = ToolText<'a>>,
    ) -> Self {
        Self::build_with(Some(server), tools, FieldWeights::default())
    }

    /// The general form: an optional server name and explicit field weights.
    pub fn build_with<'a>(
        server: Option<&str>,
        tools: impl IntoIterator<Item = ToolText<'a>>,
        weights: FieldWeights,
    ) -> Self {
        let server_tokens = server.map(tokenize).unwrap_or_default();
        // term -> (doc, tf) in doc order; flattened below.
        let mut by_term: HashMap<String, Vec<Posting>> = HashMap::new();
        let mut doc_len = Vec::new();
        let mut doc_terms: HashMap<String, f32> = HashMap::new();
        for (doc, tool) in tools.into_iter().enumerate() {
            let doc = u32::try_from(doc).unwrap_or(u32::MAX);
            doc_terms.clear();
            let mut add = |text: &str, w: f32| {
                for t in tokenize(text) {
                    *doc_terms.entry(t).or_insert(0.0) += w;
                }
            };
            add(tool.name, weights.name);
            if let Some(t) = tool.title {
                add(t, weights.title);
            }
            if let Some(d) = tool.description {
                add(d, weights.description);
            }
            for a in &tool.argument_names {
                add(a, weights.argument_name);
            }
            for d in &tool.argument_descriptions {
                add(d, weights.argument_description);
            }
            for t in &server_tokens {
                *doc_terms.entry(t.clone()).or_insert(0.0) += weights.server;
            }
            let mut len = 0.0;
            for (term, &tf) in &doc_terms {
                len += tf;
                by_term
                    .entry(term.clone())
                    .or_default()
                    .push(Posting { doc, tf });
            }
            doc_len.push(len);
        }
        let mut terms = HashMap::with_capacity(by_term.len());
        let mut postings = Vec::with_capacity(by_term.values().map(Vec::len).sum());
        for (term, list) in by_term {
            let start = postings.len() as u32;
            postings.extend_from_slice(&list);
            terms.insert(term.into_boxed_str(), (start, list.len() as u32));
        }
        let total_len = doc_len.iter().map(|&l| f64::from(l)).sum();
        Self {
            terms,
            postings,
            doc_len,
            total_len,
        }
    }

    /// Number of tools indexed.
    pub fn len(&self) -> usize {
        self.doc_len.len()
    }

    pub fn is_empty(&self) -> bool {
        self.doc_len.is_empty()
    }

    /// Number of distinct terms.
    pub fn term_count(&self) -> usize {
        self.terms.len()
    }

    /// Rough heap size in bytes (term strings, the hash table, postings, lengths).
    pub fn memory_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(Box<str>, (u32, u32))>() + 1; // + control byte
        let table = self.terms.capacity() * entry;
        let strings: usize = self.terms.keys().map(|k| k.len()).sum();
        std::mem::size_of::<Self>()
            + table
            + strings
            + self.postings.capacity() * std::mem::size_of::<Posting>()
            + self.doc_len.capacity() * std::mem::size_of::<f32>()
    }

    fn postings(&self, term: &str) -> &[Posting] {
        match self.terms.get(term) {
            Some(&(start, len)) => {
                let (s, l) = (start as usize, len as usize);
                self.postings.get(s..s + l).unwrap_or(&[])
            }
            None => &[],
        }
    }
}

/// One result of [`search`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Which of the indexes passed to [`search`].
    pub index: usize,
    /// The tool's position in that index.
    pub doc: u32,
    pub score: f32,
}

/// How [`search_with`] reads a query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchOptions {
    /// A query word also matches the words of its groups in a small built-in thesaurus of
    /// catalogue vocabulary ("ticket" → issue, "folder" → directory, "remove" → delete), each at
    /// [`SYNONYM_WEIGHT`]. On by default.
    pub synonyms: bool,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self { synonyms: true }
    }
}

/// Exact BM25 over the union of `indexes`: N, the average document length and each term's
/// document frequency are summed over all of them, so scores are comparable across servers.
/// Returns the best `limit` hits, best first, ties broken by (index, doc). A query with no
/// indexable term (empty, or stop words only) returns nothing; a query term no index holds
/// contributes nothing. Uses the default [`SearchOptions`] (synonyms on).
pub fn search(indexes: &[&ToolIndex], query: &str, limit: usize) -> Vec<Hit> {
    search_with(indexes, query, limit, SearchOptions::default())
}

/// [`search`] with explicit options.
pub fn search_with(
    indexes: &[&ToolIndex],
    query: &str,
    limit: usize,
    options: SearchOptions,
) -> Vec<Hit> {
    if limit == 0 {
        return Vec::new();
    }
    let terms = tokenize(query);
    if terms.is_empty() {
        return Vec::new();
    }
    // Each query word weighs 1 per occurrence; a synonym not in the query weighs
    // SYNONYM_WEIGHT (once, however many query words lead to it).
    let mut query_terms: Vec<(&str, f32)> = Vec::with_capacity(terms.len() * 2);
    for t in &terms {
        match query_terms.iter_mut().find(|(q, _)| *q == t.as_str()) {
            Some((_, w)) => *w += 1.0,
            None => query_terms.push((t.as_str(), 1.0)),
        }
    }
    if options.synonyms {
        for t in &terms {
            for s in synonyms::related(t) {
                if !query_terms.iter().any(|(q, _)| *q == s.as_str()) {
                    query_terms.push((s.as_str(), SYNONYM_WEIGHT));
                }
            }
        }
    }

    let n: usize = indexes.iter().map(|i| i.len()).sum();
    if n == 0 {
        return Vec::new();
    }
    let total_len: f64 = indexes.iter().map(|i| i.total_len).sum();
    let avgdl = (total_len / n as f64) as f32;
    let avgdl = if avgdl > 0.0 { avgdl } else { 1.0 };

    // One score slot per tool of the union; offsets[i] is index i's first slot.
    let mut offsets = Vec::with_capacity(indexes.len());
    let mut acc = 0usize;
    for i in indexes {
        offsets.push(acc);
        acc += i.len();
    }
    let mut scores = vec![0.0f32; n];
    let mut any = false;
    for &(term, qtf) in &query_terms {
        let df: usize = indexes.iter().map(|i| i.postings(term).len()).sum();
        if df == 0 {
            continue;
        }
        any = true;
        let idf = (1.0 + (n as f32 - df as f32 + 0.5) / (df as f32 + 0.5)).ln() * qtf;
        for (index, &offset) in indexes.iter().zip(&offsets) {
            let doc_len = &index.doc_len;
            for p in index.postings(term) {
                let dl = doc_len.get(p.doc as usize).copied().unwrap_or(avgdl);
                let norm = K1 * (1.0 - B + B * dl / avgdl);
                if let Some(s) = scores.get_mut(offset + p.doc as usize) {
                    *s += idf * p.tf * (K1 + 1.0) / (p.tf + norm);
                }
            }
        }
    }
    if !any {
        return Vec::new();
    }

    // Top `limit` by (score desc, index asc, doc asc): a small sorted buffer.
    let mut top: Vec<Hit> = Vec::with_capacity(limit.min(n) + 1);
    let better = |a: &Hit, b: &Hit| {
        a.score > b.score || (a.score == b.score && (a.index, a.doc) < (b.index, b.doc))
    };
    for (index, &offset) in offsets.iter().enumerate() {
        let len = indexes.get(index).map_or(0, |i| i.len());
        for (doc, &score) in scores
            .get(offset..offset + len)
            .unwrap_or(&[])
            .iter()
            .enumerate()
        {
            if score <= 0.0 {
                continue;
            }
            let hit = Hit {
                index,
                doc: doc as u32,
                score,
            };
            if top.len() == limit && top.last().is_some_and(|worst| !better(&hit, worst)) {
                continue;
            }
            let pos = top.partition_point(|h| better(h, &hit));
            top.insert(pos, hit);
            top.truncate(limit);
        }
    }
    top
}

#[cfg(test)]
mod tests;
