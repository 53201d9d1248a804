//! Black-box tests of the CLI's HTTP client against a real `warden up`: `warden hub` and
//! `warden ctl --admin`/`--spoke` reach an HTTPS admin API (`[admin] tls`), trusting the
//! config's own certificate or the CAs of `--ca-file`; an untrusted certificate and a
//! refused token are exit 2 (usage or connection error); `warden hub` only locates its
//! config, so a pending bad edit does not stop it.
mod support;

use std::net::TcpStream;
use std::time::Duration;

use support::tls::self_signed;
use support::*;

const T: Duration = Duration::from_secs(20);

/// A hub whose admin API is HTTPS on 127.0.0.1 with a self-signed certificate made now
/// (`cert.pem` in its dir), with one service; waits until the port and the token are up.
fn tls_hub() -> Warden {
    let (cert, key, _) = self_signed();
    let dir = temp_dir();
    std::fs::write(dir.path().join("cert.pem"), cert).expect("cert");
    std::fs::write(dir.path().join("key.pem"), key).expect("key");
    // These first lines land in the [admin] table the harness writes.
    let mut w = Warden::spawn_in(
        dir,
        "tls = { cert = \"cert.pem\", key = \"key.pem\" }\n\n[hub]\nenabled = true\n\n\
         [[service]]\nname = \"s\"\ncommand = [\"sleep\", \"1000\"]\n",
    );
    let port = w.port;
    wait_until("the admin port accepts connections", T, || {
        if let Some(status) = w.try_wait() {
            panic!("warden exited early ({status}): {}", w.stderr_text());
        }
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    wait_until("the admin token file", T, || {
        std::fs::read_to_string(w.path("state/admin.token")).is_ok_and(|t| !t.trim().is_empty())
    });
    w
}

/// Runs `warden ARGS...` in the warden's dir.
fn run(w: &Warden, args: &[&str]) -> (i32, String, String) {
    run_warden(args, w.dir.path())
}

/// Promise: `warden hub -c CONFIG` talks HTTPS to the config's own listener when `[admin]`
/// has `tls`, trusting its `tls.cert` (self-signed here): token create, list and spokes
/// work. Old code: plain `http://` to the TLS port and no TLS in the client ("http parse
/// fail", exit 2).
#[test]
fn warden_hub_reaches_its_own_https_listener_trusting_the_configs_certificate() {
    let w = tls_hub();
    let config = w.config.to_str().expect("utf-8 path");
    let (code, out, err) = run(&w, &["hub", "-c", config, "token", "create", "edge-1"]);
    assert_eq!(code, 0, "token create over HTTPS: {out} {err}");
    let token = out.trim();
    assert!(
        token
            .split_once('.')
            .is_some_and(|(id, secret)| !id.is_empty() && !secret.is_empty()),
        "a join token <id>.<secret>: {out:?}"
    );
    assert!(err.contains("edge-1"), "{err}");
    let (code, out, err) = run(&w, &["hub", "-c", config, "token", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("edge-1"), "the token listed: {out}");
    let (code, _, err) = run(&w, &["hub", "-c", config, "--json", "spokes"]);
    assert_eq!(code, 0, "{err}");
}

/// Promise: `warden ctl --admin https://...` with `--ca-file` (PEM) trusts those CAs
/// instead of the Mozilla roots: `status` answers, by IP and by host name; `warden hub
/// --admin https://... --ca-file` likewise. Old code: "TLS required, but transport is
/// unsecured", exit 2.
#[test]
fn ctl_and_hub_reach_an_https_admin_url_trusting_the_ca_file() {
    let w = tls_hub();
    let config = w.config.to_str().expect("utf-8 path");
    let ca = w.path("cert.pem");
    let ca = ca.to_str().expect("utf-8 path");
    for host in ["127.0.0.1", "localhost"] {
        let admin = format!("https://{host}:{}", w.port);
        let args = ["ctl", "-c", config, "--admin", &admin, "--ca-file", ca];
        let (code, out, err) = run(&w, &[&args[..], &["--json", "status"]].concat());
        assert_eq!(code, 0, "ctl status over HTTPS at {admin}: {out} {err}");
        let actors: serde_json::Value = serde_json::from_str(&out).expect("JSON status");
        assert!(
            actors
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v["path"] == "/s")),
            "{out}"
        );
        let (code, out, err) = run(
            &w,
            &[
                "hub",
                "-c",
                config,
                "--admin",
                &admin,
                "--ca-file",
                ca,
                "token",
                "list",
            ],
        );
        assert_eq!(code, 0, "hub token list at {admin}: {out} {err}");
    }
}

/// Promise: a certificate the client does not trust is refused with exit 2 and an error
/// that says the certificate is not trusted and what to do (`--ca-file`): with the
/// Mozilla roots (a self-signed certificate), with a `--ca-file` of another CA, for `ctl
/// --admin`, `ctl --spoke` and `warden hub`; a `--ca-file` that holds no certificate is
/// named. Old code: no TLS at all (a different error for every case).
#[test]
fn an_untrusted_certificate_is_refused_with_exit_2_naming_the_problem() {
    let w = tls_hub();
    let config = w.config.to_str().expect("utf-8 path");
    let admin = format!("https://127.0.0.1:{}", w.port);
    let (other, _, _) = self_signed();
    let other_ca = w.path("other.pem");
    std::fs::write(&other_ca, other).expect("other CA");
    let other_ca = other_ca.to_str().expect("utf-8 path");
    let cases: [Vec<&str>; 5] = [
        vec!["ctl", "-c", config, "--admin", &admin, "status"],
        vec![
            "ctl",
            "-c",
            config,
            "--admin",
            &admin,
            "--ca-file",
            other_ca,
            "status",
        ],
        vec![
            "ctl", "-c", config, "--admin", &admin, "--spoke", "edge", "status",
        ],
        vec!["hub", "-c", config, "--admin", &admin, "token", "list"],
        vec!["hub", "-c", config, "--ca-file", other_ca, "token", "list"],
    ];
    for args in &cases {
        let (code, out, err) = run(&w, args);
        assert_eq!(
            code, 2,
            "{args:?}: exit 2 for an untrusted certificate: {out} {err}"
        );
        assert!(
            err.contains("certificate is not trusted") && err.contains("--ca-file"),
            "{args:?}: the error names the certificate and --ca-file: {err}"
        );
    }
    std::fs::write(w.path("empty.pem"), "not a certificate\n").expect("empty.pem");
    let (code, _, err) = run(
        &w,
        &[
            "ctl",
            "-c",
            config,
            "--admin",
            &admin,
            "--ca-file",
            "empty.pem",
            "status",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--ca-file empty.pem"), "{err}");
}

/// Promise: a refused token is a usage error, exit 2, over HTTP as over the socket: `ctl
/// --admin` and `warden hub` with a wrong token file say the token is wrong. Old code:
/// exit 1.
#[test]
fn a_wrong_token_is_exit_2_for_ctl_admin_and_warden_hub() {
    let w = Warden::start("[hub]\nenabled = true\n");
    let config = w.config.to_str().expect("utf-8 path");
    std::fs::write(w.path("bad.token"), "not-the-token\n").expect("bad token");
    let admin = format!("http://127.0.0.1:{}", w.port);
    let common = ["-c", config, "--admin", &admin, "--token-file", "bad.token"];
    let (code, out, err) = run(&w, &[&["ctl"][..], &common, &["status"]].concat());
    assert_eq!(code, 2, "ctl with a wrong token: {out} {err}");
    assert!(err.contains("token"), "{err}");
    let (code, out, err) = run(&w, &[&["hub"][..], &common, &["token", "list"]].concat());
    assert_eq!(code, 2, "hub with a wrong token: {out} {err}");
    assert!(err.contains("token"), "{err}");
    // The right token still works, so 2 is about the token.
    let (code, _, err) = run(&w, &["hub", "-c", config, "token", "list"]);
    assert_eq!(code, 0, "{err}");
}

/// Promise: `warden hub` only locates its config (`[admin]` listen, tls.cert, token
/// file), as `ctl` does: a pending edit that would not load (here a service without a
/// command and an unknown key) does not stop it. Old code: the whole file was loaded,
/// exit 2.
#[test]
fn warden_hub_works_while_the_config_holds_a_bad_edit() {
    let w = tls_hub();
    let config = w.config.to_str().expect("utf-8 path");
    let mut text = std::fs::read_to_string(&w.config).expect("config");
    text.push_str("\n[[service]]\nname = \"half-written\"\nbogus = 1\n");
    std::fs::write(&w.config, text).expect("bad edit");
    let (code, _, err) = run_warden(&["check", "-c", config], w.dir.path());
    assert_eq!(code, 2, "the edit does not load: {err}");
    let (code, out, err) = run(&w, &["hub", "-c", config, "token", "create", "edge-2"]);
    assert_eq!(code, 0, "hub with a pending bad edit: {out} {err}");
    let (code, out, err) = run(&w, &["hub", "-c", config, "token", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("edge-2"), "{out}");
}

/// Promise: locating reads `[admin] listen` only for the clients that use it: with a
/// pending edit that breaks it, `ctl` over the control socket still works, and `warden
/// hub` (which needs the address) exits 2 naming the file and the key.
#[test]
fn a_bad_listen_edit_stops_only_the_clients_that_need_the_address() {
    let w = Warden::start("[hub]\nenabled = true\n");
    let config = w.config.to_str().expect("utf-8 path");
    let text = std::fs::read_to_string(&w.config).expect("config");
    let edited = text.replace(&format!("127.0.0.1:{}", w.port), "not-an-address");
    assert_ne!(edited, text, "the edit applies");
    std::fs::write(&w.config, edited).expect("bad edit");
    let (code, out, err) = run(&w, &["ctl", "-c", config, "status"]);
    assert_eq!(
        code, 0,
        "ctl over the socket with a bad listen edit: {out} {err}"
    );
    let (code, _, err) = run(&w, &["hub", "-c", config, "token", "list"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("warden.toml") && err.contains("listen"),
        "{err}"
    );
}
