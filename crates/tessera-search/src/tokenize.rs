//! Tokenizer shared by indexing and querying.

use rust_stemmers::{Algorithm, Stemmer};

/// Common English words that say nothing about which tool is meant.
const STOP_WORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as",
    "at", "be", "been", "being", "both", "but", "by", "can", "could", "did", "do", "does", "doing",
    "e", "each", "eg", "etc", "for", "from", "g", "had", "has", "have", "having", "he", "her",
    "here", "him", "his", "how", "i", "ie", "if", "in", "into", "is", "it", "its", "just", "let",
    "me", "more", "most", "my", "no", "nor", "not", "of", "off", "on", "once", "only", "or",
    "other", "our", "ours", "out", "own", "please", "s", "same", "she", "should", "so", "some",
    "such", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this",
    "those", "through", "to", "too", "very", "was", "we", "were", "what", "whats", "when", "where",
    "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your",
];

fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.binary_search(&word).is_ok()
}

/// Splits `text` into search terms: on every non-alphanumeric character and on snake_case,
/// kebab-case and camelCase boundaries (`getPullRequest` → get, pull, request; `HTTPServer` →
/// http, server), lower-cased, without stop words, each reduced to its Snowball English stem
/// ("issues" and "issue" → "issu", "listing" → "list"). Digits stay with their letters
/// (`sha256`, `p95`).
pub fn tokenize(text: &str) -> Vec<String> {
    let stemmer = Stemmer::create(Algorithm::English);
    let mut out = Vec::new();
    let mut word = String::new();
    let mut flush = |word: &mut String| {
        if !word.is_empty() {
            // Apostrophes were separators: "what's" gives "what" and "s", both stop words.
            if !is_stop_word(word) {
                out.push(stemmer.stem(word).into_owned());
            }
            word.clear();
        }
    };
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            flush(&mut word);
            continue;
        }
        if c.is_uppercase() && !word.is_empty() {
            let prev = chars.get(i.wrapping_sub(1)).copied().unwrap_or(' ');
            let next = chars.get(i + 1).copied().unwrap_or(' ');
            // fooBar | FOOBar: a capital after a lower-case letter or digit starts a word, and
            // so does the last capital of a run that a lower-case letter follows.
            if prev.is_lowercase()
                || prev.is_numeric()
                || (prev.is_uppercase() && next.is_lowercase())
            {
                flush(&mut word);
            }
        }
        word.extend(c.to_lowercase());
    }
    flush(&mut word);
    out
}

#[cfg(test)]
pub(crate) const STOP_WORDS_FOR_TEST: &[&str] = STOP_WORDS;
