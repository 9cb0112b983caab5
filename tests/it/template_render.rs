//! Template loading and strict rendering (SPEC §1.3).

use chrono::{TimeZone, Utc};
use nurture::contact::Contact;
use nurture::template::{TemplateError, Templates, render_context};
use serde_json::json;

fn one(src: &str) -> Templates {
    Templates::from_sources([("t", src)]).expect("compiles")
}

fn ctx() -> serde_json::Value {
    json!({"contact": {"name": "Ada", "empty": "", "nothing": null, "n": 3}, "workflow": {"name": "w"}})
}

#[test]
fn strict_missing_variable_fails() {
    let t = one("Hi {{contact.name}},\nyou live in {{contact.city}}.");
    let err = t.render("t", &ctx()).unwrap_err();
    match &err {
        TemplateError::MissingVariable { var, line, .. } => {
            assert_eq!(var.as_deref(), Some("contact.city"));
            assert_eq!(*line, Some(2));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "missing variable \"contact.city\" in template \"t\" line 2"
    );
}

#[test]
fn default_gives_fallback_for_missing_null_and_empty() {
    let t = one(
        "{{default contact.city \"friend\"}}|{{default contact.empty \"e\"}}|{{default contact.nothing \"n\"}}|{{default contact.name \"x\"}}|{{default contact.n 0}}",
    );
    assert_eq!(t.render("t", &ctx()).unwrap().body, "friend|e|n|Ada|3");
}

#[test]
fn default_with_missing_fallback_is_an_error() {
    let t = one("{{default contact.city contact.town}}");
    let err = t.render("t", &ctx()).unwrap_err();
    assert!(err.to_string().contains("contact.town"), "{err}");
}

#[test]
fn if_and_unless_stay_lenient() {
    let t = one(
        "{{#if contact.city}}in {{contact.city}}{{else}}somewhere{{/if}}{{#unless contact.city}}!{{/unless}}",
    );
    assert_eq!(t.render("t", &ctx()).unwrap().body, "somewhere!");
}

#[test]
fn front_matter_subject_and_extra_are_rendered() {
    let src = "---\nsubject: \"Hi {{contact.name}}\"\npreheader: Just for {{contact.name}} # comment\n---\nBody {{workflow.name}}\n";
    let t = one(src);
    let r = t.render("t", &ctx()).unwrap();
    assert_eq!(r.subject.as_deref(), Some("Hi Ada"));
    assert_eq!(
        r.extra.get("preheader").map(String::as_str),
        Some("Just for Ada")
    );
    assert_eq!(
        r.body, "Body w",
        "the final newline of the file is not part of the message"
    );
    assert_eq!(
        t.front_matter_keys("t").collect::<Vec<_>>(),
        ["subject", "preheader"]
    );
}

#[test]
fn missing_variable_in_subject_names_the_part_and_file_line() {
    let t = one("---\n\nsubject: \"Hi {{contact.city}}\"\n---\nBody\n");
    let err = t.render("t", &ctx()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing variable \"contact.city\" in template \"t\" (subject) line 3"
    );
}

#[test]
fn text_is_not_escaped_but_html_is() {
    let t = one("{{contact.x}}");
    let c = json!({"contact": {"x": "<b> & \"q\""}});
    assert_eq!(t.render("t", &c).unwrap().body, "<b> & \"q\"");
    assert_eq!(
        t.render_html("t", &c).unwrap().body,
        "&lt;b&gt; &amp; &quot;q&quot;"
    );
}

#[test]
fn unknown_template_is_an_error() {
    let t = one("x");
    assert_eq!(
        t.render("nope", &ctx()).unwrap_err().to_string(),
        "no template \"nope\""
    );
}

#[test]
fn partials_and_decorators_are_refused() {
    assert!(Templates::from_sources([("a", "{{> b}}"), ("b", "x")]).is_err());
    assert!(Templates::from_sources([("a", "{{#*inline \"p\"}}x{{/inline}}")]).is_err());
    assert!(Templates::from_sources([("a", "{{#if x}}{{> b}}{{/if}}")]).is_err());
}

#[test]
fn compile_error_position_points_at_the_real_file_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.hbs"),
        "---\nsubject: Hello\n---\nline four\n  {{#if contact.name}}unclosed\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("good.hbs"), "Hi {{contact.name}}").unwrap();
    std::fs::write(dir.path().join("ignored.txt"), "{{").unwrap();
    let (t, diags) = Templates::load(dir.path());
    assert!(t.contains("good"));
    assert!(!t.contains("bad"));
    assert_eq!(t.names().collect::<Vec<_>>(), ["good"]);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert!(diags[0].file.ends_with("bad.hbs"));
    assert!(diags[0].pos.line >= 5, "{:?}", diags[0]);
}

#[test]
fn syntax_error_in_body_after_front_matter_is_offset() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("x.hbs"),
        "---\nsubject: Hi\n---\nok\n{{contact.name}\n",
    )
    .unwrap();
    let (_, diags) = Templates::load(dir.path());
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0].pos.line, 5, "{:?}", diags[0]);
}

#[test]
fn syntax_error_in_front_matter_value_points_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("x.hbs"),
        "---\n# c\nsubject: Hi {{contact.name\n---\nok\n",
    )
    .unwrap();
    let (_, diags) = Templates::load(dir.path());
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0].pos.line, 3, "{:?}", diags[0]);
}

#[test]
fn bad_front_matter_is_a_diagnostic() {
    for (src, line) in [
        ("---\nsubject Hi\n---\nx", 2),
        ("---\nsubject: \"Hi\n---\nx", 2),
        ("---\nsubject: Hi\n", 1),
        ("---\nsubject: a\nsubject: b\n---\nx", 3),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.hbs"), src).unwrap();
        let (t, diags) = Templates::load(dir.path());
        assert!(!t.contains("x"));
        assert_eq!(diags.len(), 1, "{src:?}: {diags:?}");
        assert_eq!(diags[0].pos.line, line, "{src:?}: {diags:?}");
    }
}

#[test]
fn render_context_has_contact_owner_workflow_and_local_now() {
    let contact = Contact {
        id: "c1".into(),
        name: Some("Ada".into()),
        timezone: Some("Europe/London".into()),
        created_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        ..Contact::default()
    };
    let now = Utc.with_ymd_and_hms(2026, 7, 1, 8, 0, 0).unwrap();
    let v = render_context(&contact, None, "wb", now, chrono_tz::Asia::Shanghai);
    assert_eq!(v["now"], "2026-07-01T09:00:00+01:00");
    assert_eq!(v["workflow"]["name"], "wb");
    assert!(v.get("owner").is_none());
    let t = one("{{contact.name}} {{#if owner}}{{owner.name}}{{else}}-{{/if}} {{workflow.name}}");
    assert_eq!(t.render("t", &v).unwrap().body, "Ada - wb");
    let v = render_context(
        &contact,
        Some(&json!({"name": "Li"})),
        "wb",
        now,
        chrono_tz::Asia::Shanghai,
    );
    assert_eq!(t.render("t", &v).unwrap().body, "Ada Li wb");

    let no_tz = Contact {
        timezone: None,
        ..contact
    };
    let v = render_context(&no_tz, None, "wb", now, chrono_tz::Asia::Shanghai);
    assert_eq!(v["now"], "2026-07-01T16:00:00+08:00");
}

#[test]
fn templates_are_send_sync_and_clone() {
    fn check<T: Send + Sync + Clone>() {}
    check::<Templates>();
    let t = one("Hi {{contact.name}}");
    let ctx = handlebars::Context::from(ctx());
    assert_eq!(t.clone().render_with("t", &ctx).unwrap().body, "Hi Ada");
}
