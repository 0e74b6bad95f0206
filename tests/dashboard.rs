//! The operators' web dashboard in a real browser: Debian's chromium, headless, driven over
//! WebDriver (chromedriver) against real processes: nats-server, the gateway, the
//! orchestrator, the workers and `levensloop-operations` serving the dashboard.
//!
//! What it proves:
//! - the overview shows the sagas counted by status;
//! - the saga list filters by type and status (and keeps the filters in the address);
//! - a saga's page shows its steps as a chart and its timeline;
//! - an operator retries a step waiting for its retry from the page, confirming with a
//!   reason in a dialog: the timeline shows the action, and the saga's stream in the store
//!   holds it (`OperatorActed`, `retry-step`, who and why);
//! - the page follows the saga live to its end once the handler is healthy again.
//!
//! Every wait is fantoccini's wait with a deadline on something the page shows (the
//! dashboard marks its state in `data-` attributes for this); nothing sleeps.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`).
//! Screenshots are left in /tmp: `saga-page.png`, `dashboard-overview.png`, `dashboard-sagas.png`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fantoccini::{Client, ClientBuilder, Locator, elements::Element, error::CmdError};
use levensloop_gateway::corpus;
use levensloop_proto::v1::saga_event::Event;
use levensloop_sagas::Catalog;
use levensloop_tests::world::{self, TWO_YEARS_S, World};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(90);
const MAGDA: &str = "magda.household";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const SCREENSHOT: &str = "/tmp/saga-page.png";
const OVERVIEW_SCREENSHOT: &str = "/tmp/dashboard-overview.png";
const LIST_SCREENSHOT: &str = "/tmp/dashboard-sagas.png";
const REASON: &str = "MAGDA confirmed the outage is over";

/// A chromedriver of the test's own, on a port it was given; killed when dropped.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    fn start(log_dir: &Path) -> Self {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: the dashboard's browser test needs Debian's {package} \
                 (apt-get install -y chromium chromium-driver)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // In a process group of its own, with the browsers it starts: stopping it stops them.
        let mut child = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                log_dir.join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        // It says when it listens; read its output until then (on a thread, with a deadline).
        let stdout = child.stdout.take().expect("chromedriver's output");
        let (ready, said) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("started successfully") {
                    let _ = ready.send(());
                }
            }
        });
        let mut driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        if said.recv_timeout(Duration::from_secs(30)).is_err() {
            driver.stop();
            panic!("chromedriver did not start on port {port}");
        }
        driver
    }

    /// Kills chromedriver and whatever browser it left (after a failed test, the session was
    /// never closed).
    fn stop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A headless chromium session through the driver.
async fn browser(driver: &Chromedriver) -> Client {
    let capabilities = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1440,2000",
                "--lang=en-GB",
            ],
        },
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!("an object")
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

/// Waits for what `css` selects, up to the deadline.
async fn wait_for(browser: &Client, css: &str) -> Element {
    browser
        .wait()
        .at_most(DEADLINE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("the page never showed {css}: {e}"))
}

/// Clicks what `css` selects once it is there. A live update may redraw the page between
/// finding the element and clicking it: then it is found again.
async fn click(browser: &Client, css: &str) {
    let started = Instant::now();
    loop {
        let element = wait_for(browser, css).await;
        match element.click().await {
            Ok(()) => return,
            Err(e) if stale(&e) && started.elapsed() < DEADLINE => {}
            Err(e) => panic!("clicking {css}: {e}"),
        }
    }
}

/// The text of what `css` selects once it is there (found again if a live update redrew it).
async fn text(browser: &Client, css: &str) -> String {
    let started = Instant::now();
    loop {
        match wait_for(browser, css).await.text().await {
            Ok(text) => return text,
            Err(e) if stale(&e) && started.elapsed() < DEADLINE => {}
            Err(e) => panic!("reading {css}: {e}"),
        }
    }
}

fn stale(error: &CmdError) -> bool {
    matches!(error, CmdError::Standard(e)
        if e.error == fantoccini::error::ErrorStatus::StaleElementReference)
}

/// A PNG's width and height, from its header.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    let signature = b"\x89PNG\r\n\x1a\n";
    if png.len() < 24 || &png[..8] != signature || &png[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&png[16..20]), be(&png[20..24])))
}

/// Saves what the browser shows as a PNG at `path`, checking it is a picture of some size.
async fn screenshot(browser: &Client, path: &str) {
    let png = browser.screenshot().await.unwrap();
    std::fs::write(path, &png).unwrap();
    let (width, height) = png_size(&png).expect("the screenshot is a PNG");
    assert!(
        width >= 1000 && height >= 800 && png.len() > 20_000,
        "a readable screenshot: {width}×{height}, {} bytes",
        png.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_filters_opens_a_saga_and_retries_a_step_in_the_browser() {
    let started = Instant::now();
    let world = World::start("dashboard").await;
    world.advance_clock(TWO_YEARS_S).await;
    let mut watch = world.watch().await;
    let (_gateway, gateway_url) = world.gateway();
    let _orchestrator = world.orchestrator();
    let catalog = Catalog::builtin().unwrap();
    let mut all_but_magda: Vec<String> = Vec::new();
    for definition in catalog.definitions() {
        for h in definition.handlers() {
            if h != MAGDA && !all_but_magda.iter().any(|x| x == h) {
                all_but_magda.push(h.to_owned());
            }
        }
    }
    let _workers = world.workers(
        "workers",
        &["--handlers", &all_but_magda.join(","), "--clerk"],
    );
    // MAGDA is down: the birth's household step fails and waits for its retry.
    let mut magda_down = world.workers(
        "magda-down",
        &[
            "--handlers",
            MAGDA,
            "--handler-config",
            &format!("{MAGDA}:transient=1"),
        ],
    );
    let database = format!(
        "sqlite:{}",
        world.logs.path().join("operations.db").display()
    );
    let operations = world.service(
        "operations",
        "levensloop-operations",
        &[
            "--nats-url",
            &world.url,
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--database-url",
            &database,
        ],
        "operations: dashboard on",
    );
    let base = world::printed_addr(&operations, "operations: dashboard on ");
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    // A birth (its household step stuck on MAGDA) and a death.
    let answers = world::publish(
        &gateway_url,
        &[corpus::valid_birth(), corpus::valid_death()],
    )
    .await;
    let birth = Uuid::parse_str(&answers[0].saga_id).unwrap();
    let death = Uuid::parse_str(&answers[1].saga_id).unwrap();
    watch
        .until(DEADLINE, |w| {
            (!w.has(
                birth,
                |e| matches!(e, Event::StepRetryScheduled(r) if r.step_id == "household"),
            ))
            .then(|| ("the household step's retry".to_owned(), vec![birth]))
        })
        .await;

    let driver = Chromedriver::start(world.logs.path());
    let browser = browser(&driver).await;

    // The overview counts both sagas (the read model follows the store: wait for it).
    browser.goto(&format!("{base}/")).await.unwrap();
    wait_for(&browser, "[data-testid=count-total][data-count='2']").await;
    assert_eq!(
        text(&browser, "[data-testid=count-total] .count").await,
        "2"
    );
    let running: u32 = text(&browser, "[data-testid=count-running] .count")
        .await
        .parse()
        .unwrap();
    assert!(running >= 1, "the birth is still running: {running}");
    wait_for(
        &browser,
        "[data-testid=counts-by-type] [data-testid=type-birth]",
    )
    .await;
    wait_for(&browser, "[data-testid=throughput]").await;
    wait_for(&browser, "[data-testid=slowest-handlers]").await;
    screenshot(&browser, OVERVIEW_SCREENSHOT).await;

    // The saga list, filtered to running births: only the birth.
    click(&browser, "[data-testid=nav-sagas]").await;
    wait_for(&browser, "[data-testid=saga-rows][data-loaded]").await;
    wait_for(&browser, &format!("tr[data-saga='{death}']")).await;
    wait_for(&browser, "[data-testid=filter-type]")
        .await
        .select_by_value("birth")
        .await
        .unwrap();
    wait_for(&browser, "[data-testid=filter-status]")
        .await
        .select_by_value("running")
        .await
        .unwrap();
    wait_for(
        &browser,
        &format!(
            "[data-testid=saga-rows][data-loaded] tr[data-saga='{birth}'][data-status=running]"
        ),
    )
    .await;
    let rows = browser
        .find_all(Locator::Css("[data-testid=saga-row]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "only the running birth matches");
    let url = browser.current_url().await.unwrap();
    assert_eq!(url.path(), "/sagas");
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert!(
        query.contains(&("type".into(), "birth".into()))
            && query.contains(&("status".into(), "running".into())),
        "the filters are kept in the address: {url}"
    );
    screenshot(&browser, LIST_SCREENSHOT).await;

    // The birth's page: its chart, its steps, the household step waiting for its retry.
    click(
        &browser,
        &format!("tr[data-saga='{birth}'] [data-testid=saga-link]"),
    )
    .await;
    wait_for(
        &browser,
        &format!("[data-testid=saga-page][data-saga='{birth}'][data-status=running]"),
    )
    .await;
    wait_for(&browser, "[data-testid=saga-chart] [data-testid=chart-row][data-step=household] [data-testid=chart-bar][data-state=failed]").await;
    assert_eq!(
        text(&browser, "[data-testid=saga-id]").await,
        birth.to_string()
    );

    // Retry it, confirming with a reason.
    click(&browser, "[data-testid=retry-household]").await;
    wait_for(&browser, "dialog[open][data-testid=confirm-dialog]").await;
    assert!(
        text(&browser, "[data-testid=confirm-title]")
            .await
            .contains("Retry household")
    );
    wait_for(&browser, "[data-testid=confirm-reason]")
        .await
        .send_keys(REASON)
        .await
        .unwrap();
    click(&browser, "[data-testid=confirm-submit]").await;
    let audit = text(&browser, "[data-testid=timeline-operator]").await;
    assert!(
        audit.contains("local retried household") && audit.contains(REASON),
        "the timeline shows the operator's action: {audit:?}"
    );
    wait_for(
        &browser,
        "[data-testid=chart-row][data-step=household] [data-testid=chart-mark-operator]",
    )
    .await;
    wait_for(&browser, "[data-testid=notice]:not([hidden])").await;

    // The store holds the action: who, what, on which step and why.
    let events = world.saga_events(birth).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.event, Some(Event::OperatorActed(a))
            if a.action == "retry-step" && a.step_id == "household"
                && a.actor == "local" && a.reason == REASON)),
        "an OperatorActed retry-step with the reason in the birth's stream: {events:#?}"
    );

    // MAGDA is back: the page follows the saga to its end, live.
    tokio::task::block_in_place(|| magda_down.terminate()).unwrap();
    let _magda_back = world.workers("magda-back", &["--handlers", MAGDA]);
    wait_for(
        &browser,
        &format!("[data-testid=saga-page][data-saga='{birth}'][data-status=completed]"),
    )
    .await;
    wait_for(&browser, "[data-testid=chart-row][data-step=household] [data-testid=chart-bar][data-state=succeeded]").await;
    assert!(
        browser
            .find_all(Locator::Css("[data-testid^=retry-]"))
            .await
            .unwrap()
            .is_empty(),
        "a completed saga offers no retry"
    );

    // A picture of the page, for people (and a check that it is one).
    screenshot(&browser, SCREENSHOT).await;

    browser.close().await.unwrap();
    drop(driver);
    eprintln!(
        "the dashboard's browser test took {:.1} s; the saga page is in {SCREENSHOT}",
        started.elapsed().as_secs_f64()
    );
}
