//! Worker tokens of pools: written for each worker, refreshed every half TTL, verified by
//! the warden that signed them, also after it restarted (the key is kept in state_dir).
//! And a Redis that cannot be reached at start is refused, naming its URL.
mod support;

use std::time::Duration;

use support::*;

fn pool_body(first_port: u16) -> String {
    format!(
        r#"[[pool]]
name = "app"
command = ["sleep", "100000"]
ports = "{first_port}-{last}"
min = 1
max = 1
token_ttl = "2s"
"#,
        last = first_port + 1
    )
}

fn verify(w: &Warden, token: &str) -> serde_json::Value {
    let body = serde_json::json!({ "token": token }).to_string();
    let r = http(
        w.port,
        "POST",
        "/api/v1/pools/app/tokens/verify",
        Some(&w.token()),
        Some(body.as_bytes()),
    )
    .expect("http");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn worker_tokens_are_refreshed_and_verify_after_a_warden_restart() {
    let first_port = free_range(2);
    let dir = temp_dir();
    let w = Warden::start_in(dir, &pool_body(first_port));
    let worker = w.wait_state("app/w1", "running", Duration::from_secs(10));
    let pid = worker["pid"].as_u64().expect("pid");
    let environ = proc_strings(pid as u32, "environ");
    let file = environ
        .iter()
        .find_map(|kv| kv.strip_prefix("WARDEN_WORKER_TOKEN_FILE="))
        .expect("the worker is told where its token is")
        // `/proc/self/fd/N/token`: the folder the worker inherited, seen from here.
        .replacen("/proc/self/", &format!("/proc/{pid}/"), 1);
    let first = std::fs::read_to_string(&file).expect("token file");
    let check = verify(&w, first.trim());
    assert_eq!(check["valid"], true, "{check}");
    assert_eq!(check["worker"], "/app/w1");

    // Rewritten every half TTL (1 s) with a later expiry.
    let refreshed = wait_for("a refreshed token", Duration::from_secs(5), || {
        let now = std::fs::read_to_string(&file).ok()?;
        (now.trim() != first.trim() && !now.trim().is_empty()).then_some(now)
    });
    assert_eq!(verify(&w, refreshed.trim())["valid"], true);

    // Forged and foreign tokens are refused.
    let forged = refreshed.trim().replace("/app/w1", "/app/w9");
    assert_eq!(verify(&w, &forged)["valid"], false);
    assert_eq!(verify(&w, "not a token")["valid"], false);

    // A warden killed and started again (same state_dir) adopts w1, the same worker run,
    // and verifies what the earlier one signed for it (a worker that is gone would not
    // verify: see security_admin).
    let mut w = w;
    let status = w.signal_and_wait(9, Duration::from_secs(20));
    assert_eq!(status.code(), None);
    let dir = w.into_dir();
    let dir_path = dir.path().to_owned();
    let w = Warden::start_in(dir, &pool_body(first_port));
    assert_eq!(w.dir.path(), dir_path);
    let adopted = w.wait_state("app/w1", "running", Duration::from_secs(10));
    assert_eq!(
        adopted["pid"].as_u64(),
        Some(pid),
        "w1 is adopted: {adopted}"
    );
    let latest = std::fs::read_to_string(&file).unwrap_or(refreshed);
    let check = verify(&w, latest.trim());
    assert_eq!(check["valid"], true, "{check}");

    // Expired tokens are not valid: the TTL is 2 s.
    wait_until("the first token expires", Duration::from_secs(10), || {
        verify(&w, first.trim())["valid"] == false
    });
    assert!(verify(&w, first.trim())["reason"]
        .as_str()
        .unwrap_or("")
        .contains("expired"));
}

#[test]
fn an_unreachable_redis_at_start_is_refused_naming_its_url() {
    let dir = temp_dir();
    let redis_port = free_port();
    let admin = free_port();
    let config = dir.path().join("warden.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[cluster]\nredis_url = \"redis://127.0.0.1:{redis_port}\"\n"
        ),
    )
    .expect("config");
    let (code, _out, err) = run_warden(&["up", "-c", config.to_str().expect("path")], dir.path());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("redis://127.0.0.1:{redis_port}")),
        "the error names the URL: {err}"
    );
}
