//! Black-box tests of reloading the config of a running `warden up`, over
//! `POST /api/v1/reload` and with SIGHUP: added children start, removed ones stop and leave
//! the tree, changed ones restart with their new settings, everything else keeps its pid;
//! a file that does not load is refused whole and changes nothing.
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use support::*;

const T: Duration = Duration::from_secs(10);

/// `POST /api/v1/reload` as (status, JSON body).
fn reload(w: &Warden) -> (u16, Value) {
    let r = w.req("POST", "/api/v1/reload");
    let ct = r.header("content-type").unwrap_or("").to_owned();
    assert!(
        ct.contains("application/json"),
        "reload answers JSON, not {ct:?}: {}",
        r.text()
    );
    (r.status, r.json())
}

fn sorted(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|p| p.as_str().unwrap_or_default().to_owned())
        .collect();
    v.sort();
    v
}

/// Asserts a reload answer `{added, removed, changed}`.
fn assert_changes(body: &Value, added: &[&str], removed: &[&str], changed: &[&str]) {
    let want = |l: &[&str]| {
        let mut v: Vec<String> = l.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&body["added"]), want(added), "added: {body}");
    assert_eq!(sorted(&body["removed"]), want(removed), "removed: {body}");
    assert_eq!(sorted(&body["changed"]), want(changed), "changed: {body}");
}

/// Every actor's (state, pid, started_at), by path.
fn snapshot(w: &Warden) -> BTreeMap<String, (String, Option<u64>, Value)> {
    let r = w.req("GET", "/api/v1/actors");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
        .as_array()
        .expect("actors array")
        .iter()
        .map(|a| {
            (
                a["path"].as_str().unwrap_or_default().to_owned(),
                (
                    a["state"].as_str().unwrap_or_default().to_owned(),
                    a["pid"].as_u64(),
                    a["started_at"].clone(),
                ),
            )
        })
        .collect()
}

fn pid_of(w: &Warden, path: &str) -> u32 {
    w.wait_state(path, "running", T)["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("{path} has a pid")) as u32
}

/// Waits until `path` runs with a pid other than `old`; answers the new pid.
fn wait_new_pid(w: &Warden, path: &str, old: u32) -> u32 {
    wait_for(
        &format!("{path} running with a pid other than {old}"),
        T,
        || {
            let a = w.actor(path);
            let pid = a["pid"].as_u64().map(|p| p as u32)?;
            (a["state"] == "running" && pid != old).then_some(pid)
        },
    )
}

/// The command line of a live process, arguments joined by spaces.
fn cmdline(pid: u32) -> String {
    support::proc_strings(pid, "cmdline").join(" ")
}

fn wait_gone(w: &Warden, path: &str, pid: u32) {
    wait_until(&format!("the process of removed {path} to exit"), T, || {
        !alive(pid)
    });
    wait_until(&format!("removed {path} to leave the tree"), T, || {
        w.req(
            "GET",
            &format!("/api/v1/actors/{}", path.trim_start_matches('/')),
        )
        .status
            == 404
    });
}

const FLAT: &str = r#"
[[service]]
name = "keep"
command = ["sleep", "1000"]

[[service]]
name = "gone"
command = ["sleep", "1001"]

[[service]]
name = "edit"
command = ["sleep", "1002"]
"#;

const FLAT_EDITED: &str = r#"
[[service]]
name = "keep"
command = ["sleep", "1000"]

[[service]]
name = "edit"
command = ["sleep", "1003"]

[[service]]
name = "fresh"
command = ["sleep", "1004"]
"#;

/// After FLAT was replaced by FLAT_EDITED and reloaded: checks every promise.
fn assert_flat_reloaded(w: &Warden, keep: u32, gone: u32, edit: u32) {
    let fresh = pid_of(w, "/fresh");
    assert!(alive(fresh));
    assert_eq!(cmdline(fresh), "sleep 1004");
    let edited = wait_new_pid(w, "/edit", edit);
    assert!(!alive(edit), "the old process of /edit is gone");
    assert_eq!(cmdline(edited), "sleep 1003", "/edit runs its new command");
    wait_gone(w, "/gone", gone);
    assert_eq!(pid_of(w, "/keep"), keep, "/keep keeps its pid");
    assert!(alive(keep));
    let a = w.actor("/keep");
    assert_eq!(a["restarts"], 0, "/keep was not restarted: {a}");
}

#[test]
fn http_reload_adds_removes_and_changes_services_and_keeps_untouched_pids() {
    let w = Warden::start(FLAT);
    let keep = pid_of(&w, "/keep");
    let gone = pid_of(&w, "/gone");
    let edit = pid_of(&w, "/edit");

    w.rewrite(FLAT_EDITED);
    let (status, body) = reload(&w);
    assert_eq!(status, 200, "reload: {body}");
    assert_changes(&body, &["/fresh"], &["/gone"], &["/edit"]);
    assert_flat_reloaded(&w, keep, gone, edit);

    // Reloading an unchanged file changes nothing.
    let before = snapshot(&w);
    let (status, body) = reload(&w);
    assert_eq!(status, 200, "second reload: {body}");
    assert_changes(&body, &[], &[], &[]);
    assert_eq!(snapshot(&w), before);
}

#[test]
fn sighup_reloads_like_the_http_route() {
    let mut w = Warden::start(FLAT);
    let keep = pid_of(&w, "/keep");
    let gone = pid_of(&w, "/gone");
    let edit = pid_of(&w, "/edit");

    w.rewrite(FLAT_EDITED);
    kill(w.pid(), 1);
    wait_until("/fresh to appear after SIGHUP", T, || {
        w.req("GET", "/api/v1/actors/fresh").status == 200
    });
    assert_flat_reloaded(&w, keep, gone, edit);
    assert!(w.try_wait().is_none(), "warden keeps running after SIGHUP");
}

#[test]
fn sighup_with_an_invalid_file_changes_nothing_and_warden_keeps_running() {
    let mut w = Warden::start(FLAT);
    for p in ["/keep", "/gone", "/edit"] {
        pid_of(&w, p);
    }
    let before = snapshot(&w);
    w.rewrite(&format!("{FLAT_EDITED}\nnot toml at all = = =\n"));
    kill(w.pid(), 1);
    wait_until("the refused reload to be logged", T, || {
        w.stderr_text().contains("reload refused")
    });
    assert!(
        w.try_wait().is_none(),
        "warden survives a bad SIGHUP reload"
    );
    assert_eq!(snapshot(&w), before, "a refused reload touches nothing");

    // Fixing the file and sending SIGHUP again applies it.
    w.rewrite(FLAT_EDITED);
    kill(w.pid(), 1);
    wait_until("/fresh to appear after the second SIGHUP", T, || {
        w.req("GET", "/api/v1/actors/fresh").status == 200
    });
    pid_of(&w, "/fresh");
}

#[test]
fn reload_inside_a_nested_supervisor_keeps_the_supervisor_and_its_untouched_children() {
    let w = Warden::start(
        r#"
[[supervisor]]
name = "app"

[[service]]
name = "api"
supervisor = "app"
command = ["sleep", "1000"]

[[service]]
name = "worker"
supervisor = "app"
command = ["sleep", "1001"]

[[service]]
name = "old"
supervisor = "app"
command = ["sleep", "1002"]

[[service]]
name = "solo"
command = ["sleep", "1003"]
"#,
    );
    let api = pid_of(&w, "/app/api");
    let worker = pid_of(&w, "/app/worker");
    let old = pid_of(&w, "/app/old");
    let solo = pid_of(&w, "/solo");
    let app_before = w.wait_state("/app", "running", T);

    w.rewrite(
        r#"
[[supervisor]]
name = "app"

[[service]]
name = "api"
supervisor = "app"
command = ["sleep", "1000"]

[[service]]
name = "worker"
supervisor = "app"
command = ["sleep", "1005"]

[[service]]
name = "extra"
supervisor = "app"
command = ["sleep", "1006"]

[[service]]
name = "solo"
command = ["sleep", "1003"]
"#,
    );
    let (status, body) = reload(&w);
    assert_eq!(status, 200, "reload: {body}");
    assert_changes(&body, &["/app/extra"], &["/app/old"], &["/app/worker"]);

    let extra = pid_of(&w, "/app/extra");
    assert_eq!(cmdline(extra), "sleep 1006");
    let new_worker = wait_new_pid(&w, "/app/worker", worker);
    assert_eq!(cmdline(new_worker), "sleep 1005");
    wait_gone(&w, "/app/old", old);
    assert_eq!(pid_of(&w, "/app/api"), api, "/app/api keeps its pid");
    assert_eq!(pid_of(&w, "/solo"), solo, "/solo keeps its pid");

    let app_after = w.wait_state("/app", "running", T);
    assert_eq!(app_after["restarts"], app_before["restarts"], "{app_after}");
    assert_eq!(
        app_after["started_at"], app_before["started_at"],
        "the nested supervisor itself was not restarted"
    );
    let children: Vec<String> = app_after["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|c| c.as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        children,
        vec!["/app/api", "/app/worker", "/app/extra"],
        "children of /app in the new file order"
    );
}

#[test]
fn an_invalid_file_is_refused_with_400_naming_file_line_and_key_and_nothing_changes() {
    let w = Warden::start(FLAT);
    for p in ["/keep", "/gone", "/edit"] {
        pid_of(&w, p);
    }
    let before = snapshot(&w);

    // An unknown key: the error names the file, the line of the key and the key.
    w.rewrite(
        r#"
[[service]]
name = "keep"
command = ["sleep", "1000"]

[[service]]
name = "edit"
command = ["sleep", "1003"]
bogus_key = 1
"#,
    );
    let text = std::fs::read_to_string(&w.config).expect("config");
    let line = 1 + text
        .lines()
        .position(|l| l.starts_with("bogus_key"))
        .expect("bogus_key line");
    let (status, body) = reload(&w);
    assert_eq!(status, 400, "unknown key: {body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("warden.toml"), "names the file: {error}");
    assert!(
        error.contains(&format!(":{line}")),
        "names line {line}: {error}"
    );
    assert!(error.contains("bogus_key"), "names the key: {error}");
    assert_eq!(snapshot(&w), before, "an unknown key changes nothing");

    // Not TOML at all: the error names the file and the line.
    w.rewrite(
        r#"
[[service]]
name = "keep"
command = ["sleep", "1000"
"#,
    );
    let (status, body) = reload(&w);
    assert_eq!(status, 400, "bad TOML: {body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("warden.toml"), "names the file: {error}");
    assert!(
        error.contains("warden.toml:"),
        "names a line after the file: {error}"
    );
    assert_eq!(snapshot(&w), before, "bad TOML changes nothing");

    // A duplicate name: the error names the name.
    w.rewrite(&format!(
        "{FLAT}\n[[service]]\nname = \"keep\"\ncommand = [\"sleep\", \"1\"]\n"
    ));
    let (status, body) = reload(&w);
    assert_eq!(status, 400, "duplicate name: {body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("keep"), "names the duplicate: {error}");
    assert_eq!(snapshot(&w), before, "a duplicate name changes nothing");

    // A later valid edit reloads fine.
    let keep = before["/keep"].1.expect("keep pid") as u32;
    let gone = before["/gone"].1.expect("gone pid") as u32;
    let edit = before["/edit"].1.expect("edit pid") as u32;
    w.rewrite(FLAT_EDITED);
    let (status, body) = reload(&w);
    assert_eq!(status, 200, "valid reload after refusals: {body}");
    assert_changes(&body, &["/fresh"], &["/gone"], &["/edit"]);
    assert_flat_reloaded(&w, keep, gone, edit);
}

#[test]
fn changing_a_supervisors_strategy_restarts_its_subtree_and_spares_siblings() {
    let tree = |strategy: &str| {
        format!(
            r#"
[[supervisor]]
name = "app"
strategy = "{strategy}"

[[service]]
name = "api"
supervisor = "app"
command = ["sleep", "1000"]

[[service]]
name = "worker"
supervisor = "app"
command = ["sleep", "1001"]

[[supervisor]]
name = "other"

[[service]]
name = "svc"
supervisor = "other"
command = ["sleep", "1002"]

[[service]]
name = "solo"
command = ["sleep", "1003"]
"#
        )
    };
    let w = Warden::start(&tree("one_for_one"));
    let api = pid_of(&w, "/app/api");
    let worker = pid_of(&w, "/app/worker");
    let svc = pid_of(&w, "/other/svc");
    let solo = pid_of(&w, "/solo");

    w.rewrite(&tree("one_for_all"));
    let (status, body) = reload(&w);
    assert_eq!(status, 200, "reload: {body}");
    assert_changes(&body, &[], &[], &["/app"]);

    let new_api = wait_new_pid(&w, "/app/api", api);
    let new_worker = wait_new_pid(&w, "/app/worker", worker);
    assert!(!alive(api) && !alive(worker), "the old subtree is gone");
    w.wait_state("/app", "running", T);
    assert_eq!(pid_of(&w, "/other/svc"), svc, "/other/svc keeps its pid");
    assert_eq!(pid_of(&w, "/solo"), solo, "/solo keeps its pid");

    // The new strategy is in force: a kill of api now restarts worker too.
    kill(new_api, 9);
    wait_new_pid(&w, "/app/api", new_api);
    wait_new_pid(&w, "/app/worker", new_worker);
    assert_eq!(pid_of(&w, "/other/svc"), svc);
}
