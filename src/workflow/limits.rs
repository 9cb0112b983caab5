//! How big one workflow may be once YAML aliases are expanded.
//!
//! Aliases make a small file large: 430 bytes of `&a [*b, *b, ...]` expand to
//! some 10,000 conditions, and every scheduler tick evaluated all of them
//! for every contact (104 s per tick). The YAML reader already refuses
//! documents over [`crate::yaml::MAX_NODES`] values (no "billion laughs");
//! a workflow gets a much tighter bound, checked on the expanded tree before
//! anything is built from it, in `validate` and at every (re)load.

use std::path::Path;

use crate::diagnostics::{Diagnostic, Pos};
use crate::yaml::{Kind, Node};

/// Most YAML values (map keys and values, list items, scalars) in one
/// workflow, counting each alias expansion. A hand-written workflow of this
/// size is about a thousand lines.
pub const MAX_WORKFLOW_VALUES: usize = 2_000;

/// `None` when the workflow in `root` is within [`MAX_WORKFLOW_VALUES`];
/// otherwise a diagnostic at the top-level key that holds the most.
pub fn check_size(file: &Path, root: &Node) -> Option<Diagnostic> {
    let total = root.size();
    if total <= MAX_WORKFLOW_VALUES {
        return None;
    }
    let biggest = match &root.kind {
        Kind::Map(entries) => entries.iter().max_by_key(|(_, v)| v.size()),
        _ => None,
    };
    let (pos, what) = match biggest {
        Some((k, v)) => {
            let name = match &k.kind {
                Kind::Scalar { text, .. } => text.clone(),
                _ => "this key".into(),
            };
            (k.pos, format!("`{name}` holds {} of them", v.size()))
        }
        None => (Pos::new(1, 1), "".into()),
    };
    Some(
        Diagnostic::new(
            file,
            pos,
            format!(
                "the workflow holds {total} YAML values once aliases are expanded; at most {MAX_WORKFLOW_VALUES} are accepted ({what})"
            ),
        )
        .with_suggestion(
            "split the workflow, or give the audience a tag (`tag: T`) instead of long lists of conditions".to_string(),
        ),
    )
}
