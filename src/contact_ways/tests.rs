use std::collections::HashMap;
use std::path::Path;

use chrono::DateTime;

use super::*;

fn way(src: &str) -> (Option<ContactWay>, Vec<Diagnostic>) {
    load_str(Path::new("contact_ways/douyin-0618.yaml"), src)
}

#[test]
fn reads_a_code_and_reports_mistakes_with_places() {
    let (w, d) = way(
        "staff:\n  pool: [a, b]\n  strategy: least_loaded\n  backup: c\n  daily_cap: 2\n  online_hours: \"09:00-21:00\"\ntags: [douyin]\nwelcome: hi\nremark: 抖音\n",
    );
    assert!(d.is_empty(), "{d:?}");
    let w = w.unwrap();
    assert_eq!(w.name, "douyin-0618");
    assert_eq!(w.strategy, PoolStrategy::LeastLoaded);
    assert_eq!(w.backup[0].value, "c");
    assert_eq!(wecom_type(&w), 2);
    let (_, d) = way(
        "staff:\n  pool: [a]\n  stratgy: round_robin\nremark: 一二三四五六七八九十一二三四五六七八九十一二三四五六七八九十一\n",
    );
    let text: Vec<String> = d.iter().map(|d| d.headline()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("3:3") && t.contains("stratgy")),
        "{text:?}"
    );
    assert!(d.iter().any(|d| {
        d.suggestion
            .as_deref()
            .is_some_and(|s| s.contains("strategy"))
    }));
    assert!(
        text.iter()
            .any(|t| t.contains("4:9") && t.contains("at most 30")),
        "{text:?}"
    );
}

#[test]
fn members_follow_caps_hours_and_strategy() {
    let (w, _) = way(
        "staff:\n  pool: [a, b]\n  strategy: least_loaded\n  backup: [c]\n  daily_cap: 2\n  online_hours: \"09:00-21:00\"\n",
    );
    let w = w.unwrap();
    let s = Settings::defaults(PathBuf::from("."));
    // 10:00 in Shanghai.
    let at = DateTime::parse_from_rfc3339("2026-06-18T02:00:00Z")
        .unwrap()
        .to_utc();
    let mut adds = HashMap::new();
    adds.insert("a".to_string(), 1);
    assert_eq!(members_now(&w, &s, at, &adds).0, vec!["b"]);
    adds.insert("b".to_string(), 1);
    assert_eq!(members_now(&w, &s, at, &adds).0, vec!["a", "b"]);
    adds.insert("a".to_string(), 2);
    adds.insert("b".to_string(), 2);
    assert_eq!(members_now(&w, &s, at, &adds).0, vec!["c"]);
    // 22:00 in Shanghai: backup only.
    let late = DateTime::parse_from_rfc3339("2026-06-18T14:00:00Z")
        .unwrap()
        .to_utc();
    assert_eq!(members_now(&w, &s, late, &HashMap::new()).0, vec!["c"]);
    assert_eq!(
        day_start(&s, late).to_rfc3339(),
        "2026-06-17T16:00:00+00:00"
    );
}
