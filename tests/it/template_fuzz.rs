//! Compiling and rendering arbitrary template text never panics.

use nurture::template::Templates;
use proptest::prelude::*;
use serde_json::json;

fn pieces() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{{".to_string()),
        Just("}}".to_string()),
        Just("{{{".to_string()),
        Just("}}}".to_string()),
        Just("{{#if contact.name}}".to_string()),
        Just("{{else}}".to_string()),
        Just("{{/if}}".to_string()),
        Just("{{#each contact.tags}}".to_string()),
        Just("{{/each}}".to_string()),
        Just("{{> p}}".to_string()),
        Just("{{#*inline \"p\"}}".to_string()),
        Just("{{/inline}}".to_string()),
        Just("{{default contact.city \"x\"}}".to_string()),
        Just("{{default}}".to_string()),
        Just("{{lookup contact \"name\"}}".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just("---\n".to_string()),
        Just("subject: ".to_string()),
        Just("\"".to_string()),
        Just("contact.name".to_string()),
        Just("../".to_string()),
        Just("@root".to_string()),
        Just("\n".to_string()),
        "[a-z \\\\~!]{0,4}".prop_map(|s| s),
        any::<char>().prop_map(|c| c.to_string()),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, .. ProptestConfig::default() })]

    #[test]
    fn never_panics(src in pieces()) {
        let data = json!({"contact": {"name": "Ada", "tags": ["a", "b"], "n": 1}});
        let mut t = Templates::empty();
        let _ = t.add("t", &src);
        if t.contains("t") {
            let _ = t.render("t", &data);
            let _ = t.render_html("t", &data);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(src in ".{0,64}") {
        let mut t = Templates::empty();
        let _ = t.add("t", &src);
        if t.contains("t") {
            let _ = t.render("t", &json!({}));
        }
    }
}
