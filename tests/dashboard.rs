//! The operator dashboard (`GET /ui`) in a real headless Chromium (through chromedriver),
//! and its HTTP rules without a browser: sign-in and the session cookie, the cookie's
//! CSRF rules, the page's headers, and `/api/v1/events` ids with `Last-Event-ID`.
//!
//! The browser tests fail (never pass silently) when chromedriver or Chromium is missing.
//! `cargo test --test dashboard -- --ignored dashboard_screenshot` rewrites
//! `docs/dashboard.png`.
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use support::browser::Browser;
use support::events::EventStream;
use support::*;

const TREE: &str = r#"
[[supervisor]]
name = "app"

[[service]]
name = "api"
supervisor = "app"
command = ["sh", "-c", "while true; do echo api line; sleep 0.2; done"]

[[service]]
name = "worker"
supervisor = "app"
command = ["sleep", "1000"]

[[service]]
name = "solo"
command = ["sleep", "1000"]

[[service]]
name = "broken"
command = ["sh", "-c", "echo cannot open the database >&2; exit 3"]
restart = { intensity = { max = 0, within = "60s" } }
"#;

/// Opens the dashboard, signs in with `token` through the form, and waits until the
/// tree is rendered.
fn sign_in(browser: &Browser, w: &Warden, token: &str) {
    browser.goto(&format!("http://127.0.0.1:{}/ui", w.port));
    browser.wait_js(
        "the sign-in form",
        Duration::from_secs(20),
        "return !document.getElementById('login').classList.contains('hidden')",
    );
    browser.type_into("#token", token);
    browser.click("#login-form button[type=submit]");
    browser.wait_js(
        "the tree rendered after sign-in",
        Duration::from_secs(20),
        "return document.body.dataset.rendered || null",
    );
}

/// `path -> state` of the rows on the page.
fn rows(browser: &Browser) -> BTreeMap<String, String> {
    let v = browser.js(
        "return [...document.querySelectorAll('.row[data-path]')]
            .map(r => [r.dataset.path, r.dataset.state]);",
        json!([]),
    );
    v.as_array()
        .expect("rows")
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap_or("").to_owned(),
                p[1].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// `path -> state` of `GET /api/v1/actors`.
fn api_states(w: &Warden) -> BTreeMap<String, String> {
    let r = w.req("GET", "/api/v1/actors");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
        .as_array()
        .expect("actors")
        .iter()
        .map(|a| {
            (
                a["path"].as_str().unwrap_or("").to_owned(),
                a["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn wait_row_state(browser: &Browser, path: &str, state: &str) {
    browser.wait_js(
        &format!("row {path} to be {state}"),
        Duration::from_secs(20),
        &format!(
            "const r = document.querySelector('.row[data-path=\"{path}\"]');
             return r && r.dataset.state === '{state}';"
        ),
    );
}

#[test]
fn every_actor_appears_with_its_path_and_state_after_sign_in() {
    let w = Warden::start(TREE);
    w.wait_state("/broken", "failed", Duration::from_secs(20));
    for p in ["/app/api", "/app/worker", "/solo"] {
        w.wait_state(p, "running", Duration::from_secs(20));
    }
    let browser = Browser::start(1280, 900);
    sign_in(&browser, &w, &w.token());
    let expected = api_states(&w);
    assert_eq!(expected.len(), 5, "{expected:?}");
    browser.wait_js(
        "every actor's row",
        Duration::from_secs(10),
        "return document.querySelectorAll('.row[data-path]').length === 5",
    );
    assert_eq!(rows(&browser), expected);
    let reason = browser.js(
        "return document.querySelector('.row[data-path=\"/broken\"] .reason').textContent",
        json!([]),
    );
    assert!(
        reason.as_str().is_some_and(|r| !r.is_empty()),
        "the failed reason is shown: {reason}"
    );
    // Buttons are inside each row.
    let actions = browser.js(
        "return [...document.querySelectorAll('.row[data-path=\"/solo\"] [data-action]')]
            .map(b => b.dataset.action)",
        json!([]),
    );
    assert_eq!(actions, json!(["start", "stop", "restart"]));
}

#[test]
fn a_killed_service_changes_state_and_comes_back_without_a_reload() {
    let w = Warden::start(
        r#"
[[service]]
name = "svc"
command = ["sleep", "1000"]
restart = { backoff = { initial = "1500ms", jitter = 0.0 } }
"#,
    );
    let before = w.wait_state("/svc", "running", Duration::from_secs(20));
    let browser = Browser::start(1280, 900);
    sign_in(&browser, &w, &w.token());
    wait_row_state(&browser, "/svc", "running");
    browser.js("window.__notReloaded = true;", json!([]));
    let pid = before["pid"].as_u64().expect("pid") as u32;
    kill(pid, 9);
    wait_row_state(&browser, "/svc", "backoff");
    let countdown = browser.wait_js(
        "the backoff countdown",
        Duration::from_secs(5),
        "const t = document.querySelector('.row[data-path=\"/svc\"] .time').textContent;
         return t.startsWith('retry in') ? t : null;",
    );
    assert!(
        countdown.as_str().is_some_and(|t| t.ends_with('s')),
        "{countdown}"
    );
    wait_row_state(&browser, "/svc", "running");
    let new_pid = w.wait_state("/svc", "running", Duration::from_secs(20))["pid"].clone();
    browser.wait_js(
        "the new pid in the row",
        Duration::from_secs(10),
        &format!(
            "return document.querySelector('.row[data-path=\"/svc\"] .pid').textContent === '{new_pid}'"
        ),
    );
    assert_eq!(
        browser.js("return window.__notReloaded === true", json!([])),
        json!(true),
        "the page was reloaded"
    );
}

#[test]
fn the_stop_and_start_buttons_work() {
    let w = Warden::start(TREE);
    w.wait_state("/solo", "running", Duration::from_secs(20));
    let browser = Browser::start(1280, 900);
    sign_in(&browser, &w, &w.token());
    wait_row_state(&browser, "/solo", "running");
    browser.click(".row[data-path=\"/solo\"] [data-action=\"stop\"]");
    w.wait_state("/solo", "stopped", Duration::from_secs(20));
    wait_row_state(&browser, "/solo", "stopped");
    browser.wait_js(
        "the start button enabled",
        Duration::from_secs(10),
        "return !document.querySelector('.row[data-path=\"/solo\"] [data-action=\"start\"]').disabled",
    );
    browser.click(".row[data-path=\"/solo\"] [data-action=\"start\"]");
    w.wait_state("/solo", "running", Duration::from_secs(20));
    wait_row_state(&browser, "/solo", "running");
}

#[test]
fn a_wrong_token_is_refused() {
    let w = Warden::start(TREE);
    let browser = Browser::start(1280, 900);
    browser.goto(&format!("http://127.0.0.1:{}/ui", w.port));
    browser.wait_js(
        "the sign-in form",
        Duration::from_secs(20),
        "return !document.getElementById('login').classList.contains('hidden')",
    );
    browser.type_into("#token", &"0".repeat(64));
    browser.click("#login-form button[type=submit]");
    browser.wait_js(
        "the refusal",
        Duration::from_secs(10),
        "return document.getElementById('login-error').textContent === 'Wrong token.'",
    );
    assert_eq!(
        browser.js(
            "return document.querySelectorAll('.row[data-path]').length",
            json!([])
        ),
        json!(0)
    );
    let status = browser.js_async(
        "fetch('/api/v1/actors').then(r => arguments[0](r.status))",
        json!([]),
    );
    assert_eq!(status, json!(401), "no session after a wrong token");
}

#[test]
fn three_hundred_services_render() {
    let mut body = String::new();
    for i in 0..300 {
        body.push_str(&format!(
            "[[service]]\nname = \"s{i:03}\"\ncommand = [\"sleep\", \"1000\"]\n"
        ));
    }
    let w = Warden::start(&body);
    wait_until("300 services running", Duration::from_secs(60), || {
        api_states(&w).values().filter(|s| *s == "running").count() == 300
    });
    let browser = Browser::start(1280, 900);
    sign_in(&browser, &w, &w.token());
    browser.wait_js(
        "300 running rows",
        Duration::from_secs(20),
        "return document.querySelectorAll('.row[data-state=\"running\"]').length === 300",
    );
    assert_eq!(rows(&browser), api_states(&w));
}

#[test]
fn the_log_pane_follows_at_the_bottom_and_keeps_at_most_2000_lines() {
    let w = Warden::start(
        r#"
[[service]]
name = "chatty"
command = ["python3", "-u", "-c", "import time\nn = 0\nwhile True:\n    print('\\n'.join('line %d' % (n + i) for i in range(500)), flush=True)\n    n += 500\n    time.sleep(0.1)\n"]
"#,
    );
    w.wait_state("/chatty", "running", Duration::from_secs(20));
    let browser = Browser::start(1280, 900);
    sign_in(&browser, &w, &w.token());
    browser.click(".row[data-path=\"/chatty\"] .open");
    const LAST: &str = "const t = document.getElementById('log').textContent.trimEnd();
         const n = Number(t.slice(t.lastIndexOf('line ') + 5));";
    let first = browser.wait_js(
        "more than 2,000 lines written",
        Duration::from_secs(20),
        &format!("{LAST} return n > 3000 ? n : null;"),
    );
    let first = first.as_u64().expect("line number");
    browser.wait_js(
        "the pane follows new lines",
        Duration::from_secs(20),
        &format!("{LAST} return n > {first} + 1000;"),
    );
    let (lines, gap) = {
        let v = browser.js(
            "const log = document.getElementById('log');
             return [log.textContent.split('\\n').filter(l => l).length,
                     log.scrollHeight - log.scrollTop - log.clientHeight];",
            json!([]),
        );
        (v[0].as_u64().expect("lines"), v[1].as_f64().expect("gap"))
    };
    assert!((1000..=2000).contains(&lines), "{lines} lines in the DOM");
    assert!(gap < 8.0, "following: at the bottom ({gap} px away)");
    // Scrolled up, the pane stays where the reader put it.
    browser.js("document.getElementById('log').scrollTop = 0;", json!([]));
    browser.wait_js(
        "following paused",
        Duration::from_secs(5),
        "return window.__warden.follow === false",
    );
    holds_for("the pane stays scrolled up", Duration::from_secs(3), || {
        browser.js("return document.getElementById('log').scrollTop", json!([])) == json!(0)
    });
}

#[test]
fn pools_with_their_sessions_and_a_hubs_spokes_are_shown() {
    use support::pools::{acquire, pool, server_command, session};
    let lo = free_range(2);
    let w = Warden::start(&format!(
        "[hub]\nenabled = true\n{}",
        pool(
            &server_command(),
            lo,
            2,
            "min = 1\nmax = 2\nsessions_per_worker = 2",
            None
        )
    ));
    let (_, worker, _) = session(&acquire(&w));
    let browser = Browser::start(1280, 900);
    sign_in(&browser, &w, &w.token());
    let text = browser.wait_js(
        "the pool with its session",
        Duration::from_secs(20),
        "const p = document.getElementById('pools');
         return !p.classList.contains('hidden') && p.textContent.includes('1/2 sessions')
           ? p.textContent : null;",
    );
    assert!(text.as_str().is_some_and(|t| t.contains(&worker)), "{text}");
    browser.wait_js(
        "the hub's spokes",
        Duration::from_secs(20),
        "return !document.getElementById('spokes').classList.contains('hidden')",
    );
}

/// The dashboard with a few services in different states, for the README:
/// `cargo test --test dashboard -- --ignored dashboard_screenshot` writes
/// `docs/dashboard.png`.
#[test]
#[ignore = "writes docs/dashboard.png"]
fn dashboard_screenshot() {
    let w = Warden::start(
        r#"
[[supervisor]]
name = "web"

[[service]]
name = "api"
supervisor = "web"
command = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo \"GET /v1/orders 200 ${i}ms\"; sleep 0.3; done"]

[[service]]
name = "frontend"
supervisor = "web"
command = ["sleep", "100000"]

[[service]]
name = "mailer"
command = ["sh", "-c", "echo 'smtp: connection refused' >&2; sleep 0.5; exit 1"]
restart = { backoff = { initial = "45s", max = "45s", jitter = 0.0 } }

[[service]]
name = "migrate"
command = ["sh", "-c", "echo 'migration 0042 failed: column exists' >&2; exit 2"]
restart = { intensity = { max = 0, within = "60s" } }

[[service]]
name = "cron"
command = ["sleep", "100000"]
"#,
    );
    w.wait_state("/mailer", "backoff", Duration::from_secs(20));
    w.wait_state("/migrate", "failed", Duration::from_secs(20));
    let r = w.req("POST", "/api/v1/actors/cron/stop");
    assert_eq!(r.status, 200, "{}", r.text());
    let browser = Browser::start(1280, 860);
    sign_in(&browser, &w, &w.token());
    wait_row_state(&browser, "/mailer", "backoff");
    browser.click(".row[data-path=\"/web/api\"] .open");
    browser.wait_js(
        "log lines in the panel",
        Duration::from_secs(10),
        "return document.getElementById('log').textContent.split('\\n').length > 5",
    );
    std::thread::sleep(Duration::from_millis(1500));
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
    std::fs::create_dir_all(out.parent().expect("docs dir")).expect("docs dir");
    std::fs::write(&out, png).expect("write docs/dashboard.png");
}

// ---------- HTTP rules, no browser ----------

/// Signs in over HTTP: answers the cookie pair (`warden_session=...`) and the CSRF value.
fn login(port: u16, token: &str) -> (String, String) {
    let body = json!({ "token": token }).to_string();
    let r = raw_request(
        port,
        "POST",
        "/ui/login",
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", &body.len().to_string()),
        ],
        body.as_bytes(),
    )
    .expect("login");
    assert_eq!(r.status, 200, "login: {}", r.text());
    let cookie = r.header("set-cookie").expect("set-cookie").to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "cookie lacks {attr}: {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP: no Secure flag: {cookie}"
    );
    let pair = cookie.split(';').next().expect("pair").to_owned();
    let id = pair.strip_prefix("warden_session=").expect("cookie name");
    assert_eq!(id.len(), 64, "a 256-bit id in hex: {id}");
    assert!(!id.contains(token), "the cookie is not the token");
    (pair, r.json()["csrf"].as_str().expect("csrf").to_owned())
}

fn with_cookie(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if method != "GET" {
        all.push(("Content-Length", "0"));
    }
    raw_request(port, method, path, &all, b"").expect("request")
}

#[test]
fn a_cookie_post_from_a_foreign_origin_is_refused() {
    let w = Warden::start(TREE);
    w.wait_state("/solo", "running", Duration::from_secs(20));
    let (cookie, csrf) = login(w.port, &w.token());
    let c = ("Cookie", cookie.as_str());
    // Reads with the cookie work; the cookie is only for /api/v1/*.
    assert_eq!(
        with_cookie(w.port, "GET", "/api/v1/actors", &[c]).status,
        200
    );
    assert_eq!(with_cookie(w.port, "GET", "/metrics", &[c]).status, 401);
    // A state change from another origin is refused, and nothing changes.
    let foreign = with_cookie(
        w.port,
        "POST",
        "/api/v1/actors/solo/stop",
        &[
            c,
            ("Origin", "http://evil.example"),
            ("X-Warden-CSRF", &csrf),
        ],
    );
    assert_eq!(foreign.status, 403, "{}", foreign.text());
    assert!(
        foreign.text().contains("another origin"),
        "{}",
        foreign.text()
    );
    // Without an Origin and without the CSRF header: refused too.
    let bare = with_cookie(w.port, "POST", "/api/v1/actors/solo/stop", &[c]);
    assert_eq!(bare.status, 403, "{}", bare.text());
    let wrong = with_cookie(
        w.port,
        "POST",
        "/api/v1/actors/solo/stop",
        &[c, ("X-Warden-CSRF", "0123")],
    );
    assert_eq!(wrong.status, 403, "{}", wrong.text());
    assert_eq!(w.state("/solo"), "running");
    // Same origin: allowed; the CSRF header alone: allowed.
    // raw_request sends `Host: 127.0.0.1`: the same origin is scheme and that host.
    let origin = "http://127.0.0.1".to_owned();
    let ok = with_cookie(
        w.port,
        "POST",
        "/api/v1/actors/solo/stop",
        &[c, ("Origin", &origin)],
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let ok = with_cookie(
        w.port,
        "POST",
        "/api/v1/actors/solo/start",
        &[c, ("X-Warden-CSRF", &csrf)],
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    // Sign-in from another origin is refused; a wrong token is 401; no state on a GET.
    let body = json!({ "token": w.token() }).to_string();
    let len = body.len().to_string();
    let r = raw_request(
        w.port,
        "POST",
        "/ui/login",
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", &len),
            ("Origin", "http://evil.example"),
        ],
        body.as_bytes(),
    )
    .expect("login");
    assert_eq!(r.status, 403, "{}", r.text());
    let bad = json!({ "token": "0".repeat(64) }).to_string();
    let r = raw_request(
        w.port,
        "POST",
        "/ui/login",
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", &bad.len().to_string()),
        ],
        bad.as_bytes(),
    )
    .expect("login");
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.header("set-cookie").is_none());
    assert_eq!(with_cookie(w.port, "GET", "/ui/login", &[]).status, 404);
    // Bearer tokens keep working without any Origin rule.
    let r = raw_request(
        w.port,
        "POST",
        "/api/v1/actors/solo/restart",
        &[
            ("Authorization", &format!("Bearer {}", w.token())),
            ("Origin", "http://evil.example"),
            ("Content-Length", "0"),
        ],
        b"",
    )
    .expect("restart");
    assert_eq!(r.status, 200, "{}", r.text());
    // Logout ends the session on the server.
    let r = with_cookie(w.port, "POST", "/ui/logout", &[c, ("Origin", &origin)]);
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r
        .header("set-cookie")
        .is_some_and(|v| v.contains("Max-Age=0")));
    assert_eq!(
        with_cookie(w.port, "GET", "/api/v1/actors", &[c]).status,
        401
    );
    assert_eq!(with_cookie(w.port, "GET", "/ui/session", &[c]).status, 401);
}

#[test]
fn a_read_only_token_signs_in_to_a_read_only_session() {
    let w = Warden::start(&format!("read_token_file = \"state/read.token\"\n{TREE}"));
    let read = std::fs::read_to_string(w.path("state/read.token")).expect("read token");
    w.wait_state("/solo", "running", Duration::from_secs(20));
    let (cookie, csrf) = login(w.port, read.trim());
    let c = ("Cookie", cookie.as_str());
    let r = with_cookie(w.port, "GET", "/ui/session", &[c]);
    assert_eq!(r.json()["access"], "read_only", "{}", r.text());
    assert_eq!(
        with_cookie(w.port, "GET", "/api/v1/actors", &[c]).status,
        200
    );
    let r = with_cookie(
        w.port,
        "POST",
        "/api/v1/actors/solo/stop",
        &[c, ("X-Warden-CSRF", &csrf)],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(w.state("/solo"), "running");
}

#[test]
fn the_page_is_served_with_a_strict_policy_and_an_etag() {
    let w = Warden::start(TREE);
    let mut total = 0;
    for path in ["/ui", "/ui/app.js", "/ui/app.css"] {
        let r = http(w.port, "GET", path, None, None).expect("get");
        assert_eq!(r.status, 200, "{path}");
        total += r.body.len();
        let csp = r.header("content-security-policy").expect("csp");
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        let etag = r.header("etag").expect("etag").to_owned();
        let again =
            raw_request(w.port, "GET", path, &[("If-None-Match", &etag)], b"").expect("get");
        assert_eq!(again.status, 304, "{path} with its ETag");
    }
    assert!(total <= 100 * 1024, "assets are {total} bytes");
    let page = http(w.port, "GET", "/ui", None, None).expect("get").text();
    assert!(!page.contains(&w.token()));
    assert!(page.contains("src=\"/ui/app.js\""));
}

/// The `id:` of the `state` event of `path` becoming `state` in `messages`.
fn id_of(messages: &[support::events::SseMessage], path: &str, state: &str) -> Option<String> {
    messages.iter().find_map(|m| {
        let v: Value = serde_json::from_str(&m.data).ok()?;
        (m.event == "state" && v["path"] == path && v["state"] == state).then(|| m.id.clone())?
    })
}

#[test]
fn events_resume_after_last_event_id_with_the_same_ids() {
    let w = Warden::start(TREE);
    w.wait_state("/solo", "running", Duration::from_secs(20));
    let auth = format!("Authorization: Bearer {}\r\n", w.token());
    let mut live = EventStream::open_with(w.port, &auth);
    assert_eq!(w.req("POST", "/api/v1/actors/solo/stop").status, 200);
    assert_eq!(w.req("POST", "/api/v1/actors/solo/start").status, 200);
    live.until_messages("stop and start", Duration::from_secs(20), |m| {
        id_of(m, "/solo", "running").is_some()
    });
    let seen = live.messages();
    let ids: Vec<u64> = seen
        .iter()
        .map(|m| {
            m.id.as_deref()
                .expect("every event has an id")
                .parse()
                .expect("numeric id")
        })
        .collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "ids count up by one: {ids:?}"
    );
    let stopped = id_of(&seen, "/solo", "stopped").expect("stopped event");
    // Resuming after the `stopped` event replays what followed, with the same ids.
    let mut resumed =
        EventStream::open_with(w.port, &format!("{auth}Last-Event-ID: {stopped}\r\n"));
    let after: Vec<_> = seen
        .iter()
        .skip_while(|m| m.id.as_deref() != Some(stopped.as_str()))
        .skip(1)
        .cloned()
        .collect();
    assert!(!after.is_empty());
    resumed.until_messages("the replay", Duration::from_secs(10), |m| {
        m.len() >= after.len()
    });
    assert_eq!(resumed.messages()[..after.len()], after[..]);
    // An id older than the buffer (or from another warden) is answered with `lagged`.
    let mut old = EventStream::open_with(w.port, &format!("{auth}Last-Event-ID: 1\r\n"));
    old.until_messages("lagged", Duration::from_secs(10), |m| !m.is_empty());
    assert_eq!(old.messages()[0].event, "lagged", "{:?}", old.messages());
    // How many it missed is unknown for an id of an earlier warden: null, not a count
    // made of two unrelated clocks.
    assert_eq!(
        old.messages()[0].data,
        r#"{"missed":null}"#,
        "{:?}",
        old.messages()
    );
    // The cookie opens the stream too (EventSource sends no header).
    let (cookie, _) = login(w.port, &w.token());
    let mut by_cookie = EventStream::open_with(w.port, &format!("Cookie: {cookie}\r\n"));
    assert_eq!(w.req("POST", "/api/v1/actors/solo/restart").status, 200);
    by_cookie.until_messages("an event with the cookie", Duration::from_secs(20), |m| {
        id_of(m, "/solo", "running").is_some()
    });
}
