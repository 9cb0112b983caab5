//! Expected against observed: which expectation each observation fulfils,
//! what was expected and not seen, what was seen and not expected, and how
//! both are written (one YAML flow line each, as `--update` writes them).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::file::{Case, Expectation, Match};
use super::run::Observed;

/// The outcome of one case.
#[derive(Debug, Default)]
pub struct Verdict {
    /// For each observation in scope (in time order), the expectation it
    /// fulfils (index into `case.expect`).
    pub matched: Vec<(usize, Option<usize>)>,
    /// Expectations nothing fulfilled.
    pub missing: Vec<usize>,
    /// Observations no expectation names (counted only when strict).
    pub unexpected: Vec<usize>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty()
    }
}

/// The observations the case compares: those of its `workflows:`, if given.
pub fn in_scope<'o>(case: &Case, seen: &'o [Observed]) -> Vec<&'o Observed> {
    seen.iter()
        .filter(|o| {
            case.workflows
                .as_ref()
                .is_none_or(|w| o.fields.get("workflow").is_some_and(|n| w.contains(n)))
        })
        .collect()
}

pub fn fulfils(e: &Expectation, o: &Observed) -> bool {
    e.kind == o.kind && e.fields.iter().all(|(k, m)| field_matches(k, m, o))
}

fn field_matches(key: &str, m: &Match, o: &Observed) -> bool {
    match m {
        // To the second, as times are written.
        Match::At(t) => o.at.timestamp() == t.timestamp(),
        Match::Contains(parts) => o
            .fields
            .get("body")
            .is_some_and(|b| parts.iter().all(|p| b.contains(p.as_str()))),
        Match::Is(v) => match o.fields.get(key) {
            None => false,
            // A skip's reason: the code alone (`template_error`) or all of it.
            Some(got) if key == "reason" => {
                got == v || got.split(':').next().is_some_and(|c| c.trim() == v)
            }
            Some(got) => got == v,
        },
    }
}

/// Pairs expectations with observations: the most specific expectations
/// first, each taking the earliest observation it fits that is still free.
pub fn compare(case: &Case, seen: &[&Observed]) -> Verdict {
    let mut order: Vec<usize> = (0..case.expect.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(case.expect[*i].fields.len()));
    let mut taken: Vec<Option<usize>> = vec![None; seen.len()];
    let mut missing = Vec::new();
    for i in order {
        let e = &case.expect[i];
        match (0..seen.len()).find(|j| taken[*j].is_none() && fulfils(e, seen[*j])) {
            Some(j) => taken[j] = Some(i),
            None => missing.push(i),
        }
    }
    missing.sort_unstable();
    let unexpected = if case.strict {
        (0..seen.len()).filter(|j| taken[*j].is_none()).collect()
    } else {
        Vec::new()
    };
    Verdict {
        matched: taken.into_iter().enumerate().collect(),
        missing,
        unexpected,
    }
}

/// The free observation closest to an expectation (same kind, the most
/// fields alike), with the names of the fields that differ.
pub fn closest<'o>(
    e: &Expectation,
    seen: &[&'o Observed],
    verdict: &Verdict,
) -> Option<(&'o Observed, Vec<String>)> {
    let free = |j: usize| verdict.matched.get(j).is_none_or(|(_, m)| m.is_none());
    let mut best: Option<(usize, &'o Observed, Vec<String>)> = None;
    for (j, o) in seen.iter().enumerate() {
        if o.kind != e.kind || !free(j) {
            continue;
        }
        let differ: Vec<String> = e
            .fields
            .iter()
            .filter(|(k, m)| !field_matches(k, m, o))
            .map(|(k, _)| k.clone())
            .collect();
        let alike = e.fields.len() - differ.len();
        if best.as_ref().is_none_or(|(b, _, _)| alike > *b) {
            best = Some((alike, o, differ));
        }
    }
    best.map(|(_, o, d)| (o, d))
}

/// A time as test files write it: local to the settings' zone, seconds only
/// when there are some.
pub fn show_time(t: DateTime<Utc>, tz: Tz) -> String {
    let local = t.with_timezone(&tz);
    if local.format("%S").to_string() == "00" {
        local.format("%Y-%m-%dT%H:%M").to_string()
    } else {
        local.format("%Y-%m-%dT%H:%M:%S").to_string()
    }
}

/// A string as a YAML scalar: plain when it cannot be read as anything
/// else, double-quoted (JSON escapes are YAML's) otherwise.
pub fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().next().is_some_and(char::is_alphanumeric)
        && s.chars().all(|c| {
            c.is_alphanumeric()
                    || matches!(c, '_' | '-' | '.' | '@' | '/')
                    // CJK punctuation (，。！) means nothing to YAML.
                    || (!c.is_ascii() && !c.is_whitespace() && !c.is_control())
        })
        && s.parse::<f64>().is_err()
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    }
}

/// An observation as an expectation line: `send: { workflow: …, … }`.
pub fn observed_line(o: &Observed, tz: Tz) -> String {
    let mut parts = Vec::new();
    for k in o.kind.fields() {
        if *k == "at" {
            parts.push(format!("at: {}", scalar(&show_time(o.at, tz))));
        } else if let Some(v) = o.fields.get(k) {
            parts.push(format!("{k}: {}", scalar(v)));
        }
    }
    format!("{}: {{ {} }}", o.kind.name(), parts.join(", "))
}

/// An expectation as written (from its parsed fields).
pub fn expectation_line(e: &Expectation, tz: Tz) -> String {
    let mut parts = Vec::new();
    let mut keys: Vec<&str> = e.kind.fields().to_vec();
    keys.push("body_contains");
    for k in keys {
        let Some(m) = e.fields.get(k) else { continue };
        let v = match m {
            Match::Is(v) => scalar(v),
            Match::At(t) => scalar(&show_time(*t, tz)),
            Match::Contains(p) if p.len() == 1 => scalar(&p[0]),
            Match::Contains(p) => format!(
                "[{}]",
                p.iter().map(|x| scalar(x)).collect::<Vec<_>>().join(", ")
            ),
        };
        parts.push(format!("{k}: {v}"));
    }
    format!("{}: {{ {} }}", e.kind.name(), parts.join(", "))
}
