//! Choosing a salesperson. The counters (round-robin positions, open contacts
//! per salesperson) come from the store and advance in memory as a plan is
//! made, so a dry-run shows the very salesperson the daemon would pick.

use std::collections::HashMap;

use crate::contact::Contact;
use crate::settings::Salesperson;
use crate::workflow::{AssignStep, Strategy};

/// Assignment counters as of the start of a plan.
#[derive(Debug, Clone, Default)]
pub struct AssignState {
    /// Next round-robin index per team.
    pub team_cursor: HashMap<String, i64>,
    /// Open contacts per salesperson id.
    pub load: HashMap<String, i64>,
}

/// What an `assign` step decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    Chosen(String),
    /// The contact keeps its owner (`only_if_unassigned`).
    AlreadyAssigned,
    /// Everyone in the team is at capacity.
    TeamFull,
    /// `by_field`: nobody's id or region equals the contact's value.
    NoMatch,
}

impl AssignState {
    /// Decide, and advance the counters as the daemon would on applying it.
    pub fn pick(&mut self, step: &AssignStep, team: &[Salesperson], contact: &Contact) -> Pick {
        self.pick_capped(step, team, contact, &std::collections::HashSet::new())
    }

    /// [`pick`](Self::pick), passing over the salespeople in `capped` (at
    /// the step's `per_salesperson` cap) as if they were at capacity.
    pub fn pick_capped(
        &mut self,
        step: &AssignStep,
        team: &[Salesperson],
        contact: &Contact,
        capped: &std::collections::HashSet<String>,
    ) -> Pick {
        if step.only_if_unassigned && contact.owner.is_some() {
            return Pick::AlreadyAssigned;
        }
        let has_room = |s: &Salesperson, load: &HashMap<String, i64>| {
            !capped.contains(&s.id)
                && s.capacity
                    .is_none_or(|c| load.get(&s.id).copied().unwrap_or(0) < i64::from(c))
        };
        let chosen = match step.strategy {
            Strategy::RoundRobin => {
                if team.is_empty() {
                    return Pick::TeamFull;
                }
                let cursor = self.team_cursor.entry(step.team.value.clone()).or_insert(0);
                // Skip salespeople at capacity, at most once around the team.
                let n = team.len() as i64;
                let mut found = None;
                for k in 0..n {
                    let idx = (*cursor + k).rem_euclid(n) as usize;
                    if has_room(&team[idx], &self.load) {
                        found = Some(idx);
                        *cursor = (*cursor + k + 1).rem_euclid(n);
                        break;
                    }
                }
                match found {
                    Some(i) => team[i].id.clone(),
                    None => return Pick::TeamFull,
                }
            }
            Strategy::LeastLoaded => match least_loaded(team.iter(), &self.load, has_room) {
                Some(s) => s,
                None => return Pick::TeamFull,
            },
            Strategy::ByField => {
                let Some(field) = &step.field else {
                    return Pick::NoMatch;
                };
                let Some(value) = field_text(contact, &field.value) else {
                    return Pick::NoMatch;
                };
                let matching = team
                    .iter()
                    .filter(|s| s.id == value || s.region.as_deref() == Some(value.as_str()));
                match least_loaded(matching, &self.load, has_room) {
                    Some(s) => s,
                    None => return Pick::NoMatch,
                }
            }
        };
        if let Some(old) = &contact.owner {
            *self.load.entry(old.clone()).or_insert(0) -= 1;
        }
        *self.load.entry(chosen.clone()).or_insert(0) += 1;
        Pick::Chosen(chosen)
    }
}

/// Fewest open contacts among those with room; ties go to the first listed.
fn least_loaded<'a>(
    candidates: impl Iterator<Item = &'a Salesperson>,
    load: &HashMap<String, i64>,
    has_room: impl Fn(&Salesperson, &HashMap<String, i64>) -> bool,
) -> Option<String> {
    let mut best: Option<(&Salesperson, i64)> = None;
    for s in candidates.filter(|s| has_room(s, load)) {
        let l = load.get(&s.id).copied().unwrap_or(0);
        if best.is_none_or(|(_, b)| l < b) {
            best = Some((s, l));
        }
    }
    best.map(|(s, _)| s.id.clone())
}

/// A contact field as text, built-in or custom, for `by_field`.
fn field_text(contact: &Contact, field: &str) -> Option<String> {
    match field {
        "id" => Some(contact.id.clone()),
        "name" => contact.name.clone(),
        "email" => contact.email.clone(),
        "phone" => contact.phone.clone(),
        "owner" => contact.owner.clone(),
        "timezone" => contact.timezone.clone(),
        _ => match contact.attrs.get(field)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::Pos;
    use crate::workflow::Located;

    fn sp(id: &str, region: Option<&str>, capacity: Option<u32>) -> Salesperson {
        Salesperson {
            id: id.into(),
            name: None,
            wecom_userid: None,
            email: None,
            region: region.map(Into::into),
            capacity,
        }
    }

    fn step(strategy: Strategy, field: Option<&str>) -> AssignStep {
        AssignStep {
            team: Located::new("east".into(), Pos::default()),
            strategy,
            field: field.map(|f| Located::new(f.into(), Pos::default())),
            only_if_unassigned: false,
            notify: None,
            per_salesperson: None,
        }
    }

    #[test]
    fn round_robin_goes_around_and_skips_full_salespeople() {
        let team = [
            sp("a", None, None),
            sp("b", None, Some(0)),
            sp("c", None, None),
        ];
        let mut st = AssignState::default();
        let c = Contact::default();
        let picks: Vec<_> = (0..4)
            .map(|_| st.pick(&step(Strategy::RoundRobin, None), &team, &c))
            .collect();
        let ids: Vec<_> = picks
            .iter()
            .map(|p| match p {
                Pick::Chosen(s) => s.as_str(),
                _ => "-",
            })
            .collect();
        assert_eq!(ids, ["a", "c", "a", "c"]);
    }

    #[test]
    fn least_loaded_respects_capacity() {
        let team = [sp("a", None, Some(2)), sp("b", None, Some(1))];
        let mut st = AssignState::default();
        st.load.insert("a".into(), 1);
        let c = Contact::default();
        let s = step(Strategy::LeastLoaded, None);
        assert_eq!(st.pick(&s, &team, &c), Pick::Chosen("b".into()));
        assert_eq!(st.pick(&s, &team, &c), Pick::Chosen("a".into()));
        assert_eq!(st.pick(&s, &team, &c), Pick::TeamFull);
    }

    #[test]
    fn by_field_matches_id_or_region() {
        let team = [
            sp("s01", Some("Shanghai"), None),
            sp("s02", Some("Beijing"), None),
        ];
        let mut st = AssignState::default();
        let mut c = Contact::default();
        c.attrs.insert("city".into(), "Beijing".into());
        assert_eq!(
            st.pick(&step(Strategy::ByField, Some("city")), &team, &c),
            Pick::Chosen("s02".into())
        );
        c.attrs.insert("city".into(), "Chengdu".into());
        assert_eq!(
            st.pick(&step(Strategy::ByField, Some("city")), &team, &c),
            Pick::NoMatch
        );
    }

    #[test]
    fn only_if_unassigned_keeps_the_owner() {
        let team = [sp("a", None, None)];
        let mut st = AssignState::default();
        let c = Contact {
            owner: Some("z".into()),
            ..Contact::default()
        };
        let mut s = step(Strategy::RoundRobin, None);
        s.only_if_unassigned = true;
        assert_eq!(st.pick(&s, &team, &c), Pick::AlreadyAssigned);
    }
}
