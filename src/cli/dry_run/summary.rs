//! The table format: a summary per workflow, then the first rows.

use super::*;

/// A summary per workflow, then the first rows.
pub(super) struct TableSink {
    limit: usize,
    tz: Tz,
    rows: Vec<(PlannedStep, DateTime<Utc>)>,
    per_workflow: BTreeMap<String, Counts>,
    /// The names of the contacts in `rows`, read once the run is over.
    names: std::collections::HashMap<String, String>,
    /// What adds through each contact-way code get.
    ways: Vec<crate::contact_ways::Preview>,
}

#[derive(Default)]
struct Counts {
    entered: u64,
    actions: BTreeMap<String, u64>,
}

impl TableSink {
    pub(super) fn new(limit: usize, tz: Tz) -> Self {
        TableSink {
            limit,
            tz,
            rows: Vec::new(),
            per_workflow: BTreeMap::new(),
            names: Default::default(),
            ways: Vec::new(),
        }
    }
}

impl Sink for TableSink {
    fn contact_ways(
        &mut self,
        _out: &mut dyn Write,
        ways: Vec<crate::contact_ways::Preview>,
    ) -> io::Result<()> {
        self.ways = ways;
        Ok(())
    }
    fn row(
        &mut self,
        _out: &mut dyn Write,
        s: &PlannedStep,
        when: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let key = match &s.action {
            Action::Skip { reason } => format!("skip {}", reason.code()),
            Action::Exit { reason } => format!("exit {}", reason.code()),
            a => a.name().to_string(),
        };
        *self
            .per_workflow
            .entry(s.workflow.clone())
            .or_default()
            .actions
            .entry(key)
            .or_insert(0) += 1;
        if self.rows.len() < self.limit {
            self.rows.push((s.clone(), when));
        }
        Ok(())
    }

    fn named_contacts(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .rows
            .iter()
            .map(|(s, _)| s.contact_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    fn set_names(&mut self, names: std::collections::HashMap<String, String>) {
        self.names = names;
    }

    fn entered(&mut self, workflow: &str) {
        self.per_workflow
            .entry(workflow.to_string())
            .or_default()
            .entered += 1;
    }

    fn finish(
        &mut self,
        out: &mut dyn Write,
        wfs: &[crate::workflow::Workflow],
        h: &Header<'_>,
    ) -> io::Result<()> {
        let tz = h.tz;
        let show = |t: DateTime<Utc>| {
            t.with_timezone(&tz)
                .format("%Y-%m-%d %H:%M:%S %:z")
                .to_string()
        };
        if h.until > h.at {
            writeln!(
                out,
                "Dry run from {} to {} — nothing was sent or changed.",
                show(h.at),
                show(h.until)
            )?;
            writeln!(
                out,
                "Simulated as the daemon would run it, assuming no new contacts or events arrive.\n"
            )?;
        } else {
            writeln!(
                out,
                "Dry run at {} — nothing was sent or changed.\n",
                show(h.at)
            )?;
        }
        let fit = crate::cli::table::terminal_width();
        let mut summary = Table::new(&["WORKFLOW", "TRIGGER", "ENTER", "ACTIONS"])
            .sep(" ")
            .right(&[2]);
        for wf in wfs {
            let counts = self.per_workflow.get(&wf.name);
            let mut actions = counts
                .map(|c| {
                    c.actions
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            // A cron workflow that did not tick in the window shows when it will.
            if wf.enabled
                && wf.trigger.is_ticked()
                && !h.report.ticks_run.iter().any(|(n, _)| *n == wf.name)
                && let Some(next) = next_tick(h.project, wf, h.until)
            {
                if !actions.is_empty() {
                    actions.push(' ');
                }
                actions.push_str(&format!("next tick {}", show(next)));
            }
            let state = if wf.enabled {
                wf.trigger.kind()
            } else {
                "disabled"
            };
            summary.row(vec![
                wf.name.clone(),
                state.to_string(),
                counts.map(|c| c.entered).unwrap_or(0).to_string(),
                if actions.is_empty() {
                    "-".to_string()
                } else {
                    actions
                },
            ]);
        }
        write!(out, "{}", summary.render(fit))?;
        for (name, when, reason) in &h.report.paused {
            if wfs.iter().any(|w| w.name == *name) {
                writeln!(
                    out,
                    "\n{name}: would be PAUSED at {} by the {reason}",
                    show(*when)
                )?;
            }
        }
        if !self.ways.is_empty() {
            writeln!(out, "\nContact-way codes:")?;
            for w in &self.ways {
                writeln!(out, "  {}", w.describe(&h.project.settings))?;
            }
        }
        let total: u64 = self
            .per_workflow
            .values()
            .flat_map(|c| c.actions.values())
            .sum();
        writeln!(out)?;
        if self.rows.is_empty() {
            writeln!(out, "Nothing is due.")?;
            return Ok(());
        }
        writeln!(
            out,
            "First {} of {} actions (--format jsonl or csv for all):",
            self.rows.len(),
            total
        )?;
        let mut rows =
            Table::new(&["WHEN", "WORKFLOW", "CONTACT", "STEP", "ACTION", "DETAIL"]).sep(" ");
        let person = |id: &str| match h
            .project
            .settings
            .salesperson(id)
            .and_then(|s| s.name.as_deref())
        {
            Some(n) => format!("{id} {n}"),
            None => id.to_string(),
        };
        for (s, when) in &self.rows {
            let detail = match &s.action {
                Action::Send {
                    channel,
                    to,
                    body,
                    at,
                    tz,
                    attachments,
                    ..
                } => {
                    let b = crate::cli::table::truncate(&body.replace('\n', " "), 48);
                    let mut d = format!(
                        "{channel} → {to} at {}: {b}",
                        at.with_timezone(tz).format("%Y-%m-%d %H:%M:%S %:z")
                    );
                    // Each attachment as `+ link: TITLE (URL)`.
                    for a in attachments {
                        d.push_str(&format!(" + {}", a.summary()));
                    }
                    d
                }
                Action::Assign {
                    salesperson,
                    notify,
                    transfer,
                    ..
                } => {
                    let mut d = match notify {
                        Some(n) => format!("→ {} (notified on {n})", person(salesperson)),
                        None => format!("→ {}", person(salesperson)),
                    };
                    // The WeCom transfer and its verdict, in words.
                    if let Some(t) = transfer {
                        d.push_str(&format!("; {}", t.describe()));
                    }
                    d
                }
                Action::Tag { add, remove, wecom } => {
                    let mut d = format!("+[{}] -[{}]", add.join(", "), remove.join(", "));
                    if !wecom.is_empty() {
                        d.push_str(&format!(" + WeCom corp tags via {}", wecom.join(", ")));
                    }
                    d
                }
                Action::Wait { until } => format!(
                    "until {}",
                    until
                        .with_timezone(&self.tz)
                        .format("%Y-%m-%d %H:%M:%S %:z")
                ),
                Action::Split { arm } => format!("arm {arm}"),
                Action::Webhook {
                    channel,
                    body,
                    store,
                } if !store.is_empty() => format!(
                    "POST {channel}: {body}; would store {} from the answer",
                    store
                        .iter()
                        .map(|(k, p)| format!("{k} ← {p}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Action::Webhook { channel, body, .. } => format!("POST {channel}: {body}"),
                Action::Set { values } => values
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                Action::Notify {
                    salesperson,
                    channel,
                    body,
                } => match body {
                    Ok(_) => format!("→ {salesperson} on {channel} (stays the owner)"),
                    Err(e) => format!("→ {salesperson}: notice not sent: template_error: {e}"),
                },
                Action::WaitEnded { met, why } => {
                    format!("{} ({why})", if *met { "then" } else { "else" })
                }
                Action::Exit { reason } | Action::Skip { reason } => reason.to_string(),
            };
            let contact = match self.names.get(&s.contact_id) {
                Some(n) => format!("{} {n}", s.contact_id),
                None => s.contact_id.clone(),
            };
            rows.row(vec![
                when.with_timezone(&self.tz)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string(),
                s.workflow.clone(),
                contact,
                s.step.clone(),
                s.action.name().to_string(),
                detail,
            ]);
        }
        write!(out, "{}", rows.render(fit))?;
        Ok(())
    }
}
