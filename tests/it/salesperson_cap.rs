//! `per_salesperson: N/PERIOD` on a send holds across daemons (issue 14,
//! item 7): two daemons on one store plan the due sends of the same step
//! for the same owners at the same time, each from the messages it read
//! when its pass began. The time of each capped send is decided again in
//! the transaction that queues it, under the lock every such transaction
//! takes, so no owner ever has more than N of the step's messages in any
//! PERIOD. On the store the suite runs on (SQLite: two daemons on one file,
//! serialised by its one writer; PostgreSQL: the advisory lock).

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::daemon::{Daemon, Project};

const CONTACTS: usize = 600;
const CAP: usize = 3;
const PER_MS: i64 = 3_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_never_exceed_a_send_cap_per_salesperson() {
    let p = Project::new(
        "timezone: Asia/Shanghai\npolicies:\n  blast_guard: off\n\
         channels:\n  sms: { kind: log, address: phone }\n\
         teams:\n  east:\n    - { id: s1, name: A }\n    - { id: s2, name: B }\n",
    );
    // The wait makes every enrollment due again a second after it entered:
    // both daemons claim those in batches, at the same time.
    p.write(
        "workflows/capped.yaml",
        &format!(
            "name: capped\ntrigger: {{ contact_created: {{}} }}\nsteps:\n  - wait: 1s\n  - id: hi\n    send: {{ channel: sms, template: hi, per_salesperson: {CAP}/h }}\n"
        ),
    )
    .write("templates/hi.hbs", "hi {{contact.name}}");
    let mut csv = String::from("id,name,phone,owner\n");
    for i in 0..CONTACTS {
        csv.push_str(&format!("k{i:04},N{i},+86130{i:08},s{}\n", 1 + i % 2));
    }
    p.write("contacts.csv", &csv);
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
    support::db::running_since_epoch(&p.db_url(), &["capped"]);

    let a = Daemon::start(&p, &[]);
    let b = Daemon::start(&p, &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = p
            .count("SELECT count(*) FROM outbox WHERE workflow = 'capped' AND step_id = 'hi'")
            .await;
        if n == CONTACTS as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of {CONTACTS} queued after 120 s; log:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(a);
    drop(b);

    let rows = p
        .rows(
            "SELECT c.owner, o.not_before FROM outbox o JOIN contacts c ON c.id = o.contact_id
              WHERE o.workflow = 'capped' AND o.step_id = 'hi' ORDER BY o.not_before",
        )
        .await;
    let mut by_owner: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in &rows {
        by_owner
            .entry(r["owner"].as_str().unwrap().to_string())
            .or_default()
            .push(r["not_before"].as_i64().unwrap());
    }
    assert_eq!(by_owner.len(), 2, "{by_owner:?}");
    for (owner, times) in &by_owner {
        assert_eq!(times.len(), CONTACTS / 2, "{owner}");
        // At most CAP in any hour: the message CAP places later is an hour
        // or more after each one.
        for (i, w) in times.windows(CAP + 1).enumerate() {
            assert!(
                w[CAP] - w[0] >= PER_MS,
                "{owner}: {} messages within {} ms, from #{i} (cap {CAP}/h); log:\n{}",
                CAP + 1,
                w[CAP] - w[0],
                p.log()
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                    .take(20)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}
