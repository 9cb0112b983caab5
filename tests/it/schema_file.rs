//! The schema that the example workflows point editors at
//! (`# yaml-language-server: $schema=../schema/workflow.schema.json`) is the
//! committed output of `nurture schema`; this keeps the two from drifting.

use assert_cmd::Command;

#[test]
fn the_committed_schema_is_what_nurture_schema_prints() {
    let out = Command::cargo_bin("nurture")
        .unwrap()
        .arg("schema")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/workflow.schema.json"
    ))
    .unwrap();
    assert_eq!(
        committed.trim_end(),
        printed.trim_end(),
        "schema/workflow.schema.json is stale: run `nurture schema > schema/workflow.schema.json`"
    );
    // Every example workflow points at it.
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/workflows")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schema/workflow.schema.json"),
            "{} lacks the schema comment",
            path.display()
        );
    }
}
