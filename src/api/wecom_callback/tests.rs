use super::*;
use crate::settings::Salesperson;
use std::path::PathBuf;

#[test]
fn parses_and_maps_events() {
    let xml = "<xml><ToUserName><![CDATA[corp]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
            <CreateTime>1403610513</CreateTime><MsgType><![CDATA[event]]></MsgType>\
            <Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType>\
            <UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[woAJ2G]]></ExternalUserID>\
            <State><![CDATA[qr]]></State><WelcomeCode><![CDATA[WC]]></WelcomeCode></xml>";
    let ev = InnerEvent::parse(xml);
    assert_eq!(ev.create_time, "1403610513");
    assert_eq!(ev.at(Utc::now()).timestamp(), 1403610513);
    let mut s = Settings::defaults(PathBuf::from("."));
    s.teams.insert(
        "sales".into(),
        vec![Salesperson {
            id: "sp-zhang".into(),
            name: None,
            wecom_userid: Some("zhangsan".into()),
            email: None,
            region: None,
            capacity: None,
        }],
    );
    assert_eq!(
        ev.change(&s, &[], "wecom"),
        ContactChange::Added {
            external_userid: "woAJ2G".into(),
            staff_userid: "zhangsan".into(),
            owner: Some("sp-zhang".into()),
            state: Some("qr".into()),
            welcome_code: Some("WC".into()),
            via: None,
        }
    );
    assert_eq!(
        ev.detail(),
        serde_json::json!({"state": "qr", "welcome_code": true})
    );
    // An add without an ExternalUserID is only recorded.
    let ev =
        InnerEvent::parse(&xml.replace("<ExternalUserID><![CDATA[woAJ2G]]></ExternalUserID>", ""));
    assert_eq!(ev.change(&s, &[], "wecom"), ContactChange::Record);
    let tag = InnerEvent::parse(
        "<xml><Event>change_external_tag</Event><Id>etXX</Id><TagType>tag</TagType><ChangeType>delete</ChangeType><CreateTime>5</CreateTime></xml>",
    );
    assert_eq!(tag.tag_id, "etXX");
    assert_eq!(tag.change(&s, &[], "wecom"), ContactChange::Record);
    // An edit names the staff member and the channel for the tag sync.
    let edit = InnerEvent::parse(
        "<xml><Event>change_external_contact</Event><ChangeType>edit_external_contact</ChangeType>\
             <UserID>zhangsan</UserID><ExternalUserID>wmE</ExternalUserID><CreateTime>7</CreateTime></xml>",
    );
    assert_eq!(
        edit.change(&s, &[], "corp-a"),
        ContactChange::Edited {
            external_userid: "wmE".into(),
            staff_userid: "zhangsan".into(),
            channel: "corp-a".into(),
        }
    );
    assert_eq!(InnerEvent::parse("garbage"), InnerEvent::default());
}
