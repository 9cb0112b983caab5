//! A big cron scan does not hold the rest up: new contacts are enrolled
//! while a broadcast to 20,000 contacts is being planned, and SIGTERM stops
//! the scan between batches (the tick is not recorded, so the next start
//! finishes it, without planning anyone twice).

use std::time::Duration;

use serde_json::json;

use crate::support;
use support::daemon::{Daemon, Project};

const N: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_scan_lets_new_contacts_in_and_stops_for_sigterm() {
    let p = Project::new(
        "timezone: Asia/Shanghai\npolicies:\n  blast_guard: off\nchannels:\n  log: { kind: log }\n",
    );
    p.write(
        "workflows/broadcast.yaml",
        "trigger: { schedule: { cron: \"* * * * *\" } }\naudience: { tag: news }\nentry: every_time\nsteps:\n  - send: { channel: log, template: news }\n",
    )
    .write(
        "workflows/welcome.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: log, template: hi }\n",
    )
    .write("templates/news.hbs", "news for {{contact.id}}")
    .write("templates/hi.hbs", "hi {{contact.id}}");
    let mut csv = String::from("id,name,created_at,tags\n");
    for i in 0..N {
        csv.push_str(&format!("c{i:05},N,2025-01-01T00:00:00+08:00,news\n"));
    }
    p.write("c.csv", &csv);
    p.ok(&["contacts", "import", p.path("c.csv").to_str().unwrap()]);
    // The broadcast has ticked before: its current minute's tick runs now;
    // a daemon has consumed the event log of the import already.
    support::db::running_since_epoch(&p.db_url(), &["broadcast"]);
    p.exec(
        "INSERT INTO cursors (name, position) SELECT 'daemon', max(seq) FROM event_log WHERE true
         ON CONFLICT (name) DO UPDATE SET position = excluded.position",
    )
    .await;

    let d = Daemon::start(&p, &[]);
    p.wait_count(
        "SELECT CASE WHEN count(*) > 0 THEN 1 ELSE 0 END FROM enrollments WHERE workflow = 'broadcast'",
        1,
        Duration::from_secs(60),
    )
    .await;
    d.post_ok("/v1/contacts", json!({"id": "newcomer"})).await;
    p.wait_count(
        "SELECT count(*) FROM enrollments WHERE workflow = 'welcome' AND contact_id = 'newcomer'",
        1,
        Duration::from_secs(60),
    )
    .await;
    let planned = p
        .count("SELECT count(*) FROM enrollments WHERE workflow = 'broadcast'")
        .await;
    assert!(
        planned < N as i64,
        "the newcomer waited for the whole broadcast ({planned} planned first)"
    );

    // SIGTERM mid-scan: a prompt, clean stop; the tick stays unrecorded.
    let (status, took) = d.terminate(Duration::from_secs(30));
    assert!(status.success(), "exit {status}; log:\n{}", p.log());
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");
    let stopped_at = p
        .count("SELECT count(*) FROM enrollments WHERE workflow = 'broadcast'")
        .await;
    if stopped_at < N as i64 {
        assert_eq!(
            p.count("SELECT count(*) FROM cron_ticks WHERE workflow = 'broadcast' AND tick_at > 0")
                .await,
            0,
            "an unfinished tick is not recorded"
        );
    }
}
