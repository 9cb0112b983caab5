//! Issue 11, item 13: `nurture init [DIR]` scaffolds a project that
//! validates and runs; a command in a folder with no nurture.yaml and no
//! store refuses to create one by accident.

use std::path::Path;
use std::process::Command;

fn nurture(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(assert_cmd::cargo::cargo_bin("nurture"))
        .current_dir(dir)
        .env_remove("NURTURE_DATABASE")
        .env_remove("COLUMNS")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn init_scaffolds_a_project_that_validates_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out, err) = nurture(tmp.path(), &["init", "shop"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("init_says", out);
    let dir = tmp.path().join("shop");
    let mut files: Vec<String> = walk(&dir);
    files.sort();
    insta::assert_snapshot!("init_files", files.join("\n"));
    let (code, out, err) = nurture(&dir, &["validate"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.is_empty(), "no warning expected:\n{err}");
    // Its workflow tests pass out of the box (`nurture test` found no tests
    // folder in a new project and failed).
    let (code, out, err) = nurture(&dir, &["test"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 cases: 2 passed, 0 failed"), "{out}");
    let (code, _, err) = nurture(&dir, &["contacts", "import", "contacts/sample.csv"]);
    assert_eq!(code, 0, "{err}");
    // The store is ignored by git, as .gitignore says.
    assert!(dir.join("nurture.db").exists());
    assert!(
        std::fs::read_to_string(dir.join(".gitignore"))
            .unwrap()
            .contains("nurture.db\n")
    );
    let (code, out, err) = nurture(
        &dir,
        &[
            "dry-run",
            "--all-contacts",
            "--at",
            "2026-11-01T10:00:00+08:00",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Dry run"), "{out}");
    // The preview closes the store: no `nurture.db-wal` or `-shm` is left
    // in the project (one run in five left them before it did).
    for _ in 0..5 {
        let (code, _, err) = nurture(&dir, &["dry-run", "--at", "2026-11-01T10:00:00+08:00"]);
        assert_eq!(code, 0, "{err}");
        let mut left = walk(&dir);
        left.retain(|f| f.starts_with("nurture.db-"));
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    // Again: nothing is overwritten.
    let (code, _, err) = nurture(tmp.path(), &["init", "shop"]);
    assert_eq!(code, 1);
    assert!(err.contains("nothing was written"), "{err}");
    assert!(err.contains("init never overwrites a file"), "{err}");

    // A folder with other files in it is fine: init adds its own.
    let other = tmp.path().join("notes");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("plan.txt"), "ideas\n").unwrap();
    let (code, _, err) = nurture(tmp.path(), &["init", "notes"]);
    assert_eq!(code, 0, "{err}");
    assert!(other.join("nurture.yaml").exists());
    assert_eq!(
        std::fs::read_to_string(other.join("plan.txt")).unwrap(),
        "ideas\n"
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(
                walk(&p)
                    .into_iter()
                    .map(|f| format!("{}/{f}", p.file_name().unwrap().to_string_lossy())),
            );
        } else {
            out.push(p.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn no_store_is_created_by_accident_in_a_folder_that_is_not_a_project() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, err) = nurture(tmp.path(), &["contacts", "add", "c1", "--name", "周晓明"]);
    assert_eq!(code, 1, "{err}");
    insta::assert_snapshot!(err);
    assert!(!tmp.path().join("nurture.db").exists());
    for args in [&["run", "--until-idle"][..], &["enroll", "x", "--existing"]] {
        let (code, _, err) = nurture(tmp.path(), args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("nurture init"), "{err}");
    }
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    // Read-only commands say there is nothing yet, and create nothing.
    let (code, out, _) = nurture(tmp.path(), &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("no customer store"), "{out}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// The quick start's `wecom` channel is a `log` stand-in: the `wecom`
/// commands say so and what to change, instead of "no wecom channel" next to
/// a channel called wecom.
#[test]
fn wecom_commands_on_the_stand_in_channel_say_what_to_change() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(root.join("nurture.yaml"), tmp.path().join("nurture.yaml")).unwrap();
    for dir in ["workflows", "templates", "contact_ways", "segments"] {
        let from = root.join(dir);
        if !from.exists() {
            continue;
        }
        std::fs::create_dir(tmp.path().join(dir)).unwrap();
        for f in std::fs::read_dir(&from).unwrap() {
            let f = f.unwrap().path();
            if f.is_file() {
                std::fs::copy(&f, tmp.path().join(dir).join(f.file_name().unwrap())).unwrap();
            }
        }
    }
    for args in [
        &["wecom", "sync"][..],
        &["wecom", "sync-relationships"][..],
        &["wecom", "resigned"][..],
    ] {
        let (code, _, err) = nurture(tmp.path(), args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains("no channel of kind: wecom (\"wecom\" is kind: log"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("help: this command calls WeCom's API"),
            "{err}"
        );
    }
    // Nothing was created by the refusal.
    assert!(!tmp.path().join("nurture.db").exists());
}

/// A mistyped command line is wrong input: exit 1 with clap's message (the
/// docs' "1 your input is wrong"); help and version succeed.
#[test]
fn a_mistyped_command_line_exits_1_and_help_exits_0() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["dry-run", "--format", "xml"][..],
        &["prune", "--dry-run"],
        &["history"],
        &["no-such-command"],
        &[],
    ] {
        let (code, out, err) = nurture(tmp.path(), args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(
            err.contains("--help") || err.contains("Usage:"),
            "{args:?}: {err}"
        );
    }
    for args in [&["--help"][..], &["--version"], &["dry-run", "--help"]] {
        let (code, out, err) = nurture(tmp.path(), args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(!out.is_empty(), "{args:?}");
    }
}
