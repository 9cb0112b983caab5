//! Preview fidelity (ARCHITECTURE "plan, then apply"; SPEC §3.2): on the same
//! store and clock, what the daemon sends is exactly what `dry-run --format
//! jsonl` said it would send, and nothing it said it would skip.
//!
//! The project has four workflows of different trigger kinds (contact
//! created with a round-robin assignment whose salesperson is named in the
//! message, tag added, an event, and `inactive` ticked every two seconds),
//! two webhook channels (`hook`, addressed by contact id, and `sms`, addressed
//! by phone), quiet hours and a frequency cap of two messages (an inactive VIP
//! gets welcome and VIP messages; its winback is capped, in both). The
//! contacts mix: no phone,
//! unsubscribed, opted out of `sms` only, no `city` (a strict-template skip),
//! inactive for 100 days or active yesterday, and time zones in which it is
//! now mid-afternoon (sends go now) or the middle of the night (sends wait
//! for 09:00 local).
//!
//! The dry-run runs first, at "now" (no `--at`); then the daemon runs on the
//! same store until the work is done. Compared:
//! - sends the dry-run dates now ↔ requests the receiver got, as sets of
//!   (workflow, contact, step, channel, body);
//! - sends the dry-run defers for quiet hours ↔ outbox rows still queued, with
//!   the same (workflow, contact, step, channel, body) and `not_before` equal
//!   to the dry-run's `at`;
//! - skips ↔ nothing received and nothing queued for that step.
//!
//! Differences that cannot be avoided, and how the test handles them:
//! - The `at` of a send due now is the dry-run's clock, a few seconds before
//!   the daemon's; it is not compared (deferred sends' `at` is, exactly).
//! - The daemon does not run an `inactive` workflow's tick on first sight (it
//!   records it and runs the next one), while the dry-run evaluates it as if a
//!   tick fell now. With a two-second cron and contacts inactive for 100 days
//!   or active yesterday (30-day threshold), the next tick sees the same
//!   contacts; the test waits for that tick.

use crate::support;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use serde_json::Value;
use support::receiver::{Receiver, Reply, script};

/// (workflow, contact, step, channel, body)
type Key = (String, String, String, String, String);

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(settings: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("workflows")).unwrap();
        fs::create_dir(dir.path().join("templates")).unwrap();
        fs::write(dir.path().join("nurture.yaml"), settings).unwrap();
        Project { dir }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn write(&self, p: &str, text: &str) -> &Self {
        fs::write(self.path(p), text).unwrap();
        self
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_nurture"));
        c.current_dir(self.dir.path());
        support::db::point_at(&mut c, self.dir.path());
        c.env("NURTURE_API_TOKEN", "fidelity-token")
            .arg("--config")
            .arg(self.path("nurture.yaml"));
        c
    }
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "nurture {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
    fn db_url(&self) -> String {
        support::db::url_for(self.dir.path())
    }
    fn log(&self) -> String {
        fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }
}

/// An `Etc/GMT±N` zone in which the local hour is now about `hour`.
fn zone_where_it_is(hour: i64, now: DateTime<Utc>) -> String {
    let mut offset = hour - i64::from(now.hour());
    if offset > 14 {
        offset -= 24;
    }
    if offset < -12 {
        offset += 24;
    }
    // POSIX sign: Etc/GMT-8 is UTC+8.
    match offset {
        0 => "Etc/GMT".to_string(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

const WELCOME: &str = r#"
trigger: { contact_created: {} }
steps:
  - assign: { team: east, strategy: round_robin }
  - send: { channel: hook, template: welcome }
"#;

const VIP: &str = r#"
trigger: { tag_added: { tag: vip } }
steps:
  - send: { channel: sms, template: vip }
"#;

const PURCHASE: &str = r#"
trigger: { event: { name: purchase } }
steps:
  - send: { channel: hook, template: thanks }
  - wait: 2d
  - send: { channel: sms, template: thanks }
"#;

const WINBACK: &str = r#"
trigger:
  inactive: { for: 30d, check: "*/2 * * * * *" }
steps:
  - send: { channel: sms, template: winback }
"#;

fn rows_of(jsonl: &str) -> Vec<Value> {
    jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

fn start_daemon(p: &Project) -> Child {
    let log = fs::File::create(p.path("daemon.log")).unwrap();
    let mut child = p
        .cmd()
        .args(["run", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("listening on "),
        "the daemon did not start: {line:?}; log:\n{}",
        p.log()
    );
    child
}

#[test]
fn the_daemon_sends_exactly_what_the_dry_run_showed() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rx = rt.block_on(Receiver::start(script::always(Reply::ok())));
    let p = Project::new(&format!(
        r#"
timezone: Asia/Shanghai
fields: {{ city: string }}
policies:
  quiet_hours: {{ start: "21:00", end: "09:00" }}
  frequency_cap: {{ max: 2, per: 7d }}
channels:
  hook: {{ kind: webhook, url: "{}" }}
  sms: {{ kind: webhook, url: "{}", address: phone }}
teams:
  east:
    - {{ id: s1, name: Wang Fang }}
    - {{ id: s2, name: Li Lei }}
    - {{ id: s3, name: Chen Jie }}
"#,
        rx.url("/hook"),
        rx.url("/sms")
    ));
    p.write("workflows/welcome.yaml", WELCOME)
        .write("workflows/vip.yaml", VIP)
        .write("workflows/purchase.yaml", PURCHASE)
        .write("workflows/winback.yaml", WINBACK)
        .write(
            "templates/welcome.hbs",
            "Hi {{contact.name}}, I am {{owner.name}}, your advisor.",
        )
        .write(
            "templates/vip.hbs",
            "{{contact.name}}, welcome to the VIP club of {{contact.city}}.",
        )
        .write(
            "templates/thanks.hbs",
            "Thanks for your order, {{contact.name}}.",
        )
        .write(
            "templates/winback.hbs",
            "We miss you, {{contact.name}} ({{default contact.city \"friend\"}}).",
        );

    let now = Utc::now();
    let awake = zone_where_it_is(15, now);
    let asleep = zone_where_it_is(3, now);
    let n = 72;
    let mut csv =
        String::from("id,name,phone,timezone,created_at,last_active_at,unsubscribed,tags,city\n");
    for i in 0..n {
        let phone = if i % 5 == 0 {
            String::new()
        } else {
            format!("+8613800{i:06}")
        };
        let tz = if i % 4 == 0 { &asleep } else { &awake };
        let created = (now - chrono::Duration::days(200)).to_rfc3339();
        let last = if i % 2 == 0 {
            (now - chrono::Duration::days(100)).to_rfc3339()
        } else {
            (now - chrono::Duration::days(1)).to_rfc3339()
        };
        let unsub = if i % 7 == 0 { "true" } else { "false" };
        let tags = if i % 3 == 0 { "vip" } else { "" };
        let city = if i % 8 == 3 { "" } else { "Hangzhou" };
        csv.push_str(&format!(
            "f{i:03},Name {i},{phone},{tz},{created},{last},{unsub},{tags},{city}\n"
        ));
    }
    p.write("contacts.csv", &csv);
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
    // The workflows have run since before these contacts existed.
    support::db::running_since_epoch(&p.db_url(), &["welcome", "vip", "purchase", "winback"]);
    for i in (0..n).filter(|i| i % 11 == 0) {
        p.ok(&[
            "contacts",
            "unsubscribe",
            &format!("f{i:03}"),
            "--channel",
            "sms",
        ]);
    }
    for i in (0..n).filter(|i| i % 6 == 1) {
        p.ok(&["contacts", "event", &format!("f{i:03}"), "purchase"]);
    }
    p.ok(&["validate"]);

    // The preview, at now.
    let preview_at = Utc::now();
    let rows = rows_of(&p.ok(&["dry-run", "--format", "jsonl"]));
    let key_of = |r: &Value| -> Key {
        (
            s(&r["workflow"]),
            s(&r["contact_id"]),
            s(&r["step"]),
            s(&r["channel"]),
            s(&r["body"]),
        )
    };
    let mut now_sends: BTreeSet<Key> = BTreeSet::new();
    // (key, at in ms)
    let mut deferred: BTreeSet<(Key, i64)> = BTreeSet::new();
    let mut skips: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut reasons: BTreeSet<String> = BTreeSet::new();
    for r in &rows {
        match r["action"].as_str().unwrap() {
            "send" => {
                let at = DateTime::parse_from_rfc3339(&s(&r["at"]))
                    .unwrap()
                    .with_timezone(&Utc);
                if at > preview_at + chrono::Duration::seconds(60) {
                    deferred.insert((key_of(r), at.timestamp_millis()));
                } else {
                    now_sends.insert(key_of(r));
                }
            }
            "skip" => {
                let reason = s(&r["reason"]);
                reasons.insert(reason.split(':').next().unwrap().to_string());
                skips.insert((s(&r["workflow"]), s(&r["contact_id"]), s(&r["step"])));
            }
            _ => {}
        }
    }
    // The fixture exercises what it means to.
    let workflows: BTreeSet<&str> = now_sends.iter().map(|k| k.0.as_str()).collect();
    assert_eq!(
        workflows,
        BTreeSet::from(["purchase", "vip", "welcome", "winback"]),
        "every workflow sends something now"
    );
    assert!(
        !deferred.is_empty(),
        "some sends wait for quiet hours to end"
    );
    for want in [
        "unsubscribed",
        "no_address",
        "frequency_cap",
        "template_error",
    ] {
        assert!(reasons.contains(want), "no skip for {want}: {reasons:?}");
    }
    for owner in ["Wang Fang", "Li Lei", "Chen Jie"] {
        assert!(
            now_sends
                .iter()
                .chain(deferred.iter().map(|(k, _)| k))
                .any(|k| k.0 == "welcome" && k.4.contains(owner)),
            "{owner} is named in some welcome message"
        );
    }

    // The daemon on the same store: run until the event log is consumed, the
    // winback tick after the first-seen one ran, and nothing due is left.
    let mut child = start_daemon(&p);
    let pool = rt.block_on(support::db::any_pool(&p.db_url()));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the daemon exited early ({status}); log:\n{}", p.log());
        }
        let (ticks, log_left, due): (i64, i64, i64) = rt.block_on(async {
            sqlx::query_as(
                "SELECT (SELECT count(*) FROM cron_ticks WHERE workflow = 'winback'),
                        (SELECT count(*) FROM event_log WHERE seq > coalesce((SELECT max(position) FROM cursors), 0)),
                        (SELECT count(*) FROM outbox WHERE status = 'sending'
                            OR (status = 'queued' AND next_attempt_at <= $1))",
            )
            .bind(Utc::now().timestamp_millis())
            .fetch_one(&pool)
            .await
            .unwrap()
        });
        if ticks >= 2 && log_left == 0 && due == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not finish within 60 s (ticks {ticks}, log left {log_left}, due {due}); log:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SIGTERM: a graceful stop.
    assert!(
        Command::new("kill")
            .arg(child.id().to_string())
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "daemon: {status}; log:\n{}", p.log());

    // What the receiver got.
    let mut sent: BTreeSet<Key> = BTreeSet::new();
    for r in rx.requests() {
        let b = r.json();
        let id = s(&b["message_id"]);
        let step = id.rsplit(':').next().unwrap().to_string();
        let channel = r.path.trim_start_matches('/').to_string();
        let key = (
            s(&b["workflow"]),
            s(&b["contact_id"]),
            step,
            channel,
            s(&b["body"]),
        );
        assert!(sent.insert(key.clone()), "sent twice: {key:?}");
    }
    // What waits in the outbox.
    let queued: BTreeSet<(Key, i64)> = rt.block_on(async {
        let rows: Vec<(String, String, String, String, String, i64)> = sqlx::query_as(
            "SELECT workflow, contact_id, step_id, channel, body, not_before
               FROM outbox WHERE status = 'queued'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        rows.into_iter()
            .map(|(w, c, st, ch, b, nb)| ((w, c, st, ch, b), nb))
            .collect()
    });
    let others: i64 = rt.block_on(async {
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE status NOT IN ('queued', 'sent')")
            .fetch_one(&pool)
            .await
            .unwrap()
    });
    rt.block_on(pool.close());

    let missing: Vec<_> = now_sends.difference(&sent).collect();
    let extra: Vec<_> = sent.difference(&now_sends).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "previewed but not sent: {missing:#?}\nsent but not previewed: {extra:#?}"
    );
    let missing: Vec<_> = deferred.difference(&queued).collect();
    let extra: Vec<_> = queued.difference(&deferred).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "deferred in the preview but not queued so: {missing:#?}\nqueued but not previewed so: {extra:#?}"
    );
    assert_eq!(others, 0, "no message failed, died or was cancelled");
    for (w, c, st) in &skips {
        assert!(
            !sent
                .iter()
                .chain(queued.iter().map(|(k, _)| k))
                .any(|k| (&k.0, &k.1, &k.2) == (w, c, st)),
            "the preview skipped {w}/{c}/{st}, but the daemon sent or queued it"
        );
    }
    eprintln!(
        "fidelity: {} sends now, {} deferred, {} skips ({reasons:?}) agree",
        now_sends.len(),
        deferred.len(),
        skips.len()
    );
}
