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

/// `n` nested `{{#if}}` blocks around one variable.
fn nested_ifs(n: usize) -> String {
    format!(
        "{}{{{{contact.name}}}}{}",
        "{{#if contact.name}}".repeat(n),
        "{{/if}}".repeat(n)
    )
}

#[test]
fn deep_nesting_is_refused_at_compile_with_its_position() {
    // 5,000 levels used to overflow the stack in handlebars' compiler (every
    // command aborted); 1,200 compiled and overflowed the daemon's render.
    for n in [5_000, 1_200, 33] {
        let src = format!("Hello\n{}", nested_ifs(n));
        let err = Templates::from_sources([("deep", src.as_str())]).unwrap_err();
        assert!(err.message.contains("nested more than 32 deep"), "{err:?}");
        // The 33rd `{{#if` of line 2: columns count from 1, each tag is 20 wide.
        assert_eq!((err.pos.line, err.pos.col), (2, 32 * 20 + 1), "{n}");
    }
    // 32 levels are fine and render.
    let t = Templates::from_sources([("ok", nested_ifs(32))]).unwrap();
    assert_eq!(t.render("ok", &ctx()).unwrap().body, "Ada");
}

#[test]
fn else_if_chains_and_subexpressions_count_as_nesting() {
    let chain = format!(
        "{{{{#if contact.x}}}}{}x{{{{/if}}}}",
        "{{else if contact.y}}".repeat(40)
    );
    let err = Templates::from_sources([("chain", chain.as_str())]).unwrap_err();
    assert!(err.message.contains("nested more than 32 deep"), "{err:?}");
    let parens = format!(
        "{{{{default {}contact.name{} \"x\"}}}}",
        "(default ".repeat(20),
        " \"y\")".repeat(20)
    );
    let err = Templates::from_sources([("parens", parens.as_str())]).unwrap_err();
    assert!(err.message.contains("subexpressions are nested"), "{err:?}");
    // Siblings do not add up: 100 blocks one after another are one level.
    let siblings = "{{#if contact.name}}a{{else if contact.n}}b{{else}}c{{/if}}".repeat(100);
    Templates::from_sources([("siblings", siblings.as_str())]).unwrap();
}

#[test]
fn rendered_output_is_bounded_and_over_the_limit_is_an_error() {
    use nurture::template::MessageLimit;
    // Two nested `{{#each}}` over 10,000 tags: 100 million items, hundreds of
    // megabytes if rendered; stopped at the bound instead.
    let tags: Vec<String> = (0..10_000).map(|i| format!("tag{i:05}")).collect();
    let data = json!({"contact": {"name": "Ada", "tags": tags}});
    let t = one("{{#each contact.tags}}{{#each ../contact.tags}}{{this}},{{/each}}{{/each}}");
    let started = std::time::Instant::now();
    let err = t.render("t", &data).unwrap_err();
    assert!(
        matches!(&err, TemplateError::TooLong { limit, .. } if limit == "1048576 bytes"),
        "{err:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // A channel's own limit, counted in characters or bytes.
    let t = one("{{contact.name}}，您好！");
    let hb = handlebars::Context::from(ctx());
    assert_eq!(
        t.render_limited("t", &hb, MessageLimit::Chars(7))
            .unwrap()
            .body,
        "Ada，您好！"
    );
    let err = t
        .render_limited("t", &hb, MessageLimit::Chars(6))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "message is over the channel's limit of 6 characters in template \"t\""
    );
    assert!(matches!(
        t.render_limited("t", &hb, MessageLimit::Bytes(14)),
        Err(TemplateError::TooLong { .. })
    ));
}

#[test]
fn log_helper_is_refused() {
    // `{{log}}` wrote contact data into the daemon's log at every render.
    for src in [
        "Hi {{log contact.phone}}",
        "{{#if contact.name}}\n  {{log contact}}{{/if}}",
    ] {
        let err = Templates::from_sources([("t", src)]).unwrap_err();
        assert!(
            err.message.contains("{{log}} is disabled"),
            "{src}: {err:?}"
        );
    }
    let err = Templates::from_sources([("t", "a\n  {{log \"x\"}}")]).unwrap_err();
    assert_eq!((err.pos.line, err.pos.col), (2, 3));
}
