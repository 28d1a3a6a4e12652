//! The decision dashboard in a real browser: `atrion serve` (two nodes over a private
//! Redis), `atrion demo-traffic` tripping a route, and Chromium (and Firefox, where its
//! driver is installed) driven over WebDriver. The tests assert what a person would see:
//! the route appears, turns open and back, the nodes are listed and one that goes away
//! turns so, an admin action is refused without the token and done with it, the page
//! reconnects when the sidecar restarts. They save screenshots (desktop and phone width)
//! under the target directory, and into `docs/images` with `ATRION_SCREENSHOTS=docs`.
//!
//! The browsers come from Debian's packages (`chromium`, `chromium-driver`, `firefox-esr`)
//! and geckodriver from crates.io; `scripts/test` installs them. A missing browser fails the
//! test, unless `ATRION_SKIP_SERVICES=1` is set by hand.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use atrion_redis::testing::RedisServer;
use common::{Serve, eventually, free_port};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const TOKEN: &str = "dashboard-secret-0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Browser {
    Chromium,
    Firefox,
}

/// A WebDriver server (chromedriver or geckodriver) on a free port; killed when dropped.
struct Driver {
    child: Child,
    port: u16,
    browser: Browser,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn found(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

impl Driver {
    fn start(browser: Browser) -> Option<Driver> {
        let (driver, binary) = match browser {
            Browser::Chromium => ("chromedriver", "chromium"),
            Browser::Firefox => ("geckodriver", "firefox-esr"),
        };
        if !found(driver) || !found(binary) {
            if std::env::var("ATRION_SKIP_SERVICES").is_ok_and(|v| v == "1") {
                eprintln!("skipped: {driver} or {binary} not found and ATRION_SKIP_SERVICES=1");
                return None;
            }
            panic!("{driver} or {binary} not found: install them (scripts/test does) or set ATRION_SKIP_SERVICES=1");
        }
        let port = free_port();
        let mut cmd = Command::new(driver);
        match browser {
            Browser::Chromium => cmd.arg(format!("--port={port}")),
            Browser::Firefox => cmd.args(["--port", &port.to_string(), "--log", "error"]),
        };
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("the WebDriver server starts");
        Some(Driver { child, port, browser })
    }

    /// A browser session, headless, with a laptop's window.
    async fn session(&self) -> Client {
        let caps = match self.browser {
            Browser::Chromium => json!({
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                             "--window-size=1366,900", "--hide-scrollbars", "--force-device-scale-factor=1"],
                },
            }),
            Browser::Firefox => json!({
                "browserName": "firefox",
                "moz:firefoxOptions": { "args": ["-headless", "--width=1366", "--height=900"] },
            }),
        };
        let caps = caps.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{}", self.port);
        eventually("the WebDriver server accepts a session", || {
            let caps = caps.clone();
            let url = url.clone();
            async move {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                ClientBuilder::new(connector).capabilities(caps).connect(&url).await.ok()
            }
        })
        .await
    }
}

/// Runs `script` in the page and returns its value.
async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap_or(Value::Null)
}

/// The mode a route's row shows, if the row is on the page.
async fn row_mode(c: &Client, route: &str) -> Option<String> {
    let v = js(
        c,
        &format!(
            "const r = [...document.querySelectorAll('#routes tbody tr')].find(t => !t.hidden && t.dataset.route === {});
             return r ? r.querySelector('.mode').textContent : null;",
            json!(route)
        ),
    )
    .await;
    v.as_str().map(str::to_owned)
}

async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
}

async fn goto(c: &Client, base: &str, hash: &str) {
    c.goto(&format!("{base}/{hash}")).await.unwrap();
}

/// Saves a screenshot under the target directory and, with `ATRION_SCREENSHOTS=docs`, in
/// `docs/images`.
async fn screenshot(c: &Client, name: &str) {
    // Let the last update paint.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), &png).unwrap();
    if std::env::var("ATRION_SCREENSHOTS").is_ok_and(|v| v == "docs") {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/images");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join(name), &png).unwrap();
    }
}

/// Clicks a route action's button, confirms, and returns what the page says of it.
async fn act(c: &Client, action: &str) -> (bool, String) {
    js(c, "const r = document.querySelector('#action-result'); r.textContent = ''; delete r.dataset.ok; return 0;")
        .await;
    click(c, &format!("#route-actions button[data-act='{action}']")).await;
    eventually("the confirmation asks", || async {
        js(c, "return document.querySelector('#confirm').open").await.as_bool().unwrap_or(false).then_some(())
    })
    .await;
    assert!(text(c, "#confirm-text").await.starts_with("Really "), "the dialog asks before acting");
    click(c, "#confirm-ok").await;
    eventually("the action's result shows", || async {
        let ok = js(c, "return document.querySelector('#action-result').dataset.ok || null").await;
        let ok = ok.as_str()? == "true";
        Some((ok, text(c, "#action-result").await))
    })
    .await
}

struct DemoTraffic(Child);

impl Drop for DemoTraffic {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn demo_traffic(url: &str) -> DemoTraffic {
    let child = Command::new(env!("CARGO_BIN_EXE_atrion"))
        .args(["demo-traffic", "--server", url, "--healthy-secs", "8", "--failing-secs", "8", "--print-every", "0"])
        .stdout(Stdio::null())
        .spawn()
        .expect("demo-traffic starts");
    DemoTraffic(child)
}

fn start_node(redis: &str, id: &str, listen: &str) -> Serve {
    Serve::start(
        &["--store", redis, "--node-id", id, "--namespace", "dash", "--listen", listen],
        &[("ATRION_ADMIN_TOKENS", &format!("ops:{TOKEN}"))],
    )
}

/// Everything a person checks on the dashboard, in one browser.
async fn walkthrough(browser: Browser, shots: bool) {
    let Some(redis) = RedisServer::start() else { return };
    let Some(driver) = Driver::start(browser) else { return };
    let listen = format!("127.0.0.1:{}", free_port());
    let a = start_node(&redis.url(), "a", &listen);
    let b = start_node(&redis.url(), "b", &format!("127.0.0.1:{}", free_port()));
    let _traffic = demo_traffic(&a.url);
    let c = driver.session().await;
    let base = a.url.clone();
    goto(&c, &base, "#/routes").await;
    eventually("the page titles itself", || async { (c.title().await.ok()? == "Routes · Atrion").then_some(()) }).await;

    // The routes appear, live; the failing one turns open, then back.
    eventually("the failing route appears", || async { row_mode(&c, "GET /search").await }).await;
    eventually("the page says it is live", || async { (text(&c, "#conn").await == "live").then_some(()) }).await;
    eventually("the failing route turns open", || async {
        (row_mode(&c, "GET /search").await.as_deref() == Some("open")).then_some(())
    })
    .await;
    let summary = text(&c, "#summary").await;
    assert!(summary.contains("routes") && summary.contains("1 open"), "{summary}");
    if shots {
        screenshot(&c, "dashboard-routes.png").await;
    }
    eventually("the failing route closes again when it heals", || async {
        (row_mode(&c, "GET /search").await.as_deref() == Some("operational")).then_some(())
    })
    .await;

    // Its page: charts drawn, transitions listed, the latest decisions with reasons.
    click(&c, "#routes tbody tr[data-route='GET /search'] a").await;
    eventually("the route's page shows its transitions", || async {
        let t = text(&c, "#transitions").await;
        (t.contains("open") && t.contains("operational")).then_some(())
    })
    .await;
    assert_eq!(text(&c, "#route-title").await, "GET /search");
    eventually("both charts are drawn", || async {
        let w = js(&c, "return [...document.querySelectorAll('.chart img')].map(i => i.complete ? i.naturalWidth : 0)")
            .await;
        w.as_array()?.iter().all(|x| x.as_u64().unwrap_or(0) > 0).then_some(())
    })
    .await;
    assert!(text(&c, "#decisions").await.contains("admit"), "the latest decisions show their verdicts");
    if shots {
        // The trip is in the chart's window: the moment to take its picture.
        screenshot(&c, "dashboard-route.png").await;
    }

    // An admin action: refused without the token, done with it.
    goto(&c, &base, "#/route/GET%20%2Fusers").await;
    eventually("the route's page loads", || async {
        (text(&c, "#route-held").await.contains("released")).then_some(())
    })
    .await;
    let (ok, said) = act(&c, "open").await;
    assert!(!ok && said.contains("401"), "refused without a token: {said}");
    assert_eq!(a.get("/v1/routes/GET%20%2Fusers").await["held"], "released", "nothing changed");
    click(&c, "#token-button").await;
    c.find(Locator::Css("#token-input")).await.unwrap().send_keys(TOKEN).await.unwrap();
    click(&c, "#token-save").await;
    // The page relabels the button after the click is handled: wait for it, not a moment.
    eventually("the token is saved", || async { (text(&c, "#token-button").await == "Admin token set").then_some(()) })
        .await;
    let (ok, said) = act(&c, "open").await;
    assert!(ok, "done with the token: {said}");
    assert_eq!(a.get("/v1/routes/GET%20%2Fusers").await["held"], "open");
    eventually("the page shows the hold", || async { text(&c, "#route-held").await.contains("open").then_some(()) })
        .await;
    let (ok, said) = act(&c, "release").await;
    assert!(ok, "{said}");
    // Shadow mode is a policy: on every node, and the route's physics decides without
    // shedding.
    let (ok, said) = act(&c, "shadow").await;
    assert!(ok, "{said}");
    eventually("the route runs in shadow mode", || async {
        let v = a.get("/v1/routes/GET%20%2Fusers").await;
        (v["held"] == "shadow" && v["policy"] == "GET /users").then_some(())
    })
    .await;
    eventually("the page shows it", || async { text(&c, "#route-held").await.contains("shadow").then_some(()) }).await;
    let (ok, said) = act(&c, "unshadow").await;
    assert!(ok, "{said}");
    // With the policy layer: a ban from the page reaches the policies view.
    let (ok, said) = act(&c, "ban").await;
    assert!(ok, "{said}");
    goto(&c, &base, "#/policies").await;
    eventually("the ban is listed", || async { text(&c, "#bans").await.contains("route=GET /users").then_some(()) })
        .await;
    eventually("the audit log lists the actions", || async {
        let t = text(&c, "#audit").await;
        (t.contains("route.open") && t.contains("ops")).then_some(())
    })
    .await;
    if shots {
        screenshot(&c, "dashboard-policies.png").await;
    }

    // The nodes: both listed; the one that goes away turns so.
    goto(&c, &base, "#/nodes").await;
    eventually("both nodes are listed, healthy", || async {
        let v = js(&c, "return [...document.querySelectorAll('#nodes tbody tr')].map(t => t.dataset.node + '=' + t.dataset.status).sort()").await;
        (v == json!(["a=healthy", "b=healthy"])).then_some(())
    })
    .await;
    b.kill();
    eventually("the node that went away turns so", || async {
        let v = js(
            &c,
            "const t = document.querySelector('#nodes tbody tr[data-node=b]'); return t ? t.dataset.status : null",
        )
        .await;
        (v.as_str().is_some_and(|s| s != "healthy")).then_some(())
    })
    .await;
    if shots {
        screenshot(&c, "dashboard-nodes.png").await;
    }

    // Keyboard: `/` goes to the filter; typing filters the table.
    goto(&c, &base, "#/routes").await;
    eventually("the table is drawn", || async { row_mode(&c, "GET /users").await }).await;
    c.find(Locator::Css("body")).await.unwrap().send_keys("/").await.unwrap();
    let focused = js(&c, "return document.activeElement.id").await;
    assert_eq!(focused, "filter", "`/` focuses the filter");
    c.find(Locator::Css("#filter")).await.unwrap().send_keys("inventory").await.unwrap();
    eventually("the filter keeps one route", || async {
        let n = js(&c, "return [...document.querySelectorAll('#routes tbody tr')].filter(t => !t.hidden).length").await;
        (n == json!(1)).then_some(())
    })
    .await;
    c.find(Locator::Css("#filter")).await.unwrap().clear().await.unwrap();
    js(&c, "document.querySelector('#filter').dispatchEvent(new Event('input')); return 0").await;

    // Phone width: nothing wider than the screen but the table's own scroll.
    if shots {
        c.set_window_size(390, 844).await.unwrap();
        goto(&c, &base, "#/routes").await;
        eventually("the table is drawn at phone width", || async { row_mode(&c, "GET /search").await }).await;
        let wide = js(&c, "return document.documentElement.scrollWidth - window.innerWidth").await;
        assert!(wide.as_i64().unwrap_or(1) <= 0, "the page scrolls sideways at phone width: {wide}");
        screenshot(&c, "dashboard-phone.png").await;
        c.set_window_size(1366, 900).await.unwrap();
    }

    // The sidecar restarts: the page reconnects by itself.
    let before = js(&c, "return window.atrionStats.updates").await.as_u64().unwrap();
    a.stop();
    eventually("the page notices", || async { (text(&c, "#conn").await != "live").then_some(()) }).await;
    let a = start_node(&redis.url(), "a", &listen);
    eventually("the page is live again", || async {
        let n = js(&c, "return window.atrionStats.updates").await.as_u64()?;
        (n > before + 2 && text(&c, "#conn").await == "live").then_some(())
    })
    .await;
    c.close().await.unwrap();
    a.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium() {
    walkthrough(Browser::Chromium, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_firefox() {
    walkthrough(Browser::Firefox, false).await;
}

/// With 1,000 routes changing every second, the page draws one page of rows and the time
/// to render an update is measured in the browser (printed; docs/BENCHMARKS.md has figures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_routes_stay_responsive() {
    let Some(driver) = Driver::start(Browser::Chromium) else { return };
    let s = Serve::start(&["--store", "memory", "--listen", &format!("127.0.0.1:{}", free_port())], &[]);
    let routes: Vec<String> = (0..1000).map(|i| format!("GET /items/{i:04}")).collect();
    let feed = |round: u64| {
        let reports: Vec<Value> = routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let slow = (i as u64 + round) % 7 == 0;
                json!({"route": r, "latency_ms": if slow { 400 } else { 20 }, "ok": !slow})
            })
            .collect();
        json!({ "report": reports })
    };
    s.post("/v1/batch", feed(0)).await;
    let url = s.url.clone();
    let body = feed(1);
    // Keep every route changing while the page is watched.
    let writer = tokio::spawn(async move {
        let http = reqwest::Client::new();
        for round in 1u64.. {
            let _ = http.post(format!("{url}/v1/batch")).json(&body).send().await;
            if round > 10_000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let c = driver.session().await;
    goto(&c, &s.url, "#/routes").await;
    eventually("1,000 routes are listed", || async {
        text(&c, "#summary").await.starts_with("1000 routes").then_some(())
    })
    .await;
    // From here on, updates stream in: nothing on the page may move (layout shifts are
    // what the browser reports when visible content moves without input).
    js(
        &c,
        "window.shifts = 0;
         new PerformanceObserver(l => { for (const e of l.getEntries()) if (!e.hadRecentInput) window.shifts += e.value; })
           .observe({type: 'layout-shift'});
         return 0;",
    )
    .await;
    let start = js(&c, "return window.atrionStats.renders").await.as_u64().unwrap();
    eventually("twenty updates are rendered", || async {
        (js(&c, "return window.atrionStats.renders").await.as_u64()? >= start + 20).then_some(())
    })
    .await;
    let shifts = js(&c, "return window.shifts").await;
    assert_eq!(shifts.as_f64(), Some(0.0), "no layout jumps while data streams in: {shifts}");
    let stats = js(&c, "return window.atrionStats").await;
    assert_eq!(stats["rows"], 50, "one page of rows is drawn, not 1,000: {stats}");
    let rows = js(&c, "return document.querySelectorAll('#routes tbody tr').length").await;
    assert_eq!(rows, 50, "the table holds one page of rows");
    let mut ms: Vec<f64> = stats["renderMs"].as_array().unwrap().iter().filter_map(Value::as_f64).collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "render of an update with 1,000 routes, in Chromium: p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms over {} renders",
        ms[ms.len() / 2],
        ms[ms.len() * 95 / 100],
        ms[ms.len() - 1],
        ms.len()
    );
    // Sorting and filtering work on all of them.
    click(&c, "#routes th[data-key='route'] button").await;
    eventually("sorted by route", || async {
        let first = js(&c, "return document.querySelector('#routes tbody tr').dataset.route").await;
        (first == json!("GET /items/0000")).then_some(())
    })
    .await;
    click(&c, "#routes th[data-key='route'] button").await;
    eventually("sorted by route, descending", || async {
        let first = js(&c, "return document.querySelector('#routes tbody tr').dataset.route").await;
        (first == json!("GET /items/0999")).then_some(())
    })
    .await;
    click(&c, "#next").await;
    eventually("the second page", || async { text(&c, "#page-info").await.starts_with("page 2 of 20").then_some(()) })
        .await;
    c.find(Locator::Css("#filter")).await.unwrap().send_keys("items/05").await.unwrap();
    eventually("the filter keeps 100 routes", || async {
        text(&c, "#summary").await.contains("100 shown").then_some(())
    })
    .await;
    writer.abort();
    c.close().await.unwrap();
    s.stop();
}

/// `atrion demo-traffic` refuses what it cannot do, with the flag and the reason.
#[test]
fn demo_traffic_refuses_bad_flags_and_a_missing_sidecar() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_atrion")).arg("demo-traffic").args(args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = run(&["--rate", "0"]);
    assert!(!ok && err.contains("--rate 0"), "{err}");
    let (ok, err) = run(&["--failing-secs", "0"]);
    assert!(!ok && err.contains("--failing-secs"), "{err}");
    let port = free_port();
    let (ok, err) = run(&["--server", &format!("http://127.0.0.1:{port}"), "--duration", "1"]);
    assert!(!ok && err.contains("no sidecar answers"), "{err}");
}
