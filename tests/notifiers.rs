//! Notifiers against a real local HTTP receiver: each platform's format, cuts to the
//! platform's limit keeping the end, one resend after a 429, unreachable URLs that harm
//! nobody, the `[[notifier]]` config errors, and `warden up` telling every notifier once
//! when an actor gives up.

mod support;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{holds_for, wait_until, Warden};
use warden_actors::notifier::{
    units, EventKinds, NotifierCounts, NotifierSpec, Notifiers, NotifyEvent, Platform,
    DISCORD_LIMIT, MATTERMOST_LIMIT, SLACK_LIMIT, WEBHOOK_OUTPUT_LIMIT,
};
use warden_supervisors::ActorPath;

/// One request the receiver took.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    body: Vec<u8>,
    at: Instant,
}

impl Received {
    fn json(&self) -> Value {
        let text = std::str::from_utf8(&self.body).expect("the body is valid UTF-8");
        serde_json::from_str(text).expect("the body is JSON")
    }
}

/// A small HTTP/1.1 server on a loopback port that records every request and answers
/// 200, or the answers queued with [`Receiver::answer_next`] first.
#[derive(Clone)]
struct Receiver {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<VecDeque<String>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let receiver = Receiver {
            port: listener.local_addr().expect("its address").port(),
            received: Arc::default(),
            answers: Arc::default(),
        };
        let served = receiver.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let served = served.clone();
                std::thread::spawn(move || served.serve(stream));
            }
        });
        receiver
    }

    /// The next request is answered with `status` and `headers` (e.g. `Retry-After: 1`).
    fn answer_next(&self, status: &str, headers: &str) {
        self.answers
            .lock()
            .unwrap()
            .push_back(format!("HTTP/1.1 {status}\r\n{headers}"));
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    fn serve(&self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut data = Vec::new();
        let mut buf = [0u8; 65536];
        let head_end = loop {
            if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while data.len() < head_end + length {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        }
        let path = head
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        self.received.lock().unwrap().push(Received {
            path,
            body: data[head_end..head_end + length].to_vec(),
            at: Instant::now(),
        });
        let answer = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| "HTTP/1.1 200 OK\r\n".to_owned());
        let _ = stream.write_all(
            format!("{answer}Content-Length: 2\r\nConnection: close\r\n\r\nok").as_bytes(),
        );
    }
}

fn spec(name: &str, platform: Platform, url: String) -> NotifierSpec {
    NotifierSpec {
        name: name.into(),
        platform,
        url,
        events: EventKinds::ALL,
        timeout: Duration::from_secs(5),
    }
}

fn path(text: &str) -> ActorPath {
    ActorPath::parse(text).expect("path")
}

fn deploy_failed(output: &str) -> NotifyEvent {
    NotifyEvent::DeployFailed {
        path: path("/app/api"),
        id: "7".into(),
        commit: Some("9fceb02".into()),
        step: "build".into(),
        reason: "exit code 101".into(),
        output_tail: output.into(),
    }
}

fn counts_of(notifiers: &Notifiers, name: &str) -> NotifierCounts {
    notifiers
        .counts()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, c)| c)
        .expect("a notifier of that name")
}

/// Waits until every notifier has handled `n` events (delivered or failed).
fn wait_handled(notifiers: &Notifiers, n: u64, within: Duration) {
    wait_until("every notifier handled its events", within, || {
        notifiers
            .counts()
            .iter()
            .all(|(_, c)| c.delivered + c.failed >= n)
    });
}

/// The four kinds against one receiver, each on its own path.
fn four_platforms(receiver: &Receiver) -> Notifiers {
    Notifiers::start(vec![
        spec("slack", Platform::Slack, receiver.url("/slack")),
        spec("mm", Platform::Mattermost, receiver.url("/mm")),
        spec("discord", Platform::Discord, receiver.url("/discord")),
        spec("hook", Platform::Webhook, receiver.url("/hook")),
    ])
    .expect("start the notifiers")
}

#[test]
fn each_platform_gets_its_own_format() {
    let receiver = Receiver::start();
    let notifiers = four_platforms(&receiver);
    notifiers.publish(deploy_failed("compiling\nerror: <!channel> & @everyone\n"));
    notifiers.publish(NotifyEvent::ActorFailed {
        path: path("/app/db"),
        reason: "intensity exceeded".into(),
    });
    wait_handled(&notifiers, 2, Duration::from_secs(10));

    let summary =
        "warden: deploy 7 of /app/api failed at step `build` (commit 9fceb02): exit code 101";
    let slack = receiver.on("/slack");
    assert_eq!(slack.len(), 2);
    assert_eq!(
        slack[0].json(),
        serde_json::json!({"text": format!("{summary}\n```\ncompiling\nerror: &lt;!channel&gt; &amp; @everyone\n```")})
    );
    let mm = receiver.on("/mm");
    assert_eq!(
        mm[0].json(),
        serde_json::json!({"text": format!("{summary}\n```\ncompiling\nerror: <!channel> & @everyone\n```")})
    );
    assert_eq!(
        mm[1].json(),
        serde_json::json!({"text": "warden: /app/db failed (gave up): intensity exceeded"})
    );
    let discord = receiver.on("/discord");
    assert_eq!(
        discord[0].json(),
        serde_json::json!({
            "content": format!("{summary}\n```\ncompiling\nerror: <!channel> & @everyone\n```"),
            "allowed_mentions": {"parse": []},
        })
    );
    let hook = receiver.on("/hook");
    let failed = hook[0].json();
    let at = failed["at"].as_str().expect("at").to_owned();
    assert!(humantime::parse_rfc3339(&at).is_ok(), "{at}");
    assert_eq!(
        failed,
        serde_json::json!({
            "version": 1, "event": "deploy_failed", "notifier": "hook", "path": "/app/api",
            "id": "7", "commit": "9fceb02", "step": "build", "reason": "exit code 101",
            "output_tail": "compiling\nerror: <!channel> & @everyone\n", "at": at,
            "text": summary,
        })
    );
    let gave_up = hook[1].json();
    assert_eq!(gave_up["event"], "actor_failed");
    assert_eq!(gave_up["path"], "/app/db");
    assert_eq!(gave_up["reason"], "intensity exceeded");
    for absent in ["id", "commit", "step", "output_tail"] {
        assert!(gave_up[absent].is_null(), "{absent}: {gave_up}");
    }
    // Exactly once each.
    assert_eq!(receiver.received().len(), 8);
}

/// The code block of a chat text: what is between the first "```\n" and the last "\n```".
fn code_block(text: &str) -> &str {
    let start = text.find("```\n").expect("a code block") + 4;
    let end = text.rfind("\n```").expect("its end");
    &text[start..end]
}

#[test]
fn long_output_is_cut_to_each_platform_limit_keeping_the_end_as_valid_utf8() {
    let receiver = Receiver::start();
    let notifiers = four_platforms(&receiver);
    // 4-, 3- and 2-byte characters everywhere, so every cut lands among them.
    let mut output = String::new();
    for i in 0..4000 {
        output.push_str(&format!("{i} 😀€é build step output line\n"));
    }
    output.push_str("error[E0308]: mismatched types — the final line 😀");
    assert!(output.len() > 2 * WEBHOOK_OUTPUT_LIMIT);
    notifiers.publish(deploy_failed(&output));
    wait_handled(&notifiers, 1, Duration::from_secs(10));

    for (path, key, limit) in [
        ("/slack", "text", SLACK_LIMIT),
        ("/mm", "text", MATTERMOST_LIMIT),
        ("/discord", "content", DISCORD_LIMIT),
    ] {
        let got = receiver.on(path);
        assert_eq!(got.len(), 1, "{path}");
        let text = got[0].json()[key].as_str().expect(key).to_owned();
        assert!(units(&text) <= limit, "{path}: {} > {limit}", units(&text));
        assert!(units(&text) > limit - 100, "{path}: the room is used");
        assert!(text.starts_with("warden: deploy 7 of /app/api failed at step `build`"));
        assert!(text.ends_with("the final line 😀\n```"), "{path}");
        // marker "…[N bytes cut]…" then the end of the output, N = the bytes left out.
        let block = code_block(&text);
        let marker_end = block.find("]…").expect("a marker") + "]…".len();
        let kept = &block[marker_end..];
        assert!(output.ends_with(kept), "{path}: the end is kept whole");
        assert_eq!(
            &block[..marker_end],
            format!("…[{} bytes cut]…", output.len() - kept.len()),
            "{path}"
        );
    }
    let hook = receiver.on("/hook")[0].json();
    let tail = hook["output_tail"].as_str().expect("output_tail");
    assert!(units(tail) <= WEBHOOK_OUTPUT_LIMIT);
    let marker_end = tail.find("]…").expect("a marker") + "]…".len();
    assert!(output.ends_with(&tail[marker_end..]));
    assert_eq!(
        &tail[..marker_end],
        format!("…[{} bytes cut]…", output.len() - (tail.len() - marker_end))
    );
}

#[test]
fn a_429_is_sent_again_once_after_retry_after_and_delivered_once() {
    let receiver = Receiver::start();
    receiver.answer_next("429 Too Many Requests", "Retry-After: 1\r\n");
    let notifiers =
        Notifiers::start(vec![spec("ops", Platform::Slack, receiver.url("/ops"))]).expect("start");
    notifiers.publish(deploy_failed("boom"));
    wait_until("delivered", Duration::from_secs(10), || {
        counts_of(&notifiers, "ops").delivered == 1
    });
    let got = receiver.received();
    assert_eq!(got.len(), 2, "one 429, one delivery");
    let waited = got[1].at - got[0].at;
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert_eq!(got[0].body, got[1].body);
    holds_for("no third post", Duration::from_millis(1500), || {
        receiver.received().len() == 2
    });
    assert_eq!(
        counts_of(&notifiers, "ops"),
        NotifierCounts {
            delivered: 1,
            failed: 0,
            dropped: 0
        }
    );
}

#[test]
fn a_second_429_drops_the_event_instead_of_retrying_forever() {
    let receiver = Receiver::start();
    for _ in 0..5 {
        receiver.answer_next("429 Too Many Requests", "Retry-After: 0.2\r\n");
    }
    let notifiers = Notifiers::start(vec![spec("ops", Platform::Discord, receiver.url("/ops"))])
        .expect("start");
    notifiers.publish(deploy_failed("boom"));
    wait_until("given up", Duration::from_secs(10), || {
        counts_of(&notifiers, "ops").failed == 1
    });
    holds_for("no third post", Duration::from_millis(1000), || {
        receiver.received().len() == 2
    });
}

/// A listener that accepts nothing and answers nothing: connections and requests sit in
/// its backlog until the client gives up.
fn black_hole() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://127.0.0.1:{}/hook",
        listener.local_addr().expect("addr").port()
    );
    (listener, url)
}

/// A loopback URL nothing listens on.
fn closed_port() -> String {
    format!("http://127.0.0.1:{}/hook", support::free_port())
}

#[test]
fn unreachable_notifiers_harm_neither_the_caller_nor_the_others() {
    let receiver = Receiver::start();
    let (_hole, hole_url) = black_hole();
    let mut hole = spec("hole", Platform::Webhook, hole_url);
    hole.timeout = Duration::from_secs(1);
    let notifiers = Notifiers::start(vec![
        hole,
        spec("closed", Platform::Slack, closed_port()),
        spec("good", Platform::Mattermost, receiver.url("/good")),
    ])
    .expect("start");
    let started = Instant::now();
    for id in 0..3 {
        notifiers.publish(NotifyEvent::DeployStarted {
            path: path("/api"),
            id: id.to_string(),
            commit: None,
        });
    }
    assert!(started.elapsed() < Duration::from_millis(200));
    wait_until("the good one has all three", Duration::from_secs(3), || {
        receiver.on("/good").len() == 3
    });
    // Long before the black hole's three deadlines (one after the other) have passed.
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    wait_until(
        "the black hole gave up on each",
        Duration::from_secs(10),
        || counts_of(&notifiers, "hole").failed == 3 && counts_of(&notifiers, "closed").failed == 3,
    );
    assert!(started.elapsed() >= Duration::from_secs(3));

    // A flood never blocks the caller: what does not fit in a queue is dropped, counted.
    let flood = Instant::now();
    for id in 0..500 {
        notifiers.publish(NotifyEvent::DeploySucceeded {
            path: path("/api"),
            id: id.to_string(),
            commit: None,
        });
    }
    assert!(
        flood.elapsed() < Duration::from_millis(500),
        "{:?}",
        flood.elapsed()
    );
    let hole = counts_of(&notifiers, "hole");
    assert!(hole.dropped >= 500 - 64 - 1, "{hole:?}");
}

#[test]
fn a_notifier_is_sent_only_the_events_it_asks_for() {
    let receiver = Receiver::start();
    let mut deploys = spec("deploys", Platform::Webhook, receiver.url("/deploys"));
    deploys.events = EventKinds {
        deploy: true,
        failed: false,
    };
    let mut failures = spec("failures", Platform::Webhook, receiver.url("/failures"));
    failures.events = EventKinds {
        deploy: false,
        failed: true,
    };
    let notifiers = Notifiers::start(vec![deploys, failures]).expect("start");
    notifiers.publish(NotifyEvent::DeploySucceeded {
        path: path("/api"),
        id: "1".into(),
        commit: None,
    });
    notifiers.publish(NotifyEvent::ActorFailed {
        path: path("/db"),
        reason: "gave up".into(),
    });
    wait_handled(&notifiers, 1, Duration::from_secs(10));
    let deploys = receiver.on("/deploys");
    let failures = receiver.on("/failures");
    assert_eq!(deploys.len(), 1);
    assert_eq!(deploys[0].json()["event"], "deploy_succeeded");
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].json()["event"], "actor_failed");
}

// ---- config -------------------------------------------------------------------------

/// Writes `url` to `dir/name` with `mode`.
fn url_file(dir: &Path, name: &str, url: &str, mode: u32) {
    let file = dir.join(name);
    std::fs::write(&file, format!("{url}\n")).expect("write the url file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Loads `text` as `warden.toml` in `dir`: the error's one-line message, line and key.
fn refused(dir: &Path, text: &str) -> (String, Option<usize>, Option<String>) {
    let file = dir.join("warden.toml");
    std::fs::write(&file, text).expect("write");
    match warden::config::load(&file) {
        Ok(config) => panic!("accepted: {config:?}"),
        Err(e) => (e.to_string(), e.line, e.key),
    }
}

#[test]
fn notifier_config_is_read_with_its_defaults_and_its_url_kept_out_of_debug() {
    let dir = support::temp_dir();
    url_file(
        dir.path(),
        "ops.url",
        "https://hooks.slack.com/services/T/B/SECRET",
        0o600,
    );
    let file = dir.path().join("warden.toml");
    std::fs::write(
        &file,
        "[[notifier]]\nname = \"ops\"\nkind = \"slack\"\nurl_file = \"ops.url\"\n\n[[notifier]]\nname = \"hook\"\nkind = \"webhook\"\nurl_file = \"ops.url\"\nevents = [\"failed\"]\ntimeout = \"2s\"\n",
    )
    .expect("write");
    let config = warden::config::load(&file).expect("accepted");
    let ops = &config.notifiers[0];
    assert_eq!(ops.spec.name, "ops");
    assert_eq!(ops.spec.platform, Platform::Slack);
    assert_eq!(ops.spec.url, "https://hooks.slack.com/services/T/B/SECRET");
    assert_eq!(ops.spec.events, EventKinds::ALL);
    assert_eq!(ops.spec.timeout, Duration::from_secs(10));
    assert_eq!(ops.line, 1);
    let hook = &config.notifiers[1].spec;
    assert_eq!((hook.events.deploy, hook.events.failed), (false, true));
    assert_eq!(hook.timeout, Duration::from_secs(2));
    let shown = format!("{config:?}");
    assert!(!shown.contains("SECRET"), "{shown}");
}

#[test]
fn bad_notifier_entries_are_refused_naming_file_line_and_key() {
    let dir = support::temp_dir();
    let d = dir.path();
    url_file(d, "ok.url", "https://example.com/hook", 0o600);
    url_file(d, "loose.url", "https://example.com/hook", 0o644);
    url_file(d, "ftp.url", "ftp://example.com/secret-part", 0o600);
    let entry = |name: &str, kind: &str, file: &str| {
        format!("[[notifier]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl_file = \"{file}\"\n")
    };
    let cases: Vec<(String, usize, &str, Vec<&str>)> = vec![
        (
            entry("ops", "teams", "ok.url"),
            3,
            "kind",
            vec![
                "unknown notifier kind \"teams\"",
                "slack, mattermost, discord, webhook",
            ],
        ),
        (
            "[[notifier]]\nname = \"ops\"\nkind = \"slack\"\n".into(),
            1,
            "url_file",
            vec!["[[notifier]] \"ops\"", "url_file", "required"],
        ),
        (
            entry("ops", "slack", "missing.url"),
            4,
            "url_file",
            vec!["missing.url", "no such file"],
        ),
        (
            entry("ops", "slack", "loose.url"),
            4,
            "url_file",
            vec!["loose.url", "0644"],
        ),
        (
            entry("ops", "slack", "ftp.url"),
            4,
            "url_file",
            vec!["[[notifier]] \"ops\"", "not an http:// or https:// URL"],
        ),
        (
            format!(
                "{}\n{}",
                entry("ops", "slack", "ok.url"),
                entry("ops", "discord", "ok.url")
            ),
            7,
            "name",
            vec!["duplicate notifier name \"ops\"", "line 1"],
        ),
        (
            format!(
                "{}events = [\"deploy\", \"reboot\"]\n",
                entry("ops", "slack", "ok.url")
            ),
            5,
            "events",
            vec!["unknown event \"reboot\""],
        ),
        (
            format!("{}events = []\n", entry("ops", "slack", "ok.url")),
            5,
            "events",
            vec!["at least one"],
        ),
        (
            format!("{}timeout = \"0s\"\n", entry("ops", "slack", "ok.url")),
            5,
            "timeout",
            vec!["longer than 0"],
        ),
        (
            format!("{}colour = \"red\"\n", entry("ops", "slack", "ok.url")),
            5,
            "colour",
            vec!["unknown key `colour`"],
        ),
    ];
    for (text, line, key, says) in cases {
        let (shown, got_line, got_key) = refused(d, &text);
        assert_eq!(got_line, Some(line), "line of: {shown}");
        assert_eq!(got_key.as_deref(), Some(key), "key of: {shown}");
        assert!(shown.contains(&format!("warden.toml:{line}: ")), "{shown}");
        for piece in says {
            assert!(shown.contains(piece), "{piece:?} not in: {shown}");
        }
        assert!(
            !shown.contains("secret-part"),
            "the URL's path is a secret: {shown}"
        );
    }
    // `warden check` refuses it with exit 2.
    std::fs::write(d.join("warden.toml"), entry("ops", "slack", "loose.url")).expect("write");
    let (code, _, stderr) = support::run_warden(&["check", "-c", "warden.toml"], d);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("loose.url"), "{stderr}");
}

// ---- warden up ------------------------------------------------------------------------

#[test]
fn an_actor_that_gives_up_is_told_once_to_every_notifier_while_dead_ones_harm_nothing() {
    let receiver = Receiver::start();
    let (_hole, hole_url) = black_hole();
    let dir = support::temp_dir();
    url_file(dir.path(), "slack.url", &receiver.url("/slack"), 0o600);
    url_file(dir.path(), "hook.url", &receiver.url("/hook"), 0o600);
    url_file(dir.path(), "hole.url", &hole_url, 0o600);
    url_file(dir.path(), "closed.url", &closed_port(), 0o600);
    let body = format!(
        r#"
[[notifier]]
name = "hole"
kind = "webhook"
url_file = "hole.url"
timeout = "5s"

[[notifier]]
name = "closed"
kind = "discord"
url_file = "closed.url"

[[notifier]]
name = "slack"
kind = "slack"
url_file = "slack.url"

[[notifier]]
name = "hook"
kind = "webhook"
url_file = "hook.url"
events = ["failed"]

[[service]]
name = "steady"
command = ["sleep", "1000"]

[[service]]
name = "crasher"
command = {}
restart = {{ backoff = {{ initial = "20ms", max = "20ms" }}, intensity = {{ max = 2, within = "60s" }} }}
"#,
        support::sh("exit 3")
    );
    let w = Warden::start_in(dir, &body);
    let crasher = w.wait_state("/crasher", "failed", Duration::from_secs(20));
    let reason = crasher["failed_reason"]
        .as_str()
        .expect("a failed_reason")
        .to_owned();
    wait_until("slack and hook told", Duration::from_secs(10), || {
        receiver.on("/slack").len() == 1 && receiver.on("/hook").len() == 1
    });
    let slack = receiver.on("/slack")[0].json();
    let text = slack["text"].as_str().expect("text");
    assert!(
        text.starts_with("warden: /crasher failed (gave up): "),
        "{text}"
    );
    assert!(
        text.contains(
            &reason
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        ),
        "{text} / {reason}"
    );
    let hook = receiver.on("/hook")[0].json();
    assert_eq!(hook["event"], "actor_failed");
    assert_eq!(hook["path"], "/crasher");
    assert_eq!(hook["reason"], reason.as_str());

    // While the black hole holds its post, warden supervises as before.
    let started = Instant::now();
    let health = support::http(w.port, "GET", "/healthz", None, None).expect("healthz");
    assert_eq!(health.status, 200);
    assert!(started.elapsed() < Duration::from_millis(500));
    let old = w.actor_pid("/steady").expect("steady's pid");
    let restarted = w.req("POST", "/api/v1/actors/steady/restart");
    assert_eq!(restarted.status, 200, "{}", restarted.text());
    assert_ne!(w.actor_pid("/steady"), Some(old));
    // Once each: no second message, to nobody.
    holds_for(
        "one message per notifier",
        Duration::from_millis(1500),
        || receiver.received().len() == 2,
    );
    let log = w.stderr_text();
    assert!(!log.contains(&hole_url), "the URL is a secret: {log}");
}

/// A deploy's transitions reach the notifiers: started and failed (naming the step, with
/// the end of its output) for a failing step, started and succeeded for a good one; the
/// failing deploy's actor is not told a second time as an actor that gave up.
#[test]
fn deploys_are_told_started_then_failed_with_the_step_or_succeeded() {
    let receiver = Receiver::start();
    let dir = support::temp_dir();
    url_file(dir.path(), "hook.url", &receiver.url("/hook"), 0o600);
    url_file(dir.path(), "chat.url", &receiver.url("/chat"), 0o600);
    std::fs::write(dir.path().join("fail"), "1").expect("write the switch");
    let body = format!(
        r#"
[[notifier]]
name = "hook"
kind = "webhook"
url_file = "hook.url"

[[notifier]]
name = "chat"
kind = "mattermost"
url_file = "chat.url"
events = ["failed"]

[[service]]
name = "api"
command = ["sleep", "1000"]
deploy = {{ repo = "acme/api", steps = [{}] }}
"#,
        support::sh("echo building; if [ -e fail ]; then echo 'error: it broke'; exit 7; fi")
    );
    let w = Warden::start_in(dir, &body);
    w.wait_state("/api", "running", Duration::from_secs(10));
    let events = |n: usize| {
        wait_until("the deploy events", Duration::from_secs(20), || {
            receiver.on("/hook").len() >= n
        });
        receiver
            .on("/hook")
            .iter()
            .map(Received::json)
            .collect::<Vec<_>>()
    };

    let asked = w.req("POST", "/api/v1/actors/api/deploy");
    assert_eq!(asked.status, 202, "{}", asked.text());
    let told = events(2);
    assert_eq!(told[0]["event"], "deploy_started", "{told:?}");
    assert_eq!(told[1]["event"], "deploy_failed", "{told:?}");
    assert_eq!(told[1]["path"], "/api");
    assert_eq!(told[0]["id"], told[1]["id"]);
    assert!(
        told[1]["step"].as_str().is_some_and(|s| s.contains("sh")),
        "the failing step is named: {told:?}"
    );
    assert!(
        told[1]["output_tail"]
            .as_str()
            .is_some_and(|o| o.contains("error: it broke")),
        "the end of the step's output: {told:?}"
    );

    std::fs::remove_file(w.dir.path().join("fail")).expect("flip the switch");
    let asked = w.req("POST", "/api/v1/actors/api/deploy");
    assert_eq!(asked.status, 202, "{}", asked.text());
    let told = events(4);
    assert_eq!(told[2]["event"], "deploy_started", "{told:?}");
    assert_eq!(told[3]["event"], "deploy_succeeded", "{told:?}");
    assert_ne!(told[1]["id"], told[3]["id"]);
    // `chat` asked only for give-ups: a failed deploy is not one, nor is its actor.
    holds_for("nothing more", Duration::from_millis(1000), || {
        receiver.on("/hook").len() == 4 && receiver.on("/chat").is_empty()
    });
    // /metrics counts what each notifier delivered.
    let metrics = w.req("GET", "/metrics").text();
    for line in [
        "warden_notifier_events_total{notifier=\"hook\",outcome=\"delivered\"} 4",
        "warden_notifier_events_total{notifier=\"hook\",outcome=\"failed\"} 0",
        "warden_notifier_events_total{notifier=\"chat\",outcome=\"delivered\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
}
