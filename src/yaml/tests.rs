use super::*;

fn p(src: &str) -> (Option<Node>, Vec<Diagnostic>) {
    parse(Path::new("t.yaml"), src)
}

#[test]
fn positions_are_one_based() {
    let (n, d) = p("name: x\nsteps:\n  - wait: 3d\n");
    assert!(d.is_empty(), "{d:?}");
    let n = n.unwrap();
    let steps = n.get("steps").unwrap();
    assert_eq!(steps.pos, Pos::new(3, 3));
    let wait = &steps.as_seq().unwrap()[0];
    let (k, v) = &wait.as_map().unwrap()[0];
    assert_eq!(k.pos, Pos::new(3, 5));
    assert_eq!(v.pos, Pos::new(3, 11));
    assert_eq!(n.get("name").unwrap().pos, Pos::new(1, 7));
}

#[test]
fn scalars_are_typed_unless_quoted() {
    let (n, _) = p("a: true\nb: 'true'\nc: 12\nd: \"12\"\ne: ~\nf:\ng: 1.5\nh: !!str 7\n");
    let n = n.unwrap();
    assert_eq!(n.get("a").unwrap().as_bool(), Some(true));
    assert_eq!(n.get("b").unwrap().as_bool(), None);
    assert_eq!(n.get("b").unwrap().as_str(), Some("true"));
    assert_eq!(n.get("c").unwrap().as_i64(), Some(12));
    assert_eq!(n.get("c").unwrap().as_str(), None);
    assert_eq!(n.get("d").unwrap().as_i64(), None);
    assert!(n.get("e").unwrap().is_null());
    assert!(n.get("f").unwrap().is_null());
    assert_eq!(n.get("g").unwrap().as_f64(), Some(1.5));
    assert_eq!(n.get("h").unwrap().as_str(), Some("7"));
}

#[test]
fn duplicate_keys_are_reported() {
    let (n, d) = p("a: 1\nb: 2\na: 3\n");
    assert_eq!(n.unwrap().get("a").unwrap().as_i64(), Some(1));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].pos, Pos::new(3, 1));
    assert!(d[0].message.contains("duplicate key \"a\""));
}

#[test]
fn aliases_resolve() {
    let (n, d) = p("x: &t { tag: vip }\ny: *t\n");
    assert!(d.is_empty(), "{d:?}");
    let n = n.unwrap();
    assert_eq!(
        n.get("y").unwrap().get("tag").unwrap().as_str(),
        Some("vip")
    );
    assert_eq!(n.get("y").unwrap().pos, Pos::new(2, 4));
}

#[test]
fn hostile_input_is_refused() {
    let deep = "[".repeat(10_000);
    let (n, d) = p(&deep);
    assert!(n.is_none() && !d.is_empty());
    let laughs = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n";
    let (n, d) = p(laughs);
    assert!(n.is_none());
    assert!(d[0].message.contains("too large"), "{d:?}");
}

#[test]
fn empty_multi_and_broken_documents() {
    let (n, d) = p("");
    assert!(n.unwrap().is_null() && d.is_empty());
    let (n, d) = p("# only a comment\n");
    assert!(n.unwrap().is_null() && d.is_empty());
    let (n, d) = p("a: 1\n---\nb: 2\n");
    assert!(n.is_none());
    assert_eq!(d[0].pos.line, 2);
    let (n, d) = p("a:\n  b: 1\n c: 2\n");
    assert!(n.is_none());
    assert!(d[0].message.starts_with("YAML syntax error"), "{d:?}");
    assert_eq!(d[0].pos.line, 3);
}
