//! `contacts show ID`: one contact as a table or JSON.

use super::*;

pub(super) async fn show(
    store: &Store,
    settings: &Settings,
    id: &str,
    format: ShowFormat,
) -> CliResult {
    let Some(v) = crate::console::data::contact_value(store, settings, id)
        .await
        .map_err(Failure::Other)?
    else {
        return Err(Failure::Input(format!("no contact with id {id:?}")));
    };
    if format == ShowFormat::Json {
        println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
        return Ok(());
    }
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let mut out = String::new();
    let name = s("name");
    out.push_str(&format!(
        "contact {id}{}\n",
        if name.is_empty() {
            String::new()
        } else {
            format!(" {name}")
        }
    ));
    let owner = match &v["owner"] {
        Value::Object(o) => match o.get("name").and_then(Value::as_str) {
            Some(n) => format!("{} {n}", o["id"].as_str().unwrap_or("")),
            None => o["id"].as_str().unwrap_or("").to_string(),
        },
        _ => "-".into(),
    };
    let tags: Vec<&str> = v["tags"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let consent: Vec<String> = v["consent"]["channels"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    format!(
                        "{} {}",
                        c["channel"].as_str().unwrap_or("?"),
                        if c["allowed"] == true { "yes" } else { "no" }
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let tz = match s("timezone") {
        t if t.is_empty() => format!("(the settings': {})", settings.timezone),
        t => t,
    };
    let mut fields = crate::cli::table::Table::new(&["FIELD", "VALUE"]).indent("  ");
    for (k, val) in [
        ("email", s("email")),
        ("phone", s("phone")),
        ("wecom_external_userid", s("wecom_external_userid")),
        ("owner", owner),
        ("timezone", tz),
        ("created_at", s("created_at")),
        ("last_active_at", s("last_active_at")),
        ("tags", tags.join(", ")),
        (
            "unsubscribed",
            if v["consent"]["unsubscribed"] == true {
                "yes, from every channel".into()
            } else {
                "no".into()
            },
        ),
        ("may receive", consent.join(", ")),
    ] {
        fields.row(vec![
            k.into(),
            if val.is_empty() { "-".into() } else { val },
        ]);
    }
    let fit = crate::cli::table::terminal_width();
    out.push_str(&fields.render(fit));
    if let Some(attrs) = v["attributes"].as_object().filter(|a| !a.is_empty()) {
        out.push_str("attributes:\n");
        let mut t = crate::cli::table::Table::new(&["NAME", "VALUE"]).indent("  ");
        for (k, val) in attrs {
            let shown = match val {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            t.row(vec![k.clone(), shown]);
        }
        out.push_str(&t.render(fit));
    }
    let enrollments = v["enrollments"].as_array().cloned().unwrap_or_default();
    if enrollments.is_empty() {
        out.push_str("enrollments: none\n");
    } else {
        out.push_str("enrollments:\n");
        let mut t =
            crate::cli::table::Table::new(&["WORKFLOW", "STATUS", "STEP", "NEXT RUN", "STARTED"])
                .indent("  ");
        for e in &enrollments {
            let f = |k: &str| e[k].as_str().unwrap_or("-").to_string();
            t.row(vec![
                f("workflow"),
                f("status"),
                f("step"),
                f("next_run_at"),
                f("started_at"),
            ]);
        }
        out.push_str(&t.render(fit));
    }
    print!("{out}");
    Ok(())
}
