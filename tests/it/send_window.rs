//! Send at a local time and windows on steps (issue 14, item 3): `send: {
//! at }` queues the message for the next such local time; `window:` on any
//! step makes the enrollment wait for the next opening in the contact's
//! time zone. The real binary, the real store.

use crate::support;

use serde_json::Value;

use support::daemon::Project;

#[test]
fn windows_and_send_times_in_the_dry_run() {
    let p =
        Project::new("timezone: Asia/Shanghai\nchannels:\n  sms: { kind: log, address: phone }\n");
    p.write(
        "workflows/w.yaml",
        r#"
name: w
trigger: { contact_created: {} }
steps:
  - id: call
    window: { from: "10:00", to: "12:00", days: [mon, tue, wed, thu, fri] }
    send: { channel: sms, template: hi }
  - id: evening
    send: { channel: sms, template: hi, at: "20:00" }
"#,
    )
    .write("templates/hi.hbs", "hi {{contact.name}}")
    .write(
        "contacts.csv",
        "id,name,phone,timezone,created_at\nsh,Ada,+8613000000001,,2030-06-15T09:00:00+08:00\nny,Bo,+12125550101,America/New_York,2030-06-15T09:00:00+08:00\n",
    );
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
    support::db::running_since_epoch(&p.db_url(), &["w"]);
    // Saturday 09:00 in Shanghai (Friday 21:00 in New York).
    let out = p.ok(&[
        "dry-run",
        "--at",
        "2030-06-15T09:00:00+08:00",
        "--until",
        "4d",
        "--format",
        "jsonl",
    ]);
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |c: &str| -> Vec<(String, String, String)> {
        rows.iter()
            .filter(|r| r["contact_id"] == c)
            .map(|r| {
                (
                    r["step"].as_str().unwrap().to_string(),
                    r["action"].as_str().unwrap().to_string(),
                    r["until"]
                        .as_str()
                        .or(r["at"].as_str())
                        .unwrap()
                        .to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        of("sh"),
        vec![
            (
                "call@window".into(),
                "wait".into(),
                "2030-06-17T10:00:00+08:00".into()
            ),
            (
                "call".into(),
                "send".into(),
                "2030-06-17T10:00:00+08:00".into()
            ),
            (
                "evening".into(),
                "send".into(),
                "2030-06-17T20:00:00+08:00".into()
            ),
        ],
        "{out}"
    );
    // New York: Monday 10:00 EDT is 22:00 in Shanghai (the wait's until is
    // shown in the settings' zone, the send in the contact's).
    assert_eq!(
        of("ny"),
        vec![
            (
                "call@window".into(),
                "wait".into(),
                "2030-06-17T22:00:00+08:00".into()
            ),
            (
                "call".into(),
                "send".into(),
                "2030-06-17T10:00:00-04:00".into()
            ),
            (
                "evening".into(),
                "send".into(),
                "2030-06-17T20:00:00-04:00".into()
            ),
        ],
        "{out}"
    );
}

#[test]
fn validate_reports_window_mistakes() {
    let p = Project::new("timezone: Asia/Shanghai\nchannels:\n  sms: { kind: log }\n");
    p.write(
        "workflows/w.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - window: { from: \"12:00\", to: \"10:00\" }\n    send: { channel: sms, template: hi, at: \"8pm\" }\n  - window: { from: \"10:00\", to: \"12:00\", days: [mon, tues] }\n    tag: { add: [x] }\n",
    )
    .write("templates/hi.hbs", "hi");
    let out = p.command().arg("validate").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("w.yaml:3:34: to: must be later than from:"),
        "{err}"
    );
    assert!(
        err.contains("w.yaml:4:45: at \"8pm\" must be a time HH:MM"),
        "{err}"
    );
    assert!(err.contains("w.yaml:5:55: unknown day \"tues\""), "{err}");
    assert!(err.contains("did you mean \"tue\"?"), "{err}");
}
