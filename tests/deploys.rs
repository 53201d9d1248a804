//! Deploys (design: "Deploys, webhooks, notifiers"), black-box with real processes: a
//! GitHub push signed with the webhook secret runs a service's `deploy` steps (shell
//! scripts writing marker files) in order and restarts the service; the webhook refuses
//! what is not signed, replays and oversized bodies; a failing or overdue step fails the
//! deploy and leaves the service alone; latest wins; confirmation and expiry; a warden
//! killed mid-deploy; `[self] deploy` ends in a reexec that keeps every child; the CLI.
mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const T: Duration = Duration::from_secs(30);
const SECRET: &str = "It's a Secret to Everybody";

/// A dir with the webhook secret (0600) in `github.secret`.
fn dir_with_secret() -> tempfile::TempDir {
    let dir = temp_dir();
    let file = dir.path().join("github.secret");
    std::fs::write(&file, SECRET).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    dir
}

/// A config with `[webhooks]` and the service `api` (a sleeper) deployed by `steps`
/// (shell scripts run in the config's folder) with the extra deploy keys `extra`.
fn config(steps: &[&str], extra: &str) -> String {
    let steps: Vec<String> = steps.iter().map(|s| sh(s)).collect();
    format!(
        "[webhooks]\ngithub_secret_file = \"github.secret\"\n\n\
         [[service]]\nname = \"api\"\ncommand = {}\nenv = {{ GREETING = \"hello\" }}\n\
         [service.deploy]\nrepo = \"acme/api\"\nbranch = \"main\"\nsteps = [{}]\n{extra}\n",
        sh("exec sleep 1000"),
        steps.join(", ")
    )
}

fn push_body(repo: &str, reference: &str, commit: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": reference,
        "after": commit,
        "repository": { "full_name": repo },
        "commits": [],
    }))
    .unwrap()
}

/// Sends a webhook delivery: `signature` `None` signs it with [`SECRET`].
fn deliver(
    w: &Warden,
    event: &str,
    delivery: &str,
    body: &[u8],
    signature: Option<&str>,
) -> Response {
    let signed = warden::admin::sign(SECRET.as_bytes(), body);
    let signature = signature.unwrap_or(&signed);
    let length = body.len().to_string();
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Content-Length", length.as_str()),
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", delivery),
    ];
    if !signature.is_empty() {
        headers.push(("X-Hub-Signature-256", signature));
    }
    raw_request(w.port, "POST", "/webhooks/github", &headers, body).expect("webhook request")
}

fn push(w: &Warden, delivery: &str, commit: &str) -> Response {
    deliver(
        w,
        "push",
        delivery,
        &push_body("acme/api", "refs/heads/main", commit),
        None,
    )
}

fn deploys(w: &Warden, path: &str) -> Vec<Value> {
    let route = if path == "/" {
        "/api/v1/admin/deploys".to_owned()
    } else {
        format!("/api/v1/actors/{}/deploys", path.trim_start_matches('/'))
    };
    let r = w.req("GET", &route);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().as_array().cloned().unwrap_or_default()
}

/// Waits until the newest deploy of `path` is `state`.
fn wait_newest(w: &Warden, path: &str, state: &str) -> Value {
    wait_for(&format!("newest deploy of {path} {state}"), T, || {
        deploys(w, path)
            .into_iter()
            .next()
            .filter(|d| d["state"] == state)
    })
}

/// Waits until the deploy's actor `/_deploy.api` is in the tree and running.
fn deploy_actor(w: &Warden) -> Value {
    wait_for("the deploy's actor running", T, || {
        let r = w.req("GET", "/api/v1/actors/_deploy.api");
        (r.status == 200 && r.json()["state"] == "running").then(|| r.json())
    })
}

fn read(w: &Warden, file: &str) -> String {
    std::fs::read_to_string(w.path(file)).unwrap_or_default()
}

/// Promise: a signed push of the configured repository and branch answers 202 naming the
/// service before any step runs, runs the steps in order in the deploy's folder with the
/// service's env and the commit, shows the deploy as an actor of kind `deploy` while it
/// runs, then restarts the service (new pid, running) and records `succeeded`.
#[test]
fn a_signed_push_runs_the_steps_in_order_and_restarts_the_service() {
    let w = Warden::start_in(
        dir_with_secret(),
        &config(
            &[
                "sleep 0.5; echo \"one $GREETING $WARDEN_DEPLOY_COMMIT\" >> steps.log",
                "echo two >> steps.log",
            ],
            "",
        ),
    );
    let before = w.wait_state("/api", "running", T)["pid"].as_u64().unwrap();
    let r = push(&w, "d-1", "abc123");
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json(), json!({ "deploys": ["/api"] }));
    assert_eq!(read(&w, "steps.log"), "", "answered before any step ran");
    let actor = deploy_actor(&w);
    assert_eq!(actor["kind"], "deploy", "{actor}");
    let done = wait_newest(&w, "/api", "succeeded");
    assert_eq!(read(&w, "steps.log"), "one hello abc123\ntwo\n");
    assert_eq!(done["commit"], "abc123");
    for key in ["requested_at", "started_at", "finished_at"] {
        assert!(done[key].is_string(), "{key}: {done}");
    }
    assert!(
        done["output"]
            .as_str()
            .unwrap()
            .contains("$ /bin/sh -c echo two"),
        "{done}"
    );
    let after = w.wait_state("/api", "running", T)["pid"].as_u64().unwrap();
    assert_ne!(before, after, "the service restarted");
    wait_until("the deploy actor left the tree", T, || {
        w.req("GET", "/api/v1/actors/_deploy.api").status == 404
    });
}

/// Promise: the webhook authenticates by signature only: a missing or wrong signature is
/// 401 and nothing runs; `ping` is 200; a push of another branch or repository deploys
/// nothing (202, empty); a delivery id seen before is 200 `{"duplicate":true}` and runs
/// nothing; a body over 1 MiB is 413, while one over the API's 64 KiB is taken.
#[test]
fn the_webhook_refuses_what_is_not_signed_replayed_or_too_large() {
    let w = Warden::start_in(dir_with_secret(), &config(&["echo ran >> ran.log"], ""));
    let body = push_body("acme/api", "refs/heads/main", "c1");
    let missing = deliver(&w, "push", "m-1", &body, Some(""));
    assert_eq!(missing.status, 401, "{}", missing.text());
    let wrong_key = warden::admin::sign(b"not the secret", &body);
    let wrong = deliver(&w, "push", "m-2", &body, Some(&wrong_key));
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    let tampered = warden::admin::sign(SECRET.as_bytes(), b"{}");
    assert_eq!(
        deliver(&w, "push", "m-3", &body, Some(&tampered)).status,
        401
    );

    let ping = deliver(&w, "ping", "p-1", br#"{"zen":"Keep it simple."}"#, None);
    assert_eq!(ping.status, 200, "{}", ping.text());

    let other_branch = deliver(
        &w,
        "push",
        "b-1",
        &push_body("acme/api", "refs/heads/dev", "c2"),
        None,
    );
    assert_eq!(other_branch.status, 202);
    assert_eq!(other_branch.json(), json!({ "deploys": [] }));
    let other_repo = deliver(
        &w,
        "push",
        "b-2",
        &push_body("acme/web", "refs/heads/main", "c3"),
        None,
    );
    assert_eq!(other_repo.json(), json!({ "deploys": [] }));
    holds_for("nothing ran", Duration::from_millis(500), || {
        read(&w, "ran.log").is_empty() && deploys(&w, "/api").is_empty()
    });

    assert_eq!(push(&w, "d-1", "c4").status, 202);
    wait_newest(&w, "/api", "succeeded");
    let replay = push(&w, "d-1", "c4");
    assert_eq!(replay.status, 200, "{}", replay.text());
    assert_eq!(replay.json(), json!({ "duplicate": true }));
    holds_for("the replay ran nothing", Duration::from_millis(500), || {
        deploys(&w, "/api").len() == 1 && read(&w, "ran.log") == "ran\n"
    });

    // Past the API's 64 KiB (padding in a JSON field), under the webhook's 1 MiB.
    let mut big = json!({ "zen": "x".repeat(200 * 1024) });
    let taken = deliver(&w, "ping", "p-2", &serde_json::to_vec(&big).unwrap(), None);
    assert_eq!(taken.status, 200, "{}", taken.text());
    big["zen"] = json!("x".repeat(1024 * 1024));
    let refused = deliver(&w, "ping", "p-3", &serde_json::to_vec(&big).unwrap(), None);
    assert_eq!(refused.status, 413, "{}", refused.text());
    // Every other route keeps its 64 KiB limit.
    let token = w.token();
    let auth = format!("Bearer {token}");
    let length = (100 * 1024).to_string();
    let other = raw_request(
        w.port,
        "POST",
        "/api/v1/actors/api/call",
        &[("Authorization", &auth), ("Content-Length", &length)],
        &vec![b'x'; 100 * 1024],
    )
    .unwrap();
    assert_eq!(other.status, 413, "{}", other.text());
}

/// Promise: a step that fails fails the deploy, names the step, keeps its output, runs no
/// later step and leaves the running service untouched (same pid).
#[test]
fn a_failing_step_is_named_keeps_its_output_and_leaves_the_service_alone() {
    let w = Warden::start_in(
        dir_with_secret(),
        &config(
            &[
                "echo first >> steps.log",
                "echo boom-on-stdout; echo boom-on-stderr >&2; exit 3",
                "echo never >> steps.log",
            ],
            "",
        ),
    );
    let before = w.wait_state("/api", "running", T)["pid"].as_u64().unwrap();
    let r = w.req("POST", "/api/v1/actors/api/deploy");
    assert_eq!(r.status, 202, "{}", r.text());
    let failed = wait_newest(&w, "/api", "failed");
    assert_eq!(
        failed["failed_step"],
        "/bin/sh -c echo boom-on-stdout; echo boom-on-stderr >&2; exit 3"
    );
    let output = failed["output"].as_str().unwrap();
    assert!(
        output.contains("boom-on-stdout") && output.contains("boom-on-stderr"),
        "{output}"
    );
    assert!(
        failed["reason"].as_str().unwrap().contains("code 3"),
        "{failed}"
    );
    assert_eq!(read(&w, "steps.log"), "first\n");
    let now = w.actor("/api");
    assert_eq!(now["state"], "running");
    assert_eq!(
        now["pid"].as_u64(),
        Some(before),
        "the service was not restarted"
    );
}

/// Promise: a step that passes the deploy's `timeout` fails the deploy, and its whole
/// process group (cgroup, where services run in cgroups) is killed: the step and a
/// grandchild it started in the background.
#[test]
fn a_step_timeout_kills_the_steps_whole_group() {
    let w = Warden::start_in(
        dir_with_secret(),
        &config(
            &["sleep 0.3; cat /proc/self/cgroup > step.cgroup; sleep 1000 & echo $! > grandchild.pid; echo $$ > step.pid; sleep 1000"],
            "timeout = \"1s\"",
        ),
    );
    let before = w.wait_state("/api", "running", T)["pid"].as_u64().unwrap();
    let started = Instant::now();
    assert_eq!(w.req("POST", "/api/v1/actors/api/deploy").status, 202);
    let failed = wait_newest(&w, "/api", "failed");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        failed["reason"].as_str().unwrap().contains("timed out"),
        "{failed}"
    );
    let pid = |file: &str| -> u32 { read(&w, file).trim().parse().expect(file) };
    let (step, grandchild) = (pid("step.pid"), pid("grandchild.pid"));
    wait_until("the step and its grandchild are gone", T, || {
        !alive(step) && !alive(grandchild)
    });
    assert_eq!(w.actor_pid("/api"), Some(before as u32));
    // Where services run in cgroups, so do steps: in the deploy actor's.
    if w.actor("/api")["containment"] == "cgroup" {
        assert!(
            read(&w, "step.cgroup").contains("/_deploy.api"),
            "{}",
            read(&w, "step.cgroup")
        );
    }
}

/// A warden whose `/api` deploy writes its commit to `runs.log` and then holds until the
/// file `go` appears (it removes it), after `n` pushes in a row (commits `c01`...): the
/// pushes meet a running deploy.
fn gated_pushes(n: usize) -> Warden {
    let w = Warden::start_in(
        dir_with_secret(),
        &config(
            &["echo $WARDEN_DEPLOY_COMMIT >> runs.log; while [ ! -e go ]; do sleep 0.02; done; rm go"],
            "",
        ),
    );
    w.wait_state("/api", "running", T);
    for k in 1..=n {
        let r = push(&w, &format!("d-{k}"), &format!("c{k:02}"));
        assert_eq!(r.status, 202, "{}", r.text());
    }
    w
}

/// Promise: latest wins: under 20 pushes in a row one deploy runs and one waits (the
/// newest commit); the 18 in between are `superseded`; the steps run exactly twice.
#[test]
fn latest_wins_under_twenty_rapid_pushes() {
    let w = gated_pushes(20);
    let list = deploys(&w, "/api");
    assert_eq!(list.len(), 20);
    let with = |state: &str| -> Vec<String> {
        list.iter()
            .filter(|d| d["state"] == state)
            .map(|d| d["commit"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(with("running"), ["c01"], "{list:?}");
    assert_eq!(with("pending"), ["c20"], "{list:?}");
    assert_eq!(with("superseded").len(), 18, "{list:?}");
    assert_eq!(list[0]["commit"], "c20", "newest first");
    std::fs::write(w.path("go"), "").unwrap();
    wait_until("the newest runs", T, || {
        read(&w, "runs.log") == "c01\nc20\n"
    });
    std::fs::write(w.path("go"), "").unwrap();
    wait_until("both ran", T, || {
        deploys(&w, "/api")
            .iter()
            .filter(|d| d["state"] == "succeeded")
            .count()
            == 2
    });
    holds_for("nothing else runs", Duration::from_millis(300), || {
        read(&w, "runs.log") == "c01\nc20\n"
    });
}

/// Promise: with `confirm`, a deploy awaits an operator: confirmed it runs (200); not
/// confirmed in time it is `expired` and a late confirmation is 409, as is one of a deploy
/// that does not await confirmation.
#[test]
fn a_deploy_awaits_confirmation_and_expires() {
    let w = Warden::start_in(
        dir_with_secret(),
        &config(&["echo ran >> ran.log"], "confirm = \"2s\""),
    );
    w.wait_state("/api", "running", T);
    let first = w.req("POST", "/api/v1/actors/api/deploy");
    assert_eq!(first.status, 202);
    let first = first.json();
    assert_eq!(first["state"], "awaiting_confirmation", "{first}");
    holds_for(
        "nothing runs unconfirmed",
        Duration::from_millis(300),
        || read(&w, "ran.log").is_empty(),
    );
    let id = first["id"].as_str().unwrap();
    let confirmed = w.req("POST", &format!("/api/v1/actors/api/deploys/{id}/confirm"));
    assert_eq!(confirmed.status, 200, "{}", confirmed.text());
    wait_newest(&w, "/api", "succeeded");
    assert_eq!(read(&w, "ran.log"), "ran\n");
    let again = w.req("POST", &format!("/api/v1/actors/api/deploys/{id}/confirm"));
    assert_eq!(again.status, 409, "{}", again.text());

    let second = w.req("POST", "/api/v1/actors/api/deploy").json();
    let id = second["id"].as_str().unwrap();
    let expired = wait_newest(&w, "/api", "expired");
    assert_eq!(expired["id"], id);
    let late = w.req("POST", &format!("/api/v1/actors/api/deploys/{id}/confirm"));
    assert_eq!(late.status, 409, "{}", late.text());
    assert_eq!(read(&w, "ran.log"), "ran\n");
    let unknown = w.req("POST", "/api/v1/actors/api/deploys/0000/confirm");
    assert_eq!(unknown.status, 404, "{}", unknown.text());
}

/// Promise: a warden SIGKILLed while a deploy runs shows that deploy `failed`
/// ("interrupted") once started again, and a new deploy of that service runs.
#[test]
fn a_deploy_interrupted_by_a_warden_crash_is_failed_after_the_restart() {
    let dir = dir_with_secret();
    std::fs::write(dir.path().join("block"), "").unwrap();
    let body = config(
        &["if [ -e block ]; then echo $$ > step.pid; sleep 1000; fi; echo done >> done.log"],
        "",
    );
    let mut w = Warden::start_in(dir, &body);
    w.wait_state("/api", "running", T);
    assert_eq!(w.req("POST", "/api/v1/actors/api/deploy").status, 202);
    wait_until("the step runs", T, || !read(&w, "step.pid").is_empty());
    w.crash();
    // The step (and its `sleep`) outlive the killed warden; the next one sweeps them as
    // orphans of this instance (they carry its marker).
    let step: u32 = read(&w, "step.pid").trim().parse().unwrap();
    let sleeper = wait_for("the step's sleep", T, || {
        support::children_of(step).first().copied()
    });
    assert!(support::alive(step) && support::alive(sleeper));
    std::fs::remove_file(w.path("block")).unwrap();
    let w = Warden::start_in(w.into_dir(), &body);
    wait_until("the leftover step swept", T, || {
        !support::alive(step) && !support::alive(sleeper)
    });
    let newest = deploys(&w, "/api").remove(0);
    assert_eq!(newest["state"], "failed", "{newest}");
    assert!(
        newest["reason"].as_str().unwrap().contains("interrupted"),
        "{newest}"
    );
    assert!(newest["finished_at"].is_string());
    w.wait_state("/api", "running", T);
    assert_eq!(w.req("POST", "/api/v1/actors/api/deploy").status, 202);
    wait_newest(&w, "/api", "succeeded");
    assert_eq!(read(&w, "done.log"), "done\n");
}

/// Promise: a deploy whose steps pass but whose service does not run again (here: it
/// exits before its ready check passes) within the deploy's `timeout` fails at step
/// `restart`, with the reason.
#[test]
fn a_service_that_does_not_come_back_fails_the_deploy_at_restart() {
    let body = format!(
        "[webhooks]\ngithub_secret_file = \"github.secret\"\n\n\
         [[service]]\nname = \"api\"\ncommand = {}\nready = {{ delay = \"300ms\" }}\n\
         [service.deploy]\nrepo = \"acme/api\"\nsteps = [{}]\ntimeout = \"2s\"\n",
        sh("if [ -e broken ]; then exit 3; fi; exec sleep 1000"),
        sh("touch broken"),
    );
    let w = Warden::start_in(dir_with_secret(), &body);
    w.wait_state("/api", "running", T);
    assert_eq!(w.req("POST", "/api/v1/actors/api/deploy").status, 202);
    let failed = wait_newest(&w, "/api", "failed");
    assert_eq!(failed["failed_step"], "restart", "{failed}");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap_or("")
            .contains("after the restart"),
        "{failed}"
    );
}

/// Promise: a 202 means the deploy is on disk: a warden SIGKILLed right after the
/// webhook's answer (or the manual deploy route's) shows each accepted deploy once
/// started again (`failed`, "interrupted", with its commit) and still knows the
/// delivery id (a redelivery is a duplicate, not a second deploy).
#[test]
fn a_deploy_accepted_just_before_a_crash_is_not_lost() {
    let dir = dir_with_secret();
    let body = config(&["sleep 1000"], "");
    let mut w = Warden::start_in(dir, &body);
    w.wait_state("/api", "running", T);
    let commit = "c0ffee0000000000000000000000000000000001";
    let r = push(&w, "delivery-before-crash", commit);
    assert_eq!(r.status, 202, "{}", r.text());
    w.crash();
    let mut w = Warden::start_in(w.into_dir(), &body);
    w.wait_state("/api", "running", T);
    let all = deploys(&w, "/api");
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["commit"], commit, "{all:?}");
    assert_eq!(all[0]["state"], "failed", "{all:?}");
    assert!(
        all[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("interrupted"),
        "{all:?}"
    );
    let again = push(&w, "delivery-before-crash", commit);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["duplicate"], true, "{}", again.text());

    let r = w.req("POST", "/api/v1/actors/api/deploy");
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap_or_default().to_owned();
    w.crash();
    let w = Warden::start_in(w.into_dir(), &body);
    w.wait_state("/api", "running", T);
    let all = deploys(&w, "/api");
    assert!(
        all.iter()
            .any(|d| d["id"] == id.as_str() && d["state"] == "failed"),
        "the manual deploy {id} is kept: {all:?}"
    );
}

/// Promise: `[self] deploy` runs its steps and ends in the in-place reexec: warden keeps
/// its pid, every child keeps its pid, and the deploy is `succeeded` after the reexec.
/// A push of `[self]`'s repository and branch names `/`.
#[test]
fn a_self_deploy_ends_in_a_reexec_that_keeps_every_child() {
    let body = format!(
        "[webhooks]\ngithub_secret_file = \"github.secret\"\n\n\
         [self]\ndeploy = {{ repo = \"acme/warden\", branch = \"release\", steps = [{}] }}\n\n\
         [[service]]\nname = \"a\"\ncommand = {}\n\n[[service]]\nname = \"b\"\ncommand = {}\n",
        sh("echo built >> self.log"),
        sh("exec sleep 1000"),
        sh("exec sleep 1001"),
    );
    let w = Warden::start_in(dir_with_secret(), &body);
    let a = w.wait_state("/a", "running", T)["pid"].as_u64().unwrap();
    let b = w.wait_state("/b", "running", T)["pid"].as_u64().unwrap();
    let r = deliver(
        &w,
        "push",
        "s-1",
        &push_body("acme/warden", "refs/heads/release", "f00d"),
        None,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json(), json!({ "deploys": ["/"] }));
    wait_until("warden re-executed", T, || {
        w.stderr_text().contains("re-executed in place")
            && http(w.port, "GET", "/healthz", None, None).is_ok_and(|r| r.status == 200)
    });
    let done = wait_newest(&w, "/", "succeeded");
    assert_eq!(done["commit"], "f00d");
    assert_eq!(read(&w, "self.log"), "built\n");
    assert_eq!(w.wait_state("/a", "running", T)["pid"].as_u64(), Some(a));
    assert_eq!(w.wait_state("/b", "running", T)["pid"].as_u64(), Some(b));
    assert!(alive(w.pid()), "warden is the same process");
    // By hand too: POST /api/v1/admin/deploy.
    let r = w.req("POST", "/api/v1/admin/deploy");
    assert_eq!(r.status, 202, "{}", r.text());
    wait_until("re-executed twice", T, || {
        w.stderr_text().matches("re-executed in place").count() >= 2 && deploys_ok(&w)
    });
    assert_eq!(read(&w, "self.log"), "built\nbuilt\n");
    assert_eq!(w.actor_pid("/a"), Some(a as u32));
}

fn deploys_ok(w: &Warden) -> bool {
    http(
        w.port,
        "GET",
        "/api/v1/admin/deploys",
        Some(&w.token()),
        None,
    )
    .is_ok_and(|r| {
        r.status == 200
            && r.json()
                .as_array()
                .is_some_and(|l| l.iter().filter(|d| d["state"] == "succeeded").count() == 2)
    })
}

fn ctl(w: &Warden, args: &[&str]) -> (i32, String, String) {
    let config = w.config.to_string_lossy().into_owned();
    let mut all = vec!["ctl", "-c", config.as_str()];
    all.extend_from_slice(args);
    run_warden(&all, w.dir.path())
}

/// Promise: `warden ctl deploy PATH`, `deploys PATH` and `confirm PATH ID` work over the
/// control socket and over `--admin`; an unknown path or a refused confirmation exits 1,
/// a missing argument exits 2.
#[test]
fn the_cli_deploys_lists_and_confirms() {
    let w = Warden::start_in(
        dir_with_secret(),
        &config(&["echo ran >> ran.log"], "confirm = \"10m\""),
    );
    w.wait_state("/api", "running", T);
    let (code, out, err) = ctl(&w, &["deploy", "/api"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("awaiting_confirmation"), "{out}");
    let (code, out, _) = ctl(&w, &["--json", "deploys", "/api"]);
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_owned();
    let (code, out, _) = ctl(&w, &["deploys", "/api"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ID") && out.contains(&id), "{out}");
    let admin = format!("http://127.0.0.1:{}", w.port);
    let (code, out, err) = ctl(&w, &["--admin", &admin, "confirm", "/api", &id]);
    assert_eq!(code, 0, "{out}{err}");
    wait_newest(&w, "/api", "succeeded");
    let (code, _, err) = ctl(&w, &["confirm", "/api", &id]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("succeeded"), "{err}");
    let (code, _, err) = ctl(&w, &["--admin", &admin, "deploy", "/nope"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = ctl(&w, &["deploy", "/nope"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, _) = ctl(&w, &["confirm", "/api"]);
    assert_eq!(code, 2);
    let (code, out, err) = ctl(&w, &["--admin", &admin, "deploys", "/api"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("succeeded"), "{out}");
}

/// `warden check` on `body` in a dir with the secret at `mode`: (code, stderr).
fn check(body: &str, mode: u32) -> (i32, String) {
    let dir = dir_with_secret();
    let secret = dir.path().join("github.secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
    let file = dir.path().join("warden.toml");
    std::fs::write(&file, body).unwrap();
    let (code, _, err) = run_warden(&["check", "-c", file.to_str().unwrap()], Path::new("/"));
    (code, err)
}

/// Promise: deploy and webhook keys are checked before anything starts (exit 2, naming
/// file, line and key): a repository that is not owner/name, no steps, an empty step, a
/// zero timeout, a secret file that is missing or that other users may read.
#[test]
fn bad_deploy_and_webhook_keys_are_refused_at_check() {
    let service = |deploy: &str| {
        format!(
            "[[service]]\nname = \"api\"\ncommand = [\"sleep\", \"1\"]\ndeploy = {{ {deploy} }}\n"
        )
    };
    let cases = [
        (
            service("repo = \"acme\", steps = [[\"true\"]]"),
            "deploy.repo",
        ),
        (service("repo = \"acme/api\", steps = []"), "deploy.steps"),
        (service("repo = \"acme/api\", steps = [[]]"), "deploy.steps"),
        (
            service("repo = \"acme/api\", steps = [[\"\"]]"),
            "deploy.steps",
        ),
        (service("repo = \"acme/api\""), "deploy.steps"),
        (
            service("repo = \"acme/api\", steps = [[\"true\"]], timeout = \"0s\""),
            "deploy.timeout",
        ),
        (
            service("repo = \"acme/api\", steps = [[\"true\"]], confirm = \"soon\""),
            "confirm",
        ),
        (
            service("repo = \"acme/api\", steps = [[\"true\"]], branches = \"x\""),
            "branches",
        ),
        (
            "[self]\ndeploy = { repo = \"a/b\", steps = \"make\" }\n".to_owned(),
            "steps",
        ),
        (
            "[webhooks]\ngithub_secret_file = \"missing.secret\"\n".to_owned(),
            "missing.secret",
        ),
    ];
    for (body, named) in cases {
        let (code, err) = check(&body, 0o600);
        assert_eq!(code, 2, "{body}: {err}");
        assert!(
            err.contains(named) && err.contains("warden.toml"),
            "{body}: {err}"
        );
    }
    let (code, err) = check(
        "[webhooks]\ngithub_secret_file = \"github.secret\"\n",
        0o644,
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("github.secret") && err.contains("0644"),
        "{err}"
    );
    let (code, err) = check(
        &format!(
            "[webhooks]\ngithub_secret_file = \"github.secret\"\n\n{}",
            service("repo = \"acme/api\", steps = [[\"true\"]], confirm = \"15m\"")
        ),
        0o600,
    );
    assert_eq!(code, 0, "{err}");
}

/// Promise: stopping a deploy's actor (`POST /api/v1/actors/_deploy.api/stop`) cancels the
/// deploy: its step's group is killed, it is `failed`, the service is untouched, and the
/// actor leaves the tree.
#[test]
fn stopping_the_deploy_actor_cancels_the_deploy() {
    let w = Warden::start_in(
        dir_with_secret(),
        &config(
            &[
                "echo $$ > step.pid; exec sleep 1000",
                "echo never >> never.log",
            ],
            "",
        ),
    );
    let before = w.wait_state("/api", "running", T)["pid"].as_u64().unwrap();
    assert_eq!(w.req("POST", "/api/v1/actors/api/deploy").status, 202);
    wait_until("the step runs", T, || !read(&w, "step.pid").is_empty());
    let step: u32 = read(&w, "step.pid").trim().parse().unwrap();
    deploy_actor(&w);
    wait_until("the actor's pid is its step's", T, || {
        w.req("GET", "/api/v1/actors/_deploy.api").json()["pid"].as_u64() == Some(u64::from(step))
    });
    let r = w.req("POST", "/api/v1/actors/_deploy.api/stop");
    assert_eq!(r.status, 200, "{}", r.text());
    let failed = wait_newest(&w, "/api", "failed");
    assert!(
        failed["reason"].as_str().unwrap().contains("cancelled"),
        "{failed}"
    );
    wait_until("the step is gone", T, || !alive(step));
    wait_until("the deploy actor left the tree", T, || {
        w.req("GET", "/api/v1/actors/_deploy.api").status == 404
    });
    assert!(read(&w, "never.log").is_empty());
    assert_eq!(w.actor_pid("/api"), Some(before as u32));
}

/// Promise: a reload that gives a service a `deploy` makes it deployable (and one that
/// takes it away makes its deploy routes 404), without restarting the service.
#[test]
fn a_reload_adds_and_removes_deploys() {
    let plain = format!(
        "[[service]]\nname = \"api\"\ncommand = {}\n",
        sh("exec sleep 1000")
    );
    let w = Warden::start_in(dir_with_secret(), &plain);
    let before = w.wait_state("/api", "running", T)["pid"].as_u64().unwrap();
    assert_eq!(w.req("POST", "/api/v1/actors/api/deploy").status, 404);
    let head = std::fs::read_to_string(&w.config).unwrap();
    let head = head.split("[[service]]").next().unwrap().to_owned();
    std::fs::write(
        &w.config,
        format!("{head}{}", config(&["echo ran >> ran.log"], "")),
    )
    .unwrap();
    let r = w.req("POST", "/api/v1/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    let accepted = wait_for("the deploy route", T, || {
        let r = w.req("POST", "/api/v1/actors/api/deploy");
        (r.status == 202).then_some(r)
    });
    assert_eq!(accepted.json()["source"], "manual");
    wait_newest(&w, "/api", "succeeded");
    assert_eq!(read(&w, "ran.log"), "ran\n");
    assert_ne!(
        w.actor_pid("/api"),
        Some(before as u32),
        "the deploy restarted it"
    );
    std::fs::write(&w.config, format!("{head}{plain}")).unwrap();
    assert_eq!(w.req("POST", "/api/v1/reload").status, 200);
    wait_until("no deploy route", T, || {
        w.req("GET", "/api/v1/actors/api/deploys").status == 404
    });
}

/// Promise: the history keeps the last 50 deploys of a service, but never drops the one
/// that runs or the one that waits: 60 pushes while one runs, then both still end.
#[test]
fn the_history_is_bounded_but_keeps_the_running_and_waiting_deploys() {
    let w = gated_pushes(60);
    let list = deploys(&w, "/api");
    assert_eq!(list.len(), 50, "{list:?}");
    assert_eq!(list[0]["commit"], "c60");
    assert_eq!(list[0]["state"], "pending");
    assert!(list
        .iter()
        .any(|d| d["commit"] == "c01" && d["state"] == "running"));
    std::fs::write(w.path("go"), "").unwrap();
    wait_until("the newest runs", T, || {
        read(&w, "runs.log") == "c01\nc60\n"
    });
    std::fs::write(w.path("go"), "").unwrap();
    wait_newest(&w, "/api", "succeeded");
    assert!(deploys(&w, "/api")
        .iter()
        .any(|d| d["commit"] == "c01" && d["state"] == "succeeded"));
}

/// A service's `user` is its deploy's too: the steps run as that user (files a `git pull`
/// writes belong to the service), never as the root warden.
#[test]
fn the_steps_run_as_the_services_user() {
    if !is_root() {
        eprintln!("skipped: needs root to start children as other users");
        return;
    }
    let dir = dir_with_secret();
    // nobody may enter the folder (the steps' cwd); state_dir inside stays 0700.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let body = config(&["echo \"step uid=$(id -u) gid=$(id -g)\""], "")
        .replace("[service.deploy]", "user = \"nobody\"\n[service.deploy]");
    let w = Warden::start_in(dir, &body);
    w.wait_state("/api", "running", T);
    assert_eq!(w.req("POST", "/api/v1/actors/api/deploy").status, 202);
    let done = wait_newest(&w, "/api", "succeeded");
    let nobody = std::process::Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .expect("id -u nobody");
    let uid = String::from_utf8_lossy(&nobody.stdout).trim().to_owned();
    let output = done["output"].as_str().unwrap_or_default();
    assert!(
        output.contains(&format!("step uid={uid} ")),
        "the step ran as {output:?}, not as nobody ({uid})"
    );
}

/// A reload re-reads `github_secret_file`: after the secret is rotated, a push signed with
/// the old key is 401 and runs nothing, one signed with the new key deploys.
#[test]
fn a_reload_rotates_the_webhook_secret() {
    let dir = dir_with_secret();
    let body = config(&["echo ran >> ran.log"], "");
    let w = Warden::start_in(dir, &body);
    w.wait_state("/api", "running", T);
    let rotated = "a rotated secret of the same repository";
    let file = w.path("github.secret");
    std::fs::write(&file, rotated).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Until the reload, the old key holds.
    assert_eq!(push(&w, "before-reload", "c0").status, 202);
    wait_newest(&w, "/api", "succeeded");
    assert_eq!(w.req("POST", "/api/v1/reload").status, 200);

    let old = push(&w, "old-key", "c1");
    assert_eq!(old.status, 401, "{}", old.text());
    let push_body = push_body("acme/api", "refs/heads/main", "c2");
    let signed = warden::admin::sign(rotated.as_bytes(), &push_body);
    let new = deliver(&w, "push", "new-key", &push_body, Some(&signed));
    assert_eq!(new.status, 202, "{}", new.text());
    let done = wait_newest(&w, "/api", "succeeded");
    assert_eq!(done["commit"], "c2", "{done}");
    assert_eq!(
        read(&w, "ran.log"),
        "ran\nran\n",
        "the old key's push ran nothing"
    );
}

/// `[webhooks]` added by a reload opens the route (a signed push deploys), removed by a
/// later reload closes it (404, nothing runs) — no restart needed. Old code: a reload
/// only logged that adding or removing it needs a restart.
#[test]
fn a_reload_adds_and_removes_the_webhook() {
    let dir = dir_with_secret();
    let with = config(&["echo ran >> ran.log"], "");
    let without = with.replace("[webhooks]\ngithub_secret_file = \"github.secret\"\n", "");
    assert_ne!(with, without);
    let w = Warden::start_in(dir, &without);
    w.wait_state("/api", "running", T);
    let closed = push(&w, "before", "c0");
    assert_eq!(closed.status, 404, "{}", closed.text());

    w.rewrite(&with);
    let r = w.req("POST", "/api/v1/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    let open = push(&w, "added", "c1");
    assert_eq!(open.status, 202, "{}", open.text());
    let done = wait_newest(&w, "/api", "succeeded");
    assert_eq!(done["commit"], "c1", "{done}");

    w.rewrite(&without);
    let r = w.req("POST", "/api/v1/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    let closed = push(&w, "removed", "c2");
    assert_eq!(closed.status, 404, "{}", closed.text());
    assert_eq!(
        read(&w, "ran.log"),
        "ran\n",
        "only the push while it was open ran"
    );
}
