//! `teams:` in `nurture.yaml`: the salespeople workflows assign contacts
//! to, and how they are read (ids unique across teams).

use std::collections::BTreeMap;

use crate::diagnostics::Pos;
use crate::yaml::{Node, Reader};

#[derive(Debug, Clone, PartialEq)]
pub struct Salesperson {
    pub id: String,
    pub name: Option<String>,
    pub wecom_userid: Option<String>,
    pub email: Option<String>,
    pub region: Option<String>,
    /// Most open contacts `least_loaded` gives this salesperson; `None` is unlimited.
    pub capacity: Option<u32>,
}

impl Salesperson {
    pub fn template_value(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("id".into(), self.id.clone().into());
        for (k, v) in [
            ("name", &self.name),
            ("wecom_userid", &self.wecom_userid),
            ("email", &self.email),
            ("region", &self.region),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.clone().into());
            }
        }
        if let Some(c) = self.capacity {
            m.insert("capacity".into(), c.into());
        }
        serde_json::Value::Object(m)
    }
}

const SALESPERSON_KEYS: &[&str] = &["id", "name", "wecom_userid", "email", "region", "capacity"];

pub(super) fn read_teams(r: &mut Reader, node: &Node) -> BTreeMap<String, Vec<Salesperson>> {
    let mut out = BTreeMap::new();
    let Some(entries) = node.as_map() else {
        if !node.is_null() {
            r.error(
                node.pos,
                format!(
                    "teams must be a map of team name: list of salespeople, found {}",
                    node.describe()
                ),
            );
        }
        return out;
    };
    let mut seen: BTreeMap<String, (String, Pos)> = BTreeMap::new();
    for (k, v) in entries {
        let Some(team) = r.string(k, "a team name") else {
            continue;
        };
        let Some(items) = r.seq(v, &format!("team \"{team}\"")) else {
            continue;
        };
        let mut people = Vec::new();
        for item in items {
            let Some(f) = r.fields(item, "a salesperson", SALESPERSON_KEYS) else {
                continue;
            };
            let Some(idn) = f.get("id") else {
                r.error(item.pos, "a salesperson needs an \"id\"");
                continue;
            };
            let Some(id) = r.string(idn, "id") else {
                continue;
            };
            if let Some((first_team, first)) = seen.get(&id) {
                r.error(
                    idn.pos,
                    format!(
                        "salesperson id \"{id}\" is already used in team \"{first_team}\" (line {}); ids must be unique across teams",
                        first.line
                    ),
                );
                continue;
            }
            seen.insert(id.clone(), (team.clone(), idn.pos));
            let mut opt = |key: &str| f.get(key).and_then(|n| r.string(n, key));
            let name = opt("name");
            let wecom_userid = opt("wecom_userid");
            let email = opt("email");
            let region = opt("region");
            // Notices to the salesperson on an smtp channel go to this
            // address: one SMTP cannot address would be refused at each
            // notice (the same parse as the channel's, which takes any
            // address in use, internationalized ones included).
            if let (Some(e), Some(node)) = (&email, f.get("email"))
                && let Err(why) = e.trim().parse::<lettre::Address>()
            {
                let d = crate::diagnostics::Diagnostic::new(
                    r.file,
                    node.pos,
                    format!("salesperson \"{id}\": email {e:?} is not an email address ({why})"),
                )
                .with_suggestion(
                    "notices to them on an smtp channel would be refused: fix it, or leave email out",
                );
                r.push(d);
            }
            let sp = Salesperson {
                id,
                name,
                wecom_userid,
                email,
                region,
                capacity: f.get("capacity").and_then(|n| r.u32(n, "capacity")),
            };
            people.push(sp);
        }
        out.insert(team, people);
    }
    out
}
