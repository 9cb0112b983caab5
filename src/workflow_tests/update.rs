//! `nurture test --update`: each case's `expect:` block rewritten as what was
//! observed, the rest of the file left as written. An expectation that still
//! holds keeps its own text (a hand-written `body_contains:` stays); new
//! observations are added as full lines; expectations nothing fulfils go.

use chrono_tz::Tz;

use super::compare::{Verdict, observed_line};
use super::file::Case;
use super::run::Observed;

/// A case's results, for the rewrite.
pub struct CaseResult<'a> {
    pub case: &'a Case,
    pub seen: Vec<&'a Observed>,
    pub verdict: &'a Verdict,
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// The lines (0-based, end exclusive) of a block that starts on `first` with
/// its key at `indent`: the lines after it that are deeper, or a list at the
/// same depth; trailing blank and comment lines are left outside.
fn block_end(lines: &[&str], first: usize, indent: usize, list_same_depth: bool) -> usize {
    let mut end = first + 1;
    let mut i = first + 1;
    while i < lines.len() {
        let l = lines[i];
        if is_content(l) {
            let ind = indent_of(l);
            let belongs = ind > indent
                || (list_same_depth && ind == indent && l.trim_start().starts_with("- "));
            if !belongs {
                break;
            }
            end = i + 1;
        }
        i += 1;
    }
    end
}

/// The file's text with every case's `expect:` as observed.
pub fn rewrite(source: &str, results: &[CaseResult<'_>], tz: Tz) -> String {
    let lines: Vec<&str> = source.lines().collect();
    // Replacements (start, end, new lines), applied from the bottom up.
    let mut edits: Vec<(usize, usize, Vec<String>)> = Vec::new();
    for r in results {
        let case = r.case;
        let (start, end, prefix, item_indent) = match case.expect_key {
            Some(pos) => {
                let l = pos.line as usize - 1;
                let col = pos.col as usize - 1;
                let prefix: String = lines[l].chars().take(col).collect();
                let key_indent = indent_of(lines[l]).max(col);
                let end = block_end(&lines, l, key_indent, true);
                let item_indent = case
                    .expect
                    .first()
                    .map(|e| (e.pos.col as usize).saturating_sub(3))
                    .unwrap_or(key_indent + 2);
                (l, end, prefix, item_indent)
            }
            None => {
                // After the case's last line, at its keys' depth.
                let l = case.pos.line as usize - 1;
                let key_indent = case.pos.col as usize - 1;
                let end = block_end(&lines, l, key_indent.saturating_sub(1), false);
                (end, end, " ".repeat(key_indent), key_indent + 2)
            }
        };
        // The source lines of each expectation, to keep them as written.
        let item_lines = |i: usize| -> Vec<String> {
            let from = case.expect[i].pos.line as usize - 1;
            let to = case
                .expect
                .get(i + 1)
                .map(|n| n.pos.line as usize - 1)
                .unwrap_or(end)
                .max(from + 1);
            // Only whole lines of its own (not `expect: [{...}]` on the key's line).
            if from == start
                || case
                    .expect
                    .get(i + 1)
                    .is_some_and(|n| n.pos.line == case.expect[i].pos.line)
            {
                return Vec::new();
            }
            let mut v: Vec<String> = lines[from..to.min(lines.len())]
                .iter()
                .map(|s| s.to_string())
                .collect();
            while v.last().is_some_and(|l| !is_content(l)) {
                v.pop();
            }
            v
        };
        let mut out = Vec::new();
        let pad = " ".repeat(item_indent);
        for (j, o) in r.seen.iter().enumerate() {
            let kept = r
                .verdict
                .matched
                .get(j)
                .and_then(|(_, m)| *m)
                .map(item_lines)
                .filter(|v| !v.is_empty());
            match kept {
                Some(v) => out.extend(v),
                None => out.push(format!("{pad}- {}", observed_line(o, tz))),
            }
        }
        let mut block = Vec::new();
        if out.is_empty() {
            block.push(format!("{prefix}expect: []"));
        } else {
            block.push(format!("{prefix}expect:"));
            block.extend(out);
        }
        edits.push((start, end, block));
    }
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut new: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    for (start, end, block) in edits {
        new.splice(start..end, block);
    }
    let mut text = new.join("\n");
    if source.ends_with('\n') || !source.is_empty() {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow_tests::compare::compare;
    use crate::workflow_tests::file::{Kind, Known, parse_str};
    use chrono::TimeZone;
    use std::collections::BTreeMap;

    fn observed(contact: &str) -> Observed {
        let mut fields = BTreeMap::new();
        fields.insert("workflow", "w".to_string());
        fields.insert("contact", contact.to_string());
        fields.insert("arm", "a".to_string());
        Observed {
            kind: Kind::Arm,
            at: chrono::Utc.with_ymd_and_hms(2026, 11, 2, 2, 0, 0).unwrap(),
            fields,
        }
    }

    #[test]
    fn a_case_without_expect_gets_one_and_other_cases_stay() {
        let src = "cases:\n  - name: one\n    start: 2026-11-02T10:00\n    # a comment\n  - name: two  # kept\n    start: 2026-11-02T10:00\n    expect:\n    - arm: { contact: x }\n";
        let known = Known {
            tz: chrono_tz::Asia::Shanghai,
            workflows: vec!["w"],
            root: std::path::Path::new("."),
        };
        let (f, d) = parse_str(std::path::Path::new("t.yaml"), src, &known);
        assert!(d.is_empty(), "{d:?}");
        let f = f.unwrap();
        let seen = [observed("c1")];
        let seen: Vec<&Observed> = seen.iter().collect();
        let v1 = compare(&f.cases[0], &seen);
        let v2 = compare(&f.cases[1], &seen);
        let results = [
            CaseResult {
                case: &f.cases[0],
                seen: seen.clone(),
                verdict: &v1,
            },
            CaseResult {
                case: &f.cases[1],
                seen: seen.clone(),
                verdict: &v2,
            },
        ];
        let out = rewrite(src, &results, chrono_tz::Asia::Shanghai);
        assert_eq!(
            out,
            "cases:\n  - name: one\n    start: 2026-11-02T10:00\n    expect:\n      - arm: { workflow: w, contact: c1, arm: a, at: \"2026-11-02T10:00\" }\n    # a comment\n  - name: two  # kept\n    start: 2026-11-02T10:00\n    expect:\n    - arm: { workflow: w, contact: c1, arm: a, at: \"2026-11-02T10:00\" }\n"
        );
    }
}
