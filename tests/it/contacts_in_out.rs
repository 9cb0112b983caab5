//! Issue 11, item 11: read a contact back (`contacts show`, `GET
//! /v1/contacts/{id}`) and write contacts out in the import format
//! (`contacts export [--audience-of WORKFLOW]`).

use crate::support;

use std::time::Duration;

use support::daemon::{Daemon, Project, TOKEN};

const SETTINGS: &str = "timezone: Asia/Shanghai
channels:
  sms: { kind: log }
  wecom: { kind: log }
teams:
  east:
    - { id: s01, name: 王芳 }
";

const CSV: &str = "id,name,phone,owner,created_at,last_active_at,unsubscribed,tags,city,level
c1,周晓明,+8613800000001,s01,2026-10-01T09:00:00+08:00,2026-10-20T18:30:00+08:00,false,vip;trial,上海,gold
c2,\"Lee, Ann\",,,2026-10-02T09:00:00+08:00,,true,,北京,
c3,欧阳娜娜,+8613800000003,,2026-10-03T09:00:00+08:00,,,,上海,silver
";

fn project() -> Project {
    let p = Project::new(SETTINGS);
    p.write("c.csv", CSV);
    p.ok(&["contacts", "import", p.path("c.csv").to_str().unwrap()]);
    p.ok(&["contacts", "unsubscribe", "c3", "--channel", "wecom"]);
    p
}

#[test]
fn contacts_show_gives_fields_attributes_tags_owner_and_consent() {
    let p = project();
    let mut both = String::new();
    for id in ["c1", "c2", "c3"] {
        both.push_str(&p.ok(&["contacts", "show", id]));
        both.push('\n');
    }
    insta::assert_snapshot!(both);
    let json: serde_json::Value =
        serde_json::from_str(&p.ok(&["contacts", "show", "c1", "--format", "json"])).unwrap();
    insta::assert_snapshot!("show_json", serde_json::to_string_pretty(&json).unwrap());
    let out = p
        .command()
        .args(["contacts", "show", "nobody"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no contact with id \"nobody\""));
}

#[tokio::test]
async fn the_api_gives_what_contacts_show_gives() {
    let p = project();
    let cli: serde_json::Value =
        serde_json::from_str(&p.ok(&["contacts", "show", "c3", "--format", "json"])).unwrap();
    let d = Daemon::start(&p, &[]);
    let api: serde_json::Value = reqwest::Client::new()
        .get(d.url("/v1/contacts/c3"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api, cli);
    let status = reqwest::Client::new()
        .get(d.url("/v1/contacts/nobody"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 404);
    assert!(d.terminate(Duration::from_secs(10)).0.success());
}

#[test]
fn export_writes_the_import_format_and_round_trips() {
    let p = project();
    p.write(
        "workflows/shanghai.yaml",
        "trigger: { contact_created: {} }\naudience: { field: city, equals: 上海 }\nsteps:\n  - send: { channel: sms, template: hi }\n",
    )
    .write("templates/hi.hbs", "您好");
    let all = p.ok(&["contacts", "export"]);
    insta::assert_snapshot!(all);
    let shanghai = p.ok(&["contacts", "export", "--audience-of", "shanghai"]);
    let ids: Vec<&str> = shanghai
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(ids, ["c1", "c3"]);
    let out = p
        .command()
        .args(["contacts", "export", "--audience-of", "shanghia"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean \"shanghai\""));

    // Imported into another store, the export is the same file again.
    let q = Project::new(SETTINGS);
    q.write("all.csv", &all);
    q.ok(&["contacts", "import", q.path("all.csv").to_str().unwrap()]);
    assert_eq!(q.ok(&["contacts", "export"]), all);
}
