use super::*;

#[test]
fn on_cap_is_skip_by_default_or_defer() {
    let s = |src: &str| Settings::parse_str(Path::new("nurture.yaml"), src);
    let cap = |src: &str| s(src).unwrap().policies.frequency_cap.unwrap().on_cap;
    assert_eq!(
        cap("policies:\n  frequency_cap: { max: 3, per: 7d }\n"),
        OnCap::Skip
    );
    assert_eq!(
        cap("policies:\n  frequency_cap: { max: 3, per: 7d, on_cap: defer }\n"),
        OnCap::Defer
    );
    let d = s("policies:\n  frequency_cap: { max: 3, per: 7d, on_cap: defr }\n").unwrap_err();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].pos, Pos::new(2, 45));
    assert!(
        d[0].message
            .contains("on_cap \"defr\" must be skip or defer")
    );
    assert_eq!(d[0].suggestion.as_deref(), Some("did you mean \"defer\"?"));
}
