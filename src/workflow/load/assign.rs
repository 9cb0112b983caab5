//! Handing contacts to salespeople: the `assign` step, `notify:` of the
//! new owner, and `per_salesperson:` caps (on assign and send steps).

use super::*;

pub(super) fn read_assign(r: &mut Reader, v: &Node) -> Option<StepAction> {
    let f = r.fields(
        v,
        "an assign step",
        &[
            "team",
            "strategy",
            "field",
            "only_if_unassigned",
            "notify",
            "per_salesperson",
        ],
    )?;
    let per_salesperson = f
        .get("per_salesperson")
        .and_then(|n| read_per_salesperson(r, n));
    let team = required_located(r, &f, v, "team", "an assign step");
    let strategy = match f.get("strategy") {
        None => Some(Strategy::RoundRobin),
        Some(n) => {
            let s = r.string(n, "strategy")?;
            match s.as_str() {
                "round_robin" => Some(Strategy::RoundRobin),
                "least_loaded" => Some(Strategy::LeastLoaded),
                "by_field" => Some(Strategy::ByField),
                _ => {
                    let mut d = Diagnostic::new(r.file, n.pos, format!("unknown strategy \"{s}\""))
                        .did_you_mean(&s, STRATEGIES);
                    if d.suggestion.is_none() {
                        d = d.with_suggestion(format!("strategies are: {}", STRATEGIES.join(", ")));
                    }
                    r.push(d);
                    None
                }
            }
        }
    };
    let field = f
        .get("field")
        .and_then(|n| r.string(n, "field").map(|s| Located::new(s, n.pos)));
    match (strategy, &field) {
        (Some(Strategy::ByField), None) => {
            r.push(
                Diagnostic::new(r.file, f.get("strategy").map_or(v.pos, |n| n.pos), "strategy by_field needs \"field\"")
                    .with_suggestion("name the contact field matched against a salesperson's id or region, e.g. field: region"),
            );
        }
        (Some(Strategy::RoundRobin | Strategy::LeastLoaded), Some(fl)) => {
            r.error(fl.pos, "\"field\" is only used with strategy: by_field");
        }
        _ => {}
    }
    let only_if_unassigned = f
        .get("only_if_unassigned")
        .and_then(|n| r.bool(n, "only_if_unassigned"))
        .unwrap_or(false);
    let notify = f.get("notify").and_then(|n| read_notify(r, n));
    Some(StepAction::Assign(AssignStep {
        team: team?,
        // Placeholder after an unknown strategy (reported), so `team` and
        // `notify` are still checked.
        strategy: strategy.unwrap_or(Strategy::RoundRobin),
        field,
        only_if_unassigned,
        notify,
        per_salesperson,
    }))
}

/// `notify: wecom` or `notify: { channel: wecom, template: T }`.
pub(super) fn read_notify(r: &mut Reader, n: &Node) -> Option<Notify> {
    if n.as_map().is_some() {
        let g = r.fields(n, "notify", &["channel", "template"])?;
        let channel = required_located(r, &g, n, "channel", "notify")?;
        let template = g
            .get("template")
            .and_then(|t| r.string(t, "template").map(|s| Located::new(s, t.pos)));
        Some(Notify { channel, template })
    } else {
        r.string(n, "notify").map(|s| Notify {
            channel: Located::new(s, n.pos),
            template: None,
        })
    }
}

/// `per_salesperson: 30/d`.
pub(super) fn read_per_salesperson(r: &mut Reader, n: &Node) -> Option<crate::settings::RateLimit> {
    let text = r.string(n, "per_salesperson")?;
    let rate = crate::settings::parse_rate(&text);
    if rate.is_none() {
        r.push(
            Diagnostic::new(
                r.file,
                n.pos,
                format!("per_salesperson \"{text}\" must be a rate such as 30/d"),
            )
            .with_suggestion("COUNT/h or COUNT/d: at most COUNT per salesperson in that time"),
        );
    }
    rate
}
