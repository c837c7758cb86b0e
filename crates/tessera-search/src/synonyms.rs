//! A small, general thesaurus of the words people use for tool-catalogue actions and objects.
//! A query term also matches the other words of its groups, at [`SYNONYM_WEIGHT`] of a query
//! term's weight. Written for software, ops and office catalogues in general, not for one
//! server; entries may be phrases ("pull request").

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::tokenize;

/// Weight of a synonym relative to a word the query holds.
pub const SYNONYM_WEIGHT: f32 = 0.5;

const GROUPS: &[&[&str]] = &[
    // Verbs.
    &[
        "delete", "remove", "erase", "wipe", "destroy", "drop", "purge", "trash",
    ],
    &["create", "add", "new", "make", "open"],
    &["update", "edit", "modify", "change", "alter", "set"],
    &[
        "get", "fetch", "retrieve", "read", "show", "view", "display", "describe", "inspect", "see",
    ],
    &["list", "enumerate", "browse", "all"],
    &["search", "find", "lookup", "query", "locate", "look"],
    &["send", "post", "publish", "share"],
    &["reply", "answer", "respond", "response"],
    &["cancel", "stop", "abort", "halt"],
    &["restart", "reboot", "bounce", "recycle"],
    &["rename", "move", "relocate"],
    &["copy", "duplicate", "clone"],
    &["invite", "add"],
    &["deploy", "release", "rollout", "ship"],
    &["resolve", "fix", "fixed", "close", "done", "solved"],
    &["grant", "give", "access", "permission"],
    // Nouns.
    &["issue", "ticket", "bug"],
    &["pr", "pull request"],
    &["mr", "merge request"],
    &["event", "meeting", "appointment", "call"],
    &["directory", "folder", "dir"],
    &["size", "big", "space", "usage", "large", "disk"],
    &["free", "available", "availability", "busy"],
    &["collaborator", "access", "member"],
    &["error", "exception", "crash", "failure", "fail"],
    &["alert", "notify", "notification", "page", "alarm", "oncall"],
    &["log", "output", "trace", "console"],
    &["message", "chat", "post"],
    &["email", "mail", "inbox"],
    &["reaction", "react", "reacted", "emoji"],
    &["user", "person", "people", "member"],
    &["history", "past", "previous", "recent", "last", "older"],
    &["slow", "slowest", "expensive", "latency"],
    &["replica", "standby", "replication"],
    &["money", "payment", "charge", "funds", "paid", "pay"],
    &["discount", "coupon", "promo", "code"],
    &["customer", "client", "buyer"],
    &["subscription", "plan"],
    &["repository", "repo"],
    &["database", "db"],
    &["configuration", "config", "settings"],
];

static EXPANSIONS: LazyLock<HashMap<String, Vec<String>>> = LazyLock::new(|| {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for group in GROUPS {
        let stems: Vec<Vec<String>> = group.iter().map(|w| tokenize(w)).collect();
        for (i, from) in stems.iter().enumerate() {
            // Only a one-word entry is a key; a phrase is only ever an expansion.
            let [key] = from.as_slice() else { continue };
            for (j, to) in stems.iter().enumerate() {
                if i == j {
                    continue;
                }
                let list = map.entry(key.clone()).or_default();
                for t in to {
                    if t != key && !list.contains(t) {
                        list.push(t.clone());
                    }
                }
            }
        }
    }
    map
});

/// The stems related to the stem `term` (not including `term`).
pub fn related(term: &str) -> &'static [String] {
    EXPANSIONS.get(term).map_or(&[], Vec::as_slice)
}
