//! Several daemons on one PostgreSQL store (issue 5): three `nurture run`
//! processes share the work of 20,000 contacts entering a workflow that
//! assigns a salesperson (round robin), sends, waits 2 s and sends again,
//! while a schedule workflow ticks every minute. One daemon is `kill -9`ed
//! mid-run and not restarted. Then:
//!
//! - every expected idempotency key reached the loopback receiver, and the
//!   only keys received twice are messages the killed daemon held leased
//!   (in flight) when it died;
//! - no contact was enrolled twice;
//! - each cron tick ran once across the three daemons (a tick the killed
//!   daemon was running may be run again by another, as after a crash);
//! - round-robin assignment stayed balanced across the daemons: the
//!   salespeople's counts differ by at most one.
//!
//! Runs only when the suite runs on PostgreSQL (`NURTURE_TEST_POSTGRES`,
//! see `.ci/with-postgres.sh`): several daemons on one SQLite file is not
//! a supported deployment. `NURTURE_MULTI_CONTACTS` scales the contact
//! count down for a quick local run.

use crate::support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::daemon::Project;
use support::receiver::{Receiver, Reply};

const LEASE_MS: u64 = 2_000;
const SALESPEOPLE: usize = 4;

fn contacts() -> usize {
    std::env::var("NURTURE_MULTI_CONTACTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000)
}

fn start(p: &Project, n: usize) -> Child {
    let log = fs::File::create(p.path(&format!("daemon-{n}.log"))).unwrap();
    let mut child = p
        .command()
        .args(["run", "--listen", "127.0.0.1:0", "--lease-ms"])
        .arg(LEASE_MS.to_string())
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
        "daemon {n} did not start: {line:?}; log:\n{}",
        log_of(p, n)
    );
    child
}

fn log_of(p: &Project, n: usize) -> String {
    fs::read_to_string(p.path(&format!("daemon-{n}.log"))).unwrap_or_default()
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {} failed", child.id());
}

/// The `tick=...` of every "cron tick" line of workflow `tick` in a log.
fn ticks_in(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("cron tick") && l.contains("workflow=tick"))
        .filter_map(|l| l.split("tick=").nth(1))
        .map(|t| t.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn three_daemons_share_the_work_and_survive_a_kill() {
    if !support::db::on_postgres() {
        eprintln!("multi_daemon: skipped (set NURTURE_TEST_POSTGRES; ./test.sh does)");
        return;
    }
    let n = contacts();
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rx = rt.block_on(Receiver::start(std::sync::Arc::new(|r| {
        // 0–3 ms: several requests are in flight at any moment.
        Reply::ok().delay(Duration::from_millis((r.index as u64 * 7919) % 4))
    })));
    let mut team = String::new();
    for i in 1..=SALESPEOPLE {
        team.push_str(&format!("    - {{ id: s{i}, name: Seller {i} }}\n"));
    }
    let p = Project::new(&format!(
        "timezone: Asia/Shanghai\n\
         policies:\n  blast_guard: off\n\
         channels:\n  hook: {{ kind: webhook, url: \"{}\", concurrency: 16 }}\n\
         teams:\n  sales:\n{team}",
        rx.url("/hook")
    ));
    p.write(
        "workflows/welcome.yaml",
        "trigger: { contact_created: {} }\n\
         steps:\n\
         \x20 - id: assign\n\
         \x20   assign: { team: sales, strategy: round_robin }\n\
         \x20 - id: hello\n\
         \x20   send: { channel: hook, template: hello }\n\
         \x20 - wait: 2s\n\
         \x20 - id: again\n\
         \x20   send: { channel: hook, template: again }\n",
    );
    p.write(
        "workflows/tick.yaml",
        "trigger: { schedule: { cron: \"* * * * *\" } }\n\
         audience: { tag: vip }\n\
         entry: every_time\n\
         steps:\n\
         \x20 - tag: { add: [ticked] }\n",
    );
    p.write("templates/hello.hbs", "Hello, {{contact.name}}!");
    p.write("templates/again.hbs", "Still there, {{contact.name}}?");
    let vip_every = 200;
    let mut csv = String::from("id,name,email,tags\n");
    for i in 0..n {
        let tags = if i % vip_every == 0 { "vip" } else { "" };
        csv.push_str(&format!("c{i:05},Name {i},c{i:05}@example.com,{tags}\n"));
    }
    p.write("contacts.csv", &csv);
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
    let vips = n.div_ceil(vip_every);
    // The workflows have run since before these contacts existed.
    support::db::running_since_epoch(&p.db_url(), &["welcome", "tick"]);

    let mut daemons: Vec<Child> = (0..3).map(|i| start(&p, i)).collect();

    // Kill daemon 0 somewhere in the first half of the sends.
    let seed = chrono::Utc::now().timestamp_subsec_nanos() as usize;
    let kill_at = n / 2 + seed % (n / 2).max(1);
    eprintln!("multi_daemon: {n} contacts, killing daemon 0 at {kill_at} receipts (seed {seed})");
    let deadline = Instant::now() + Duration::from_secs(300);
    // Once past `kill_at`, wait for a moment when daemon 0 holds messages
    // in flight (deliveries come in bursts), freeze it, read what it holds
    // leased (it can change nothing while stopped), then kill it.
    let pid = daemons[0].id();
    let held_sql =
        format!("SELECT id FROM outbox WHERE status = 'sending' AND lease_owner LIKE '%-{pid}-%'");
    let leased: BTreeSet<String> = loop {
        assert!(
            Instant::now() < deadline,
            "only {} receipts after 300 s; log 0:\n{}",
            rx.count(),
            log_of(&p, 0)
        );
        for (i, d) in daemons.iter_mut().enumerate() {
            if let Some(s) = d.try_wait().unwrap() {
                panic!("daemon {i} exited ({s}); log:\n{}", log_of(&p, i));
            }
        }
        if rx.count() < kill_at {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        signal(&daemons[0], "STOP");
        let held: BTreeSet<String> = rt
            .block_on(p.rows(&held_sql))
            .into_iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        if !held.is_empty() || rx.count() >= 2 * n - 100 {
            break held;
        }
        signal(&daemons[0], "CONT");
        std::thread::sleep(Duration::from_millis(1));
    };
    let victim = daemons.remove(0);
    let mut victim = victim;
    victim.kill().unwrap();
    victim.wait().unwrap();
    eprintln!(
        "multi_daemon: killed daemon 0 at {} receipts holding {} messages",
        rx.count(),
        leased.len()
    );

    // The two others finish everything, and run at least one tick after
    // the first (a first sight of a schedule only records its tick).
    let want_sent = 2 * n as i64;
    loop {
        let (sent, ticks) = rt.block_on(async {
            (
                p.count(
                    "SELECT count(*) FROM outbox WHERE workflow = 'welcome' AND status = 'sent'",
                )
                .await,
                p.count("SELECT count(*) FROM cron_ticks WHERE workflow = 'tick'")
                    .await,
            )
        });
        if sent == want_sent && ticks >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 300 s: {sent} of {want_sent} sent, {ticks} ticks taken; log 1:\n{}",
            log_of(&p, 1)
        );
        for (i, d) in daemons.iter_mut().enumerate() {
            if let Some(s) = d.try_wait().unwrap() {
                panic!("daemon {} exited ({s}); log:\n{}", i + 1, log_of(&p, i + 1));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for d in &daemons {
        signal(d, "TERM");
    }
    for (i, d) in daemons.iter_mut().enumerate() {
        let s = d.wait().unwrap();
        assert!(s.success(), "daemon {} stopped with {s}", i + 1);
    }

    // Enrollments: one per contact in welcome, each vip once per tick run.
    let rows = rt.block_on(p.rows("SELECT id, workflow, contact_id, entry_key FROM enrollments"));
    let mut welcome: HashMap<String, i64> = HashMap::new();
    let mut tick_entries: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &rows {
        let c = r["contact_id"].as_str().unwrap().to_string();
        match r["workflow"].as_str().unwrap() {
            "welcome" => {
                let prev = welcome.insert(c.clone(), r["id"].as_i64().unwrap());
                assert!(prev.is_none(), "contact {c} enrolled twice in welcome");
            }
            "tick" => {
                let fresh = tick_entries
                    .entry(r["entry_key"].as_str().unwrap().to_string())
                    .or_default()
                    .insert(c.clone());
                assert!(fresh, "contact {c} enrolled twice for one tick");
            }
            other => panic!("unexpected workflow {other}"),
        }
    }
    assert_eq!(welcome.len(), n, "every contact entered welcome once");
    for (tick, who) in &tick_entries {
        assert_eq!(who.len(), vips, "tick {tick} enrolled every vip once");
    }

    // Each tick ran once across the daemons.
    let killed_ticks: BTreeSet<String> = ticks_in(&log_of(&p, 0)).into_iter().collect();
    let mut runs: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..3 {
        for t in ticks_in(&log_of(&p, i)) {
            *runs.entry(t).or_default() += 1;
        }
    }
    assert!(!runs.is_empty(), "no cron tick ran");
    for (t, k) in &runs {
        let allowed = if killed_ticks.contains(t) { 2 } else { 1 };
        assert!(*k <= allowed, "tick {t} ran {k} times");
    }
    assert_eq!(
        runs.len(),
        tick_entries.len(),
        "one set of tick enrollments per tick run: {runs:?}"
    );

    // Assignment stayed balanced.
    let owners = rt.block_on(p.rows("SELECT owner, count(*) AS n FROM contacts GROUP BY owner"));
    let counts: Vec<i64> = owners
        .iter()
        .map(|r| {
            assert!(!r["owner"].is_null(), "a contact was left unassigned");
            r["n"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(counts.len(), SALESPEOPLE, "owners: {owners:?}");
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(max - min <= 1, "round robin unbalanced: {owners:?}");

    // What the receiver got, against the keys the store implies.
    let expected: BTreeSet<String> = welcome
        .iter()
        .flat_map(|(c, id)| ["hello", "again"].map(|step| format!("welcome:{c}:{id}:{step}")))
        .collect();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in rx.requests() {
        let key = r
            .header("idempotency-key")
            .expect("every request carries Idempotency-Key")
            .to_string();
        *seen.entry(key).or_default() += 1;
    }
    let received: BTreeSet<String> = seen.keys().cloned().collect();
    let missing: Vec<_> = expected.difference(&received).take(10).collect();
    assert!(
        missing.is_empty(),
        "{} keys never reached the receiver, e.g. {missing:?}",
        expected.difference(&received).count()
    );
    let unknown: Vec<_> = received.difference(&expected).take(10).collect();
    assert!(unknown.is_empty(), "unknown keys received: {unknown:?}");
    let duplicates: Vec<(&String, &usize)> = seen.iter().filter(|(_, k)| **k > 1).collect();
    for (key, times) in &duplicates {
        assert!(
            leased.contains(*key) && **times == 2,
            "{key} was received {times} times but was not in flight at the kill"
        );
    }
    eprintln!(
        "multi_daemon: {} requests for {} messages, {} sent twice (of {} in flight at the kill), \
         {} tick runs, owners {counts:?}, {:.1} s",
        rx.count(),
        expected.len(),
        duplicates.len(),
        leased.len(),
        runs.len(),
        started.elapsed().as_secs_f64()
    );
}
