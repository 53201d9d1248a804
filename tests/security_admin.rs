//! Security of the admin API, its tokens and secrets (issue 10; review findings 2, 9, 11,
//! 14, 15, 20). Each test performs an attack, or the mistake that opens one, against a
//! real `warden` and shows it fails:
//! - a non-loopback `listen` without TLS is refused at `check` and `up`, naming it; with
//!   `tls` the API is HTTPS only; `insecure = true` serves plain HTTP on purpose;
//! - the read-only token gets 200 on GET and 403 on anything else; `/readyz` names the
//!   actors it waits for only to a token holder;
//! - a rollout runs only the program the config names (`rollout = "config_only"`) and is
//!   held to the config's rules (NUL, `=`, empty names);
//! - a Redis password never appears in warden's log or its config errors;
//! - a token of a retired worker, of an earlier worker of the same name, or an expired
//!   one does not verify;
//! - `warden ctl logs` escapes a child's escape sequences on a terminal.
mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::tls::{https, self_signed};
use support::*;

const T: Duration = Duration::from_secs(20);

/// Writes `warden.toml` (`state_dir = "state"`, then `text`) into `dir`.
fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let config = dir.join("warden.toml");
    std::fs::write(&config, format!("state_dir = \"state\"\n{text}")).expect("write config");
    config
}

/// Starts `warden up` on `text` (which holds its own `[admin]`), answering on `port`,
/// without waiting for it.
fn spawn_up(dir: tempfile::TempDir, port: u16, text: &str) -> Warden {
    let config = write_config(dir.path(), text);
    let stderr = dir.path().join("warden.stderr");
    let child = Command::new(warden_bin())
        .arg("up")
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("spawn warden");
    Warden {
        dir,
        port,
        child: Some(child),
        config,
        stderr,
    }
}

/// Waits until something accepts TCP connections on `port` (warden exiting first fails).
fn wait_listening(w: &mut Warden) {
    let port = w.port;
    wait_until("the admin port accepts connections", T, || {
        if let Some(status) = w.try_wait() {
            panic!("warden exited early ({status}): {}", w.stderr_text());
        }
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

fn error_of(r: &Response) -> String {
    serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Promise: an admin API reachable from the network is never plain HTTP by accident. A
/// `listen` that is not loopback is refused by `check` and `up` (exit 2, naming the
/// address, nothing bound) unless `tls` or `insecure = true` is set; `tls` files that do
/// not load are refused by `check` naming the file. Old code: accepted any address and
/// served the token in the clear.
#[test]
fn a_non_loopback_listen_without_tls_is_refused_naming_it_and_bad_tls_files_are_named() {
    let dir = temp_dir();
    let port = free_port();
    let config = write_config(
        dir.path(),
        &format!("[admin]\nlisten = \"0.0.0.0:{port}\"\n\n[[service]]\nname = \"s\"\ncommand = [\"sleep\", \"1000\"]\n"),
    );
    let path = config.to_str().expect("path");
    let (code, _, err) = run_warden(&["check", "-c", path], dir.path());
    assert_eq!(code, 2, "check of a non-loopback listen: {err}");
    assert!(
        err.contains(&format!("0.0.0.0:{port}")) && err.contains("listen") && err.contains("tls"),
        "the error names the address, the key and the way out: {err}"
    );
    let (code, _, err) = run_warden(&["up", "-c", path], dir.path());
    assert_eq!(code, 2, "up of a non-loopback listen: {err}");
    assert!(err.contains(&format!("0.0.0.0:{port}")), "{err}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "a refused up binds nothing"
    );

    // TLS files that do not load: named at check.
    let (cert, key, _) = self_signed();
    let (_, other_key, _) = self_signed();
    std::fs::write(dir.path().join("cert.pem"), &cert).expect("cert");
    std::fs::write(dir.path().join("key.pem"), &key).expect("key");
    std::fs::write(dir.path().join("other.pem"), &other_key).expect("other key");
    std::fs::write(dir.path().join("garbage.pem"), "not a certificate\n").expect("garbage");
    let cases = [
        ("missing.pem", "key.pem", "missing.pem", "tls.cert"),
        ("garbage.pem", "key.pem", "garbage.pem", "tls.cert"),
        ("cert.pem", "missing.pem", "missing.pem", "tls.key"),
        ("cert.pem", "other.pem", "other.pem", "tls.key"),
    ];
    for (cert_file, key_file, named, key_name) in cases {
        write_config(
            dir.path(),
            &format!(
                "[admin]\nlisten = \"0.0.0.0:{port}\"\ntls = {{ cert = \"{cert_file}\", key = \"{key_file}\" }}\n"
            ),
        );
        let (code, _, err) = run_warden(&["check", "-c", path], dir.path());
        assert_eq!(code, 2, "cert {cert_file}, key {key_file}: {err}");
        assert!(
            err.contains(named) && err.contains(key_name),
            "cert {cert_file}, key {key_file}: the error names {named} and {key_name}: {err}"
        );
    }
    // The good pair passes, and so does insecure = true without TLS.
    write_config(
        dir.path(),
        &format!("[admin]\nlisten = \"0.0.0.0:{port}\"\ntls = {{ cert = \"cert.pem\", key = \"key.pem\" }}\n"),
    );
    let (code, _, err) = run_warden(&["check", "-c", path], dir.path());
    assert_eq!(code, 0, "a good certificate and key: {err}");
    write_config(
        dir.path(),
        &format!("[admin]\nlisten = \"0.0.0.0:{port}\"\ninsecure = true\n"),
    );
    let (code, _, err) = run_warden(&["check", "-c", path], dir.path());
    assert_eq!(code, 0, "insecure = true: {err}");
}

/// Promise: with `[admin] tls` the API is HTTPS (a client that trusts the certificate
/// gets its answers) and plain HTTP gets no answer at all. Old code: no TLS key existed
/// (an unknown key in [admin]).
#[test]
fn with_tls_the_api_answers_https_and_plain_http_fails() {
    let dir = temp_dir();
    let (cert, key, der) = self_signed();
    std::fs::write(dir.path().join("cert.pem"), &cert).expect("cert");
    std::fs::write(dir.path().join("key.pem"), &key).expect("key");
    let port = free_port();
    let mut w = spawn_up(
        dir,
        port,
        &format!(
            "[admin]\nlisten = \"0.0.0.0:{port}\"\ntls = {{ cert = \"cert.pem\", key = \"key.pem\" }}\n\n[[service]]\nname = \"s\"\ncommand = [\"sleep\", \"1000\"]\n"
        ),
    );
    wait_listening(&mut w);
    let token = wait_for("the admin token file", T, || {
        std::fs::read_to_string(w.path("state/admin.token"))
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    });
    let r = wait_for("an HTTPS answer", T, || {
        https(port, &der, "GET", "/api/v1/actors/s", &token, None).ok()
    });
    assert_eq!(r.status, 200, "GET over HTTPS: {}", r.text());
    assert_eq!(r.json()["path"], "/s", "{}", r.text());
    let r = https(port, &der, "GET", "/api/v1/tree", "wrong", None).expect("https");
    assert_eq!(r.status, 401, "a wrong token over HTTPS: {}", r.text());

    let plain = http(port, "GET", "/healthz", None, None);
    assert!(
        plain.is_err(),
        "plain HTTP on the HTTPS port got an HTTP answer: {plain:?}"
    );
    let plain = http(port, "GET", "/api/v1/tree", Some(&token), None);
    assert!(plain.is_err(), "plain HTTP with the token: {plain:?}");
}

/// Promise: `insecure = true` serves plain HTTP on a non-loopback address because the
/// operator said so, and warden's log warns about it.
#[test]
fn insecure_true_serves_plain_http_on_a_non_loopback_address_with_a_warning() {
    let port = free_port();
    let mut w = spawn_up(
        temp_dir(),
        port,
        &format!("[admin]\nlisten = \"0.0.0.0:{port}\"\ninsecure = true\n\n[[service]]\nname = \"s\"\ncommand = [\"sleep\", \"1000\"]\n"),
    );
    wait_listening(&mut w);
    let r = wait_for("plain /healthz", T, || {
        http(port, "GET", "/healthz", None, None).ok()
    });
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(w.req("GET", "/api/v1/actors/s").status, 200);
    wait_until("the warning in warden's log", T, || {
        w.stderr_text().contains("insecure = true")
    });
}

/// Promise: the read-only token (`read_token_file`) reads everything and changes nothing:
/// 200 on GET, 403 with a JSON error on POST, and the actor it tried to restart keeps its
/// pid; `/readyz` names the actors it waits for only to a token holder. Old code: no
/// read-only token existed (one token did everything) and `/readyz` named down actors
/// to anyone.
#[test]
fn the_read_only_token_gets_200_on_get_and_403_on_post() {
    let port = free_port();
    let mut w = spawn_up(
        temp_dir(),
        port,
        &format!(
            "[admin]\nlisten = \"127.0.0.1:{port}\"\nread_token_file = \"state/read.token\"\n\n\
             [[service]]\nname = \"s\"\ncommand = [\"sleep\", \"1000\"]\n\n\
             [[service]]\nname = \"slow\"\ncommand = [\"sleep\", \"1000\"]\nready = {{ delay = \"1h\" }}\n"
        ),
    );
    wait_listening(&mut w);
    let pid = w.wait_state("s", "running", T)["pid"].as_u64();
    let read = std::fs::read_to_string(w.path("state/read.token")).expect("read token file");
    let read = read.trim();
    assert!(read.len() >= 32, "a generated read-only token: {read:?}");
    assert_ne!(read, w.token());

    for path in [
        "/api/v1/tree",
        "/api/v1/actors",
        "/api/v1/actors/s",
        "/metrics",
    ] {
        let r = http(port, "GET", path, Some(read), None).expect("http");
        assert_eq!(
            r.status,
            200,
            "GET {path} with the read-only token: {}",
            r.text()
        );
    }
    for path in [
        "/api/v1/actors/s/restart",
        "/api/v1/actors/s/stop",
        "/api/v1/drain",
        "/api/v1/reload",
    ] {
        let r = http(port, "POST", path, Some(read), None).expect("http");
        assert_eq!(
            r.status,
            403,
            "POST {path} with the read-only token: {}",
            r.text()
        );
        assert!(
            error_of(&r).contains("read-only"),
            "POST {path}: a JSON error saying why: {}",
            r.text()
        );
    }
    let r = http(
        port,
        "DELETE",
        "/api/v1/pools/p/sessions/x",
        Some(read),
        None,
    )
    .expect("http");
    assert_eq!(
        r.status,
        403,
        "DELETE with the read-only token: {}",
        r.text()
    );
    assert_eq!(
        w.actor("s")["pid"].as_u64(),
        pid,
        "the restart did not happen"
    );
    assert_eq!(
        http(port, "GET", "/healthz", None, None)
            .expect("healthz")
            .status,
        200,
        "the drain did not happen"
    );
    let r = http(port, "GET", "/api/v1/tree", Some(&"0".repeat(64)), None).expect("http");
    assert_eq!(r.status, 401, "a wrong token: {}", r.text());

    // /readyz: 503 while /slow waits; its name only for a token holder.
    let anonymous = http(port, "GET", "/readyz", None, None).expect("readyz");
    assert_eq!(anonymous.status, 503, "{}", anonymous.text());
    assert!(
        !anonymous.text().contains("slow") && anonymous.json()["waiting"].is_null(),
        "/readyz without a token names no actor: {}",
        anonymous.text()
    );
    for token in [read.to_owned(), w.token()] {
        let r = http(port, "GET", "/readyz", Some(&token), None).expect("readyz");
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(
            r.json()["waiting"],
            serde_json::json!(["/slow"]),
            "{}",
            r.text()
        );
    }

    // The admin token still does everything.
    let r = w.req("POST", "/api/v1/actors/s/restart");
    assert_eq!(r.status, 200, "restart with the admin token: {}", r.text());
    assert_ne!(w.actor("s")["pid"].as_u64(), pid);
}

/// Promise (review finding 14): a token file warden did not write safely is not trusted:
/// one that group or others may read (a planted or leaked token) or one too short to be
/// a token is refused at start, naming the file and why. Old code: any non-empty file was
/// used as it was, so `a` was a valid admin token.
#[test]
fn a_loose_or_short_admin_token_file_is_refused_at_start_naming_it() {
    use std::os::unix::fs::PermissionsExt as _;
    for (content, mode, says) in [
        ("f".repeat(64), 0o644, "mode 0644"),
        ("a".to_owned(), 0o600, "too short"),
    ] {
        let dir = temp_dir();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).expect("state");
        let file = state.join("admin.token");
        std::fs::write(&file, format!("{content}\n")).expect("token");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let port = free_port();
        let mut w = spawn_up(
            dir,
            port,
            &format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n"),
        );
        let status = wait_for("warden refuses to start", T, || w.try_wait());
        let err = w.stderr_text();
        assert_eq!(status.code(), Some(1), "{says}: {err}");
        assert!(
            err.contains(&file.display().to_string()) && err.contains(says),
            "the error names the file and {says:?}: {err}"
        );
    }
}

/// A pool of `sleep` workers (one at start) and its rollout policy line (`""`: default).
fn sleep_pool(port: u16, first: u16, policy: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:{port}\"\n\n[[pool]]\nname = \"p\"\n\
         command = [\"sleep\", \"100000\"]\nports = \"{first}-{}\"\nmin = 1\nmax = 2\n{policy}\n",
        first + 3
    )
}

fn rollout(w: &Warden, body: &str) -> Response {
    http(
        w.port,
        "POST",
        "/api/v1/pools/p/rollout",
        Some(&w.token()),
        Some(body.as_bytes()),
    )
    .expect("rollout")
}

/// Promise: under `rollout = "config_only"` (the default) the admin token cannot make
/// warden run a program the config does not name: such a rollout is 400 naming the
/// program and the policy, nothing runs and the pool is unchanged; `rollout = "any"`
/// allows it. Old code: any command was started as new workers.
#[test]
fn a_rollout_of_a_program_the_config_does_not_name_is_refused_under_config_only() {
    let port = free_port();
    let dir = temp_dir();
    let marker = dir.path().join("PWNED");
    let mut w = spawn_up(dir, port, &sleep_pool(port, free_range(4), ""));
    wait_listening(&mut w);
    let pid = w.wait_state("p/w1", "running", T)["pid"].as_u64();
    let body = serde_json::json!({
        "command": ["/bin/sh", "-c", format!("touch {}; exec sleep 100000", marker.display())]
    })
    .to_string();
    let r = rollout(&w, &body);
    assert_eq!(r.status, 400, "{}", r.text());
    let error = error_of(&r);
    assert!(
        error.contains("/bin/sh") && error.contains("config_only"),
        "the error names the program and the policy: {error}"
    );
    holds_for(
        "no worker of the refused rollout",
        Duration::from_millis(500),
        || !marker.exists(),
    );
    assert_eq!(w.actor("p/w1")["pid"].as_u64(), pid);
    let workers = w.actor("p")["children"].clone();
    assert_eq!(
        workers,
        serde_json::json!(["/p/w1"]),
        "the pool is unchanged"
    );
    // The program the config names may take new arguments.
    let r = rollout(&w, r#"{"command":["sleep","100001"]}"#);
    assert_eq!(
        r.status,
        200,
        "a rollout of the configured program: {}",
        r.text()
    );
    drop(w);

    // rollout = "any": the same request is carried out.
    let port = free_port();
    let dir = temp_dir();
    let marker = dir.path().join("PWNED");
    let mut w = spawn_up(
        dir,
        port,
        &sleep_pool(port, free_range(4), "rollout = \"any\""),
    );
    wait_listening(&mut w);
    w.wait_state("p/w1", "running", T);
    let body = serde_json::json!({
        "command": ["/bin/sh", "-c", format!("touch {}; exec sleep 100000", marker.display())]
    })
    .to_string();
    let r = rollout(&w, &body);
    assert_eq!(r.status, 200, "rollout = any: {}", r.text());
    wait_until("the new worker ran", T, || marker.exists());
}

/// Promise: a rollout is held to the config's own rules: a NUL in the command or an env
/// value, `=` in an env name or an empty env name is 400 naming the problem, and nothing
/// changes. Old code: these passed validation (only placeholders were checked) and every
/// new worker then failed to spawn while the old ones drained.
#[test]
fn a_rollout_with_nul_equals_or_an_empty_env_name_is_refused_naming_the_problem() {
    let port = free_port();
    let mut w = spawn_up(temp_dir(), port, &sleep_pool(port, free_range(4), ""));
    wait_listening(&mut w);
    let pid = w.wait_state("p/w1", "running", T)["pid"].as_u64();
    let cases = [
        (r#"{"command":["sleep","1\u0000"]}"#, "NUL"),
        (r#"{"env":{"A":"x\u0000y"}}"#, "NUL"),
        (r#"{"env":{"A\u0000B":"x"}}"#, "NUL"),
        (r#"{"env":{"A=B":"x"}}"#, "`=`"),
        (r#"{"env":{"":"x"}}"#, "must not be empty"),
        (r#"{"env":{"A":"{nope}"}}"#, "{nope}"),
    ];
    let mut problems = Vec::new();
    for (body, word) in cases {
        let r = rollout(&w, body);
        let error = error_of(&r);
        if r.status != 400 || !error.contains(word) {
            problems.push(format!(
                "{body}: expected 400 naming {word:?}, got {} {}",
                r.status,
                r.text()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let details = &w.actor("p")["details"];
    assert_eq!(w.actor("p/w1")["pid"].as_u64(), pid);
    assert_eq!(details["workers"][0]["draining"], false, "{details}");
    assert_eq!(
        details["workers"].as_array().map(Vec::len),
        Some(1),
        "{details}"
    );
}

/// A `redis-server` that requires `password`, killed (by pid) on drop.
struct PasswordRedis {
    child: std::process::Child,
    port: u16,
}

impl PasswordRedis {
    fn start(password: &str) -> Self {
        let port = free_port();
        let child = Command::new(support::redis::redis_server_bin())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                password,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let mut redis = Self { child, port };
        let auth = format!("AUTH {password}\r\nPING\r\n");
        wait_until("redis-server answers", T, || {
            if let Ok(Some(status)) = redis.child.try_wait() {
                panic!("redis-server exited: {status}");
            }
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut reply = [0u8; 12];
            s.write_all(auth.as_bytes()).is_ok()
                && s.read_exact(&mut reply).is_ok()
                && &reply == b"+OK\r\n+PONG\r\n"
        });
        redis
    }
}

impl Drop for PasswordRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Promise: nothing secret is logged. With a Redis that requires a password, warden's log
/// (its start-up lines and a refused wrong password) and its config errors show the URL
/// with the password as `***`. Old code: `warden up` logged the raw URL at start, and a
/// config error echoed it.
#[test]
fn a_redis_password_never_appears_in_the_log() {
    const PASSWORD: &str = "S3cret-redis-pw";
    let redis = PasswordRedis::start(PASSWORD);
    let port = free_port();
    let first = free_range(6);
    let cluster = format!(
        "[cluster]\nredis_url = \"redis://:{PASSWORD}@127.0.0.1:{}/0\"\n",
        redis.port
    );
    let mut w = spawn_up(
        temp_dir(),
        port,
        &format!(
            "[admin]\nlisten = \"127.0.0.1:{port}\"\n{cluster}\n[[pool]]\nname = \"p\"\n\
             command = [\"sleep\", \"100000\"]\nports = \"{first}-{last}\"\nmin = 1\nmax = 1\n",
            last = first + 5,
        ),
    );
    wait_listening(&mut w);
    wait_until("w1 runs (allocated through Redis)", T, || {
        let r = w.req("GET", "/api/v1/actors/p/w1");
        r.status == 200 && r.json()["state"] == "running"
    });
    wait_until("the Redis line in warden's log", T, || {
        w.stderr_text().contains("shared through Redis")
    });
    let log = w.stderr_text();
    assert!(
        log.contains(":***@127.0.0.1"),
        "the URL is shown redacted: {log}"
    );
    assert!(
        !log.contains(PASSWORD),
        "the password is in warden's log: {log}"
    );
    let status = w.signal_and_wait(15, T);
    assert_eq!(status.code(), Some(0), "{}", w.stderr_text());
    assert!(!w.stderr_text().contains(PASSWORD), "{}", w.stderr_text());

    // A wrong password: refused at up, the URL named without it.
    let dir = temp_dir();
    let config = write_config(
        dir.path(),
        &format!(
            "[admin]\nlisten = \"127.0.0.1:{}\"\n[cluster]\nredis_url = \"redis://:wrong-{PASSWORD}@127.0.0.1:{}\"\n",
            free_port(),
            redis.port
        ),
    );
    let (code, _, err) = run_warden(&["up", "-c", config.to_str().expect("path")], dir.path());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(":***@127.0.0.1:{}", redis.port)),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");

    // Config errors: a URL that does not parse, and rediss:// (refused at check).
    for url in [
        format!("redis://:{PASSWORD}@bad host"),
        format!("rediss://:{PASSWORD}@127.0.0.1:{}", redis.port),
    ] {
        write_config(dir.path(), &format!("[cluster]\nredis_url = \"{url}\"\n"));
        let (code, _, err) =
            run_warden(&["check", "-c", config.to_str().expect("path")], dir.path());
        assert_eq!(code, 2, "{url}: {err}");
        assert!(
            err.contains("redis_url") && err.contains(":***@"),
            "{url}: {err}"
        );
        assert!(!err.contains(PASSWORD), "{url}: {err}");
    }
}

/// The token a worker was given, read through the file its environment names.
fn worker_token(w: &Warden, worker: &str) -> String {
    let pid = w.wait_state(worker, "running", T)["pid"]
        .as_u64()
        .expect("worker pid");
    let environ = proc_strings(pid as u32, "environ");
    let file = environ
        .iter()
        .find_map(|kv| kv.strip_prefix("WARDEN_WORKER_TOKEN_FILE="))
        .expect("the worker is told where its token is")
        // The worker reaches it through a folder it inherited (`/proc/self/fd/N/token`).
        .replacen("/proc/self/", &format!("/proc/{pid}/"), 1);
    wait_for("the worker's token", T, || {
        std::fs::read_to_string(&file)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    })
}

fn verify(w: &Warden, pool: &str, token: &str) -> Value {
    let body = serde_json::json!({ "token": token }).to_string();
    let r = http(
        w.port,
        "POST",
        &format!("/api/v1/pools/{pool}/tokens/verify"),
        Some(&w.token()),
        Some(body.as_bytes()),
    )
    .expect("verify");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Promise: a worker token proves it is that run of that worker, now. A token of a
/// worker that was reaped, or of an earlier worker of the same name (the pool's table was
/// lost, numbering began again at w1), does not verify, well before it would expire; an
/// expired token does not verify. Old code: any signed, unexpired token verified, so the
/// old `w1`'s token passed for the new `w1`.
#[test]
fn a_token_of_a_retired_worker_or_of_an_earlier_worker_of_the_same_name_does_not_verify() {
    let port = free_port();
    let first = free_range(4);
    let body = format!(
        "[admin]\nlisten = \"127.0.0.1:{port}\"\n\n[[pool]]\nname = \"p\"\n\
         command = [\"sleep\", \"100000\"]\nports = \"{first}-{}\"\nmin = 0\nmax = 1\n\
         idle_timeout = \"1s\"\ntoken_ttl = \"1h\"\n\n[[pool]]\nname = \"short\"\n\
         command = [\"sleep\", \"100000\"]\nports = \"{}-{}\"\nmin = 1\nmax = 1\ntoken_ttl = \"5s\"\n",
        first + 1,
        first + 2,
        first + 3,
    );
    let dir = temp_dir();
    let mut w = spawn_up(dir, port, &body);
    wait_listening(&mut w);

    // Expired: the short pool's tokens live 5 s (valid when first read even on a
    // loaded CI machine, where 1 s could pass between the token's issue and the check).
    let short = worker_token(&w, "short/w1");
    assert_eq!(verify(&w, "short", &short)["valid"], true);
    wait_until("the short token expires", T, || {
        verify(&w, "short", &short)["valid"] == false
    });
    let reason = verify(&w, "short", &short)["reason"].clone();
    assert!(
        reason.as_str().unwrap_or("").contains("expired"),
        "{reason}"
    );

    // Retired: w1 is reaped after its session is released and 1 s idle.
    let r = w.req("POST", "/api/v1/pools/p/sessions");
    assert_eq!(r.status, 201, "{}", r.text());
    let session = r.json()["session_id"]
        .as_str()
        .expect("session id")
        .to_owned();
    let old = worker_token(&w, "p/w1");
    assert_eq!(verify(&w, "p", &old)["valid"], true);
    let r = w.req("DELETE", &format!("/api/v1/pools/p/sessions/{session}"));
    assert_eq!(r.status, 204, "{}", r.text());
    wait_until("w1 is reaped", T, || {
        w.req("GET", "/api/v1/actors/p/w1").status == 404
    });
    let check = verify(&w, "p", &old);
    assert_eq!(check["valid"], false, "a reaped worker's token: {check}");
    assert!(
        check["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no longer a worker"),
        "{check}"
    );

    // The same name again: stop warden, lose the pool tables, start again.
    let status = w.signal_and_wait(15, T);
    assert_eq!(status.code(), Some(0), "{}", w.stderr_text());
    for table in std::fs::read_dir(w.path("state/pools"))
        .expect("pools dir")
        .flatten()
    {
        std::fs::remove_file(table.path()).expect("remove table");
    }
    let dir = std::mem::replace(&mut w.dir, temp_dir());
    drop(w);
    let mut w = spawn_up(dir, port, &body);
    wait_listening(&mut w);
    let r = w.req("POST", "/api/v1/pools/p/sessions");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json()["worker"],
        "/p/w1",
        "numbering began again: {}",
        r.text()
    );
    let new = worker_token(&w, "p/w1");
    assert_ne!(new, old);
    assert_eq!(
        verify(&w, "p", &new)["valid"],
        true,
        "the new w1's own token"
    );
    let check = verify(&w, "p", &old);
    assert_eq!(
        check["valid"], false,
        "the old w1's token for the new w1: {check}"
    );
    assert!(
        check["reason"]
            .as_str()
            .unwrap_or("")
            .contains("earlier worker"),
        "{check}"
    );
}

/// Runs `warden ARGS` under a pseudo-terminal (python3's pty module) and answers what it
/// wrote there.
fn run_on_a_terminal(args: &[&str]) -> Vec<u8> {
    const PTY: &str = r#"
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out = b""
while True:
    try:
        data = os.read(fd, 65536)
    except OSError:
        break
    if not data:
        break
    out += data
os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(PTY)
        .arg(warden_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("python3 pty");
    assert!(out.status.success(), "pty runner: {out:?}");
    out.stdout
}

/// Promise: a child cannot drive the operator's terminal through its log. `warden ctl
/// logs` on a terminal shows an escape sequence the child wrote as visible text (no ESC
/// byte reaches the terminal); `--raw` passes the bytes through. Old code: the raw bytes
/// always reached the terminal.
#[test]
fn ctl_logs_escapes_control_bytes_on_a_terminal_and_raw_passes_them() {
    let port = free_port();
    let mut w = spawn_up(
        temp_dir(),
        port,
        &format!(
            "[admin]\nlisten = \"127.0.0.1:{port}\"\n\n[[service]]\nname = \"evil\"\n\
             command = [\"sh\", \"-c\", \"printf 'before \\\\033]0;PWNED\\\\007 \\\\033[2J after\\\\n'; exec sleep 100000\"]\n"
        ),
    );
    wait_listening(&mut w);
    w.wait_state("evil", "running", T);
    let log = w.path("state/logs/evil.log");
    wait_until("the child's line in its log", T, || {
        std::fs::read(&log).is_ok_and(|b| b.contains(&0x1b))
    });
    let config = w.config.to_str().expect("path").to_owned();
    let shown = run_on_a_terminal(&["ctl", "-c", &config, "logs", "/evil", "--tail", "5"]);
    let text = String::from_utf8_lossy(&shown);
    assert!(
        text.contains("before") && text.contains("after"),
        "{text:?}"
    );
    assert!(
        !shown.contains(&0x1b) && !shown.contains(&0x07),
        "an ESC or BEL reached the terminal: {text:?}"
    );
    assert!(
        text.contains("\\x1b]0;PWNED\\x07"),
        "shown as visible text: {text:?}"
    );

    let raw = run_on_a_terminal(&[
        "ctl", "-c", &config, "logs", "/evil", "--tail", "5", "--raw",
    ]);
    assert!(
        raw.windows(2).any(|w| w == b"\x1b]"),
        "--raw passes the bytes: {:?}",
        String::from_utf8_lossy(&raw)
    );
}
