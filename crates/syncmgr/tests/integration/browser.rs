//! The dashboard in a real browser: Debian's headless Chromium driven over
//! WebDriver (`chromedriver`, fantoccini), against a real daemon with a
//! slow test handler. It sees a progress bar advance from the event
//! stream, stops one item and finds it `stopped` in the history, ticks a
//! per-trigger box and finds it in `items --json`, acts on a guard entry
//! and confirms, and saves a screenshot of each view under
//! `target/<profile>/screenshots/`. Waits are CSS selectors on the page's
//! `data-*` state, each with a deadline.

use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::dashboard::{Web, mirror_with_delete, run_to_end, trip_the_guard, two_way_pair};
use crate::util::{PATIENCE, TestHome, wait_until};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";

/// `chromedriver` on a free port, killed on drop.
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts chromedriver and a headless Chromium session; `None` when the
/// browser is missing and `SYNCMGR_TEST_SKIP_TOOLS` allows that.
async fn browser() -> Option<(Driver, Client)> {
    if !syncmgr_testkit::require_tool(CHROMEDRIVER) || !syncmgr_testkit::require_tool(CHROMIUM) {
        return None;
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().expect("a browser profile");
    let driver = Driver {
        child,
        port,
        _profile: profile,
    };
    assert!(
        wait_until(PATIENCE, || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "chromedriver did not listen"
    );
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-quic",
                "--window-size=1280,900",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ]
        }
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session");
    Some((driver, client))
}

fn screenshots() -> PathBuf {
    let dir = syncmgr_testkit::test_profile_dir().join("screenshots");
    fs::create_dir_all(&dir).expect("the screenshots directory");
    dir
}

async fn shoot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    fs::write(screenshots().join(format!("{name}.png")), png).expect("save the screenshot");
}

/// Waits for an element matching `css`.
async fn wait_for(client: &Client, css: &str) -> fantoccini::elements::Element {
    match client
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
    {
        Ok(element) => element,
        Err(e) => {
            let source = client.source().await.unwrap_or_default();
            panic!("no {css} within {PATIENCE:?} ({e}); the page:\n{source}");
        }
    }
}

async fn click(client: &Client, css: &str) {
    wait_for(client, css)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// `data-pct` of an item row.
async fn pct(client: &Client, row: &str) -> u64 {
    wait_for(client, row)
        .await
        .attr("data-pct")
        .await
        .ok()
        .flatten()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// Whether `items --json` says `handler/item` is checked for `event`.
fn checked(home: &TestHome, handler: &str, item: &str, event: &str) -> bool {
    let rows = home.json(&["items", handler, "--event", event, "--json"]);
    let row = rows
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["item"] == item))
        .unwrap_or_else(|| panic!("no {handler}/{item} in {rows:#}"));
    row["checked"].as_bool().expect("checked is a boolean")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_browser() {
    let mut home = TestHome::inline();
    home.register(
        "slow",
        &["--items", "a,b", "--steps", "2000", "--step-ms", "20"],
    );
    let (src, dst) = mirror_with_delete(&home);
    let (left, right) = two_way_pair(&home);
    let web = Web::of(&mut home);
    let Some((_driver, client)) = browser().await else {
        return;
    };
    let link = home
        .ok(&["dashboard", "--no-open"])
        .stdout
        .trim()
        .to_owned();
    client.goto(&link).await.expect("open the login link");
    wait_for(&client, "#connection[data-state=\"live\"]").await;
    assert_eq!(
        client.current_url().await.unwrap().path(),
        "/",
        "the login link leads to the page"
    );
    shoot(&client, "dashboard-main").await;

    // Sync one item: its progress bar advances from the event stream.
    let row_a = "tr.item[data-handler=\"slow\"][data-item=\"a\"]";
    click(&client, &format!("{row_a} button[data-action=\"sync\"]")).await;
    wait_for(
        &client,
        &format!("{row_a}[data-state=\"updating\"]:not([data-pct=\"0\"])"),
    )
    .await;
    let first = pct(&client, row_a).await;
    let deadline = Instant::now() + PATIENCE;
    while pct(&client, row_a).await <= first {
        assert!(
            Instant::now() < deadline,
            "the progress bar did not advance past {first}%"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shoot(&client, "dashboard-progress").await;

    // Stop it: the row ends `stopped`, and so does the history.
    click(&client, &format!("{row_a} button[data-action=\"stop\"]")).await;
    wait_for(&client, &format!("{row_a}[data-state=\"stopped\"]")).await;
    wait_for(&client, "#history-rows tr[data-outcome=\"cancelled\"]").await;
    let history = home.json(&["history", "--json"]);
    assert_eq!(history[0]["counts"]["stopped"], 1, "{history:#}");
    shoot(&client, "dashboard-stopped").await;

    // A per-trigger box: ticked in the page, stored for that event.
    let was = checked(&home, "slow", "b", "scheduled");
    let box_b = "tr.item[data-handler=\"slow\"][data-item=\"b\"] input[data-event=\"scheduled\"]";
    click(&client, box_b).await;
    wait_for(&client, &format!("{box_b}[data-saved=\"yes\"]")).await;
    assert_eq!(checked(&home, "slow", "b", "scheduled"), !was);

    // A guard entry: act on it, read the guard's question, confirm.
    trip_the_guard(&web, &src, &dst);
    let entry = "#log-entries li.entry[data-level=\"error\"]";
    wait_for(&client, entry).await;
    click(&client, &format!("{entry} summary")).await;
    click(&client, &format!("{entry} button[data-action=\"show\"]")).await;
    let question = wait_for(&client, "dialog#confirm[open] #confirm-text").await;
    let text = question.text().await.unwrap();
    assert!(text.contains("deletes 3 files of the 4"), "{text}");
    shoot(&client, "dashboard-confirm").await;
    assert!(dst.join("a").exists(), "nothing before the confirmation");
    click(&client, "button[data-action=\"confirm-yes\"]").await;
    assert!(
        wait_until(PATIENCE, || !dst.join("a").exists()),
        "the confirmed retry deletes"
    );

    // A conflict: it shows up from the event stream; "Keep this" on the
    // second version applies it, and the list empties.
    run_to_end(&web, &["pair"]);
    fs::write(left.join("notes.txt"), "left\n").unwrap();
    fs::write(right.join("notes.txt"), "right\n").unwrap();
    run_to_end(&web, &["pair"]);
    let conflict = "#conflict-list li.conflict";
    wait_for(&client, conflict).await;
    // The notice follows the list (the page was rendered before).
    wait_for(&client, "#notices [data-notice=\"conflicts\"]").await;
    shoot(&client, "dashboard-conflicts").await;
    click(
        &client,
        &format!("{conflict} button[data-action=\"keep\"][data-version=\"1\"]"),
    )
    .await;
    wait_for(&client, "#conflicts-none:not([hidden])").await;
    let gone = client
        .find_all(fantoccini::Locator::Css(
            "#notices [data-notice=\"conflicts\"]",
        ))
        .await
        .expect("find");
    assert!(gone.is_empty(), "the notice goes with the last conflict");
    assert!(wait_until(PATIENCE, || {
        fs::read_to_string(left.join("notes.txt")).ok().as_deref() == Some("right\n")
    }));

    // A phone's width.
    client.set_window_size(390, 844).await.unwrap();
    shoot(&client, "dashboard-phone").await;
    client.close().await.expect("close the browser");
}
