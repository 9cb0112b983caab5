//! Issue 11, item 15: the README is short and the reference lives in docs/;
//! every relative link in them (and in BENCHMARKS.md) points at a file of
//! the repository.

use std::path::{Path, PathBuf};

fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md"), root.join("BENCHMARKS.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "md") {
            files.push(e.path());
        }
    }
    files
}

/// The targets of `[text](target)` outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_in_the_docs_points_at_a_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = Vec::new();
    for f in markdown_files(root) {
        let text = std::fs::read_to_string(&f).unwrap();
        for l in links(&text) {
            if l.starts_with("http") || l.starts_with('#') || l.starts_with("mailto:") {
                continue;
            }
            let target = f.parent().unwrap().join(l.split('#').next().unwrap());
            if !target.exists() {
                broken.push(format!("{}: {l}", f.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    // The README stays short: the reference is in docs/.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.lines().count() < 250, "README.md grew back");
    assert!(readme.contains("docs/README.md"));
}
