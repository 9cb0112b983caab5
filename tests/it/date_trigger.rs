//! Date triggers (issue 14, item 2): `date: { field, offset, at, every }`
//! fires for each contact on its date at `at` in the contact's time zone,
//! once per occurrence; `dry-run --until` shows when; the daemon does it.
//! The real binary, the real store.

use crate::support;

use std::time::Duration;

use chrono::{Timelike, Utc};
use serde_json::Value;

use support::daemon::{Daemon, Project};
use support::receiver::{Receiver, Reply, script};

fn project(rx: &Receiver, at: &str) -> Project {
    let p = Project::new(&format!(
        "timezone: Asia/Shanghai\nchannels:\n  hook: {{ kind: webhook, url: \"{}\", secret_env: HOOK_SECRET }}\nfields:\n  birthday: date\n",
        rx.url("/hook")
    ));
    p.write(
        "workflows/birthday.yaml",
        &format!(
            "name: birthday\ntrigger: {{ date: {{ field: birthday, offset: -1d, at: \"{at}\" }} }}\nsteps:\n  - id: wish\n    send: {{ channel: hook, template: wish }}\n"
        ),
    )
    .write("templates/wish.hbs", "happy birthday tomorrow {{contact.name}}");
    p
}

/// Writes `csv` as the project's contacts file and imports it.
fn import(p: &Project, csv: &str) {
    p.write("contacts.csv", csv);
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
}

/// The sends of a `dry-run --format jsonl`: (contact, time), in its order.
fn sends(jsonl: &str) -> Vec<(String, String)> {
    jsonl
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["action"] == "send")
        .map(|r| {
            (
                r["contact_id"].as_str().unwrap().to_string(),
                r["at"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_shows_each_birthday_at_the_contacts_local_time() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = project(&rx, "10:00");
    import(
        &p,
        "id,name,birthday,timezone\nsh,Ada,1990-06-15,\nny,Bo,1985-06-15,America/New_York\nleap,Cy,2000-02-29,\nnone,Di,,\n",
    );
    let out = p.ok(&[
        "dry-run",
        "--at",
        "2030-06-13T00:00:00+08:00",
        "--until",
        "3d",
        "--format",
        "jsonl",
    ]);
    let sends = sends(&out);
    // 10:00 on the 14th where each contact lives (the first 15-minute check
    // at or after it), once.
    assert_eq!(
        sends,
        vec![
            ("sh".to_string(), "2030-06-14T10:00:00+08:00".to_string()),
            ("ny".to_string(), "2030-06-14T10:00:00-04:00".to_string()),
        ],
        "{out}"
    );
    // 29 February: the 27th in a common year (the 28th, minus a day).
    let out = p.ok(&[
        "dry-run",
        "--at",
        "2031-02-26T00:00:00+08:00",
        "--until",
        "3d",
        "--format",
        "jsonl",
    ]);
    assert!(
        out.contains("\"contact_id\":\"leap\"") && out.contains("2031-02-27T10:00:00+08:00"),
        "{out}"
    );
}

/// A timestamp attribute counts on its date where the contact lives, which
/// can be a day or two from the date it is written with: the scan's SQL,
/// which reads only the contacts whose date is near the check's, lets it
/// through, and leaves out a date a week away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_counts_on_its_date_where_the_contact_lives() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&format!(
        "timezone: Asia/Shanghai\nchannels:\n  hook: {{ kind: webhook, url: \"{}\" }}\nfields:\n  signed_up: timestamp\n",
        rx.url("/hook")
    ));
    p.write(
        "workflows/anniversary.yaml",
        "name: anniversary\ntrigger: { date: { field: signed_up, at: \"10:00\" } }\nsteps:\n  - id: thanks\n    send: { channel: hook, template: thanks }\n",
    )
    .write("templates/thanks.hbs", "a year with us, {{contact.name}}");
    import(
        &p,
        "id,name,signed_up,timezone\nwest,Ada,2029-06-14T20:00:00-08:00,\nkiri,Bo,2029-06-14T23:30:00Z,Pacific/Kiritimati\nweek,Cy,2029-06-22T10:00:00+08:00,\n",
    );
    let out = p.ok(&[
        "dry-run",
        "--at",
        "2030-06-14T00:00:00+08:00",
        "--until",
        "3d",
        "--format",
        "jsonl",
    ]);
    let mut sends = sends(&out);
    sends.sort();
    // West: 04:00 on the 15th in Shanghai. Kiritimati (UTC+14): 13:30 on
    // the 15th there.
    assert_eq!(
        sends,
        vec![
            ("kiri".to_string(), "2030-06-15T10:00:00+14:00".to_string()),
            ("west".to_string(), "2030-06-15T10:00:00+08:00".to_string()),
        ],
        "{out}"
    );
}

/// A preview of weeks finds each birthday on its day: the dry-run reads the
/// contacts whose date is near once a day, and again when the day moves on
/// (a list kept from the first day would miss the later birthdays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_of_weeks_finds_each_birthday_on_its_day() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = project(&rx, "10:00");
    import(
        &p,
        "id,name,birthday
d1,A,1990-06-15
d9,B,1991-06-23
d20,C,1992-07-04
d40,D,1993-07-24
far,E,1994-12-25
",
    );
    let out = p.ok(&[
        "dry-run",
        "--at",
        "2030-06-13T00:00:00+08:00",
        "--until",
        "45d",
        "--format",
        "jsonl",
    ]);
    assert_eq!(
        sends(&out),
        [
            ("d1", "2030-06-14"),
            ("d9", "2030-06-22"),
            ("d20", "2030-07-03"),
            ("d40", "2030-07-23"),
        ]
        .map(|(c, d)| (c.to_string(), format!("{d}T10:00:00+08:00")))
        .to_vec(),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_wishes_once_when_the_day_comes() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    // A birthday tomorrow, "at" a minute ago in Shanghai: due now.
    let sh = Utc::now().with_timezone(&chrono_tz::Asia::Shanghai) - chrono::TimeDelta::minutes(1);
    let at = format!("{:02}:{:02}", sh.hour(), sh.minute());
    let birthday = (sh.date_naive() + chrono::TimeDelta::days(1))
        .format("1995-%m-%d")
        .to_string();
    let p = project(&rx, &at);
    import(
        &p,
        &format!("id,name,birthday\nc1,Ada,{birthday}\nc2,Bo,1995-01-01\n"),
    );
    support::db::running_since_epoch(&p.db_url(), &["birthday"]);
    // (running_since_epoch records a check taken long ago: the current
    // one runs, it is not the first sight.)
    let mut d = Daemon::start(&p, &["--until-idle"]);
    assert!(d.wait(Duration::from_secs(30)).success(), "{}", p.log());
    let got = rx.requests();
    assert_eq!(got.len(), 1, "{}", p.log());
    assert_eq!(got[0].json()["body"], "happy birthday tomorrow Ada");
    let key = p.rows("SELECT entry_key FROM enrollments").await;
    assert!(
        key[0]["entry_key"].as_str().unwrap().starts_with("date:"),
        "{key:?}"
    );
    // The check runs again (as the next one would): the occurrence is taken.
    p.exec("DELETE FROM cron_ticks WHERE tick_at > 0").await;
    let mut d = Daemon::start(&p, &["--until-idle"]);
    assert!(d.wait(Duration::from_secs(30)).success());
    assert_eq!(p.log().matches("cron tick").count(), 2, "{}", p.log());
    assert_eq!(rx.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_on_a_calendar_day() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = project(&rx, "10:00");
    p.write(
        "workflows/cny.yaml",
        "name: cny\ntrigger: { schedule: { on: 春节, offset: -7d, at: \"10:00\" } }\nsteps:\n  - id: greet\n    send: { channel: hook, template: wish }\n",
    );
    import(&p, "id,name\nc1,Ada\n");
    // 春节 2031 is 23 January: a week before, the 16th, at 10:00 Shanghai.
    let out = p.ok(&[
        "dry-run",
        "--workflow",
        "cny",
        "--at",
        "2031-01-15T00:00:00+08:00",
        "--until",
        "3d",
        "--format",
        "jsonl",
    ]);
    let sends: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["action"] == "send")
        .collect();
    assert_eq!(sends.len(), 1, "{out}");
    assert_eq!(sends[0]["at"], "2031-01-16T10:00:00+08:00");
    // A misspelt day.
    p.write(
        "workflows/bad.yaml",
        "trigger: { schedule: { on: 双十一 } }\nsteps:\n  - wait: 1d\n",
    );
    let o = p.command().arg("validate").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.yaml:1:28: no calendar day \"双十一\""),
        "{err}"
    );
}

/// A birthday among many is not a blast. A date check's scan finds every
/// contact with the attribute and decides the date in Rust; the blast guard
/// (on by default: 500 new enrollments an hour) must count only the
/// contacts whose date is due. It counted them all, so with a thousand birthdays
/// spread over the year the one due today was held and the workflow paused,
/// in the dry-run and in the daemon alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_birthday_among_many_is_not_a_blast() {
    use chrono::Datelike;
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let sh = Utc::now().with_timezone(&chrono_tz::Asia::Shanghai) - chrono::TimeDelta::minutes(1);
    let at = format!("{:02}:{:02}", sh.hour(), sh.minute());
    let tomorrow = sh.date_naive() + chrono::TimeDelta::days(1);
    let p = project(&rx, &at);
    // The two due first: the scan's first batch holds them and the
    // thousand others are still to come.
    let due = tomorrow.format("1990-%m-%d");
    let mut csv = format!("id,name,birthday\nd1,Ada,{due}\nd2,Bo,{due}\n");
    let mut others = 0;
    let mut day = chrono::NaiveDate::from_ymd_opt(1995, 1, 1).unwrap();
    while others < 1000 {
        if (day.month(), day.day()) != (tomorrow.month(), tomorrow.day()) {
            csv.push_str(&format!("o{others:03},Other,{day}\n"));
            others += 1;
        }
        day = day.succ_opt().unwrap();
        if day.year() > 1995 {
            day = chrono::NaiveDate::from_ymd_opt(1995, 1, 1).unwrap();
        }
    }
    import(&p, &csv);
    support::db::running_since_epoch(&p.db_url(), &["birthday"]);

    let out = p.ok(&["dry-run", "--workflow", "birthday", "--format", "jsonl"]);
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut sent: Vec<&str> = rows
        .iter()
        .filter(|r| r["action"] == "send")
        .map(|r| r["contact_id"].as_str().unwrap())
        .collect();
    sent.sort();
    assert_eq!(sent, ["d1", "d2"], "{out}");
    assert!(!out.contains("blast_guard"), "{out}");

    let mut d = Daemon::start(&p, &["--until-idle"]);
    assert!(d.wait(Duration::from_secs(60)).success(), "{}", p.log());
    assert_eq!(rx.count(), 2, "{}", p.log());
    let paused = p
        .rows("SELECT paused_at FROM workflow_states WHERE workflow = 'birthday'")
        .await;
    assert_eq!(paused[0]["paused_at"], Value::Null, "{paused:?}");
}

/// The preview plans a date check's contacts in the daemon's order, where
/// the order decides something (a throttle's send times, a round robin):
/// the dry-run reads the day's near contacts, the daemon scans the
/// audience, and an audience on owners can be read through the owner index
/// (SQLite's OR by union), in another order unless the scan fixes it: the
/// order contacts were added on SQLite, their id on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_checks_contacts_come_in_the_daemons_order() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let sh = Utc::now().with_timezone(&chrono_tz::Asia::Shanghai) - chrono::TimeDelta::minutes(1);
    let at = format!("{:02}:{:02}", sh.hour(), sh.minute());
    let due = (sh.date_naive() + chrono::TimeDelta::days(1)).format("1990-%m-%d");
    let p = project(&rx, &at);
    p.write(
        "workflows/birthday.yaml",
        &format!(
            "name: birthday\ntrigger: {{ date: {{ field: birthday, offset: -1d, at: \"{at}\" }} }}\nthrottle: 60/h\naudience:\n  any:\n    - owner: s2\n    - owner: s1\nsteps:\n  - id: wish\n    send: {{ channel: hook, template: wish }}\n"
        ),
    );
    // Added in neither id nor owner order: c39, c00, c38, c01, …
    let added: Vec<String> = (0..20)
        .flat_map(|i| [format!("c{:02}", 39 - i), format!("c{i:02}")])
        .collect();
    let mut csv = String::from("id,name,birthday,owner\n");
    for (n, id) in added.iter().enumerate() {
        csv.push_str(&format!("{id},N{n},{due},s{}\n", 1 + n % 2));
    }
    import(&p, &csv);
    support::db::running_since_epoch(&p.db_url(), &["birthday"]);

    let out = p.ok(&["dry-run", "--workflow", "birthday", "--format", "jsonl"]);
    let preview: Vec<String> = sends(&out).into_iter().map(|(c, _)| c).collect();
    assert_eq!(preview.len(), 40, "{out}");

    let mut d = Daemon::start(&p, &["--until-idle=now"]);
    assert!(d.wait(Duration::from_secs(60)).success(), "{}", p.log());
    let rows = p
        .rows("SELECT contact_id FROM enrollments WHERE workflow = 'birthday' ORDER BY id")
        .await;
    let daemon: Vec<&str> = rows
        .iter()
        .map(|r| r["contact_id"].as_str().unwrap())
        .collect();
    assert_eq!(daemon, preview, "{out}");
    // Without the fixed order SQLite read the owner index here (the s2
    // contacts first, then the s1 ones) in both.
    let mut want = added.clone();
    if support::db::on_postgres() {
        want.sort();
    }
    assert_eq!(preview, want, "{out}");
}
