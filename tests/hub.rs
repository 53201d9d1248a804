//! Hub and spokes (design: "Cluster: hub and spokes"): real wardens on loopback, each
//! with its own temp dir and port; simulated spokes speak the protocol by hand
//! (`support::ws`) where a test needs exact control of the frames.

mod support;

use std::time::{Duration, Instant};

use support::ws::Ws;
use support::{http, wait_for, wait_until, Warden};
use warden_actors::link::protocol::{self, Auth, HubFrame, SpokeFrame, MAX_HELLO_BYTES};

const CONNECT: &str = "/api/v1/hub/connect";

fn hub() -> Warden {
    Warden::start("[hub]\nenabled = true\n")
}

/// A fresh join token for `name` from `hub`.
fn token(hub: &Warden, name: &str, ttl: &str) -> String {
    let body = format!(r#"{{"name":"{name}","ttl":"{ttl}"}}"#);
    let r = http(
        hub.port,
        "POST",
        "/api/v1/hub/tokens",
        Some(&hub.token()),
        Some(body.as_bytes()),
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["name"], name);
    v["token"].as_str().unwrap().to_owned()
}

/// A spoke warden of `hub` named `name`, enrolling with `join` (written to its
/// join.token), with `spoke_keys` added to `[spoke]` and `children` after it.
fn spoke(hub: &Warden, name: &str, join: Option<&str>, spoke_keys: &str, children: &str) -> Warden {
    let dir = support::temp_dir();
    if let Some(join) = join {
        std::fs::write(dir.path().join("join.token"), join).unwrap();
    }
    let body = format!(
        "[spoke]\nhub = \"ws://127.0.0.1:{}{CONNECT}\"\nname = \"{name}\"\njoin_token_file = \"join.token\"\n{spoke_keys}\n{children}",
        hub.port
    );
    Warden::start_in(dir, &body)
}

fn hello(name: &str, auth: Auth) -> Vec<u8> {
    protocol::encode(&SpokeFrame::Hello {
        version: protocol::PROTOCOL_VERSION,
        name: name.to_owned(),
        auth,
    })
}

/// A simulated spoke: connects, says hello, returns the socket and the hub's answer.
fn simulated(port: u16, name: &str, auth: Auth) -> (Ws, HubFrame) {
    let mut ws = Ws::connect(port, CONNECT).expect("connect");
    ws.send(&hello(name, auth)).unwrap();
    let answer = ws.recv_binary().expect("an answer to the hello");
    let frame = protocol::decode(&answer, protocol::MAX_MESSAGE_BYTES).expect("a hub frame");
    (ws, frame)
}

fn refused(frame: &HubFrame) -> &str {
    match frame {
        HubFrame::Refused { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn get(w: &Warden, path: &str) -> support::Response {
    w.req("GET", path)
}

const SERVICES: &str = r#"
[[service]]
name = "sleeper"
command = ["sleep", "1000"]

[[service]]
name = "talker"
command = ["sh", "-c", "echo one; echo two; echo three; exec sleep 1000"]

[[supervisor]]
name = "grp"

[[service]]
name = "logs"
supervisor = "grp"
command = ["sh", "-c", "echo from-logs; exec sleep 1000"]
"#;

/// Promise: a spoke enrolls with a join token, its link `/_hub` (kind link) runs, and
/// every relayed verb answers exactly what the spoke's own API answers.
#[test]
fn enrollment_then_relayed_verbs_equal_the_spokes_own_answers() {
    let hub = hub();
    let join = token(&hub, "edge-1", "10m");
    let spoke = spoke(&hub, "edge-1", Some(&join), "", SERVICES);
    let link = spoke.wait_state("/_hub", "running", Duration::from_secs(20));
    assert_eq!(link["kind"], "link");
    spoke.wait_state("/sleeper", "running", Duration::from_secs(10));
    spoke.wait_state("/talker", "running", Duration::from_secs(10));
    spoke.wait_state("/grp/logs", "running", Duration::from_secs(10));
    wait_until("talker's lines", Duration::from_secs(10), || {
        get(&spoke, "/api/v1/actors/talker/logs?tail=10")
            .text()
            .contains("three")
    });
    wait_until("the logs actor's line", Duration::from_secs(10), || {
        get(&spoke, "/api/v1/actors/grp/logs/logs?tail=5")
            .text()
            .contains("from-logs")
    });
    assert_eq!(
        get(&spoke, "/api/v1/actors/grp/logs").json()["name"],
        "logs",
        "the spoke's own API reads grp/logs as the actor"
    );
    let spokes = get(&hub, "/api/v1/spokes").json();
    assert_eq!(spokes[0]["name"], "edge-1");
    assert_eq!(spokes[0]["connected"], true);
    assert_eq!(spokes[0]["version"], 1);

    for (relayed, own) in [
        ("/api/v1/spokes/edge-1/tree", "/api/v1/tree"),
        ("/api/v1/spokes/edge-1/actors", "/api/v1/actors"),
        (
            "/api/v1/spokes/edge-1/actors/sleeper",
            "/api/v1/actors/sleeper",
        ),
        ("/api/v1/spokes/edge-1/actors/_hub", "/api/v1/actors/_hub"),
        ("/api/v1/spokes/edge-1/actors/nope", "/api/v1/actors/nope"),
        (
            "/api/v1/spokes/edge-1/actors/talker/logs?tail=2",
            "/api/v1/actors/talker/logs?tail=2",
        ),
        // An actor named `logs` is that actor, not the logs of its parent; its own
        // logs are one `/logs` further.
        (
            "/api/v1/spokes/edge-1/actors/grp/logs",
            "/api/v1/actors/grp/logs",
        ),
        (
            "/api/v1/spokes/edge-1/actors/grp/logs/logs?tail=5",
            "/api/v1/actors/grp/logs/logs?tail=5",
        ),
    ] {
        let a = get(&hub, relayed);
        let b = get(&spoke, own);
        assert_eq!(a.status, b.status, "{relayed}: {}", a.text());
        assert_eq!(a.text(), b.text(), "{relayed}");
        assert_eq!(
            a.header("content-type"),
            b.header("content-type"),
            "{relayed}"
        );
    }

    // stop, start, restart through the hub: the answer is the spoke's view afterwards.
    let stopped = hub.req("POST", "/api/v1/spokes/edge-1/actors/sleeper/stop");
    assert_eq!(stopped.status, 200, "{}", stopped.text());
    assert_eq!(stopped.json()["state"], "stopped");
    assert_eq!(spoke.state("/sleeper"), "stopped");
    let again = hub.req("POST", "/api/v1/spokes/edge-1/actors/sleeper/stop");
    assert_eq!(
        again.status,
        409,
        "stop of a stopped actor: {}",
        again.text()
    );
    let started = hub.req("POST", "/api/v1/spokes/edge-1/actors/sleeper/start");
    assert_eq!(started.status, 200, "{}", started.text());
    assert_eq!(started.json()["state"], "running");
    let before = spoke.actor_pid("/sleeper");
    let restarted = hub.req("POST", "/api/v1/spokes/edge-1/actors/sleeper/restart");
    assert_eq!(restarted.status, 200, "{}", restarted.text());
    assert_ne!(restarted.json()["pid"].as_u64().map(|p| p as u32), before);
    assert_eq!(restarted.json(), spoke.actor("/sleeper"));

    // The CLI through the hub.
    let hub_config = hub.config.to_str().unwrap().to_owned();
    let (code, out, err) = support::run_warden(
        &[
            "ctl",
            "-c",
            &hub_config,
            "--spoke",
            "edge-1",
            "--json",
            "status",
        ],
        hub.dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("/sleeper"), "{out}");
    let (code, out, err) =
        support::run_warden(&["hub", "-c", &hub_config, "spokes"], hub.dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("edge-1") && out.contains("yes"), "{out}");
    // Unknown spoke: 404; an enrolled spoke that is gone: 503.
    assert_eq!(get(&hub, "/api/v1/spokes/nobody/tree").status, 404);
    let mut spoke = spoke;
    let status = spoke.signal_and_wait(15, Duration::from_secs(15));
    assert!(status.success(), "{}", spoke.stderr_text());
    wait_until(
        "the hub sees the spoke gone",
        Duration::from_secs(10),
        || get(&hub, "/api/v1/spokes").json()[0]["connected"] == false,
    );
    let gone = get(&hub, "/api/v1/spokes/edge-1/tree");
    assert_eq!(gone.status, 503, "{}", gone.text());
    assert_eq!(gone.json()["error"], "spoke not connected");
}

/// Promise: a join token is single-use: of 16 concurrent enrollments with one token,
/// exactly one is welcomed; the others are refused.
#[test]
fn of_sixteen_concurrent_enrollments_on_one_token_exactly_one_wins() {
    let hub = hub();
    let join = token(&hub, "edge", "10m");
    let port = hub.port;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let join = join.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut ws = Ws::connect(port, CONNECT).unwrap();
                let bytes = hello("edge", Auth::Join { token: join });
                barrier.wait();
                ws.send(&bytes).unwrap();
                let answer = ws.recv_binary().expect("an answer");
                let frame: HubFrame = protocol::decode(&answer, usize::MAX).unwrap();
                // Keep the winner connected until every thread has its answer.
                (frame, ws)
            })
        })
        .collect();
    let answers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let welcomed = answers
        .iter()
        .filter(|(f, _)| {
            matches!(
                f,
                HubFrame::Welcome {
                    credential: Some(_)
                }
            )
        })
        .count();
    assert_eq!(
        welcomed,
        1,
        "{:?}",
        answers.iter().map(|a| &a.0).collect::<Vec<_>>()
    );
}

/// Promise: a token expires; an expired, used, revoked or unknown token is refused, and
/// a refused spoke's link is `failed` with the hub's reason (it stops retrying).
#[test]
fn expired_used_revoked_and_unknown_tokens_are_refused_for_good() {
    let hub = hub();
    let short = token(&hub, "late", "1s");
    std::thread::sleep(Duration::from_millis(1300));
    let (_ws, frame) = simulated(hub.port, "late", Auth::Join { token: short });
    assert!(refused(&frame).contains("expired"), "{frame:?}");

    let used = token(&hub, "twice", "10m");
    let (_first, frame) = simulated(
        hub.port,
        "twice",
        Auth::Join {
            token: used.clone(),
        },
    );
    assert!(matches!(
        frame,
        HubFrame::Welcome {
            credential: Some(_)
        }
    ));
    let (_ws, frame) = simulated(
        hub.port,
        "twice",
        Auth::Join {
            token: used.clone(),
        },
    );
    assert!(
        refused(&frame).contains("unknown, used or revoked"),
        "{frame:?}"
    );

    let revoked = token(&hub, "gone", "10m");
    let id = revoked.split_once('.').unwrap().0;
    let listed = get(&hub, "/api/v1/hub/tokens").json();
    assert!(
        listed.as_array().unwrap().iter().any(|t| t["id"] == id),
        "{listed}"
    );
    assert!(!listed
        .to_string()
        .contains(revoked.split_once('.').unwrap().1));
    assert_eq!(
        hub.req("DELETE", &format!("/api/v1/hub/tokens/{id}"))
            .status,
        204
    );
    let (_ws, frame) = simulated(hub.port, "gone", Auth::Join { token: revoked });
    assert!(
        refused(&frame).contains("unknown, used or revoked"),
        "{frame:?}"
    );

    let (_ws, frame) = simulated(
        hub.port,
        "x",
        Auth::Join {
            token: "abc.def".into(),
        },
    );
    assert!(refused(&frame).contains("unknown"), "{frame:?}");
    let (_ws, frame) = simulated(
        hub.port,
        "twice",
        Auth::Credential {
            credential: "00".repeat(32),
        },
    );
    assert!(refused(&frame).contains("credential"), "{frame:?}");

    // A real spoke with the used token: failed, with the reason, and no retry.
    let spoke = spoke(&hub, "twice", Some(&used), "", "");
    let link = spoke.wait_state("/_hub", "failed", Duration::from_secs(20));
    let reason = link["failed_reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("unknown, used or revoked"), "{link}");
    assert!(link["next_restart_at"].is_null(), "{link}");
    support::holds_for("the link stays failed", Duration::from_millis(700), || {
        spoke.state("/_hub") == "failed"
    });
}

/// Promise: a spoke reconnects with only its credential (the join token is gone) after
/// the hub is killed with SIGKILL and started again; meanwhile its link is in backoff
/// with a visible next_restart_at.
#[test]
fn a_spoke_reconnects_with_its_credential_after_the_hub_is_killed() {
    let mut hub = hub();
    let join = token(&hub, "edge", "10m");
    let spoke = spoke(&hub, "edge", Some(&join), "", SERVICES);
    spoke.wait_state("/_hub", "running", Duration::from_secs(20));
    std::fs::remove_file(spoke.path("join.token")).unwrap();

    let mut old = hub.child.take().unwrap();
    old.kill().unwrap();
    old.wait().unwrap();
    let waiting = wait_for("the link in backoff", Duration::from_secs(30), || {
        let a = spoke.actor("/_hub");
        (a["state"] == "backoff" && !a["next_restart_at"].is_null()).then_some(a)
    });
    assert!(
        waiting["last_exit"]["reason"].as_str().is_some(),
        "{waiting}"
    );

    let restarted = std::process::Command::new(support::warden_bin())
        .arg("up")
        .arg("-c")
        .arg(&hub.config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(hub.path("warden2.stderr")).unwrap())
        .spawn()
        .unwrap();
    hub.child = Some(restarted);
    let t0 = Instant::now();
    wait_until("the spoke reconnected", Duration::from_secs(20), || {
        http(hub.port, "GET", "/api/v1/spokes", Some(&hub.token()), None)
            .is_ok_and(|r| r.status == 200 && r.json()[0]["connected"] == true)
    });
    eprintln!("reconnected {:?} after the hub answered", t0.elapsed());
    let relayed = get(&hub, "/api/v1/spokes/edge/actors/sleeper");
    assert_eq!(relayed.status, 200, "{}", relayed.text());
    assert_eq!(spoke.state("/_hub"), "running");
}

/// Promise: `DELETE /api/v1/spokes/{name}` closes the live connection within 100 ms and
/// fails the verbs in flight on it (503 at once, not a 504 ten seconds later).
#[test]
fn revoking_a_spoke_closes_its_connection_at_once_and_fails_its_verbs_in_flight() {
    let hub = hub();
    let join = token(&hub, "slow", "10m");
    let (mut ws, frame) = simulated(hub.port, "slow", Auth::Join { token: join });
    assert!(matches!(
        frame,
        HubFrame::Welcome {
            credential: Some(_)
        }
    ));
    // A verb the simulated spoke receives and never answers.
    let (port, token) = (hub.port, hub.token());
    let in_flight = std::thread::spawn(move || {
        let t = Instant::now();
        let r = http(port, "GET", "/api/v1/spokes/slow/tree", Some(&token), None).unwrap();
        (r, t.elapsed())
    });
    let request = ws.recv_binary().expect("the relayed request");
    assert!(matches!(
        protocol::decode::<HubFrame>(&request, usize::MAX).unwrap(),
        HubFrame::Request { .. }
    ));
    // The close is watched by a thread of its own: the DELETE's answer follows a durable
    // write of the store (slow on a busy disk), the close does not wait for it.
    let watcher = std::thread::spawn(move || {
        let closed = ws.closed_within(Duration::from_secs(2));
        (closed, Instant::now())
    });
    let t0 = Instant::now();
    assert_eq!(hub.req("DELETE", "/api/v1/spokes/slow").status, 204);
    let (closed, at) = watcher.join().unwrap();
    assert!(closed, "the socket was not closed");
    let closed_after = at.saturating_duration_since(t0);
    assert!(
        closed_after < Duration::from_millis(100),
        "closed after {closed_after:?}"
    );
    let (answer, took) = in_flight.join().unwrap();
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The enrollment is gone: the spoke is unknown now.
    assert_eq!(get(&hub, "/api/v1/spokes/slow/tree").status, 404);
    assert_eq!(hub.req("DELETE", "/api/v1/spokes/slow").status, 404);
}

/// Promise: the spoke checks every verb against its own `allow` and `paths` (defence in
/// depth: the hub does not know them); a refusal is a 403 that names the spoke's key.
#[test]
fn allow_and_paths_refusals_are_403_decided_by_the_spoke() {
    let hub = hub();
    let join = token(&hub, "edge", "10m");
    let children = r#"
[[supervisor]]
name = "app"

[[service]]
name = "api"
supervisor = "app"
command = ["sleep", "1000"]

[[service]]
name = "db"
command = ["sleep", "1000"]
"#;
    let spoke = spoke(
        &hub,
        "edge",
        Some(&join),
        "allow = [\"actors\", \"actor\", \"restart\"]\npaths = [\"/app\"]",
        children,
    );
    spoke.wait_state("/_hub", "running", Duration::from_secs(20));
    spoke.wait_state("/db", "running", Duration::from_secs(10));
    let db_pid = spoke.actor_pid("/db");
    let stop = hub.req("POST", "/api/v1/spokes/edge/actors/app/api/stop");
    assert_eq!(stop.status, 403, "{}", stop.text());
    assert!(stop.text().contains("allow"), "{}", stop.text());
    let outside = hub.req("POST", "/api/v1/spokes/edge/actors/db/restart");
    assert_eq!(outside.status, 403, "{}", outside.text());
    assert!(outside.text().contains("paths"), "{}", outside.text());
    assert_eq!(get(&hub, "/api/v1/spokes/edge/actors/db").status, 403);
    assert_eq!(get(&hub, "/api/v1/spokes/edge/tree").status, 403);
    // Listings show only the allowed subtrees.
    let listed = get(&hub, "/api/v1/spokes/edge/actors").json();
    let paths: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].clone())
        .collect();
    assert_eq!(paths, vec!["/app", "/app/api"], "{listed}");
    // Inside both: allowed.
    assert_eq!(
        hub.req("POST", "/api/v1/spokes/edge/actors/app/api/restart")
            .status,
        200
    );
    assert_eq!(spoke.state("/db"), "running");
    assert_eq!(spoke.actor_pid("/db"), db_pid);
    assert!(
        spoke
            .stderr_with("refused a verb from the hub", Duration::from_secs(10))
            .is_some(),
        "the refusal is not logged: {}",
        spoke.stderr_text()
    );
}

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            files_under(&path, out);
        } else if meta.is_file() {
            out.push(path);
        }
    }
}

/// Promise: no join-token secret and no credential is stored anywhere in either
/// state_dir, except the spoke's own credential file (0600).
#[test]
fn no_token_or_credential_bytes_in_either_state_dir_but_the_spokes_credential_file() {
    use std::os::unix::fs::PermissionsExt;
    let hub = hub();
    let join = token(&hub, "edge", "10m");
    let unused = token(&hub, "other", "10m");
    let spoke = spoke(&hub, "edge", Some(&join), "", "");
    spoke.wait_state("/_hub", "running", Duration::from_secs(20));
    let credential_file = spoke.path("state/spoke.credential");
    let credential = std::fs::read_to_string(&credential_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(credential.len(), 64);
    let mode = std::fs::metadata(&credential_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let secrets = [
        join.split_once('.').unwrap().1.to_owned(),
        unused.split_once('.').unwrap().1.to_owned(),
        credential.clone(),
    ];
    let mut files = Vec::new();
    files_under(&hub.path("state"), &mut files);
    files_under(&spoke.path("state"), &mut files);
    assert!(files.iter().any(|f| f.ends_with("hub.json")));
    for file in files {
        if file == credential_file {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap_or_default();
        for secret in &secrets {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "a secret is stored in {}", file.display());
        }
    }
}

/// Promise: garbage, oversized and truncated frames on the connect route close that
/// connection only: a connected spoke keeps being served and /healthz answers.
#[test]
fn garbage_oversized_and_truncated_frames_close_that_connection_only() {
    let hub = hub();
    let join = token(&hub, "edge", "10m");
    let spoke = spoke(&hub, "edge", Some(&join), "", SERVICES);
    spoke.wait_state("/_hub", "running", Duration::from_secs(20));

    // Not a WebSocket frame at all.
    let mut garbage = Ws::connect(hub.port, CONNECT).unwrap();
    use std::io::Write as _;
    garbage
        .stream
        .write_all(b"\xff\xff\xff\xff garbage garbage")
        .unwrap();
    assert!(garbage.closed_within(Duration::from_secs(5)));
    // A frame, but not MessagePack.
    let mut not_msgpack = Ws::connect(hub.port, CONNECT).unwrap();
    not_msgpack.send(b"\xc1\xc1\xc1 not a hello").unwrap();
    assert!(not_msgpack.closed_within(Duration::from_secs(5)));
    // A hello over the hello limit.
    let mut oversized = Ws::connect(hub.port, CONNECT).unwrap();
    let big = hello(
        "x".repeat(MAX_HELLO_BYTES).as_str(),
        Auth::Join {
            token: "a.b".into(),
        },
    );
    let _ = oversized.send(&big);
    assert!(oversized.closed_within(Duration::from_secs(5)));
    // A frame header announcing 32 MiB: over the frame limit.
    let mut huge = Ws::connect(hub.port, CONNECT).unwrap();
    let mut header = vec![0x82u8, 0x80 | 127];
    header.extend_from_slice(&(32u64 << 20).to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    huge.stream.write_all(&header).unwrap();
    assert!(huge.closed_within(Duration::from_secs(5)));
    // A truncated frame: the header says 100 bytes, 10 come, then the client goes away.
    let mut truncated = Ws::connect(hub.port, CONNECT).unwrap();
    let whole = support::ws::frame(0x2, &[0u8; 100]);
    truncated.stream.write_all(&whole[..16]).unwrap();
    drop(truncated);
    // A text message instead of the binary hello.
    let mut text = Ws::connect(hub.port, CONNECT).unwrap();
    text.send_frame(0x1, b"hello").unwrap();
    assert!(text.closed_within(Duration::from_secs(5)));

    assert_eq!(
        http(hub.port, "GET", "/healthz", None, None)
            .unwrap()
            .status,
        200
    );
    let relayed = get(&hub, "/api/v1/spokes/edge/actors/sleeper");
    assert_eq!(relayed.status, 200, "{}", relayed.text());
    assert_eq!(spoke.state("/_hub"), "running");
    assert_eq!(spoke.actor("/_hub")["restarts"], 0);
}

/// Promise: `ws://` to a host other than loopback is refused at `check` unless
/// `insecure = true` says so on purpose; an unknown verb in `allow` is refused; a
/// `ca_file` that is missing or holds no certificate is refused naming it; a child may
/// not take a name reserved for warden.
#[test]
fn plain_ws_to_another_host_needs_insecure_and_allow_names_verbs() {
    let dir = support::temp_dir();
    let config = dir.path().join("warden.toml");
    let write = |body: &str| std::fs::write(&config, body).unwrap();
    let cfg = config.to_str().unwrap();
    write("[spoke]\nhub = \"ws://10.1.2.3:7700/api/v1/hub/connect\"\nname = \"e\"\n");
    let (code, _, err) = support::run_warden(&["check", "-c", cfg], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("insecure") && err.contains("hub"), "{err}");
    write(
        "[spoke]\nhub = \"ws://10.1.2.3:7700/api/v1/hub/connect\"\nname = \"e\"\ninsecure = true\n",
    );
    let (code, _, err) = support::run_warden(&["check", "-c", cfg], dir.path());
    assert_eq!(code, 0, "{err}");
    write("[spoke]\nhub = \"wss://hub.example:7700/api/v1/hub/connect\"\nname = \"e\"\nallow = [\"exec\"]\n");
    let (code, _, err) = support::run_warden(&["check", "-c", cfg], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("exec"), "{err}");
    std::fs::write(dir.path().join("garbage.pem"), "not a certificate\n").unwrap();
    for file in ["missing.pem", "garbage.pem"] {
        write(&format!(
            "[spoke]\nhub = \"wss://hub.example:7700/api/v1/hub/connect\"\nname = \"e\"\nca_file = \"{file}\"\n"
        ));
        let (code, _, err) = support::run_warden(&["check", "-c", cfg], dir.path());
        assert_eq!(code, 2, "{file}: {err}");
        assert!(err.contains("ca_file") && err.contains(file), "{err}");
    }
    // Names starting with `_` are warden's (`/_hub`).
    write("[[service]]\nname = \"_hub\"\ncommand = [\"true\"]\n");
    let (code, _, err) = support::run_warden(&["check", "-c", cfg], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("reserved"), "{err}");
}

/// Promise: `wss://` speaks TLS (rustls) and verifies the hub's certificate: a hub with
/// a self-signed certificate is not trusted; the link says why and keeps retrying.
#[test]
fn wss_verifies_the_hubs_certificate() {
    let dir = support::temp_dir();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipped: no openssl to make a certificate");
        return;
    }
    let port = support::free_port();
    let server = format!(
        "import socket, ssl\nctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\nctx.load_cert_chain({:?}, {:?})\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1', {port}))\ns.listen(16)\nwhile True:\n    c, _ = s.accept()\n    try:\n        ctx.wrap_socket(c, server_side=True).close()\n    except Exception:\n        c.close()\n",
        cert.to_str().unwrap(),
        key.to_str().unwrap()
    );
    let mut tls_server = std::process::Command::new("python3")
        .arg("-c")
        .arg(server)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the TLS server listens", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let body = format!(
        "[spoke]\nhub = \"wss://localhost:{port}{CONNECT}\"\nname = \"edge\"\njoin_token_file = \"join.token\"\n"
    );
    let sdir = support::temp_dir();
    std::fs::write(sdir.path().join("join.token"), "a.b").unwrap();
    let spoke = Warden::start_in(sdir, &body);
    let link = wait_for(
        "a TLS failure in last_exit",
        Duration::from_secs(20),
        || {
            let a = spoke.actor("/_hub");
            a["last_exit"]["reason"].as_str().is_some().then_some(a)
        },
    );
    let _ = tls_server.kill();
    let _ = tls_server.wait();
    let reason = link["last_exit"]["reason"].as_str().unwrap().to_lowercase();
    assert!(
        reason.contains("certificate") || reason.contains("issuer") || reason.contains("tls"),
        "{link}"
    );
    assert_ne!(link["state"], "failed", "a TLS failure is retried: {link}");
}

/// Promise: `warden hub token create|list|revoke` and `warden hub revoke` drive the
/// hub's routes: the token is printed once, listed without its secret, revocable.
#[test]
fn the_hub_cli_creates_lists_and_revokes_tokens_and_spokes() {
    let hub = hub();
    let cfg = hub.config.to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let mut all = vec!["hub", "-c", cfg.as_str()];
        all.extend_from_slice(args);
        support::run_warden(&all, hub.dir.path())
    };
    let (code, out, err) = run(&["token", "create", "edge-9", "--ttl", "5m"]);
    assert_eq!(code, 0, "{err}");
    let token = out.trim().to_owned();
    let (id, secret) = token.split_once('.').expect("<id>.<secret>");
    assert_eq!(secret.len(), 64);
    let (code, out, _) = run(&["token", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(id) && out.contains("edge-9") && !out.contains(secret),
        "{out}"
    );
    let (code, _, err) = run(&["token", "revoke", id]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["token", "revoke", id]);
    assert_eq!(code, 1, "a second revoke: {err}");
    assert!(err.contains("no outstanding join token"), "{err}");
    let (code, _, err) = run(&["token", "create", "bad name"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid spoke name"), "{err}");
    let (code, _, err) = run(&["revoke", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("no spoke"), "{err}");
}

/// Promise: a reload keeps `/_hub` connected when `[spoke]` is unchanged (it is no entry
/// of the file's tree, yet a reload must not stop it), and restarts it with the new
/// settings when `[spoke]` changed.
#[test]
fn a_reload_keeps_the_link_and_applies_a_changed_spoke_table() {
    let hub = hub();
    let join = token(&hub, "edge", "10m");
    let spoke = spoke(&hub, "edge", Some(&join), "", SERVICES);
    let before = spoke.wait_state("/_hub", "running", Duration::from_secs(20));
    let r = spoke.req("POST", "/api/v1/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    let after = spoke.actor("/_hub");
    assert_eq!(after["state"], "running", "{after}");
    assert_eq!(
        after["started_at"], before["started_at"],
        "the link was restarted: {after}"
    );
    assert_eq!(get(&hub, "/api/v1/spokes/edge/actors/sleeper").status, 200);

    let text = std::fs::read_to_string(&spoke.config).unwrap();
    let text = text.replace(
        "join_token_file = \"join.token\"\n",
        "join_token_file = \"join.token\"\nallow = [\"tree\"]\n",
    );
    std::fs::write(&spoke.config, text).unwrap();
    let r = spoke.req("POST", "/api/v1/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    wait_until(
        "the link restarted and reconnected",
        Duration::from_secs(20),
        || {
            let a = spoke.actor("/_hub");
            a["state"] == "running" && a["started_at"] != before["started_at"]
        },
    );
    wait_until("the new allow applies", Duration::from_secs(10), || {
        get(&hub, "/api/v1/spokes/edge/actors/sleeper").status == 403
    });
}

/// Promise: verbs carry request ids, so several are in flight at once and each caller
/// gets its own answer whatever order the spoke replies in; a verb the spoke never
/// answers is a 504 after 10 s.
#[test]
fn verbs_in_flight_get_their_own_answers_and_an_unanswered_one_is_504_after_ten_seconds() {
    use warden_actors::link::protocol::{Answer, Body, Verb};
    let hub = hub();
    let join = token(&hub, "sim", "10m");
    let (mut ws, frame) = simulated(hub.port, "sim", Auth::Join { token: join });
    assert!(matches!(
        frame,
        HubFrame::Welcome {
            credential: Some(_)
        }
    ));
    let callers: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let (port, token) = (hub.port, hub.token());
            std::thread::spawn(move || {
                let path = format!("/api/v1/spokes/sim/actors/{name}");
                (name, http(port, "GET", &path, Some(&token), None).unwrap())
            })
        })
        .collect();
    let mut requests = Vec::new();
    while requests.len() < 3 {
        let bytes = ws.recv_binary().expect("a request");
        match protocol::decode::<HubFrame>(&bytes, usize::MAX).unwrap() {
            HubFrame::Request {
                id,
                verb: Verb::Actor { path },
            } => requests.push((id, path)),
            other => panic!("unexpected {other:?}"),
        }
    }
    for (id, path) in requests.iter().rev() {
        let answer = Answer {
            status: 200,
            body_kind: Body::Json,
            body: format!(r#"{{"path":"{path}"}}"#).into_bytes(),
        };
        let reply = protocol::encode(&SpokeFrame::Reply { id: *id, answer });
        ws.send(&reply).unwrap();
    }
    for caller in callers {
        let (name, response) = caller.join().unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.json()["path"], format!("/{name}"));
    }
    let t = Instant::now();
    let unanswered = get(&hub, "/api/v1/spokes/sim/tree");
    let took = t.elapsed();
    assert_eq!(unanswered.status, 504, "{}", unanswered.text());
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(13),
        "504 after {took:?}"
    );
}

/// Promise: a revoked spoke's link is closed, its reconnect with the old credential is
/// refused, and it ends `failed` with the hub's reason (no retry storm against the hub).
#[test]
fn a_revoked_spoke_ends_failed_with_the_hubs_reason() {
    let hub = hub();
    let join = token(&hub, "edge", "10m");
    let spoke = spoke(&hub, "edge", Some(&join), "", "");
    spoke.wait_state("/_hub", "running", Duration::from_secs(20));
    assert_eq!(hub.req("DELETE", "/api/v1/spokes/edge").status, 204);
    let link = spoke.wait_state("/_hub", "failed", Duration::from_secs(20));
    let reason = link["failed_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("revoked"), "{link}");
    assert_eq!(get(&hub, "/api/v1/spokes").json(), serde_json::json!([]));
}

/// Promise: a spoke dials a hub whose admin listener is HTTPS over `wss://`, trusting the
/// CA of its `[spoke] ca_file`: it enrolls and the hub relays its verbs (without
/// `ca_file`, the Mozilla roots, see `wss_verifies_the_hubs_certificate`).
#[test]
fn a_spoke_enrolls_over_wss_trusting_the_ca_of_its_ca_file() {
    use support::tls::{https, self_signed};
    const T: Duration = Duration::from_secs(20);
    let (cert, key, der) = self_signed();
    let dir = support::temp_dir();
    std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key).unwrap();
    // These first lines land in the [admin] table the harness writes.
    let hub = Warden::spawn_in(
        dir,
        "tls = { cert = \"cert.pem\", key = \"key.pem\" }\n\n[hub]\nenabled = true\n",
    );
    let admin = wait_for("the hub's admin token", T, || {
        std::fs::read_to_string(hub.path("state/admin.token"))
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    });
    let join_for = |name: &str| {
        let body = format!(r#"{{"name":"{name}","ttl":"10m"}}"#);
        let r = wait_for("an HTTPS answer", T, || {
            https(
                hub.port,
                &der,
                "POST",
                "/api/v1/hub/tokens",
                &admin,
                Some(&body),
            )
            .ok()
        });
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["token"].as_str().unwrap().to_owned()
    };
    let spoke_dir = support::temp_dir();
    std::fs::write(spoke_dir.path().join("join.token"), join_for("edge")).unwrap();
    std::fs::write(spoke_dir.path().join("ca.pem"), &cert).unwrap();
    let body = format!(
        "[spoke]\nhub = \"wss://localhost:{}{CONNECT}\"\nname = \"edge\"\n\
         join_token_file = \"join.token\"\nca_file = \"ca.pem\"\n{SERVICES}",
        hub.port
    );
    let spoke = Warden::start_in(spoke_dir, &body);
    let link = spoke.wait_state("/_hub", "running", T);
    assert_eq!(link["kind"], "link", "{link}");
    spoke.wait_state("/sleeper", "running", T);
    let relayed = https(
        hub.port,
        &der,
        "GET",
        "/api/v1/spokes/edge/actors/sleeper",
        &admin,
        None,
    )
    .expect("https");
    assert_eq!(relayed.status, 200, "{}", relayed.text());
    assert_eq!(relayed.json(), spoke.actor("/sleeper"));
}

/// A chunked body over 64 KiB to the token route is refused like on every other route:
/// 413 with a JSON error, and no token is made (old code: actix's plain-text 413). A
/// revoke of an unknown token names it as given (old code: `Path("nope")`).
#[test]
fn token_routes_answer_json_errors_for_a_chunked_oversized_body_and_an_unknown_token() {
    let hub = hub();
    let auth = format!("Bearer {}", hub.token());
    let mut chunked = Vec::new();
    for _ in 0..5 {
        let chunk = vec![b' '; 16 * 1024];
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = support::raw_request(
        hub.port,
        "POST",
        "/api/v1/hub/tokens",
        &[
            ("Authorization", auth.as_str()),
            ("Transfer-Encoding", "chunked"),
            ("Content-Type", "application/json"),
        ],
        &chunked,
    )
    .expect("an answer");
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        r.json()["error"].as_str().is_some_and(|m| !m.is_empty()),
        "a JSON error: {}",
        r.text()
    );
    let tokens = get(&hub, "/api/v1/hub/tokens");
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    assert_eq!(tokens.json(), serde_json::json!([]), "no token was made");

    let r = http(
        hub.port,
        "DELETE",
        "/api/v1/hub/tokens/nope",
        Some(&hub.token()),
        None,
    )
    .expect("an answer");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(
        r.json()["error"],
        "no outstanding join token \"nope\"",
        "{}",
        r.text()
    );
}

/// Promise: a spoke that stops answering (its socket open, nothing heard, pings
/// unanswered) is dropped by the hub after the peer deadline (15 s, checked at each 5 s
/// ping), and listed as not connected.
#[test]
fn a_silent_spoke_is_dropped_after_the_peer_deadline() {
    let hub = hub();
    let join = token(&hub, "mute", "10m");
    let (mut ws, frame) = simulated(hub.port, "mute", Auth::Join { token: join });
    assert!(matches!(frame, HubFrame::Welcome { .. }), "{frame:?}");
    let welcomed = Instant::now();
    let listed = |connected: bool| {
        get(&hub, "/api/v1/spokes")
            .json()
            .as_array()
            .is_some_and(|spokes| {
                spokes
                    .iter()
                    .any(|s| s["name"] == "mute" && s["connected"] == connected)
            })
    };
    assert!(listed(true));
    // Read (so the hub's writes never block) but never answer: `recv` answers nothing.
    assert!(
        ws.closed_within(Duration::from_secs(30)),
        "the hub kept a silent spoke"
    );
    let after = welcomed.elapsed();
    assert!(
        after >= Duration::from_secs(14) && after < Duration::from_secs(28),
        "dropped {after:?} after the welcome (deadline 15 s, pings every 5 s)"
    );
    wait_until(
        "the spoke listed as not connected",
        Duration::from_secs(5),
        || listed(false),
    );
}

/// A stand-in hub that welcomes every hello and then says nothing, ever (it neither reads
/// nor answers pings): its port.
fn silent_hub() -> u16 {
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    async fn connect(req: HttpRequest, body: web::Payload) -> actix_web::Result<HttpResponse> {
        let (response, mut session, mut stream) = actix_ws::handle(&req, body)?;
        actix_rt::spawn(async move {
            let _hello = stream.recv().await;
            let welcome = HubFrame::Welcome {
                credential: Some("ab".repeat(32)),
            };
            let _ = session.binary(protocol::encode(&welcome)).await;
            // Hold both ends open without reading: pings go unanswered.
            actix_rt::time::sleep(Duration::from_secs(600)).await;
            drop((session, stream));
        });
        Ok(response)
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let server = HttpServer::new(|| App::new().route(CONNECT, web::get().to(connect)))
                .workers(1)
                .listen(listener)
                .expect("listen");
            let _ = server.run().await;
        });
    });
    port
}

/// Promise: a hub that goes silent (the connection stays open, pings unanswered) ends the
/// spoke's link after the peer deadline with a reason saying so; the supervisor then
/// reconnects it through its backoff.
#[test]
fn a_spoke_drops_a_silent_hub_after_the_peer_deadline_and_reconnects() {
    let port = silent_hub();
    let dir = support::temp_dir();
    std::fs::write(dir.path().join("join.token"), "0123.4567").unwrap();
    let body = format!(
        "[spoke]\nhub = \"ws://127.0.0.1:{port}{CONNECT}\"\nname = \"edge\"\njoin_token_file = \"join.token\"\n"
    );
    let spoke = Warden::start_in(dir, &body);
    spoke.wait_state("/_hub", "running", Duration::from_secs(20));
    let running = Instant::now();
    let link = wait_for(
        "the link ended by the silent hub",
        Duration::from_secs(35),
        || {
            let a = spoke.actor("/_hub");
            (a["restarts"].as_u64().unwrap_or(0) >= 1).then_some(a)
        },
    );
    let after = running.elapsed();
    let reason = link["last_exit"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("silent"), "{link}");
    assert!(
        after >= Duration::from_secs(13) && after < Duration::from_secs(30),
        "ended {after:?} after it ran (deadline 15 s, pings every 5 s)"
    );
    spoke.wait_state("/_hub", "running", Duration::from_secs(20));
}
