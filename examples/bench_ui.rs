//! The dashboard in headless Chromium against a release `warden up` with N idle services
//! (default 1,000) and one service that writes 1,000 log lines a second:
//! - first render: from navigation start to the last row in the DOM, and to the next
//!   painted frame (median of several page loads; goal <= 300 ms);
//! - a state change visible in the DOM after warden publishes it: a MutationObserver
//!   stamps each `data-state` change, compared with the event's `at` (same clock), over
//!   stop/start cycles (p50, p99; goal <= 100 ms p99);
//! - connections per open tab (established TCP connections to the admin port with 3
//!   tabs open and idle);
//! - the log pane following 1,000 lines/s for 10 s: the longest main-thread task
//!   (PerformanceObserver `longtask`; goal: none over 50 ms) and the lines in the DOM.
//!
//! `cargo build --release && cargo run --release --example bench_ui -- [N] [loads] [cycles]`
//! (needs chromium and chromedriver, as the browser tests).

#[path = "../tests/support/browser.rs"]
mod browser;
#[path = "support/sleep_tree.rs"]
mod sleep_tree;

use std::process::Command;
use std::time::Duration;

use browser::Browser;
use serde_json::{json, Value};
use sleep_tree::{all_running, write_sleep_tree};

/// A service that writes `LINES_PER_S` lines a second, in batches of 100.
const CHATTY: &str = r#"
[[service]]
name = "chatty"
command = ["python3", "-u", "-c", "import time\nn = 0\nwhile True:\n    t = time.time()\n    print('\\n'.join('line %d: the quick brown fox jumps over the lazy dog' % (n + i) for i in range(100)), flush=True)\n    n += 100\n    time.sleep(max(0.0, 0.1 - (time.time() - t)))\n"]
"#;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// Established TCP connections whose local port is `port` (the server's side).
fn established_to(port: u16) -> usize {
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && cols.get(3) == Some(&"01") {
                n += 1;
            }
        }
    }
    n
}

fn post(agent: &ureq::Agent, url: &str, token: &str) {
    let status = agent
        .post(url)
        .header("Authorization", &format!("Bearer {token}"))
        .send_empty()
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(status, 200, "POST {url}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let loads: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let cycles: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(100);

    let tmp = tempfile::Builder::new()
        .prefix("bench-ui-")
        .tempdir()
        .expect("temp dir");
    let dir = tmp.path();
    let (config, port) = write_sleep_tree(dir, n);
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(CHATTY);
    std::fs::write(&config, text).expect("config");
    let mut warden = sleep_tree::start_warden(&config, &dir.join("warden.log"));
    all_running(
        &dir.join("state/control.sock"),
        n + 1,
        Duration::from_secs(120),
    );
    let token = std::fs::read_to_string(dir.join("state/admin.token"))
        .expect("token")
        .trim()
        .to_owned();
    let base = format!("http://127.0.0.1:{port}");
    let browser = Browser::start(1280, 900);

    // Sign in once; the cookie then opens the page straight to the tree.
    browser.goto(&format!("{base}/ui"));
    browser.wait_js(
        "the sign-in form",
        Duration::from_secs(20),
        "return !document.getElementById('login').classList.contains('hidden')",
    );
    browser.type_into("#token", &token);
    browser.click("#login-form button[type=submit]");
    let rendered = |b: &Browser| {
        b.wait_js(
            "the first render",
            Duration::from_secs(60),
            "const m = n => performance.getEntriesByName(n)[0];
             return m('warden-painted') ? [m('warden-fetched').startTime,
                m('warden-rendered').startTime, m('warden-painted').startTime,
                document.querySelectorAll('.row[data-path]').length] : null;",
        )
    };
    rendered(&browser);

    // 1. First render, page loads with the session cookie.
    let (mut to_rows, mut to_paint, mut render_only) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..loads {
        browser.goto(&format!("{base}/ui"));
        let v = rendered(&browser);
        let f = |i: usize| v[i].as_f64().unwrap_or(f64::NAN);
        assert_eq!(v[3].as_u64(), Some(n as u64 + 1), "rows: {v}");
        to_rows.push(f(1));
        to_paint.push(f(2));
        render_only.push(f(1) - f(0));
    }
    println!(
        "first render of {} actors (median of {loads} loads): navigation -> rows in the DOM {:.0} ms, -> next painted frame {:.0} ms; JSON in hand -> rows {:.0} ms (goal <= 300 ms)",
        n + 1,
        median(to_rows),
        median(to_paint),
        median(render_only)
    );

    // 2. State change to DOM: the page's own EventSource gives each event's `at`.
    browser.js(
        "window.__events = []; window.__mutations = [];
         window.__warden.es.addEventListener('state', e => window.__events.push(JSON.parse(e.data)));
         new MutationObserver(list => {
           const t = performance.timeOrigin + performance.now();
           for (const m of list) window.__mutations.push([m.target.dataset.path, m.target.dataset.state, t]);
         }).observe(document.getElementById('rows'),
           { subtree: true, attributes: true, attributeFilter: ['data-state'] });",
        json!([]),
    );
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .build()
        .new_agent();
    for i in 0..cycles {
        let path = format!("{base}/api/v1/actors/s{:04}", i % n);
        post(&agent, &format!("{path}/stop"), &token);
        post(&agent, &format!("{path}/start"), &token);
    }
    std::thread::sleep(Duration::from_millis(500));
    let got = browser.js("return [window.__events, window.__mutations];", json!([]));
    let events = got[0].as_array().cloned().unwrap_or_default();
    let mutations = got[1].as_array().cloned().unwrap_or_default();
    let mut latencies = Vec::new();
    let mut used = vec![false; mutations.len()];
    for e in &events {
        let at = e["at"].as_str().and_then(rfc3339_ms);
        let Some(at) = at else { continue };
        // The first unused mutation of this path to this state.
        let found = mutations
            .iter()
            .enumerate()
            .find(|(j, m)| !used[*j] && m[0] == e["path"] && m[1] == e["state"]);
        if let Some((j, m)) = found {
            used[j] = true;
            latencies.push(m[2].as_f64().unwrap_or(f64::NAN) - at);
        }
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "state change -> DOM ({} changes of {} events, {cycles} stop/start cycles): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (goal p99 <= 100 ms)",
        latencies.len(),
        events.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );

    // 3. Connections per tab: 3 tabs, idle.
    for _ in 0..2 {
        browser.new_tab();
        browser.goto(&format!("{base}/ui"));
        rendered(&browser);
    }
    std::thread::sleep(Duration::from_secs(3));
    println!(
        "connections with 3 tabs open and idle: {} established to the admin port (at most one EventSource per tab, none in a hidden tab; fetches share the browser's keep-alive pool)",
        established_to(port)
    );

    // 4. The log pane following 1,000 lines/s.
    browser.js(
        "window.__long = [];
         new PerformanceObserver(l => { for (const e of l.getEntries()) window.__long.push(e.duration); })
           .observe({ type: 'longtask' });",
        json!([]),
    );
    browser.click(".row[data-path=\"/chatty\"] .open");
    std::thread::sleep(Duration::from_secs(10));
    let v = browser.js(
        "return [window.__long, document.getElementById('log').textContent.split('\\n').filter(l => l).length,
                 document.getElementById('log').scrollHeight - document.getElementById('log').scrollTop
                   - document.getElementById('log').clientHeight];",
        json!([]),
    );
    let long: Vec<f64> = v[0]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let max = long.iter().copied().fold(0.0, f64::max);
    println!(
        "log pane at 1,000 lines/s for 10 s: {} main-thread tasks over 50 ms (longest {:.0} ms), {} lines in the DOM, {} px from the bottom (goal: none over 50 ms)",
        long.len(),
        max,
        v[1],
        v[2]
    );

    drop(browser);
    let _ = Command::new("kill").arg(warden.id().to_string()).status();
    let _ = warden.wait();
}

/// Milliseconds since the epoch of an RFC 3339 timestamp.
fn rfc3339_ms(s: &str) -> Option<f64> {
    let t = humantime::parse_rfc3339(s).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64() * 1_000.0)
}
