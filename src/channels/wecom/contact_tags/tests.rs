use super::reader::{errcode_of, read_json};
use super::*;
use reqwest::StatusCode;
use serde_json::json;

#[test]
fn maps_corp_and_rule_tags_of_the_editor_and_sees_every_relationship() {
    let page = json!({
        "errcode": 0,
        "follow_user": [
            {"userid": "zhangsan", "remark": "r", "tags": [
                {"group_name": "Level", "tag_name": "vip", "tag_id": "et1", "type": 1},
                {"group_name": "", "tag_name": "my note", "type": 2},
                {"group_name": "Rules", "tag_name": " big-spender ", "tag_id": "et2", "type": 3},
                {"group_name": "Bad", "tag_name": "a\u{1}b", "tag_id": "et3", "type": 1},
                {"group_name": "Bad", "tag_name": "", "tag_id": "et4", "type": 1}
            ]},
            {"userid": "lisi", "tags": [{"tag_name": "lead", "tag_id": "et5", "type": 1}]},
            {"userid": "wangwu"}
        ]
    });
    let mut p = PageTags::default();
    p.add_page(&page, "zhangsan");
    let w = p.finish(true);
    assert_eq!(
        w.editor.iter().collect::<Vec<_>>(),
        ["big-spender", "vip"],
        "personal and invalid names are skipped"
    );
    assert_eq!(
        w.all.unwrap().iter().collect::<Vec<_>>(),
        ["big-spender", "lead", "vip"]
    );
    // Not every page read: no removal basis.
    let mut p = PageTags::default();
    p.add_page(&page, "nobody");
    let w = p.finish(false);
    assert!(w.editor.is_empty() && w.all.is_none());
}

#[test]
fn answers_and_backoff() {
    assert_eq!(errcode_of(&json!({"errcode": "84061"})), Some(84061));
    assert_eq!(errcode_of(&json!({"follow_user": []})), Some(0));
    assert_eq!(errcode_of(&json!([1])), None);
    assert!(matches!(
        read_json(StatusCode::BAD_GATEWAY, b"x"),
        Err(Delivery::Retry { .. })
    ));
    assert!(matches!(
        read_json(StatusCode::OK, b"<html>"),
        Err(Delivery::Retry { .. })
    ));
    assert_eq!(retry_delay(0), Duration::from_secs(5));
    assert_eq!(retry_delay(3), Duration::from_secs(40));
    assert_eq!(retry_delay(40), RETRY_MAX);
    assert_eq!(retry_delay(-1), Duration::from_secs(5));
}
