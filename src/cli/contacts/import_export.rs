//! `contacts import` and `contacts export`: the CSV format, read and written.

use super::*;

pub(super) async fn import(
    store: &Store,
    settings: &Settings,
    file: &Path,
    now: DateTime<Utc>,
    opts: &ImportOptions,
) -> CliResult {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
            )
            .expect("a valid template"),
        );
        bar
    });
    let report = store
        .import_csv_with(file, now, opts, |p| {
            if let Some(bar) = &bar {
                bar.set_length(p.total_bytes);
                bar.set_position(p.bytes_read);
                bar.set_message(format!("{} rows", thousands(p.rows)));
            }
        })
        .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = report.map_err(store_failure)?;
    let shown = file.display();
    for b in &report.bad {
        eprintln!("{shown}:{}: {}", b.line, b.reason);
    }
    let secs = report.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        (report.rows as f64 / secs) as u64
    } else {
        0
    };
    println!(
        "{} {} rows from {shown}: {} new, {} updated, {} unchanged, {} bad ({:.1} s, {} rows/s){}",
        if opts.dry_run {
            "would import"
        } else {
            "imported"
        },
        thousands(report.rows),
        thousands(report.inserted),
        thousands(report.updated),
        thousands(report.unchanged),
        thousands(report.bad.len() as u64),
        secs,
        thousands(rate),
        if opts.dry_run {
            " — dry run: nothing was written"
        } else {
            ""
        },
    );
    if let Some(w) = super::owners::warning_for_import(
        settings,
        report.owners.iter().map(|(o, n)| (o.as_str(), *n)),
    ) {
        eprintln!("{w}");
    }
    for w in super::addresses::warnings_for_import(&report.flagged) {
        eprintln!("{w}");
    }
    if report.bad.is_empty() {
        Ok(())
    } else {
        let n = report.bad.len();
        eprintln!(
            "error: {} bad row{} {} skipped (listed above); every other row {}",
            thousands(n as u64),
            if n == 1 { "" } else { "s" },
            if n == 1 { "was" } else { "were" },
            if opts.dry_run {
                "would be imported"
            } else {
                "was imported"
            },
        );
        Err(Failure::Reported)
    }
}

/// The built-in columns of the import format, in order.
const EXPORT_COLUMNS: [&str; 11] = [
    "id",
    "name",
    "email",
    "phone",
    "wecom_external_userid",
    "owner",
    "timezone",
    "created_at",
    "last_active_at",
    "unsubscribed",
    "tags",
];

pub(super) async fn export(
    store: &Store,
    config: &Path,
    settings: &Settings,
    audience_of: Option<&str>,
    now: DateTime<Utc>,
) -> CliResult {
    use futures::TryStreamExt;
    let audience = match audience_of {
        None => None,
        Some(name) => {
            let project = crate::cli::load_project(config)?;
            let Some(wf) = project.workflows.iter().find(|w| w.name == name) else {
                let names: Vec<&str> = project.workflows.iter().map(|w| w.name.as_str()).collect();
                let hint = crate::diagnostics::did_you_mean(name, names.iter().copied())
                    .map(|s| format!("; did you mean {s:?}?"))
                    .unwrap_or_default();
                return Err(Failure::Input(format!("no workflow named {name:?}{hint}")));
            };
            // A workflow without an audience takes every contact.
            wf.audience.clone()
        }
    };
    let mut contacts: Vec<crate::contact::Contact> = store
        .scan_contacts("1 = 1", &[])
        .try_collect()
        .await
        .map_err(store_failure)?;
    if let Some(cond) = &audience {
        let mut names = Vec::new();
        cond.event_names(&mut names);
        if !names.is_empty() {
            let ids: Vec<String> = contacts.iter().map(|c| c.id.clone()).collect();
            let mut events = store
                .events_of(&ids, &names)
                .await
                .map_err(|e| Failure::Other(e.into()))?;
            for c in &mut contacts {
                c.events = events.remove(&c.id).unwrap_or_default();
            }
        }
        contacts.retain(|c| crate::audience::eval::holds(cond, c, now));
    }
    contacts.sort_by(|a, b| a.id.cmp(&b.id));
    let attr_names: std::collections::BTreeSet<&str> = contacts
        .iter()
        .flat_map(|c| c.attrs.keys().map(String::as_str))
        .collect();
    let tz = settings.timezone;
    // To the second; milliseconds only when the store has them (a round
    // trip keeps every time exactly).
    let time = |t: DateTime<Utc>| {
        let f = if t.timestamp_subsec_millis() == 0 {
            chrono::SecondsFormat::Secs
        } else {
            chrono::SecondsFormat::Millis
        };
        t.with_timezone(&tz).to_rfc3339_opts(f, true)
    };
    let stdout = std::io::stdout();
    let mut w = csv::Writer::from_writer(std::io::BufWriter::new(stdout.lock()));
    let write = |w: &mut csv::Writer<_>| -> csv::Result<()> {
        let mut header: Vec<&str> = EXPORT_COLUMNS.to_vec();
        header.extend(attr_names.iter().copied());
        w.write_record(&header)?;
        for c in &contacts {
            let mut rec: Vec<String> = vec![
                c.id.clone(),
                c.name.clone().unwrap_or_default(),
                c.email.clone().unwrap_or_default(),
                c.phone.clone().unwrap_or_default(),
                c.wecom_external_userid.clone().unwrap_or_default(),
                c.owner.clone().unwrap_or_default(),
                c.timezone.clone().unwrap_or_default(),
                time(c.created_at),
                c.last_active_at.map(time).unwrap_or_default(),
                c.unsubscribed.to_string(),
                c.tags.iter().cloned().collect::<Vec<_>>().join(";"),
            ];
            for a in &attr_names {
                rec.push(match c.attrs.get(*a) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                });
            }
            w.write_record(&rec)?;
        }
        w.flush()?;
        Ok(())
    };
    match write(&mut w) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe) => {
            Ok(())
        }
        Err(e) => Err(Failure::Other(
            anyhow::Error::new(e).context("writing the CSV"),
        )),
    }
}
