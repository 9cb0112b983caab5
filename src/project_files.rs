//! The project's files on disk, as every loader sees them: which YAML files
//! a folder holds, and how a file's version is named. A leaf, so the
//! project, its hot reload, segments and contact ways share it without
//! reaching up to each other.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::diagnostics::Diagnostic;

/// The first 12 hex digits of the SHA-256 of a file's bytes: how `status`
/// names a version.
pub fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    hex::encode(&digest[..6])
}

/// `*.yaml` and `*.yml` files directly in `dir`, sorted. A missing folder has none.
pub fn workflow_files(dir: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Diagnostic::new(
                dir,
                Default::default(),
                format!("cannot read the workflows folder: {e}"),
            ));
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}
