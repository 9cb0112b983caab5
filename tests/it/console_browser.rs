//! The console in a real browser: Debian's headless Chromium driven through
//! chromedriver (WebDriver, `fantoccini`). Sign-in and refusal without a
//! token, each page on the quick start, the diagram's nodes, a contact
//! search for a Chinese name, and the preview paging through 100,000 rows
//! 50 at a time. Screenshots go to `target/tmp/console-screenshots/`.
//!
//! Skipped, saying so, when chromium or chromedriver is not installed
//! (`.ci/run` installs both).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::support;
use support::console::quick_start;
use support::daemon::TOKEN;

fn find(names: &[&str]) -> Option<PathBuf> {
    names.iter().map(PathBuf::from).find(|p| p.exists())
}

struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Option<(Driver, PathBuf)> {
    let chromium = find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"])?;
    let driver = find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])?;
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some((
        Driver {
            child,
            port,
            _profile: tempfile::tempdir().unwrap(),
        },
        chromium,
    ))
}

async fn browser(d: &Driver, chromium: &PathBuf) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", tempfile::tempdir().unwrap().keep().display()),
                "--window-size=1400,1000", "--lang=zh-CN",
            ],
            "prefs": {"intl.accept_languages": "zh-CN,zh"},
        }),
    );
    // A 100,000-row preview re-runs the simulation per page: on a loaded
    // machine (the whole suite on PostgreSQL) it takes longer than
    // WebDriver's default 30 s script timeout.
    caps.insert(
        "timeouts".into(),
        json!({ "script": 180_000, "pageLoad": 300_000 }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.port))
        .await
        .expect("a WebDriver session")
}

/// Polls `script` (which returns a value) until it is truthy.
async fn wait_for(c: &Client, what: &str, script: &str) -> Value {
    wait_up_to(c, Duration::from_secs(60), what, script).await
}

/// [`wait_for`] with its own deadline.
async fn wait_up_to(c: &Client, limit: Duration, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let v = c.execute(script, vec![]).await.unwrap();
        let ok = match &v {
            Value::Bool(b) => *b,
            Value::Null => false,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if ok {
            return v;
        }
        if Instant::now() > deadline {
            let text: Value = c
                .execute("return document.body.innerText", vec![])
                .await
                .unwrap_or(Value::Null);
            panic!("timed out waiting for {what}; page text:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

fn shots() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots().join(name), png).unwrap();
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/console/")).await.unwrap();
    wait_for(
        c,
        "the sign-in form",
        "return !!document.querySelector('#login #token')",
    )
    .await;
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    c.find(Locator::Css("#login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_in_chromium() {
    let Some((driver, chromium)) = start_driver() else {
        eprintln!(
            "SKIPPED the_console_in_chromium: chromium and chromedriver are not installed \
             (apt-get install -y chromium chromium-driver; .ci/run does it)"
        );
        return;
    };
    let (p, d) = quick_start(200).await;
    let base = format!("http://{}", d.addr);
    let c = browser(&driver, &chromium).await;

    // Refused without a token: the page asks for one, the API says 401.
    c.goto(&format!("{base}/console/")).await.unwrap();
    wait_for(
        &c,
        "the sign-in form",
        "return !!document.querySelector('#login')",
    )
    .await;
    let status = c
        .execute_async(
            "const done = arguments[0]; fetch('/v1/workflows').then(r => done(r.status))",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(401));
    // Chinese by the browser's language.
    let lang = c
        .execute("return document.documentElement.lang", vec![])
        .await
        .unwrap();
    assert_eq!(lang, json!("zh-CN"));
    shot(&c, "0-sign-in.png").await;
    sign_in(&c, &base, "wrong-token").await;
    wait_for(
        &c,
        "the refusal",
        "return document.querySelector('#login-error').textContent",
    )
    .await;

    // Signed in: the journeys, a card each; the cookie is out of the script's reach.
    sign_in(&c, &base, TOKEN).await;
    wait_for(
        &c,
        "every journey",
        &format!(
            "return document.querySelectorAll('.workflow').length === {n}",
            n = support::console::WORKFLOWS.len()
        ),
    )
    .await;
    let cookie = c.execute("return document.cookie", vec![]).await.unwrap();
    assert_eq!(cookie, json!(""), "the session cookie is HttpOnly");
    shot(&c, "1-journeys.png").await;

    // A diagram has the right nodes, with live counts.
    c.goto(&format!("{base}/console/#/journey/welcome-wecom"))
        .await
        .unwrap();
    let ids = wait_for(
        &c,
        "the diagram",
        "const n = [...document.querySelectorAll('#diagram g.node')].map(g => g.dataset.id); return n.length ? n : null",
    )
    .await;
    assert_eq!(
        ids,
        json!([
            "trigger",
            "assign-owner",
            "welcome",
            "2",
            "check-reply",
            "check-reply.then.0",
            "check-reply.else.0",
            "end",
            "goal"
        ])
    );
    let counts = c
        .execute("return document.querySelector('#diagram g.node[data-id=\"trigger\"] .counts').textContent", vec![])
        .await
        .unwrap();
    assert!(counts.as_str().unwrap().starts_with("进入 "), "{counts}");
    // A part the page leaves out (no pause, no description) is left out, not
    // printed as "null".
    let text = c
        .execute("return document.querySelector('main').innerText", vec![])
        .await
        .unwrap();
    assert!(
        !text.as_str().unwrap().lines().any(|l| l.trim() == "null"),
        "{text}"
    );
    shot(&c, "2-journey-diagram.png").await;

    // Performance.
    c.goto(&format!("{base}/console/#/performance"))
        .await
        .unwrap();
    wait_for(&c, "the reports", &format!("return document.querySelectorAll('.report svg.chart').length === {n} && !!document.querySelector('#channels tbody tr')", n = support::console::WORKFLOWS.len())).await;
    // The A/B workflow's groups (all, each arm, treatment, holdout), in Chinese.
    wait_for(&c, "the arms", "const t = document.querySelector('.card.arms[data-workflow=\"reactivation-ab\"]'); return !!t && t.querySelectorAll('tr[data-group]').length === 5 && !!t.querySelector('tr[data-group=\"holdout\"]') && t.textContent.includes('各实验组与对照组') && !!t.querySelector('svg.chart')").await;
    shot(&c, "3-performance.png").await;

    // English on demand.
    c.find(Locator::Css("#lang"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, "English", &format!("return document.documentElement.lang === 'en' && document.querySelectorAll('.report').length === {n}", n = support::console::WORKFLOWS.len())).await;
    c.find(Locator::Css("#lang"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // A contact search finds a Chinese name; the customer's page.
    c.goto(&format!(
        "{base}/console/#/contacts?q=%E5%91%A8%E6%99%93%E6%98%8E"
    ))
    .await
    .unwrap();
    wait_for(
        &c,
        "the search result",
        "return [...document.querySelectorAll('#results a')].some(a => a.textContent === '周晓明')",
    )
    .await;
    c.find(Locator::LinkText("周晓明"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, "the customer", "return document.querySelector('#contact-name')?.textContent === '周晓明' && document.querySelectorAll('#timeline li').length > 0").await;
    shot(&c, "4-customer.png").await;

    // Preview of the quick start.
    c.goto(&format!(
        "{base}/console/#/preview?at=2026-11-01T10%3A00&until=2d"
    ))
    .await
    .unwrap();
    wait_for(&c, "the preview", &format!("return document.querySelectorAll('#preview-summary tbody tr').length === {n} && !!document.querySelector('#range')", n = support::console::WORKFLOWS.len())).await;
    shot(&c, "5-preview.png").await;
    let _ = c.close().await;
    let (st, _) = d.terminate(Duration::from_secs(20));
    assert!(st.success());

    // 100,000 new contacts: the preview pages through their rows 50 at a time.
    let now = chrono::Utc::now().timestamp_millis();
    p.exec(&format!(
        "INSERT INTO contacts (id, name, wecom_external_userid, created_at, updated_at, attrs) \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) \
         SELECT 'b' || i, '客户' || i, 'wm_b' || i, {now}, {now}, '{{}}' FROM n"
    ))
    .await;
    let mut console = p
        .command()
        .args(["console", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(console.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let base = line
        .trim()
        .strip_prefix("console on ")
        .unwrap()
        .trim_end_matches("/console/")
        .to_string();
    let c = browser(&driver, &chromium).await;
    sign_in(&c, &base, support::console::CONSOLE_TOKEN).await;
    wait_for(
        &c,
        "journeys",
        &format!(
            "return document.querySelectorAll('.workflow').length === {n}",
            n = support::console::WORKFLOWS.len()
        ),
    )
    .await;
    c.goto(&format!("{base}/console/#/preview?workflow=welcome-wecom"))
        .await
        .unwrap();
    // The preview plans 100,000 contacts before its first page: about a
    // minute in a debug build on two busy CPUs (it took over 60 s twice
    // while other builds ran). The paging is what is tested here, not the
    // time; the release build's times are in BENCHMARKS.md.
    let range = wait_up_to(
        &c,
        Duration::from_secs(300),
        "the first page",
        "return document.querySelector('#range')?.textContent",
    )
    .await;
    let matched: u64 = c
        .execute_async(
            "const done = arguments[0]; fetch('/v1/dry-run?workflow=welcome-wecom&limit=1').then(r => r.json()).then(v => done(v.matched))",
            vec![],
        )
        .await
        .unwrap()
        .as_u64()
        .unwrap();
    assert!(matched >= 100_000, "{matched} rows; {range}");
    for page in 1..=2u64 {
        let rows = c
            .execute(
                "return document.querySelectorAll('#preview-rows tbody tr').length",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(rows, json!(50), "one page in the page, never all {matched}");
        c.find(Locator::Css("#next"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let want = format!("{}", page * 50 + 1);
        // Each page runs the simulation again: the first page's allowance.
        wait_up_to(
            &c,
            Duration::from_secs(300),
            "the next page",
            &format!(
                "return (document.querySelector('#range')?.textContent || '').includes('{want}')"
            ),
        )
        .await;
    }
    let range = c
        .execute(
            "return document.querySelector('#range').textContent",
            vec![],
        )
        .await
        .unwrap();
    assert!(range.as_str().unwrap().contains("101"), "{range}");
    shot(&c, "6-preview-100k.png").await;
    let _ = c.close().await;
    let _ = Command::new("kill")
        .args(["-TERM", &console.id().to_string()])
        .status();
    let _ = console.wait();
    eprintln!("screenshots in {}", shots().display());
}
