//! Where planned rows go: the `Sink` every format implements, and the
//! streaming formats (JSON lines, CSV), written as rows are decided.

use super::*;

/// Where planned rows go.
pub(super) trait Sink {
    fn row(
        &mut self,
        out: &mut dyn Write,
        s: &PlannedStep,
        when: DateTime<Utc>,
    ) -> anyhow::Result<()>;
    fn entered(&mut self, _workflow: &str) {}
    /// What adds through the contact-way codes get (shown before the rows).
    fn contact_ways(
        &mut self,
        _out: &mut dyn Write,
        _ways: Vec<crate::contact_ways::Preview>,
    ) -> io::Result<()> {
        Ok(())
    }
    /// The contacts whose names the output shows.
    fn named_contacts(&self) -> Vec<String> {
        Vec::new()
    }
    fn set_names(&mut self, _names: std::collections::HashMap<String, String>) {}
    fn finish(
        &mut self,
        _out: &mut dyn Write,
        _wfs: &[crate::workflow::Workflow],
        _header: &Header<'_>,
    ) -> io::Result<()> {
        Ok(())
    }
}

/// One JSON object per line, written as it is decided.
pub(super) struct JsonlSink {
    pub(super) tz: Tz,
}

impl Sink for JsonlSink {
    /// One line per code, `"action": "contact_way"`, before the rows.
    fn contact_ways(
        &mut self,
        out: &mut dyn Write,
        ways: Vec<crate::contact_ways::Preview>,
    ) -> io::Result<()> {
        for w in ways {
            let mut v = serde_json::to_value(&w).map_err(io::Error::other)?;
            v["action"] = serde_json::json!("contact_way");
            let mut line = serde_json::to_vec(&v).map_err(io::Error::other)?;
            line.push(b'\n');
            out.write_all(&line)?;
        }
        Ok(())
    }
    fn row(
        &mut self,
        out: &mut dyn Write,
        s: &PlannedStep,
        when: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        // Serialised first, so a closed pipe is an io::Error (see is_broken_pipe).
        let mut line = serde_json::to_vec(&s.to_json_row(self.tz, when))?;
        line.push(b'\n');
        out.write_all(&line)?;
        Ok(())
    }
}

const CSV_COLUMNS: [&str; 15] = [
    "workflow",
    "contact_id",
    "step",
    "action",
    "channel",
    "to",
    "subject",
    "body",
    "at",
    "salesperson",
    "notify",
    "add",
    "remove",
    "until",
    "reason",
];

/// The JSON lines' fields as columns, with the same times (a send's in the
/// contact's zone, every other in the settings' zone).
pub(super) struct CsvSink {
    header_written: bool,
    tz: Tz,
}

impl CsvSink {
    pub(super) fn new(tz: Tz) -> Self {
        CsvSink {
            header_written: false,
            tz,
        }
    }
}

impl Sink for CsvSink {
    fn row(
        &mut self,
        out: &mut dyn Write,
        s: &PlannedStep,
        when: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let mut w = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(&mut *out);
        if !self.header_written {
            w.write_record(CSV_COLUMNS)?;
            self.header_written = true;
        }
        let r = s.to_json_row(self.tz, when);
        let join = |v: Option<&[String]>| v.map(|v| v.join(";")).unwrap_or_default();
        let at = r.at.clone().unwrap_or_default();
        // Cells a spreadsheet would run as formulas get a leading `'`.
        w.write_record(
            [
                r.workflow,
                r.contact_id,
                r.step,
                r.action,
                r.channel.unwrap_or(""),
                r.to.unwrap_or(""),
                r.subject.unwrap_or(""),
                r.body.unwrap_or(""),
                &at,
                r.salesperson.unwrap_or(""),
                r.notify.unwrap_or(""),
                &join(r.add),
                &join(r.remove),
                r.until.as_deref().unwrap_or(""),
                r.reason.as_deref().unwrap_or(""),
            ]
            .map(|c| crate::csv_safe::cell(c).into_owned()),
        )?;
        w.flush()?;
        Ok(())
    }

    fn finish(
        &mut self,
        out: &mut dyn Write,
        _: &[crate::workflow::Workflow],
        _: &Header<'_>,
    ) -> io::Result<()> {
        if !self.header_written {
            writeln!(out, "{}", CSV_COLUMNS.join(","))?;
        }
        Ok(())
    }
}
