//! Tests of the PostgreSQL import writer's pure parts.

use super::*;

#[test]
fn copy_text_escapes_what_copy_reads_specially() {
    let r = Row {
        id: "a\\b".into(),
        name: Some("tab\there\nline\rcr".into()),
        created_at: Some(5),
        tags: vec!["x".into()],
        attrs: "{\"k\":\"v\"}".into(),
        ..Row::default()
    };
    let text = String::from_utf8(copy_text(&[r])).unwrap();
    assert_eq!(
        text,
        "0\ta\\\\b\ttab\\there\\nline\\rcr\t\\N\t\\N\t\\N\t\\N\t\\N\t5\t\\N\t\\N\t{\"k\":\"v\"}\t\\N\tt\t[\"x\"]\n"
    );
}

#[test]
fn only_scalar_patches_are_flat() {
    assert!(flat("{\"a\":\"x\",\"b\":1,\"c\":true}"));
    assert!(!flat("{\"a\":null}"));
    assert!(!flat("{\"a\":[1]}"));
    assert!(!flat("{\"a\":{\"b\":1}}"));
}

#[test]
fn the_fast_path_takes_every_row() {
    for sql in [LOG_CREATED, INSERT_NEW_TAGS, LOG_NEW_TAGS] {
        let fast = every_row(sql);
        assert!(fast.contains("WHERE TRUE "), "{fast}");
        assert!(
            !fast.contains("s.created ")
                && fast.contains("s.created_at") == sql.contains("s.created_at")
        );
    }
}

#[test]
fn the_update_keeps_write_rows_test_with_the_shortcut() {
    let sql = update_existing();
    assert!(sql.contains("v.flat AND"));
    assert!(sql.contains("RETURNING contacts.id"));
}
