//! The one builder of numbered placeholder lists (issue 12 item 4): the
//! `IN ($1,$2,...)` lists and multi-row `VALUES ($1,$2),($3,$4)` groups
//! the store's statements bind. Both dialects read numbered `$n`.

use std::fmt::Write;

/// Appends `$first,$first+1,...`: `n` numbered placeholders, comma-separated
/// (the inside of an `IN (…)` list).
pub fn push_list(sql: &mut String, first: usize, n: usize) {
    for i in 0..n {
        let _ = write!(sql, "{}${}", if i == 0 { "" } else { "," }, first + i);
    }
}

/// `n` groups of `width` numbered placeholders from `$first`:
/// `($1,$2),($3,$4)` (the rows of a multi-row `VALUES`).
pub fn groups(first: usize, width: usize, n: usize) -> String {
    let mut s = String::with_capacity(n * width * 5);
    let mut k = first;
    for g in 0..n {
        s.push_str(if g == 0 { "(" } else { ",(" });
        for c in 0..width {
            let _ = write!(s, "{}${k}", if c == 0 { "" } else { "," });
            k += 1;
        }
        s.push(')');
    }
    s
}

/// `head` followed by `n` copies of `group` separated by commas, then
/// `tail`: rows of anonymous `?` placeholders (SQLite's multi-row batches,
/// see `Dialect::placeholder`).
pub fn repeat(head: &str, group: &str, n: usize, tail: &str) -> String {
    let mut s = String::with_capacity(head.len() + tail.len() + n * (group.len() + 1));
    s.push_str(head);
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(group);
    }
    s.push_str(tail);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_groups_are_numbered_on() {
        let mut sql = String::from("id IN (");
        push_list(&mut sql, 2, 3);
        sql.push(')');
        assert_eq!(sql, "id IN ($2,$3,$4)");
        let mut empty = String::new();
        push_list(&mut empty, 1, 0);
        assert_eq!(empty, "");
        assert_eq!(groups(3, 2, 2), "($3,$4),($5,$6)");
        assert_eq!(groups(1, 3, 1), "($1,$2,$3)");
        assert_eq!(repeat("VALUES ", "(?,?)", 2, ";"), "VALUES (?,?),(?,?);");
    }
}
