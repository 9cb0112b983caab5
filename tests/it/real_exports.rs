//! Issue 11, item 10: imports from real exports. Declared field types are
//! enforced (a bad cell is a bad row with its line and column), Excel's date
//! forms are read in the settings' time zone, GBK/GB18030 files are detected
//! or named with --encoding, a BOM is ignored, and --dry-run writes nothing.

use crate::support;

use support::daemon::Project;

const SETTINGS: &str = "timezone: Asia/Shanghai
channels:
  sms: { kind: log }
fields:
  lifetime_value: number
  vip: bool
  signup_at: timestamp
";

/// Runs `contacts import FILE ARGS`; gives the exit code, stdout without
/// the timing, and stderr with the project folder as DIR.
fn import(p: &Project, file: &str, args: &[&str]) -> (i32, String, String) {
    let out = p
        .command()
        .args(["contacts", "import", p.path(file).to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let dir = p.dir.path().display().to_string();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stdout = match stdout.find(" (") {
        Some(i) => {
            let rest = &stdout[i..];
            let close = rest.find(')').unwrap();
            format!("{}{}", &stdout[..i], &rest[close + 1..])
        }
        None => stdout,
    };
    (
        out.status.code().unwrap_or(-1),
        stdout.replace(&dir, "DIR"),
        String::from_utf8(out.stderr).unwrap().replace(&dir, "DIR"),
    )
}

async fn contacts(p: &Project) -> String {
    p.rows("SELECT id, name, created_at, attrs FROM contacts ORDER BY id")
        .await
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r["id"], r["name"], r["created_at"], r["attrs"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn declared_types_are_enforced_and_excel_dates_read_in_the_settings_zone() {
    let p = Project::new(SETTINGS);
    p.write(
        "c.csv",
        "\u{feff}id,name,lifetime_value,vip,signup_at,created_at,city\n\
         c1,周晓明,1200.50,TRUE,2026/5/1 9:00,2026-05-01 09:00:00,上海\n\
         c2,王芳,lots,true,2026-05-01,2026/5/1,北京\n\
         c3,李雷,300,yes,2026/5/1 9:00,2026/5/1 9:00:00,杭州\n\
         c4,陈静,88,是的,next week,,深圳\n\
         c5,Ann,1e3,0,2026-05-01T09:00:00+08:00,2026-05-01,\n",
    );
    let (code, out, err) = import(&p, "c.csv", &[]);
    assert_eq!(code, 1, "{out}{err}");
    insta::assert_snapshot!(format!("{out}{err}"));
    insta::assert_snapshot!("declared_types_stored", contacts(&p).await);
}

#[tokio::test]
async fn gbk_files_are_detected_or_named_and_a_bom_is_ignored() {
    let p = Project::new(SETTINGS);
    let text = "id,name,city,created_at\ng1,周晓明,上海,2026/5/1\ng2,欧阳娜娜,北京,2026/5/2 8:30\n";
    let (gbk, _, unmappable) = encoding_rs::GB18030.encode(text);
    assert!(!unmappable);
    std::fs::write(p.path("gbk.csv"), &gbk).unwrap();
    let (code, out, err) = import(&p, "gbk.csv", &[]);
    assert_eq!(code, 0, "{out}{err}");
    // Named outright, the same file imports the same (unchanged).
    let (code, out2, err2) = import(&p, "gbk.csv", &["--encoding", "gbk"]);
    assert_eq!(code, 0, "{out2}{err2}");
    // Neither UTF-8 nor GB18030: each row says how to save the file.
    std::fs::write(p.path("bad.csv"), b"id,name\nb1,\xff\xfe\xff\n").unwrap();
    let (code, out3, err3) = import(&p, "bad.csv", &[]);
    assert_eq!(code, 1);
    let (code, _, err4) = import(&p, "gbk.csv", &["--encoding", "big5"]);
    assert_eq!(code, 1);
    insta::assert_snapshot!(format!(
        "{out}{err}{out2}{err2}{out3}{err3}{err4}\n{}",
        contacts(&p).await
    ));
}

#[tokio::test]
async fn a_dry_run_reports_what_would_change_and_writes_nothing() {
    let p = Project::new(SETTINGS);
    p.write("a.csv", "id,name,tags\nc1,周晓明,vip\n");
    import(&p, "a.csv", &[]);
    p.write(
        "b.csv",
        "id,name,lifetime_value\nc1,周晓明,100\nc2,王芳,200\nc3,李雷,abc\n",
    );
    let (code, out, err) = import(&p, "b.csv", &["--dry-run"]);
    assert_eq!(code, 1, "{out}{err}");
    insta::assert_snapshot!(format!("{out}{err}"));
    assert_eq!(p.count("SELECT count(*) FROM contacts").await, 1);
    assert_eq!(p.count("SELECT count(*) FROM event_log").await, 2);
}
