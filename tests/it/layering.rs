//! The layering of `src/` (issue 12, "Done means"): cli → daemon → config →
//! api/console → engine/channels → wecom → store → project →
//! workflow/audience/… → leaves. A module may use modules of its own layer
//! or below; the graph of
//! top-level modules has no cycle. `KNOWN_UPWARD` and `KNOWN_CYCLES` are the
//! violations that exist today, each to be removed when fixed (the test
//! fails on a new violation, and on a listed one that is gone, so the lists
//! only shrink).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layers, highest first. Same-layer use is allowed (a cycle is not).
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["daemon"],
    &["config", "workflow_tests"],
    &["api", "console", "web"],
    &["engine", "channels", "report", "metrics"],
    // WeCom's rules (transfers, senders, tag marks), shared by the planner
    // and the channel, decided from the store's facts.
    &["wecom"],
    &["store"],
    &["project", "reload", "contact_ways", "segments"],
    &[
        "workflow",
        "audience",
        "settings",
        "template",
        "assign",
        "policy",
        "attachments",
        "schedule",
        "calendar",
    ],
    &[
        "contact",
        "diagnostics",
        "located",
        "project_files",
        "duration",
        "yaml",
        "timefmt",
        "csv_safe",
        "logging",
    ],
];

/// `from -> to` uses of a higher layer that exist today.
const KNOWN_UPWARD: &[(&str, &str)] = &[];

/// Cycles between top-level modules that exist today (each a set).
const KNOWN_CYCLES: &[&[&str]] = &[];

fn layer_of(m: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&m))
}

fn uses() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeSet::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        let m = name.trim_end_matches(".rs").to_string();
        if m != "main" && m != "lib" {
            modules.insert(m);
        }
    }
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            // Unit tests may reach anywhere: a `tests.rs` is a `#[cfg(test)]`
            // module kept in a file of its own.
            if path.extension().is_none_or(|x| x != "rs")
                || path.file_stem().is_some_and(|s| s == "tests")
            {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let first = rel.components().next().unwrap().as_os_str();
            let from = first.to_string_lossy().trim_end_matches(".rs").to_string();
            if !modules.contains(&from) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests may reach anywhere.
            let code = match text.find("\n#[cfg(test)]\nmod tests") {
                Some(i) => &text[..i],
                None => &text[..],
            };
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let rest = &line[i + "crate::".len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if name != from && modules.contains(&name) {
                        out.entry(from.clone()).or_default().insert(name);
                    }
                }
            }
        }
    }
    out
}

/// Strongly connected components of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        if let Some(next) = t.g.get(v) {
            for w in next {
                let w = w.as_str();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let l = t.low[w].min(t.low[v]);
                    t.low.insert(v, l);
                } else if t.on.contains(w) {
                    let l = t.index[w].min(t.low[v]);
                    t.low.insert(v, l);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut c = BTreeSet::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                c.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                t.out.push(c);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn every_module_has_a_layer_and_uses_only_its_own_or_lower() {
    let graph = uses();
    let mut upward = BTreeSet::new();
    for (from, tos) in &graph {
        let lf = layer_of(from).unwrap_or_else(|| panic!("src/{from}: give it a layer in LAYERS"));
        for to in tos {
            let lt = layer_of(to).unwrap_or_else(|| panic!("src/{to}: give it a layer in LAYERS"));
            if lt < lf {
                upward.insert((from.clone(), to.clone()));
            }
        }
    }
    let known: BTreeSet<(String, String)> = KNOWN_UPWARD
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<_> = upward.difference(&known).collect();
    assert!(new.is_empty(), "modules using a higher layer: {new:?}");
    let gone: Vec<_> = known.difference(&upward).collect();
    assert!(gone.is_empty(), "fixed, remove from KNOWN_UPWARD: {gone:?}");
}

#[test]
fn top_level_modules_have_no_cycle() {
    let found: BTreeSet<BTreeSet<String>> = cycles(&uses()).into_iter().collect();
    let known: BTreeSet<BTreeSet<String>> = KNOWN_CYCLES
        .iter()
        .map(|c| c.iter().map(|m| m.to_string()).collect())
        .collect();
    let new: Vec<_> = found.difference(&known).collect();
    assert!(new.is_empty(), "module cycles: {new:?}");
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(gone.is_empty(), "fixed, remove from KNOWN_CYCLES: {gone:?}");
}

/// Handles on the database that only `src/store/` may hold or open, and SQL
/// only it may write (issue 12 item 1). Error types (`sqlx::Error`,
/// `sqlx::Result`) name no database and are not listed.
const STORE_ONLY: &[&str] = &[
    "AnyPool",
    "AnyConnection",
    "SqlitePool",
    "PgPool",
    "Transaction<",
    ".db()",
    ".sqlite_pool()",
    "store::begin(",
    ".begin()",
    "begin_with(",
    "sqlx::query",
    "Sql::new(",
];

/// `(file, pattern)` uses of [`STORE_ONLY`] outside the store that exist
/// today, each to be removed when moved into the store.
const KNOWN_OUTSIDE_STORE: &[(&str, &str)] = &[];

#[test]
fn only_the_store_holds_the_pool_or_writes_sql() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = BTreeSet::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                if path != src.join("store") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs")
                || path.file_stem().is_some_and(|s| s == "tests")
            {
                continue;
            }
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let code = match text.find("\n#[cfg(test)]\nmod tests") {
                Some(i) => &text[..i],
                None => &text[..],
            };
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for p in STORE_ONLY {
                    if line.contains(p) {
                        found.insert((rel.clone(), p.to_string()));
                    }
                }
            }
        }
    }
    let known: BTreeSet<(String, String)> = KNOWN_OUTSIDE_STORE
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<_> = found.difference(&known).collect();
    assert!(
        new.is_empty(),
        "database handles or SQL outside src/store/ (add a Store method): {new:?}"
    );
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(
        gone.is_empty(),
        "fixed, remove from KNOWN_OUTSIDE_STORE: {gone:?}"
    );
}
