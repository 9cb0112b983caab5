//! A quick-start project (the repo's settings, workflows and templates, the
//! first contacts of the sample) run by a real daemon until messages went
//! out: what the console tests look at.

use std::time::{Duration, Instant};

use super::daemon::{Daemon, Project};

/// The read-only console token the quick-start project names.
pub const CONSOLE_TOKEN: &str = "console-read-only-e2e";

/// The quick start's workflows as loaded: the files, then the built-in
/// welcome of each contact-way code.
pub const WORKFLOWS: [&str; 12] = [
    "birthday",
    "cart-recovery",
    "douyin-followup",
    "monthly-newsletter",
    "purchase-followup",
    "reactivation-ab",
    "spring-festival",
    "trial-nurture",
    "vip-upgrade",
    "welcome-wecom",
    "winback-30d",
    "contact-way:douyin-0618",
];

fn repo(p: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The quick start in a temp folder, `rows` sample contacts and 周晓明
/// imported, its workflows running since the epoch; a daemon started on it
/// (with `console_token_env: NURTURE_CONSOLE_TOKEN`), returned once some
/// messages were sent.
pub async fn quick_start(rows: usize) -> (Project, Daemon) {
    let settings = std::fs::read_to_string(repo("nurture.yaml"))
        .unwrap()
        .replace(
            "api_token_env: NURTURE_API_TOKEN",
            "api_token_env: NURTURE_API_TOKEN\nconsole_token_env: NURTURE_CONSOLE_TOKEN",
        )
        // No quiet hours: the test's messages go out whatever the hour.
        .replace("quiet_hours: { start: \"21:00\", end: \"09:00\" }", "");
    let p = Project::new(&settings);
    for dir in ["workflows", "templates", "segments", "contact_ways"] {
        std::fs::create_dir_all(p.path(dir)).unwrap();
        for e in std::fs::read_dir(repo(dir)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(
                e.path(),
                p.path(&format!("{dir}/{}", e.file_name().to_string_lossy())),
            )
            .unwrap();
        }
    }
    let sample = std::fs::read_to_string(repo("contacts/sample.csv")).unwrap();
    let csv: String = sample
        .lines()
        .take(rows + 1)
        .map(|l| format!("{l}\n"))
        .collect();
    p.write("contacts.csv", &csv);
    p.ok(&["contacts", "import", "contacts.csv"]);
    p.ok(&[
        "contacts",
        "add",
        "c9000001",
        "--name",
        "周晓明",
        "--phone",
        "+8613800000001",
        "--wecom-id",
        "wm_zhou",
        "--attr",
        "city=Shanghai",
        "--tag",
        "trial",
    ]);
    super::db::running_since_epoch(&p.db_url(), &WORKFLOWS);
    // SAFETY: set before any thread of this test reads the environment
    // concurrently; the child daemon inherits it.
    unsafe { std::env::set_var("NURTURE_CONSOLE_TOKEN", CONSOLE_TOKEN) };
    let d = Daemon::start(&p, &["--backoff-ms", "50"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sent = p
            .count("SELECT count(*) FROM outbox WHERE status = 'sent'")
            .await;
        // 周晓明 is the last contact in the log: enrolled means all were planned.
        let zhou = p
            .count("SELECT count(*) FROM enrollments WHERE contact_id = 'c9000001'")
            .await;
        if sent >= 5 && zhou >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no messages sent within 60 s; log:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (p, d)
}
