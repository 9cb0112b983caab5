//! `nurture init [DIR]`: a new project that validates — settings with log
//! channels (nothing leaves the machine), one workflow, its templates, its
//! workflow tests, a few sample contacts and a `.gitignore` for the store. Existing files are
//! never overwritten: if any is there, nothing is written.
//!
//! Exit codes: 0 written; 1 a file is already there; 2 a file cannot be written.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::{CliResult, Failure};

#[derive(Args, Debug)]
pub struct InitArgs {
    /// The folder (created when missing). Default: the current folder.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

const SETTINGS: &str = r#"# nurture settings. Every channel is `kind: log`: messages are written to the
# log and the store, nothing leaves this machine. Swap in a real provider
# (sms: aliyun_sms or twilio, email: smtp, wecom: wecom) when you go live;
# secrets never appear here: a key ending in `_env` names an environment variable.

database: sqlite://nurture.db     # NURTURE_DATABASE overrides it; or postgres://user:pass@host/db
timezone: Asia/Shanghai           # contacts without their own timezone use this
api_token_env: NURTURE_API_TOKEN

policies:
  quiet_hours: { start: "21:00", end: "09:00" }   # contact-local; sends wait for the window
  frequency_cap: { max: 3, per: 7d }               # messages per contact, all workflows together

channels:
  sms:
    kind: log
    address: phone
  email:
    kind: log
    address: email

# Custom contact attributes (CSV columns) and their types: validate checks
# workflows and templates against them, import checks the cells.
fields:
  city: string
"#;

const WORKFLOW: &str = r#"# A new contact gets a welcome message, and a reminder three days later
# unless they bought something meanwhile.
trigger: { contact_created: {} }
entry: once
steps:
  - send: { channel: sms, template: welcome }
  - wait: 3d
  - send: { channel: sms, template: welcome-reminder }
exit_when: { event: purchase }   # a contact who buys leaves: no reminder
"#;

// `default`: a contact added without a name still gets the message (a
// variable that is missing otherwise skips the send, by design).
const TEMPLATE: &str = "{{default contact.name \"亲\"}}您好，欢迎加入！{{#if contact.city}}{{contact.city}}门店期待您的光临。{{/if}}回复TD退订\n";

const REMINDER: &str = "{{default contact.name \"亲\"}}，新人礼还在等您，{{date (add now \"7d\") \"M月D日\"}}前有效。回复TD退订\n";

const CONTACTS: &str = "id,name,phone,email,city,tags
c0000001,周晓明,+8613800000001,xiaoming@example.com,上海,trial
c0000002,王芳,+8613800000002,,北京,
c0000003,Ann Lee,+8613800000003,ann@example.com,,vip
";

const TESTS: &str = r#"# Workflow tests: `nurture test` runs each case through the daemon's own
# engine on a throwaway store (your store is never opened, nothing is sent)
# and says which expectation no longer holds. Put it in CI beside
# `nurture validate`; `nurture test --update` writes what was seen.
cases:
  - name: a new contact is welcomed at once and reminded three days later
    start: 2026-11-02T10:00          # the settings' time zone
    contacts:
      - { id: t1, name: 周晓明, phone: "+8613800000001", city: 上海 }
    expect:
      - send: { workflow: welcome, contact: t1, channel: sms, at: "2026-11-02T10:00", body_contains: 上海门店 }
      - send: { workflow: welcome, contact: t1, channel: sms, at: "2026-11-05T10:00", body_contains: 新人礼 }
  - name: a purchase before the reminder means no reminder
    start: 2026-11-02T10:00
    contacts:
      - { id: t2, name: 王芳, phone: "+8613800000002" }
    events:
      - { at: 1d, contact: t2, event: purchase }
    expect:
      - send: { workflow: welcome, contact: t2, channel: sms, at: "2026-11-02T10:00", body_contains: 欢迎加入 }
"#;

const GITIGNORE: &str = "# the customer store (SQLite) and its journal files\nnurture.db\nnurture.db-shm\nnurture.db-wal\n";

/// What `init` writes, relative to the folder.
pub const FILES: [(&str, &str); 7] = [
    ("nurture.yaml", SETTINGS),
    ("workflows/welcome.yaml", WORKFLOW),
    ("templates/welcome.hbs", TEMPLATE),
    ("templates/welcome-reminder.hbs", REMINDER),
    ("tests/welcome.yaml", TESTS),
    ("contacts/sample.csv", CONTACTS),
    (".gitignore", GITIGNORE),
];

pub fn run(args: InitArgs) -> CliResult {
    let dir = &args.dir;
    let there: Vec<String> = FILES
        .iter()
        .filter(|(p, _)| dir.join(p).exists())
        .map(|(p, _)| dir.join(p).display().to_string())
        .collect();
    if !there.is_empty() {
        return Err(Failure::Input(format!(
            "nothing was written: {} already there ({}); init never overwrites a file: move them away, or init another folder",
            if there.len() == 1 {
                "a file is"
            } else {
                "files are"
            },
            there.join(", ")
        )));
    }
    for (p, text) in FILES {
        let path = dir.join(p);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let cd = if dir == Path::new(".") {
        String::new()
    } else {
        format!("  cd {}\n", dir.display())
    };
    println!(
        "a new nurture project in {}: nurture.yaml, workflows/welcome.yaml, templates/welcome.hbs and welcome-reminder.hbs, tests/welcome.yaml, contacts/sample.csv, .gitignore\n\nnext:\n{cd}  nurture validate\n  nurture test                                  # the workflow's tests: what it sends, to whom, when\n  nurture run                                   # the daemon (messages go to its log); then, in another terminal:\n  nurture contacts import contacts/sample.csv   # each new contact enters the welcome workflow\n  nurture history --contact c0000001",
        dir.display()
    );
    Ok(())
}
