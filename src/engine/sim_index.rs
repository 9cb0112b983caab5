//! The dry-run's own enrollments as the entry policies read them, kept
//! compact: a million-contact preview must not hold a million full
//! enrollment rows (issue 15: memory flat). An entry is the workflow's index,
//! the entry key (numbers kept as numbers), when it started and its id;
//! [`EntryIndex::rows`] turns a contact's entries back into the rows
//! `sources::may_enter_given` reads, so the policy itself is not repeated.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};

use crate::store::plan_reads::{EnrollmentRow, from_ms, ms};
use crate::store::states::EnrollmentStatus;

/// An entry key without its text: `spell:N`, `tick:N`, `now:N`,
/// `existing:N` and `log:N` keep the number only.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Once,
    Numbered(u8, i64),
    Other(Box<str>),
}

const PREFIXES: [&str; 5] = ["spell:", "tick:", "now:", "existing:", "log:"];

impl Key {
    fn of(key: &str) -> Key {
        if key == "once" {
            return Key::Once;
        }
        for (i, p) in PREFIXES.iter().enumerate() {
            if let Some(n) = key.strip_prefix(p).and_then(|n| n.parse::<i64>().ok())
                // Only a number that prints back the same (no `+1`, `01`).
                && format!("{p}{n}") == key
            {
                return Key::Numbered(i as u8, n);
            }
        }
        Key::Other(key.into())
    }

    fn text(&self) -> String {
        match self {
            Key::Once => "once".into(),
            Key::Numbered(i, n) => format!("{}{n}", PREFIXES[*i as usize]),
            Key::Other(s) => s.to_string(),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    workflow: u32,
    key: Key,
    started_ms: i64,
    id: i64,
}

/// The simulation's enrollments by contact.
#[derive(Default)]
pub struct EntryIndex {
    /// Workflow names, by the index entries carry.
    names: Vec<String>,
    by_contact: HashMap<Box<str>, Vec<Entry>>,
    /// Per workflow, how many entries it has (a scan of a workflow without
    /// any skips the look-ups).
    per_workflow: Vec<u64>,
    /// Per workflow, its entries for a date's occurrence (`date:…` keys) in
    /// the order they started: (started, id, contact).
    dated: Vec<Vec<(i64, i64, Box<str>)>>,
}

impl EntryIndex {
    fn workflow_index(&mut self, name: &str) -> u32 {
        match self.names.iter().position(|n| n == name) {
            Some(i) => i as u32,
            None => {
                self.names.push(name.to_string());
                self.per_workflow.push(0);
                self.dated.push(Vec::new());
                (self.names.len() - 1) as u32
            }
        }
    }

    pub fn insert(
        &mut self,
        id: i64,
        workflow: &str,
        contact_id: &str,
        entry_key: &str,
        started_at: DateTime<Utc>,
    ) {
        let w = self.workflow_index(workflow);
        self.per_workflow[w as usize] += 1;
        if entry_key.starts_with("date:") {
            self.dated[w as usize].push((ms(started_at), id, contact_id.into()));
        }
        let entry = Entry {
            workflow: w,
            key: Key::of(entry_key),
            started_ms: ms(started_at),
            id,
        };
        match self.by_contact.get_mut(contact_id) {
            Some(v) => v.push(entry),
            None => {
                self.by_contact.insert(contact_id.into(), vec![entry]);
            }
        }
    }

    /// Whether `workflow` has any entry.
    pub fn has_workflow(&self, workflow: &str) -> bool {
        self.names
            .iter()
            .position(|n| n == workflow)
            .is_some_and(|i| self.per_workflow[i] > 0)
    }

    /// Forgets the dated entries started at or before `before` (the
    /// simulation's clock only moves forward, and a check looks back two
    /// days): a run of weeks keeps a few days' entries, not all of them.
    pub fn forget_dated_until(&mut self, before: DateTime<Utc>) {
        let before = ms(before);
        for dated in &mut self.dated {
            let n = dated.partition_point(|(t, _, _)| *t <= before);
            dated.drain(..n);
        }
    }

    /// The contacts with an entry of `workflow` for a date's occurrence
    /// started after `since`, with an id below `below`: those the store's
    /// scan of a date trigger leaves out by their enrollments
    /// (`store::scans::workflow_scan`), had the daemon stored them.
    pub fn dated_since(&self, workflow: &str, since: DateTime<Utc>, below: i64) -> Vec<&str> {
        let Some(w) = self.names.iter().position(|n| n == workflow) else {
            return Vec::new();
        };
        let dated = &self.dated[w];
        // Started in time order: the simulation's clock only moves forward.
        let from = dated.partition_point(|(t, _, _)| *t <= ms(since));
        dated[from..]
            .iter()
            .filter(|(_, id, _)| *id < below)
            .map(|(_, _, c)| &**c)
            .collect()
    }

    /// The contact's enrollments with an id below `below` (those that
    /// existed when a scan began: the daemon collects a scan before it plans
    /// it), as the rows the entry policy reads (`None`: none).
    pub fn rows(&self, contact_id: &str, below: i64) -> Option<Vec<EnrollmentRow>> {
        let entries = self.by_contact.get(contact_id)?;
        let rows: Vec<EnrollmentRow> = entries
            .iter()
            .filter(|e| e.id < below)
            .map(|e| EnrollmentRow {
                id: e.id,
                workflow: self.names[e.workflow as usize].clone(),
                contact_id: contact_id.to_string(),
                entry_key: e.key.text(),
                status: EnrollmentStatus::Active,
                step_id: None,
                next_run_at: None,
                started_at: from_ms(e.started_ms),
                trigger: None,
                wait_since: None,
            })
            .collect();
        (!rows.is_empty()).then_some(rows)
    }
}

/// When enrollments started, per workflow, for the blast guard's window:
/// runs of (moment, how many), since a pass starts them all at one moment.
#[derive(Default)]
pub struct Starts {
    runs: HashMap<String, VecDeque<(DateTime<Utc>, u64)>>,
}

impl Starts {
    pub fn add(&mut self, workflow: &str, at: DateTime<Utc>) {
        let runs = match self.runs.get_mut(workflow) {
            Some(r) => r,
            None => self.runs.entry(workflow.to_string()).or_default(),
        };
        match runs.back_mut() {
            Some((t, n)) if *t == at => *n += 1,
            _ => runs.push_back((at, 1)),
        }
    }

    /// How many of `workflow`'s enrollments started at or after `since`.
    pub fn since(&self, workflow: &str, since: DateTime<Utc>) -> i64 {
        self.runs
            .get(workflow)
            .map(|r| {
                r.iter()
                    .filter(|(t, _)| *t >= since)
                    .map(|(_, n)| *n)
                    .sum::<u64>() as i64
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn keys_round_trip_exactly() {
        for k in [
            "once",
            "spell:1730000000000",
            "tick:-5",
            "now:0",
            "existing:17",
            "log:42",
            "date:2026-02-28",
            "log:+1",
            "log:01",
            "spell:",
            "tick:x",
        ] {
            assert_eq!(Key::of(k).text(), k);
        }
        assert!(matches!(Key::of("log:42"), Key::Numbered(4, 42)));
        assert!(matches!(Key::of("log:01"), Key::Other(_)));
    }

    #[test]
    fn rows_are_the_entries_before_the_mark() {
        let t = Utc.timestamp_opt(1_780_000_000, 0).unwrap();
        let mut ix = EntryIndex::default();
        assert!(!ix.has_workflow("w"));
        ix.insert(10, "w", "c1", "log:3", t);
        ix.insert(11, "v", "c1", "once", t);
        assert!(ix.has_workflow("w") && ix.has_workflow("v"));
        assert!(ix.rows("c2", i64::MAX).is_none());
        assert!(ix.rows("c1", 10).is_none());
        let rows = ix.rows("c1", 11).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].workflow.as_str(), rows[0].entry_key.as_str()),
            ("w", "log:3")
        );
        assert_eq!(rows[0].started_at, t);
        assert_eq!(ix.rows("c1", i64::MAX).unwrap().len(), 2);
    }

    /// What the store's scan of a date trigger would leave out had the
    /// daemon stored the run's enrollments: this workflow's, for a date's
    /// occurrence, started after the moment, made before the scan began.
    #[test]
    fn dated_entries_since_a_moment() {
        let t = |s: i64| Utc.timestamp_opt(1_780_000_000 + s, 0).unwrap();
        let mut ix = EntryIndex::default();
        assert!(ix.dated_since("w", t(0), i64::MAX).is_empty());
        ix.insert(1, "w", "old", "date:2030-06-14", t(0));
        ix.insert(2, "w", "a", "date:2030-06-15", t(10));
        ix.insert(3, "w", "log", "log:7", t(10));
        ix.insert(4, "v", "other", "date:2030-06-15", t(10));
        ix.insert(5, "w", "b", "once", t(20));
        ix.insert(6, "w", "c", "date:2030-06-15", t(20));
        assert_eq!(ix.dated_since("w", t(0), i64::MAX), ["a", "c"]);
        assert_eq!(ix.dated_since("w", t(-1), i64::MAX), ["old", "a", "c"]);
        assert_eq!(ix.dated_since("w", t(0), 6), ["a"]);
        assert_eq!(ix.dated_since("w", t(20), i64::MAX), Vec::<&str>::new());
        assert_eq!(ix.dated_since("v", t(0), i64::MAX), ["other"]);
        assert!(ix.dated_since("x", t(0), i64::MAX).is_empty());
        ix.forget_dated_until(t(0));
        assert_eq!(ix.dated_since("w", t(-1), i64::MAX), ["a", "c"]);
        assert_eq!(ix.dated_since("v", t(-1), i64::MAX), ["other"]);
    }

    #[test]
    fn starts_count_in_the_window() {
        let t = |s: i64| Utc.timestamp_opt(1_780_000_000 + s, 0).unwrap();
        let mut s = Starts::default();
        for _ in 0..3 {
            s.add("w", t(0));
        }
        s.add("w", t(10));
        s.add("v", t(10));
        assert_eq!(s.since("w", t(0)), 4);
        assert_eq!(s.since("w", t(5)), 1);
        assert_eq!(s.since("x", t(0)), 0);
    }
}
