//! Reusable segments (issue 14, item 6): `segments/NAME.yaml` holds a named
//! condition; `segment: NAME` works anywhere a condition does, in the
//! dry-run and the daemon alike; `validate` checks names (did you mean) and
//! cycles; `nurture segments count` counts members, in SQL or, with an
//! event `where:`, in Rust. The real binary, the real store.

use crate::support;

use std::time::Duration;

use support::daemon::{Daemon, Project};
use support::receiver::{Receiver, Reply, script};

fn project(rx: &Receiver) -> Project {
    let p = Project::new(&format!(
        "timezone: Asia/Shanghai\nchannels:\n  hook: {{ kind: webhook, url: \"{}\", secret_env: HOOK_SECRET }}\nfields:\n  city: string\n",
        rx.url("/hook")
    ));
    std::fs::create_dir(p.path("segments")).unwrap();
    p.write(
        "segments/shanghai.yaml",
        "description: in Shanghai\ncondition: { field: city, equals: Shanghai }\n",
    )
    .write(
        "segments/sh-vip.yaml",
        "condition:\n  all:\n    - segment: shanghai\n    - tag: vip\n",
    )
    .write(
        "segments/big-buyers.yaml",
        "condition: { event: purchase, where: { field: amount, gte: 500 } }\n",
    )
    .write(
        "workflows/vip.yaml",
        r#"
name: vip
trigger: { event: { name: visit } }
audience: { segment: sh-vip }
steps:
  - id: hi
    if: { not: { segment: big-buyers } }
    then:
      - send: { channel: hook, template: hi }
"#,
    )
    .write("templates/hi.hbs", "hi {{contact.name}}")
    .write(
        "contacts.csv",
        "id,name,city,tags\nc1,Ada,Shanghai,vip\nc2,Bo,Shanghai,\nc3,Cy,Beijing,vip\nc4,Di,Shanghai,vip\n",
    );
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_is_a_condition_anywhere_and_is_counted() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = project(&rx);
    p.ok(&["validate"]);
    // c4 bought big (JSON numbers through the API would be numbers; the CLI
    // gives text, which compares as a number when it is one).
    p.ok(&[
        "contacts",
        "event",
        "c4",
        "purchase",
        "--prop",
        "amount=800",
    ]);
    p.ok(&["contacts", "event", "c1", "purchase", "--prop", "amount=20"]);
    let counts = p.ok(&["segments", "count"]);
    assert_eq!(
        counts, "big-buyers\t1\nsh-vip\t2\nshanghai\t3\n",
        "{counts}"
    );
    assert_eq!(p.ok(&["segments", "count", "sh-vip"]), "sh-vip\t2\n");
    let out = p
        .command()
        .args(["segments", "count", "sh-vp"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean \"sh-vip\"?"));

    for c in ["c1", "c2", "c3", "c4"] {
        p.ok(&["contacts", "event", c, "visit"]);
    }
    support::db::running_since_epoch(&p.db_url(), &["vip"]);
    let preview = p.ok(&["dry-run", "--format", "jsonl"]);
    let sends: Vec<&str> = preview.lines().filter(|l| l.contains("\"send\"")).collect();
    assert_eq!(sends.len(), 1, "{preview}");
    assert!(sends[0].contains("\"c1\""), "{preview}");
    let mut d = Daemon::start(&p, &["--until-idle"]);
    assert!(d.wait(Duration::from_secs(30)).success(), "{}", p.log());
    let got = rx.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["contact_id"], "c1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_checks_segment_names_and_cycles() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = project(&rx);
    p.write(
        "workflows/bad.yaml",
        "trigger: { contact_created: {} }\naudience: { segment: shanghia }\nsteps:\n  - wait: 1d\n",
    )
    .write("segments/loop-a.yaml", "condition: { segment: loop-b }\n")
    .write(
        "segments/loop-b.yaml",
        "condition: { any: [ { segment: loop-a } ] }\n",
    );
    let out = p.command().arg("validate").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("bad.yaml:2:22: no segment \"shanghia\""),
        "{err}"
    );
    assert!(err.contains("did you mean \"shanghai\"?"), "{err}");
    assert!(
        err.contains("loop-a.yaml:1:23: segment \"loop-b\" uses itself"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_segment_reloads_the_workflows_that_use_it() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = project(&rx);
    let d = Daemon::start(&p, &[]);
    // Beijing becomes part of "shanghai" (a bad name, a real edit).
    p.write(
        "segments/shanghai.yaml",
        "condition: { field: city, in: [Shanghai, Beijing] }\n",
    );
    // The reload (debounced) has taken it when the log says so.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !p.log().contains("reloaded workflows") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.post_ok(
        "/v1/events",
        serde_json::json!({ "contact_id": "c3", "name": "visit" }),
    )
    .await;
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].json()["contact_id"], "c3");
}

/// Without segments, list and count say so on stderr (they printed
/// nothing) and succeed; a count of a named segment is still an error.
#[test]
fn no_segments_is_said() {
    let p = Project::new("timezone: Asia/Shanghai\nchannels:\n  log: { kind: log }\n");
    for args in [&["segments", "list"][..], &["segments", "count"]] {
        let out = p.command().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no segments: a segment is a file"),
            "{args:?}: {out:?}"
        );
    }
    let out = p
        .command()
        .args(["segments", "count", "vip"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}
