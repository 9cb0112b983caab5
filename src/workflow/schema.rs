//! JSON Schema of a workflow file, for editors (`nurture schema`).
//!
//! The structs here exist only to describe the YAML shape; the loader in
//! `load.rs` does the real reading (with positions and better messages). A
//! test holds the two together: every example workflow validates against
//! this schema. Steps are one-key maps (`- send: {...}`) with an optional
//! `id`; conditions are maps with one kind key (a `field` condition with
//! exactly one operator); durations and cron expressions are strings with a
//! pattern.

#![allow(dead_code)]

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

mod condition;

use condition::Condition;

/// Pattern of a duration: `30s`, `45m`, `12h`, `30d`, `2w`.
pub const DURATION_PATTERN: &str = r"^\s*[0-9]+[smhdw]\s*$";
/// Pattern of a cron expression: 5 fields (or 6–7 with seconds and year).
pub const CRON_PATTERN: &str = r"^\s*\S+(\s+\S+){4,6}\s*$";

/// The JSON Schema of a workflow file, as pretty JSON.
pub fn workflow_schema_json() -> String {
    let mut schema = schemars::schema_for!(WorkflowFile);
    schema.insert(
        "$id".into(),
        "https://nurture.dev/schema/workflow.json".into(),
    );
    schema.insert("title".into(), "nurture workflow".into());
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

/// A nurture workflow: one per file in `workflows/`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct WorkflowFile {
    /// Unique name; default: the file name without `.yaml`.
    name: Option<String>,
    /// What the workflow is for.
    description: Option<String>,
    /// `false` keeps the workflow loaded and checked, but it does not run. Default true.
    enabled: Option<bool>,
    /// What starts an enrollment: exactly one kind.
    trigger: Trigger,
    /// Who may enter and stay in the workflow; default: every contact.
    audience: Option<Condition>,
    /// How often one contact may enter: `once` (default), `every_time`, or `once per 30d`.
    entry: Option<EntryRule>,
    /// What happens, in order.
    #[schemars(length(min = 1))]
    steps: Vec<Step>,
    /// A goal: the contact leaves the workflow as soon as this holds. Events
    /// count only from the moment the enrollment began.
    exit_when: Option<Condition>,
    /// `true`: when the workflow is first activated, enroll the contacts
    /// already in its audience, once (the blast guard still applies). Default
    /// false: a workflow acts only on trigger events after its activation.
    entry_existing: Option<bool>,
    /// `holdout: 10%`: this share of contacts (a stable hash of workflow and
    /// contact) is enrolled and measured but never messaged or assigned: the
    /// control group.
    #[schemars(regex(pattern = r"^\s*[0-9]+(\.[0-9]+)?\s*%$"))]
    holdout: Option<String>,
    /// What counts as a conversion: `{ event: purchase, where?: {...}, within: 7d }`
    /// or `{ condition: C, within: 7d }`. `nurture report` measures it.
    goal: Option<GoalDef>,
    /// Leave the workflow once the goal is reached. Default true.
    exit_on_goal: Option<bool>,
    /// At most this many of the workflow's messages per period, evenly spaced, in order: `200/h`.
    #[schemars(regex(pattern = r"^\s*[0-9]+\s*/\s*[smhd]\s*$"))]
    throttle: Option<String>,
}

/// A goal: an event (optionally with a test of its properties) or a condition, within a window.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct GoalDef {
    /// The event that converts (logged after the contact entered).
    event: Option<String>,
    /// A test of one property of the event, as a field condition: `{ field: amount, gte: 500 }`.
    #[serde(rename = "where")]
    where_: Option<serde_json::Map<String, serde_json::Value>>,
    /// A condition that converts (when the plan sees it hold).
    condition: Option<Condition>,
    /// The conversion window after entering, e.g. 7d.
    within: DurationStr,
}

/// Exactly one trigger kind.
#[derive(JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Trigger {
    /// A contact is added to the store (API, import, WeCom, or another system). Write `contact_created: {}`, or `contact_created: { via: NAME }` for customers added through the contact-way code `contact_ways/NAME.yaml`.
    ContactCreated(Option<ContactCreated>),
    /// Tag `tag` is added to a contact that did not have it.
    TagAdded(TagAdded),
    /// At each `check` tick, for contacts quiet for longer than `for`; once per quiet spell.
    Inactive(Inactive),
    /// An event `name` is recorded for a contact.
    Event(EventTrigger),
    /// At each tick, for every contact in the audience (a recurring broadcast).
    Schedule(ScheduleTrigger),
    /// A WeCom follow-user of the contact left the company (found on WeCom's unassigned list by `nurture wecom resigned` or the daemon's daily look). Write `staff_left: {}`.
    StaffLeft(Option<Empty>),
    /// On the date in a contact's date attribute (shifted by `offset`), at `at` in the contact's time zone; every year or once.
    Date(DateTriggerDef),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct DateTriggerDef {
    /// The date attribute (declare it `date` under fields:), e.g. birthday, renewal_at.
    field: String,
    /// Whole days before (-3d) or after (7d) the date. Default 0d.
    #[schemars(regex(pattern = r"^\s*[+-]?[0-9]+[dw]\s*$"))]
    offset: Option<String>,
    /// The local time, HH:MM. Default 09:00.
    #[schemars(regex(pattern = r"^\s*[0-2][0-9]:[0-5][0-9]\s*$"))]
    at: Option<String>,
    /// `year` (default: each anniversary; 29 February on the 28th in common years) or `once`.
    every: Option<DateEvery>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
enum DateEvery {
    Year,
    Once,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct ContactCreated {
    /// Only customers added through this contact-way code (the file name of `contact_ways/NAME.yaml`; WeCom's `State`).
    via: Option<String>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct TagAdded {
    /// The tag.
    tag: String,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Inactive {
    /// How long without activity, e.g. `30d`.
    #[serde(rename = "for")]
    quiet_for: DurationStr,
    /// When to look (cron, 5 fields, in the settings' timezone); default hourly `0 * * * *`.
    check: Option<CronStr>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct EventTrigger {
    /// The event name, e.g. `purchase`.
    name: String,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct ScheduleTrigger {
    /// Cron expression (5 fields: minute hour day month weekday), e.g. `0 9 * * 1`.
    cron: Option<CronStr>,
    /// Instead of cron: a day of the named calendar, every year, in each contact's time zone.
    on: Option<CalendarDay>,
    /// With `on`: whole days before (-7d) or after the day.
    #[schemars(regex(pattern = r"^\s*[+-]?[0-9]+[dw]\s*$"))]
    offset: Option<String>,
    /// With `on`: the local time, HH:MM (default 09:00).
    #[schemars(regex(pattern = r"^\s*[0-2][0-9]:[0-5][0-9]\s*$"))]
    at: Option<String>,
    /// At most this many of the step's messages per salesperson (the contact's owner, who sends on WeCom) in the period: `30/d`; the excess waits in order.
    #[schemars(regex(pattern = r"^\s*[0-9]+\s*/\s*[smhd]\s*$"))]
    per_salesperson: Option<String>,
}

/// A day of the Chinese holiday and shopping calendar (2020–2040).
#[derive(JsonSchema)]
enum CalendarDay {
    #[serde(rename = "春节")]
    SpringFestival,
    #[serde(rename = "元宵")]
    Lantern,
    #[serde(rename = "端午")]
    DragonBoat,
    #[serde(rename = "中秋")]
    MidAutumn,
    #[serde(rename = "国庆")]
    NationalDay,
    #[serde(rename = "618")]
    Day618,
    #[serde(rename = "双11")]
    Double11,
    #[serde(rename = "双12")]
    Double12,
    #[serde(rename = "spring_festival")]
    SpringFestivalEn,
    #[serde(rename = "lantern_festival")]
    LanternEn,
    #[serde(rename = "dragon_boat")]
    DragonBoatEn,
    #[serde(rename = "mid_autumn")]
    MidAutumnEn,
    #[serde(rename = "national_day")]
    NationalDayEn,
    #[serde(rename = "double_11")]
    Double11En,
    #[serde(rename = "double_12")]
    Double12En,
}

struct DurationStr;
impl JsonSchema for DurationStr {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A whole number and a unit: s, m, h, d or w (30s, 45m, 12h, 30d, 2w).",
            "examples": ["3d", "12h", "2w"]
        })
    }
}

struct CronStr;
impl JsonSchema for CronStr {
    fn schema_name() -> Cow<'static, str> {
        "Cron".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": CRON_PATTERN,
            "description": "Cron: minute hour day month weekday, read in the settings' timezone (6 or 7 fields with seconds and year are accepted too).",
            "examples": ["0 9 * * *", "30 10 * * 1-5"]
        })
    }
}

struct EntryRule;
impl JsonSchema for EntryRule {
    fn schema_name() -> Cow<'static, str> {
        "Entry".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": r"^\s*(once|every_time|once per\s+[0-9]+[smhdw])\s*$",
            "description": "once (default): a contact enters at most once; every_time: at every trigger; \"once per 30d\": at most once in any 30 days.",
            "examples": ["once", "every_time", "once per 30d"]
        })
    }
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
/// Render `template` for the contact and send it on `channel`.
struct Send {
    /// A channel name from nurture.yaml.
    channel: String,
    /// A template name: `templates/NAME.hbs`.
    template: String,
    /// Send at the next such local time of the contact (HH:MM); the message waits in the outbox.
    #[schemars(regex(pattern = r"^\s*[0-2][0-9]:[0-5][0-9]\s*$"))]
    at: Option<String>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
enum StrategyName {
    RoundRobin,
    LeastLoaded,
    ByField,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
/// Set the contact's owner to a salesperson of `team`.
struct Assign {
    /// A team name from nurture.yaml.
    team: String,
    /// round_robin (default), least_loaded (against capacity), or by_field (salesperson id or region equals the contact's `field`).
    strategy: Option<StrategyName>,
    /// With by_field: the contact field matched against a salesperson's id or region.
    field: Option<String>,
    /// Keep the current owner when there is one. Default false.
    only_if_unassigned: Option<bool>,
    /// How the salesperson is told about the contact: a channel (with the
    /// shipped bilingual notice, or templates/assigned.hbs), or
    /// { channel, template }.
    notify: Option<NotifyDef>,
    /// At most this many contacts per salesperson from this step in the period: `30/d`. Those at it are passed over; when the whole team is, the enrollment waits, in order, for the first place to free.
    #[schemars(regex(pattern = r"^\s*[0-9]+\s*/\s*[smhd]\s*$"))]
    per_salesperson: Option<String>,
}

/// `wecom` or `{ channel: wecom, template: assigned }`.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum NotifyDef {
    Channel(String),
    Template {
        channel: String,
        /// Variables: contact, owner, previous_owner, workflow, now.
        template: Option<String>,
    },
}

/// One tag or a list of tags.
#[derive(JsonSchema)]
#[serde(untagged)]
enum Tags {
    One(String),
    Many(Vec<String>),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
/// Change the contact's tags.
struct TagChange {
    add: Option<Tags>,
    remove: Option<Tags>,
}

/// A step: one kind key, optionally an `id` (and `then`/`else` on an `if`).
struct Step;
impl JsonSchema for Step {
    fn schema_name() -> Cow<'static, str> {
        "Step".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let id = json_schema!({
            "type": "string",
            "minLength": 1,
            "description": "A stable id: running contacts stay at their step by id when the file is edited. Default: the step's position (\"0\", \"3.then.1\")."
        });
        let steps = g.subschema_for::<Vec<Step>>();
        let hhmm = json_schema!({ "type": "string", "pattern": "^\\s*[0-2][0-9]:[0-5][0-9]\\s*$" });
        let window = json_schema!({
            "type": "object",
            "description": "Run the step only inside this local time window of the contact; outside it, wait for the next opening.",
            "properties": {
                "from": hhmm.clone(),
                "to": hhmm.clone(),
                "days": { "type": "array", "items": { "enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] } },
                "on": { "type": "array", "items": { "type": "string" }, "description": "Only on these days of the calendar: 春节, 元宵, 端午, 中秋, 国庆, 618, 双11, 双12." }
            },
            "required": ["from", "to"],
            "additionalProperties": false
        });
        let one = |key: &str, schema: Schema, desc: &str| {
            json_schema!({
                "type": "object",
                "description": desc,
                "properties": { key: schema, "id": id.clone(), "window": window.clone() },
                "required": [key],
                "additionalProperties": false
            })
        };
        let send = one(
            "send",
            g.subschema_for::<Send>(),
            "Render a template and send it on a channel.",
        );
        let assign = one(
            "assign",
            g.subschema_for::<Assign>(),
            "Assign a salesperson.",
        );
        let tag = one("tag", g.subschema_for::<TagChange>(), "Add or remove tags.");
        let wait = one(
            "wait",
            g.subschema_for::<DurationStr>(),
            "Continue after a while, e.g. wait: 3d.",
        );
        let cond = g.subschema_for::<Condition>();
        let if_step = json_schema!({
            "type": "object",
            "description": "Branch on a condition.",
            "properties": {
                "if": cond,
                "then": steps.clone(),
                "else": steps,
                "id": id,
                "window": window.clone()
            },
            "required": ["if"],
            "anyOf": [{ "required": ["then"] }, { "required": ["else"] }],
            "additionalProperties": false
        });
        let duration = g.subschema_for::<DurationStr>();
        let wait_until = json_schema!({
            "type": "object",
            "description": "Wait until an event is logged (or a condition holds), at most `timeout`: then `then` (it came, at once) or `else` (the timeout passed).",
            "properties": {
                "wait_until": {
                    "type": "object",
                    "properties": {
                        "event": { "type": "string", "description": "The event to wait for (logged after the wait began)." },
                        "where": { "type": "object", "description": "A test of one property of the event, as a field condition: { field: amount, gte: 500 }.", "required": ["field"] },
                        "condition": cond.clone(),
                        "timeout": duration,
                        "then": steps.clone(),
                        "else": steps.clone()
                    },
                    "required": ["timeout"],
                    "oneOf": [{ "required": ["event"] }, { "required": ["condition"] }],
                    "additionalProperties": false
                },
                "id": id.clone(),
                "window": window.clone()
            },
            "required": ["wait_until"],
            "additionalProperties": false
        });
        let split = json_schema!({
            "type": "object",
            "description": "Send each contact down one arm, in proportion to the weights, by a stable hash of (workflow, contact, split id); the arm is recorded.",
            "properties": {
                "split": {
                    "type": "object",
                    "properties": {
                        "arms": {
                            "type": "array",
                            "minItems": 2,
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": { "type": "string", "minLength": 1 },
                                    "weight": { "type": "integer", "minimum": 1, "default": 1 },
                                    "steps": steps.clone()
                                },
                                "required": ["name"],
                                "additionalProperties": false
                            }
                        }
                    },
                    "required": ["arms"],
                    "additionalProperties": false
                },
                "id": id.clone(),
                "window": window.clone()
            },
            "required": ["split"],
            "additionalProperties": false
        });
        let set = one(
            "set",
            json_schema!({
                "type": "object",
                "minProperties": 1,
                "additionalProperties": { "type": ["string", "number", "boolean", "null"] },
                "description": "Custom attributes to set: a string with {{ is a template (contact, owner, event); null removes the attribute."
            }),
            "Set custom attributes of the contact.",
        );
        let notify = one(
            "notify",
            json_schema!({
                "description": "A channel name, or { channel, template }.",
                "anyOf": [
                    { "type": "string" },
                    {
                        "type": "object",
                        "properties": { "channel": { "type": "string" }, "template": { "type": "string" } },
                        "required": ["channel"],
                        "additionalProperties": false
                    }
                ]
            }),
            "Tell the contact's salesperson with a notice template, without reassigning.",
        );
        let webhook = one(
            "webhook",
            json_schema!({
                "type": "object",
                "properties": {
                    "channel": { "type": "string", "description": "A webhook channel from nurture.yaml (its URL, secret, retries and rate limit)." },
                    "body": {
                        "type": "object",
                        "additionalProperties": { "type": ["string", "number", "boolean", "null"] },
                        "description": "The JSON body: a string with {{ is a template (contact, owner, event)."
                    },
                    "store": {
                        "type": "object",
                        "additionalProperties": { "type": "string", "pattern": "^/" },
                        "description": "Once the call succeeds, set these custom attributes from its JSON answer: attribute: /json/pointer (RFC 6901)."
                    }
                },
                "required": ["channel"],
                "additionalProperties": false
            }),
            "Call an HTTP endpoint with a JSON body, through the outbox (retries, idempotency key).",
        );
        json_schema!({ "anyOf": [send, assign, tag, wait, if_step, wait_until, split, set, notify, webhook] })
    }
}

#[cfg(test)]
mod tests;
