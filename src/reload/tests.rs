use super::*;

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("workflows")).unwrap();
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    std::fs::write(
        dir.path().join("nurture.yaml"),
        "channels:\n  sms: { kind: log }\n  mail: { kind: log }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("workflows/w.yaml"),
        "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: sms, template: hi }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("templates/hi.hbs"), "Hi {{contact.id}}").unwrap();
    dir
}

fn load(dir: &Path, prev: Option<&Running>) -> Reload {
    reload(&dir.join("nurture.yaml"), prev, Utc::now(), &mut |_| {
        Vec::new()
    })
    .unwrap()
}

fn report<'a>(r: &'a Reload, suffix: &str) -> &'a FileReport {
    r.files
        .iter()
        .find(|f| f.file.ends_with(suffix))
        .unwrap_or_else(|| panic!("no {suffix}: {:?}", r.files))
}

#[test]
fn settings_that_would_break_a_running_workflow_are_rejected() {
    let dir = project();
    let first = load(dir.path(), None);
    assert_eq!(first.project.workflows.len(), 1);
    // `sms` removed: w keeps running, so the settings edit is rejected.
    std::fs::write(
        dir.path().join("nurture.yaml"),
        "channels:\n  mail: { kind: log }\n",
    )
    .unwrap();
    let r = load(dir.path(), Some(&first.running));
    assert!(!r.settings_changed);
    assert!(r.project.settings.channels.contains_key("sms"));
    let s = report(&r, "nurture.yaml");
    let why = &s.rejected.as_ref().unwrap().diagnostics[0];
    assert!(why.message.contains("w.yaml"), "{why}");
    // A broken settings file keeps the last valid settings too.
    std::fs::write(dir.path().join("nurture.yaml"), "channels: [").unwrap();
    let r = load(dir.path(), Some(&first.running));
    assert!(r.project.settings.channels.contains_key("sms"));
    assert!(report(&r, "nurture.yaml").rejected.is_some());
    assert_eq!(r.project.workflows.len(), 1);
}

#[test]
fn a_deleted_template_still_sent_keeps_running() {
    let dir = project();
    let first = load(dir.path(), None);
    std::fs::remove_file(dir.path().join("templates/hi.hbs")).unwrap();
    let r = load(dir.path(), Some(&first.running));
    assert!(r.project.templates.contains("hi"));
    let t = report(&r, "templates/hi.hbs");
    assert_eq!(t.rejected.as_ref().unwrap().hash, "deleted");
    assert!(t.running.is_some());
    // Once no workflow sends it, it goes.
    std::fs::remove_file(dir.path().join("workflows/w.yaml")).unwrap();
    let r = load(dir.path(), Some(&r.running));
    assert!(!r.project.templates.contains("hi"));
    assert!(r.project.workflows.is_empty());
    assert!(r.changed);
}
