//! Black-box tests of `warden::config`: a good file gives the expected tree with its
//! defaults, and every kind of bad file is refused naming the file, the line and the
//! key or entry at fault.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use warden::config::{
    expand_placeholders, load, parse, Backend, BackoffConfig, ChildConfig, ClusterConfig, Config,
    ConfigError, Intensity, OnExit, OutboardConfig, PoolConfig, ReadyConfig, RestartConfig,
    RestartPolicy, ServiceConfig, StopConfig, Strategy, SupervisorConfig,
};

/// Writes `text` to `warden.toml` in a fresh folder.
fn write(text: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warden.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

fn load_ok(text: &str) -> (TempDir, Config) {
    let (dir, path) = write(text);
    match load(&path) {
        Ok(config) => (dir, config),
        Err(e) => panic!("config refused: {e}"),
    }
}

fn load_err(text: &str) -> ConfigError {
    let (_dir, path) = write(text);
    match load(&path) {
        Ok(config) => panic!("config accepted: {config:#?}"),
        Err(e) => e,
    }
}

/// 1-based line of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the text"))
        + 1
}

/// Checks that `text` is refused at the line holding `at`, naming `key`, and that the
/// one-line message names the file and line and contains every piece of `says`.
#[track_caller]
fn assert_refused(text: &str, at: &str, key: &str, says: &[&str]) -> ConfigError {
    let error = load_err(text);
    let line = line_of(text, at);
    let shown = error.to_string();
    assert_eq!(error.line(), Some(line), "line of: {shown}");
    assert_eq!(error.key(), Some(key), "key of: {shown}");
    assert!(
        shown.contains(&format!("warden.toml:{line}: ")),
        "file and line in: {shown}"
    );
    assert!(!shown.contains('\n'), "one line: {shown}");
    for piece in says {
        assert!(shown.contains(piece), "{piece:?} in: {shown}");
    }
    error
}

fn service<'a>(supervisor: &'a SupervisorConfig, name: &str) -> &'a ServiceConfig {
    supervisor
        .children
        .iter()
        .find_map(|child| match child {
            ChildConfig::Service(s) if s.name == name => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no service {name}"))
}

fn outboard<'a>(supervisor: &'a SupervisorConfig, name: &str) -> &'a OutboardConfig {
    supervisor
        .children
        .iter()
        .find_map(|child| match child {
            ChildConfig::Outboard(o) if o.service.name == name => Some(o),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no outboard {name}"))
}

fn pool<'a>(supervisor: &'a SupervisorConfig, name: &str) -> &'a PoolConfig {
    supervisor
        .children
        .iter()
        .find_map(|child| match child {
            ChildConfig::Pool(p) if p.name == name => Some(p),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no pool {name}"))
}

fn supervisor<'a>(parent: &'a SupervisorConfig, name: &str) -> &'a SupervisorConfig {
    parent
        .children
        .iter()
        .find_map(|child| match child {
            ChildConfig::Supervisor(s) if s.name == name => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no supervisor {name}"))
}

fn paths(supervisor: &SupervisorConfig) -> Vec<&str> {
    supervisor.children.iter().map(ChildConfig::path).collect()
}

const DESIGN_EXAMPLE: &str = r#"state_dir = ".warden"              # state store, logs, sockets, pidfile

[admin]
listen = "127.0.0.1:7700"
token_file = ".warden/admin.token"

[runtime]
on_exit = "keep"

[root]
strategy = "one_for_one"

[restart]
policy = "permanent"
backoff = { initial = "100ms", max = "30s", multiplier = 2.0, jitter = 0.1 }
reset_after = "30s"
intensity = { max = 10, within = "60s" }

[[supervisor]]
name = "app"
parent = "/"
strategy = "one_for_one"
intensity = { max = 5, within = "10s" }

[[service]]
name = "api"
supervisor = "app"
command = ["./api", "--port", "8080"]
cwd = "."
env = { RUST_LOG = "info" }
stop = { signal = "TERM", timeout = "5s" }
restart = { policy = "transient", backoff = { initial = "50ms" }, intensity = { max = 3, within = "10s" } }
ready = { tcp = "127.0.0.1:8080", timeout = "10s" }
"#;

/// A relative program as the loader stores it: under the config file's folder `base`.
fn program(base: &std::path::Path, relative: &str) -> String {
    base.join(relative).to_str().expect("utf-8").to_owned()
}

#[test]
fn design_example_gives_the_expected_tree() {
    let (dir, config) = load_ok(DESIGN_EXAMPLE);
    let base = dir.path();
    let api = ServiceConfig {
        name: "api".into(),
        path: "/app/api".into(),
        line: line_of(DESIGN_EXAMPLE, "[[service]]"),
        command: vec![program(base, "api"), "--port".into(), "8080".into()],
        cwd: base.to_path_buf(),
        run_as: None,
        env: vec![("RUST_LOG".into(), "info".into())],
        stop: StopConfig {
            signal: 15,
            timeout: Duration::from_secs(5),
        },
        restart: RestartConfig {
            policy: RestartPolicy::Transient,
            backoff: BackoffConfig {
                initial: Duration::from_millis(50),
                max: Duration::from_secs(30),
                multiplier: 2.0,
                jitter: 0.1,
            },
            reset_after: Duration::from_secs(30),
            intensity: Intensity {
                max: 3,
                within: Duration::from_secs(10),
            },
        },
        ready: Some(ReadyConfig::Tcp {
            addr: "127.0.0.1:8080".into(),
            timeout: Duration::from_secs(10),
        }),
        backend: Backend::Process,
    };
    let app = SupervisorConfig {
        name: "app".into(),
        path: "/app".into(),
        strategy: Strategy::OneForOne,
        intensity: Some(Intensity {
            max: 5,
            within: Duration::from_secs(10),
        }),
        line: line_of(DESIGN_EXAMPLE, "[[supervisor]]"),
        children: vec![ChildConfig::Service(api)],
    };
    assert_eq!(config.path, base.join("warden.toml"));
    assert_eq!(config.base_dir, base);
    assert_eq!(config.state_dir, base.join(".warden"));
    assert_eq!(config.admin.listen, "127.0.0.1:7700".parse().unwrap());
    assert_eq!(config.admin.token_file, base.join(".warden/admin.token"));
    assert_eq!(config.runtime.on_exit, OnExit::Keep);
    assert_eq!(config.root.name, "");
    assert_eq!(config.root.path, "/");
    assert_eq!(config.root.line, 1);
    assert_eq!(config.root.strategy, Strategy::OneForOne);
    assert_eq!(config.root.intensity, None);
    assert_eq!(config.root.children, vec![ChildConfig::Supervisor(app)]);
}

#[test]
fn an_empty_file_gives_the_built_in_defaults() {
    let (dir, config) = load_ok("");
    let base = dir.path();
    assert_eq!(config.state_dir, base.join(".warden"));
    assert_eq!(config.admin.listen, "127.0.0.1:7700".parse().unwrap());
    assert_eq!(config.admin.token_file, base.join(".warden/admin.token"));
    assert_eq!(config.runtime.on_exit, OnExit::Keep);
    assert_eq!(config.logs.max_bytes, 10 * 1024 * 1024);
    assert_eq!(config.logs.keep, 3);
    assert_eq!(config.root.strategy, Strategy::OneForOne);
    assert_eq!(config.root.intensity, None);
    assert!(config.root.children.is_empty());
}

#[test]
fn a_service_without_options_gets_every_default() {
    let (dir, config) = load_ok("[[service]]\nname = \"web\"\ncommand = [\"web\"]\n");
    let web = service(&config.root, "web");
    assert_eq!(web.path, "/web");
    assert_eq!(web.line, 1);
    assert_eq!(web.cwd, dir.path());
    assert!(web.env.is_empty());
    assert_eq!(web.stop, StopConfig::default());
    assert_eq!(web.stop.signal, 15);
    assert_eq!(web.stop.timeout, Duration::from_secs(5));
    let restart = RestartConfig {
        policy: RestartPolicy::Permanent,
        backoff: BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.1,
        },
        reset_after: Duration::from_secs(30),
        intensity: Intensity {
            max: 10,
            within: Duration::from_secs(60),
        },
    };
    assert_eq!(web.restart, restart);
    assert_eq!(web.ready, None);
}

#[test]
fn restart_overrides_merge_field_by_field_over_the_restart_table() {
    let text = r#"
[restart]
policy = "transient"
backoff = { initial = "1s", max = "1m", multiplier = 3.0 }
reset_after = "2m"
intensity = { max = 4, within = "20s" }

[[service]]
name = "a"
command = ["a"]
restart = { backoff = { jitter = 0.5 }, intensity = { max = 0 } }

[[service]]
name = "b"
command = ["b"]

[service.restart]
policy = "temporary"
reset_after = "250ms"
"#;
    let (_dir, config) = load_ok(text);
    let a = service(&config.root, "a");
    assert_eq!(a.restart.policy, RestartPolicy::Transient);
    assert_eq!(
        a.restart.backoff,
        BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: 3.0,
            jitter: 0.5,
        }
    );
    assert_eq!(a.restart.reset_after, Duration::from_secs(120));
    assert_eq!(
        a.restart.intensity,
        Intensity {
            max: 0,
            within: Duration::from_secs(20)
        }
    );
    let b = service(&config.root, "b");
    assert_eq!(b.restart.policy, RestartPolicy::Temporary);
    assert_eq!(b.restart.backoff.initial, Duration::from_secs(1));
    assert_eq!(b.restart.backoff.jitter, 0.1);
    assert_eq!(b.restart.reset_after, Duration::from_millis(250));
    assert_eq!(b.restart.intensity.max, 4);
}

#[test]
fn durations_read_milliseconds_seconds_and_minutes() {
    let text = r#"
[[service]]
name = "a"
command = ["a"]
stop = { timeout = "250ms" }
restart = { reset_after = "2m", backoff = { initial = "5s", max = "2m" } }
ready = { delay = "5s" }
"#;
    let (_dir, config) = load_ok(text);
    let a = service(&config.root, "a");
    assert_eq!(a.stop.timeout, Duration::from_millis(250));
    assert_eq!(a.restart.reset_after, Duration::from_secs(120));
    assert_eq!(a.restart.backoff.initial, Duration::from_secs(5));
    assert_eq!(a.restart.backoff.max, Duration::from_secs(120));
    assert_eq!(
        a.ready,
        Some(ReadyConfig::Delay {
            delay: Duration::from_secs(5)
        })
    );
}

#[test]
fn relative_paths_start_at_the_folder_of_the_config_file() {
    let text = r#"
state_dir = "run/state"

[admin]
token_file = "secrets/token"

[[service]]
name = "a"
command = ["./a"]
cwd = "sub/dir"

[[service]]
name = "b"
command = ["b"]
cwd = "/opt/b"
"#;
    let (dir, config) = load_ok(text);
    let base = dir.path();
    assert_eq!(config.state_dir, base.join("run/state"));
    assert_eq!(config.admin.token_file, base.join("secrets/token"));
    assert_eq!(service(&config.root, "a").cwd, base.join("sub/dir"));
    assert_eq!(service(&config.root, "b").cwd, Path::new("/opt/b"));
}

#[test]
fn token_file_defaults_to_inside_the_state_dir() {
    let (dir, config) = load_ok("state_dir = \"/var/lib/warden\"\n");
    assert_eq!(config.state_dir, Path::new("/var/lib/warden"));
    assert_eq!(
        config.admin.token_file,
        Path::new("/var/lib/warden/admin.token")
    );
    assert_eq!(config.base_dir, dir.path());
}

#[test]
fn parse_resolves_a_relative_config_path_against_the_current_folder() {
    let config = parse("", Path::new("conf/warden.toml")).expect("parse");
    let cwd = std::env::current_dir().expect("cwd");
    assert_eq!(config.path, cwd.join("conf/warden.toml"));
    assert_eq!(config.base_dir, cwd.join("conf"));
    assert_eq!(config.state_dir, cwd.join("conf/.warden"));
}

#[test]
fn nested_supervisors_are_built_in_header_order_whatever_the_declaration_order() {
    let text = r#"
[[service]]
name = "first"
command = ["first"]

[[supervisor]]
name = "inner"
parent = "app"
strategy = "rest_for_one"

[[service]]
name = "deep"
supervisor = "/app/inner"
command = ["deep"]

[[supervisor]]
name = "app"
strategy = "one_for_all"

[[service]]
name = "api"
supervisor = "app"
command = ["api"]

[[service]]
name = "last"
command = ["last"]
"#;
    let (_dir, config) = load_ok(text);
    assert_eq!(paths(&config.root), ["/first", "/app", "/last"]);
    let app = supervisor(&config.root, "app");
    assert_eq!(app.strategy, Strategy::OneForAll);
    assert_eq!(app.line, line_of(text, "name = \"app\"") - 1);
    assert_eq!(paths(app), ["/app/inner", "/app/api"]);
    let inner = supervisor(app, "inner");
    assert_eq!(inner.strategy, Strategy::RestForOne);
    assert_eq!(inner.intensity, None);
    assert_eq!(paths(inner), ["/app/inner/deep"]);
    assert_eq!(
        service(inner, "deep").line,
        line_of(text, "name = \"deep\"") - 1
    );
}

#[test]
fn root_table_sets_the_root_strategy_and_intensity() {
    let text = "[root]\nstrategy = \"one_for_all\"\nintensity = { max = 100, within = \"60s\" }\n";
    let (_dir, config) = load_ok(text);
    assert_eq!(config.root.strategy, Strategy::OneForAll);
    assert_eq!(
        config.root.intensity,
        Some(Intensity {
            max: 100,
            within: Duration::from_secs(60)
        })
    );
}

#[test]
fn runtime_and_logs_tables_are_read() {
    let text = "[runtime]\non_exit = \"stop\"\n[logs]\nmax_bytes = 1048576\nkeep = 5\n";
    let (_dir, config) = load_ok(text);
    assert_eq!(config.runtime.on_exit, OnExit::Stop);
    assert_eq!(config.logs.max_bytes, 1_048_576);
    assert_eq!(config.logs.keep, 5);
}

#[test]
fn stop_signal_accepts_a_short_name_a_full_name_or_a_number() {
    let text = r#"
[[service]]
name = "a"
command = ["a"]
stop = { signal = "INT" }
[[service]]
name = "b"
command = ["b"]
stop = { signal = "SIGQUIT" }
[[service]]
name = "c"
command = ["c"]
stop = { signal = 9 }
"#;
    let (_dir, config) = load_ok(text);
    assert_eq!(service(&config.root, "a").stop.signal, 2);
    assert_eq!(service(&config.root, "b").stop.signal, 3);
    assert_eq!(service(&config.root, "c").stop.signal, 9);
}

#[test]
fn ready_checks_read_tcp_delay_and_notify_with_a_default_timeout() {
    let text = r#"
[[service]]
name = "a"
command = ["a"]
ready = { tcp = "localhost:8080" }
[[service]]
name = "b"
command = ["b"]
ready = { notify = true }
[[service]]
name = "c"
command = ["c"]
ready = { notify = true, timeout = "2m" }
[[service]]
name = "d"
command = ["d"]
ready = { tcp = "[::1]:9000" }
"#;
    let (_dir, config) = load_ok(text);
    let thirty = Duration::from_secs(30);
    assert_eq!(
        service(&config.root, "a").ready,
        Some(ReadyConfig::Tcp {
            addr: "localhost:8080".into(),
            timeout: thirty
        })
    );
    assert_eq!(
        service(&config.root, "b").ready,
        Some(ReadyConfig::Notify { timeout: thirty })
    );
    assert_eq!(
        service(&config.root, "c").ready,
        Some(ReadyConfig::Notify {
            timeout: Duration::from_secs(120)
        })
    );
    assert!(matches!(
        service(&config.root, "d").ready,
        Some(ReadyConfig::Tcp { .. })
    ));
}

#[test]
fn env_is_sorted_by_name() {
    let text =
        "[[service]]\nname = \"a\"\ncommand = [\"a\"]\nenv = { Z = \"1\", A = \"2\", M = \"3\" }\n";
    let (_dir, config) = load_ok(text);
    let env: Vec<(&str, &str)> = service(&config.root, "a")
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, [("A", "2"), ("M", "3"), ("Z", "1")]);
}

#[test]
fn intensity_max_zero_is_allowed() {
    let text = "[[supervisor]]\nname = \"s\"\nintensity = { max = 0, within = \"1s\" }\n";
    let (_dir, config) = load_ok(text);
    assert_eq!(
        supervisor(&config.root, "s").intensity,
        Some(Intensity {
            max: 0,
            within: Duration::from_secs(1)
        })
    );
}

// ---- refusals ------------------------------------------------------------------------

#[test]
fn unreadable_file_is_named_without_a_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("missing.toml");
    let error = load(&path).expect_err("missing file");
    assert_eq!(error.line(), None);
    assert_eq!(error.key(), None);
    assert_eq!(error.path, path);
    let shown = error.to_string();
    assert!(
        shown.starts_with(&format!("{}: cannot read: ", path.display())),
        "{shown}"
    );
}

#[test]
fn toml_syntax_error_names_its_line() {
    let text = "state_dir = \"x\"\n\n[[service]\nname = \"a\"\n";
    let error = load_err(text);
    assert_eq!(error.line(), Some(3));
    assert!(error.to_string().contains("warden.toml:3: invalid TOML"));
}

#[test]
fn duplicate_toml_key_names_its_line() {
    let text = "[admin]\nlisten = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:2\"\n";
    let error = load_err(text);
    assert_eq!(error.line(), Some(3));
    assert!(error.to_string().contains("duplicate key"), "{error}");
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let text = "[[service]]\nname = \"api\"\ncomand = [\"x\"]\ncommand = [\"x\"]\n";
    let error = assert_refused(
        text,
        "comand",
        "comand",
        &[
            "unknown key `comand` in [[service]] \"api\"",
            "expected one of: name, supervisor, command, cwd, user, group, env, stop, restart, ready",
        ],
    );
    assert!(error.message.starts_with("unknown key"));
}

#[test]
fn unknown_key_at_the_top_level_is_named_with_its_line() {
    assert_refused(
        "\n\nstate_dri = \"x\"\n",
        "state_dri",
        "state_dri",
        &["unknown key `state_dri` at the top level"],
    );
}

#[test]
fn unknown_key_in_a_nested_table_is_named_with_its_path() {
    let text = r#"
[[service]]
name = "api"
command = ["x"]
restart = { backoff = { intial = "1s" } }
"#;
    assert_refused(
        text,
        "intial",
        "restart.backoff.intial",
        &["in [[service]] \"api\"", "initial, max, multiplier, jitter"],
    );
}

#[test]
fn unknown_key_in_a_plain_table_names_the_table() {
    let text = "[admin]\nlisten = \"127.0.0.1:1\"\nport = 1\n";
    assert_refused(text, "port", "port", &["unknown key `port` in [admin]"]);
}

#[test]
fn missing_required_key_names_the_entry() {
    let text = "[[service]]\nname = \"a\"\ncommand = [\"a\"]\n\n[[service]]\nname = \"b\"\n";
    let error = load_err(text);
    assert_eq!(error.line(), Some(5));
    assert_eq!(error.key(), Some("command"));
    assert!(error
        .to_string()
        .contains("[[service]] \"b\": key `command`: is required"));
}

#[test]
fn wrong_type_for_command_names_the_key() {
    let text = "[[service]]\nname = \"api\"\ncommand = \"x\"\n";
    assert_refused(
        text,
        "command",
        "command",
        &["[[service]] \"api\": key `command`", "invalid type"],
    );
}

#[test]
fn wrong_type_for_intensity_max_names_the_key() {
    let text = "[[supervisor]]\nname = \"app\"\nintensity = { max = \"a\", within = \"1s\" }\n";
    assert_refused(
        text,
        "intensity",
        "intensity.max",
        &[
            "[[supervisor]] \"app\": key `intensity.max`",
            "invalid type",
        ],
    );
}

#[test]
fn bad_duration_names_the_key() {
    let text =
        "[[service]]\nname = \"api\"\ncommand = [\"x\"]\nstop = { timeout = \"5 parsecs\" }\n";
    assert_refused(
        text,
        "stop",
        "stop.timeout",
        &["invalid duration \"5 parsecs\""],
    );
}

#[test]
fn duration_written_as_a_number_is_refused() {
    let text = "[restart]\nreset_after = 30\n";
    assert_refused(
        text,
        "reset_after",
        "reset_after",
        &["[restart]", "duration"],
    );
}

#[test]
fn unknown_strategy_is_refused() {
    let text = "[[supervisor]]\nname = \"app\"\nstrategy = \"all_for_one\"\n";
    assert_refused(
        text,
        "strategy",
        "strategy",
        &[
            "unknown strategy \"all_for_one\"",
            "one_for_one, one_for_all, rest_for_one",
        ],
    );
}

#[test]
fn unknown_root_strategy_is_refused() {
    let text = "[root]\nstrategy = \"random\"\n";
    assert_refused(
        text,
        "strategy",
        "strategy",
        &["[root]", "unknown strategy"],
    );
}

#[test]
fn unknown_restart_policy_is_refused() {
    let text = "[restart]\npolicy = \"sometimes\"\n";
    assert_refused(
        text,
        "policy",
        "policy",
        &[
            "[restart]: key `policy`: unknown restart policy \"sometimes\"",
            "permanent, transient, temporary",
        ],
    );
    let text = "[[service]]\nname = \"a\"\ncommand = [\"a\"]\nrestart = { policy = \"never\" }\n";
    assert_refused(
        text,
        "restart",
        "restart.policy",
        &["unknown restart policy"],
    );
}

#[test]
fn unknown_on_exit_is_refused() {
    let text = "[runtime]\non_exit = \"linger\"\n";
    assert_refused(text, "on_exit", "on_exit", &["keep, stop"]);
}

#[test]
fn unknown_signal_name_is_refused() {
    let text = "[[service]]\nname = \"a\"\ncommand = [\"a\"]\nstop = { signal = \"SIGFOO\" }\n";
    assert_refused(text, "stop", "stop.signal", &["unknown signal \"SIGFOO\""]);
    let text = "[[service]]\nname = \"a\"\ncommand = [\"a\"]\nstop = { signal = 99 }\n";
    assert_refused(text, "stop", "stop.signal", &["unknown signal 99"]);
}

#[test]
fn empty_command_is_refused() {
    let text = "[[service]]\nname = \"api\"\ncommand = []\n";
    assert_refused(
        text,
        "command",
        "command",
        &["[[service]] \"api\": key `command`: must not be empty"],
    );
    let text = "[[service]]\nname = \"api\"\ncommand = [\"\", \"x\"]\n";
    assert_refused(text, "command", "command", &["must not be empty"]);
}

#[test]
fn invalid_name_is_refused() {
    for name in ["", "a b", "a/b", "..", "é"] {
        let text = format!("[[service]]\ncommand = [\"x\"]\nname = {name:?}\n");
        assert_refused(
            &text,
            "name",
            "name",
            &["[[service]] #1: key `name`: invalid name"],
        );
    }
    let text = "[[supervisor]]\nname = \"ok\"\n[[supervisor]]\nname = \"not ok\"\n";
    assert_refused(text, "not ok", "name", &["[[supervisor]] #2"]);
}

#[test]
fn duplicate_name_among_siblings_is_refused() {
    let text = r#"
[[supervisor]]
name = "app"

[[service]]
name = "app" # the service
command = ["x"]
"#;
    assert_refused(
        text,
        "# the service",
        "name",
        &[
            "[[service]] \"app\": key `name`: duplicate name \"app\"",
            "the root",
            "line 2",
        ],
    );
}

#[test]
fn duplicate_name_is_found_under_a_nested_supervisor() {
    let text = r#"
[[supervisor]]
name = "app"
[[service]]
name = "api"
supervisor = "app"
command = ["x"]
[[service]]
name = "api"
command = ["x"]
[[service]]
name = "api"
supervisor = "/app"
command = ["x"]
"#;
    let error = load_err(text);
    assert_eq!(error.line(), Some(12));
    assert_eq!(error.key(), Some("name"));
    assert!(
        error.to_string().contains("/app already has a child"),
        "{error}"
    );
}

#[test]
fn unknown_parent_is_refused() {
    let text = "[[supervisor]]\nname = \"inner\"\nparent = \"nowhere\"\n";
    assert_refused(
        text,
        "parent",
        "parent",
        &["[[supervisor]] \"inner\": key `parent`: unknown supervisor /nowhere"],
    );
}

#[test]
fn unknown_service_supervisor_is_refused_with_a_hint() {
    let text = r#"
[[supervisor]]
name = "app"
[[supervisor]]
name = "inner"
parent = "app"
[[service]]
name = "api"
supervisor = "inner"
command = ["x"]
"#;
    assert_refused(
        text,
        "supervisor = \"inner\"",
        "supervisor",
        &["unknown supervisor /inner", "did you mean \"app/inner\"?"],
    );
}

#[test]
fn a_service_is_not_a_parent() {
    let text = r#"
[[service]]
name = "api"
command = ["x"]
[[service]]
name = "worker"
supervisor = "api"
command = ["x"]
"#;
    assert_refused(
        text,
        "supervisor = \"api\"",
        "supervisor",
        &["/api is a [[service]], not a supervisor"],
    );
}

#[test]
fn invalid_parent_path_is_refused() {
    let text = "[[supervisor]]\nname = \"a\"\nparent = \"app//x\"\n";
    assert_refused(text, "parent", "parent", &["invalid supervisor path"]);
}

#[test]
fn cyclic_parent_is_refused() {
    let text = r#"
[[supervisor]]
name = "a"
parent = "b"

[[supervisor]]
name = "b"
parent = "a"
"#;
    assert_refused(
        text,
        "parent = \"b\"",
        "parent",
        &["[[supervisor]] \"a\": key `parent`: cyclic parent: a -> b -> a"],
    );
}

#[test]
fn supervisor_that_is_its_own_parent_is_refused() {
    let text = "[[supervisor]]\nname = \"a\"\nparent = \"a\"\n";
    assert_refused(text, "parent", "parent", &["cyclic parent: a -> a"]);
}

#[test]
fn ready_without_a_check_is_refused() {
    let text = "[[service]]\nname = \"a\"\ncommand = [\"a\"]\nready = { timeout = \"1s\" }\n";
    assert_refused(
        text,
        "ready",
        "ready",
        &["needs one of `tcp`, `delay` or `notify`"],
    );
}

#[test]
fn ready_with_two_checks_is_refused() {
    let text = "[[service]]\nname = \"a\"\ncommand = [\"a\"]\nready = { tcp = \"127.0.0.1:1\", delay = \"1s\" }\n";
    assert_refused(
        text,
        "ready",
        "ready",
        &["takes only one of", "`tcp` and `delay`"],
    );
}

#[test]
fn ready_ipc_is_refused_on_a_service() {
    let text = "[[service]]\nname = \"a\"\ncommand = [\"a\"]\nready = { ipc = true }\n";
    assert_refused(text, "ready", "ready.ipc", &["only for [[outboard]]"]);
}

#[test]
fn ready_tcp_needs_a_host_and_a_port() {
    for addr in [
        "localhost",
        "localhost:0",
        "localhost:99999",
        ":80",
        "::1:80",
    ] {
        let text =
            format!("[[service]]\nname = \"a\"\ncommand = [\"a\"]\nready = {{ tcp = {addr:?} }}\n");
        assert_refused(&text, "ready", "ready.tcp", &["invalid address"]);
    }
}

#[test]
fn backoff_multiplier_below_one_is_refused() {
    let text = "[restart]\nbackoff = { multiplier = 0.5 }\n";
    assert_refused(
        text,
        "backoff",
        "backoff.multiplier",
        &["[restart]: key `backoff.multiplier`: must be a number of at least 1.0"],
    );
}

#[test]
fn backoff_jitter_outside_zero_to_one_is_refused() {
    let text =
        "[[service]]\nname = \"a\"\ncommand = [\"a\"]\n[service.restart.backoff]\njitter = 1.5\n";
    assert_refused(
        text,
        "jitter",
        "restart.backoff.jitter",
        &["from 0.0 to 1.0"],
    );
    let text = "[restart]\nbackoff = { jitter = -0.1 }\n";
    assert_refused(text, "backoff", "backoff.jitter", &["from 0.0 to 1.0"]);
}

#[test]
fn backoff_max_below_initial_is_refused() {
    let text = "[restart]\nbackoff = { initial = \"10s\", max = \"1s\" }\n";
    assert_refused(
        text,
        "backoff",
        "backoff.max",
        &["max (1s) must not be less than initial (10s)"],
    );
}

#[test]
fn backoff_initial_above_the_inherited_max_is_refused() {
    let text = "[[service]]\nname = \"a\"\ncommand = [\"a\"]\nrestart = { backoff = { initial = \"1m\" } }\n";
    assert_refused(
        text,
        "restart",
        "restart.backoff.initial",
        &[
            "[[service]] \"a\"",
            "max (30s) must not be less than initial (1m)",
        ],
    );
}

#[test]
fn supervisor_intensity_needs_max_and_within() {
    let text = "[[supervisor]]\nname = \"s\"\nintensity = { max = 3 }\n";
    assert_refused(text, "intensity", "intensity.within", &["is required"]);
}

#[test]
fn intensity_within_zero_is_refused() {
    let text = "[restart]\nintensity = { within = \"0s\" }\n";
    assert_refused(text, "intensity", "intensity.within", &["longer than zero"]);
}

#[test]
fn logs_keep_zero_is_refused() {
    assert_refused(
        "[logs]\nkeep = 0\n",
        "keep",
        "keep",
        &["[logs]", "at least 1"],
    );
}

#[test]
fn admin_listen_must_be_an_ip_and_port() {
    let text = "[admin]\nlisten = \"localhost:7700\"\n";
    assert_refused(
        text,
        "listen",
        "listen",
        &["[admin]: key `listen`: invalid address"],
    );
}

#[test]
fn pool_entries_are_accepted_beside_services_and_outboards() {
    let text = "[[service]]\nname = \"a\"\ncommand = [\"a\"]\n\n[[outboard]]\nname = \"helper\"\ncommand = [\"h\"]\nheartbeat = \"1s\"\n\n[[pool]]\nname = \"shiny\"\ncommand = [\"app\", \"{port}\"]\nports = \"20000-20999\"\n";
    let (_dir, config) = load_ok(text);
    assert_eq!(paths(&config.root), ["/a", "/helper", "/shiny"]);
    let shiny = pool(&config.root, "shiny");
    assert_eq!(shiny.line, line_of(text, "[[pool]]"));
    assert_eq!(shiny.ports, 20000..=20999);
}

#[test]
fn a_pool_without_a_command_or_ports_is_refused() {
    let text = "\n[[pool]]\nname = \"shiny\"\nports = \"20000-20999\"\n";
    let error = load_err(text);
    assert_eq!(error.line(), Some(line_of(text, "[[pool]]")));
    assert_eq!(error.key(), Some("command"));
    assert!(
        error
            .to_string()
            .contains("[[pool]] \"shiny\": key `command`: is required"),
        "{error}"
    );
    let text = "\n[[pool]]\nname = \"shiny\"\ncommand = [\"app\"]\n";
    let error = load_err(text);
    assert_eq!(error.line(), Some(line_of(text, "[[pool]]")));
    assert_eq!(error.key(), Some("ports"));
    assert!(
        error
            .to_string()
            .contains("[[pool]] \"shiny\": key `ports`: is required"),
        "{error}"
    );
}

#[test]
fn parse_names_the_path_it_is_given() {
    let error = parse(
        "[[service]]\nname = \"a\"\ncommand = []\n",
        Path::new("conf/w.toml"),
    )
    .expect_err("empty command");
    assert!(error.to_string().starts_with("conf/w.toml:3: "), "{error}");
}

#[test]
fn odd_input_is_refused_without_panicking() {
    for text in [
        "\u{0}",
        "[[service]]",
        "service = 3",
        "service = [1]",
        "supervisor = [{ name = \"a\", parent = \"\" }]",
        "[[service]]\nname = \"a\"\ncommand = [\"a\"]\nstop = { signal = 9999999999999 }",
        "[[service]]\nname = \"a\"\ncommand = [\"a\"]\nrestart = { backoff = { multiplier = nan } }",
        "[[service]]\nname = \"a\"\ncommand = [\"a\"]\nstop = { timeout = \"99999999999999999999y\" }",
        "[[service]]\nname = \"a\"\ncommand = [\"a\"]\nenv = { \"\" = \"x\" }",
        "[[service]]\nname = \"a\"\ncommand = [\"a\"]\nready = { notify = false }",
        "[[service]]\nname = \"a\"\ncommand = [\"a\"]\nready = { delay = \"1s\", timeout = \"1s\" }",
        "[logs]\nmax_bytes = -1",
    ] {
        let error = parse(text, Path::new("w.toml")).expect_err(text);
        assert!(error.line().is_some(), "{text:?}: {error}");
        assert!(!error.to_string().contains('\n'), "{text:?}: {error}");
    }
}

#[test]
fn cyclic_parents_inside_a_nested_supervisor_are_refused() {
    let text = r#"
[[supervisor]]
name = "x"
[[supervisor]]
name = "a"
parent = "x/b"
[[supervisor]]
name = "b"
parent = "/x/a"
"#;
    assert_refused(text, "x/b", "parent", &["cyclic parent: a -> b -> a"]);
}

#[test]
fn a_parent_in_a_missing_folder_is_unknown_rather_than_cyclic() {
    let text = "[[supervisor]]\nname = \"a\"\nparent = \"x/a\"\n";
    assert_refused(text, "parent", "parent", &["unknown supervisor /x/a"]);
}

#[test]
fn a_service_under_a_cycle_is_told_so() {
    let text = r#"
[[service]]
name = "s"
supervisor = "b"
command = ["s"]
[[supervisor]]
name = "a"
parent = "b"
[[supervisor]]
name = "b"
parent = "a"
"#;
    assert_refused(
        text,
        "supervisor = \"b\"",
        "supervisor",
        &["unknown supervisor /b: the parents form a cycle (b -> a -> b)"],
    );
}

const OUTBOARD_EXAMPLE: &str = r#"
[restart]
policy = "transient"
backoff = { initial = "1s", max = "1m" }

[[supervisor]]
name = "app"

[[outboard]]
name = "helper"
supervisor = "app"
command = ["./target/release/examples/outboard_echo", "--x"]
cwd = "helpers"
env = { B = "2", A = "1" }
stop = { signal = "INT", timeout = "2s" }
restart = { policy = "permanent", intensity = { max = 2, within = "5s" } }
ready = { ipc = true, timeout = "10s" }
heartbeat = "250ms"
missed = 5
version = 7

[[outboard]]
name = "plain"
command = ["plain"]
"#;

#[test]
fn outboard_entry_reads_every_service_key_and_its_own() {
    let (dir, config) = load_ok(OUTBOARD_EXAMPLE);
    let base = dir.path();
    let helper = OutboardConfig {
        service: ServiceConfig {
            name: "helper".into(),
            path: "/app/helper".into(),
            line: line_of(OUTBOARD_EXAMPLE, "name = \"helper\"") - 1,
            command: vec![
                program(base, "target/release/examples/outboard_echo"),
                "--x".into(),
            ],
            cwd: base.join("helpers"),
            run_as: None,
            env: vec![("A".into(), "1".into()), ("B".into(), "2".into())],
            stop: StopConfig {
                signal: 2,
                timeout: Duration::from_secs(2),
            },
            restart: RestartConfig {
                policy: RestartPolicy::Permanent,
                backoff: BackoffConfig {
                    initial: Duration::from_secs(1),
                    max: Duration::from_secs(60),
                    multiplier: 2.0,
                    jitter: 0.1,
                },
                reset_after: Duration::from_secs(30),
                intensity: Intensity {
                    max: 2,
                    within: Duration::from_secs(5),
                },
            },
            ready: Some(ReadyConfig::Ipc {
                timeout: Duration::from_secs(10),
            }),
            backend: Backend::Process,
        },
        heartbeat: Duration::from_millis(250),
        missed: 5,
        version: 7,
    };
    let app = supervisor(&config.root, "app");
    assert_eq!(app.children, vec![ChildConfig::Outboard(helper)]);
    let child = &app.children[0];
    assert_eq!(child.name(), "helper");
    assert_eq!(child.path(), "/app/helper");
    assert_eq!(
        child.line(),
        line_of(OUTBOARD_EXAMPLE, "name = \"helper\"") - 1
    );
}

#[test]
fn outboard_without_options_gets_every_default() {
    let (dir, config) = load_ok(OUTBOARD_EXAMPLE);
    // the service keys default exactly as for a [[service]], [restart] included
    let expected = OutboardConfig {
        service: ServiceConfig {
            name: "plain".into(),
            path: "/plain".into(),
            line: line_of(OUTBOARD_EXAMPLE, "name = \"plain\"") - 1,
            command: vec!["plain".into()],
            cwd: dir.path().to_path_buf(),
            run_as: None,
            env: Vec::new(),
            stop: StopConfig::default(),
            restart: RestartConfig {
                policy: RestartPolicy::Transient,
                backoff: BackoffConfig {
                    initial: Duration::from_secs(1),
                    max: Duration::from_secs(60),
                    multiplier: 2.0,
                    jitter: 0.1,
                },
                reset_after: Duration::from_secs(30),
                intensity: Intensity {
                    max: 10,
                    within: Duration::from_secs(60),
                },
            },
            ready: None,
            backend: Backend::Process,
        },
        heartbeat: Duration::from_secs(1),
        missed: 3,
        version: 1,
    };
    assert_eq!(*outboard(&config.root, "plain"), expected);
    assert_eq!(paths(&config.root), ["/app", "/plain"]);
}

#[test]
fn ready_ipc_is_accepted_on_an_outboard_with_a_default_timeout() {
    let text = r#"
[[outboard]]
name = "a"
command = ["a"]
ready = { ipc = true }
[[outboard]]
name = "b"
command = ["b"]
ready = { tcp = "127.0.0.1:9000" }
[[outboard]]
name = "c"
command = ["c"]
ready = { delay = "1s" }
[[outboard]]
name = "d"
command = ["d"]
ready = { notify = true }
"#;
    let (_dir, config) = load_ok(text);
    let thirty = Duration::from_secs(30);
    assert_eq!(
        outboard(&config.root, "a").service.ready,
        Some(ReadyConfig::Ipc { timeout: thirty })
    );
    assert_eq!(
        outboard(&config.root, "b").service.ready,
        Some(ReadyConfig::Tcp {
            addr: "127.0.0.1:9000".into(),
            timeout: thirty
        })
    );
    assert_eq!(
        outboard(&config.root, "c").service.ready,
        Some(ReadyConfig::Delay {
            delay: Duration::from_secs(1)
        })
    );
    assert_eq!(
        outboard(&config.root, "d").service.ready,
        Some(ReadyConfig::Notify { timeout: thirty })
    );
}

#[test]
fn ready_ipc_on_a_service_is_refused_naming_the_line_and_key() {
    let text = "[[service]]\nname = \"a\"\ncommand = [\"a\"]\n\nready = { ipc = true, timeout = \"1s\" }\n";
    assert_refused(
        text,
        "ipc",
        "ready.ipc",
        &[
            "[[service]] \"a\": key `ready.ipc`",
            "only for [[outboard]]",
        ],
    );
    let text = "[[service]]\nname = \"a\"\ncommand = [\"a\"]\n[service.ready]\nipc = false\n";
    assert_refused(text, "ipc", "ready.ipc", &["only for [[outboard]]"]);
}

#[test]
fn ready_ipc_false_is_refused_on_an_outboard() {
    let text = "[[outboard]]\nname = \"a\"\ncommand = [\"a\"]\nready = { ipc = false }\n";
    assert_refused(
        text,
        "ready",
        "ready.ipc",
        &["[[outboard]] \"a\": key `ready.ipc`: can only be true"],
    );
}

#[test]
fn ready_on_an_outboard_takes_exactly_one_check() {
    let text = "[[outboard]]\nname = \"a\"\ncommand = [\"a\"]\nready = { timeout = \"1s\" }\n";
    assert_refused(
        text,
        "ready",
        "ready",
        &["needs one of `tcp`, `delay`, `notify` or `ipc`"],
    );
    let text =
        "[[outboard]]\nname = \"a\"\ncommand = [\"a\"]\nready = { ipc = true, notify = true }\n";
    assert_refused(text, "ready", "ready", &["`notify` and `ipc`"]);
}

#[test]
fn outboard_heartbeat_of_zero_is_refused() {
    let text = "[[outboard]]\nname = \"h\"\ncommand = [\"h\"]\nheartbeat = \"0s\"\n";
    assert_refused(
        text,
        "heartbeat",
        "heartbeat",
        &["[[outboard]] \"h\": key `heartbeat`: must be longer than zero"],
    );
}

#[test]
fn outboard_missed_of_zero_is_refused() {
    let text = "[[outboard]]\nname = \"h\"\ncommand = [\"h\"]\nmissed = 0\n";
    assert_refused(
        text,
        "missed",
        "missed",
        &["[[outboard]] \"h\": key `missed`: must be at least 1"],
    );
}

#[test]
fn outboard_keys_of_the_wrong_type_are_named() {
    let text = "[[outboard]]\nname = \"h\"\ncommand = [\"h\"]\nheartbeat = 5\n";
    assert_refused(
        text,
        "heartbeat",
        "heartbeat",
        &["[[outboard]] \"h\": key `heartbeat`", "duration"],
    );
    let text = "[[outboard]]\nname = \"h\"\ncommand = [\"h\"]\nheartbeat = \"soon\"\n";
    assert_refused(
        text,
        "heartbeat",
        "heartbeat",
        &["invalid duration \"soon\""],
    );
    let text = "[[outboard]]\nname = \"h\"\ncommand = [\"h\"]\nmissed = -1\n";
    assert_refused(
        text,
        "missed",
        "missed",
        &["[[outboard]] \"h\": key `missed`"],
    );
    let text = "[[outboard]]\nname = \"h\"\ncommand = [\"h\"]\nversion = \"1\"\n";
    assert_refused(
        text,
        "version",
        "version",
        &["[[outboard]] \"h\": key `version`", "invalid type"],
    );
    let text =
        "[[outboard]]\nname = \"h\"\ncommand = [\"h\"]\nstop = { timeout = \"5 parsecs\" }\n";
    assert_refused(
        text,
        "stop",
        "stop.timeout",
        &["[[outboard]] \"h\"", "invalid duration \"5 parsecs\""],
    );
    let text = "[[outboard]]\nname = \"h\"\ncommand = []\n";
    assert_refused(
        text,
        "command",
        "command",
        &["[[outboard]] \"h\": key `command`: must not be empty"],
    );
}

#[test]
fn outboard_without_a_command_is_refused() {
    let text = "[[service]]\nname = \"a\"\ncommand = [\"a\"]\n\n[[outboard]]\nname = \"h\"\n";
    let error = load_err(text);
    assert_eq!(error.line(), Some(5));
    assert_eq!(error.key(), Some("command"));
    assert!(
        error
            .to_string()
            .contains("[[outboard]] \"h\": key `command`: is required"),
        "{error}"
    );
}

#[test]
fn unknown_key_in_an_outboard_is_named_with_the_expected_keys() {
    let text = "[[outboard]]\nname = \"h\"\ncommand = [\"h\"]\nheartbeats = \"1s\"\n";
    assert_refused(
        text,
        "heartbeats",
        "heartbeats",
        &[
            "unknown key `heartbeats` in [[outboard]] \"h\"",
            "expected one of: name, supervisor, command, cwd, user, group, env, stop, restart, ready, heartbeat, missed, version",
        ],
    );
}

#[test]
fn outboard_keys_are_unknown_in_a_service() {
    let text = "[[service]]\nname = \"a\"\ncommand = [\"a\"]\nheartbeat = \"1s\"\n";
    assert_refused(
        text,
        "heartbeat",
        "heartbeat",
        &["unknown key `heartbeat` in [[service]] \"a\""],
    );
}

#[test]
fn duplicate_name_between_an_outboard_and_a_service_is_refused() {
    let text = r#"
[[service]]
name = "twin"
command = ["x"]

[[outboard]]
name = "twin" # the outboard
command = ["y"]
"#;
    assert_refused(
        text,
        "# the outboard",
        "name",
        &[
            "[[outboard]] \"twin\": key `name`: duplicate name \"twin\"",
            "the root",
            "line 2",
        ],
    );
    // whichever table comes first in the file, the later header is the duplicate
    let text = r#"
[[supervisor]]
name = "app"

[[outboard]]
name = "twin"
supervisor = "app"
command = ["y"]

[[service]]
name = "twin" # the service
supervisor = "/app"
command = ["x"]
"#;
    assert_refused(
        text,
        "# the service",
        "name",
        &[
            "[[service]] \"twin\": key `name`: duplicate name \"twin\"",
            "/app already has a child",
            "line 5",
        ],
    );
}

#[test]
fn outboard_names_and_parents_are_checked_as_for_services() {
    let text = "[[outboard]]\ncommand = [\"x\"]\nname = \"a b\"\n";
    assert_refused(
        text,
        "name",
        "name",
        &["[[outboard]] #1: key `name`: invalid name"],
    );
    let text = "[[outboard]]\nname = \"h\"\ncommand = [\"x\"]\nsupervisor = \"nowhere\"\n";
    assert_refused(
        text,
        "supervisor",
        "supervisor",
        &["[[outboard]] \"h\": key `supervisor`: unknown supervisor /nowhere"],
    );
    let text = "[[outboard]]\nname = \"h\"\ncommand = [\"x\"]\nsupervisor = \"a//b\"\n";
    assert_refused(
        text,
        "supervisor",
        "supervisor",
        &["invalid supervisor path"],
    );
}

#[test]
fn an_outboard_is_not_a_parent() {
    let text = r#"
[[outboard]]
name = "helper"
command = ["x"]
[[service]]
name = "worker"
supervisor = "helper"
command = ["x"]
"#;
    assert_refused(
        text,
        "supervisor = \"helper\"",
        "supervisor",
        &["/helper is an [[outboard]], not a supervisor"],
    );
    let text = r#"
[[outboard]]
name = "helper"
command = ["x"]
[[supervisor]]
name = "inner"
parent = "helper"
"#;
    assert_refused(
        text,
        "parent = \"helper\"",
        "parent",
        &["/helper is an [[outboard]], not a supervisor"],
    );
}

#[test]
fn outboards_take_their_place_in_file_order_among_services_and_supervisors() {
    let text = r#"
[[outboard]]
name = "o1"
command = ["o1"]

[[service]]
name = "s1"
command = ["s1"]

[[supervisor]]
name = "app"

[[outboard]]
name = "deep"
supervisor = "app"
command = ["deep"]

[[service]]
name = "api"
supervisor = "/app"
command = ["api"]

[[outboard]]
name = "o2"
command = ["o2"]

[[service]]
name = "s2"
command = ["s2"]

[[outboard]]
name = "tail"
supervisor = "app"
command = ["tail"]
"#;
    let (_dir, config) = load_ok(text);
    assert_eq!(paths(&config.root), ["/o1", "/s1", "/app", "/o2", "/s2"]);
    let kinds: Vec<&str> = config
        .root
        .children
        .iter()
        .map(|child| match child {
            ChildConfig::Supervisor(_) => "supervisor",
            ChildConfig::Service(_) => "service",
            ChildConfig::Outboard(_) => "outboard",
            ChildConfig::Pool(_) => "pool",
        })
        .collect();
    assert_eq!(
        kinds,
        ["outboard", "service", "supervisor", "outboard", "service"]
    );
    let app = supervisor(&config.root, "app");
    assert_eq!(paths(app), ["/app/deep", "/app/api", "/app/tail"]);
    assert_eq!(
        outboard(app, "deep").service.line,
        line_of(text, "name = \"deep\"") - 1
    );
    assert_eq!(
        outboard(&config.root, "o2").service.line,
        line_of(text, "name = \"o2\"") - 1
    );
}

#[test]
fn odd_outboard_input_is_refused_without_panicking() {
    for text in [
        "[[outboard]]",
        "outboard = 3",
        "outboard = [1]",
        "outboard = [{ name = \"a\", command = [\"a\"], missed = 99999999999 }]",
        "[[outboard]]\nname = \"a\"\ncommand = [\"a\"]\nheartbeat = \"99999999999999999999y\"",
        "[[outboard]]\nname = \"a\"\ncommand = [\"a\"]\nready = { ipc = true, delay = \"1s\" }",
        "[[outboard]]\nname = \"a\"\ncommand = [\"a\"]\nready = { ipc = 1 }",
        "[[outboard]]\nname = \"a\"\ncommand = [\"a\"]\nversion = -1",
        "[[outboard]]\nname = \"a\"\ncommand = [\"a\"]\n[[outboard]]\nname = \"a\"\ncommand = [\"a\"]",
    ] {
        let error = parse(text, Path::new("w.toml")).expect_err(text);
        assert!(error.line().is_some(), "{text:?}: {error}");
        assert!(!error.to_string().contains('\n'), "{text:?}: {error}");
    }
}

// ---- pools and the cluster table -------------------------------------------------------

const POOL_EXAMPLE: &str = r#"
[restart]
policy = "transient"
backoff = { initial = "1s", max = "1m" }

[[supervisor]]
name = "app"

[[pool]]
name = "shiny"
supervisor = "app"
command = ["./app", "--port", "{port}", "--id={worker_id}", "--json={\"a\":1}"]
cwd = "apps"
env = { PORT = "{port}", WORKER = "w-{worker_id}", PLAIN = "x" }
stop = { signal = "INT", timeout = "2s" }
restart = { policy = "permanent", intensity = { max = 2, within = "5s" } }
ready = { tcp = "127.0.0.1:{port}", timeout = "10s" }
ports = "20000-20999"
min = 1
max = 8
sessions_per_worker = 3
idle_timeout = "90s"

[[pool]]
name = "plain"
command = ["plain"]
ports = "30000-30003"
"#;

#[test]
fn pool_entry_reads_every_service_key_and_its_own() {
    let (dir, config) = load_ok(POOL_EXAMPLE);
    let base = dir.path();
    let shiny = PoolConfig {
        name: "shiny".into(),
        path: "/app/shiny".into(),
        line: line_of(POOL_EXAMPLE, "name = \"shiny\"") - 1,
        command: vec![
            program(base, "app"),
            "--port".into(),
            "{port}".into(),
            "--id={worker_id}".into(),
            "--json={\"a\":1}".into(),
        ],
        cwd: base.join("apps"),
        run_as: None,
        env: vec![
            ("PLAIN".into(), "x".into()),
            ("PORT".into(), "{port}".into()),
            ("WORKER".into(), "w-{worker_id}".into()),
        ],
        stop: StopConfig {
            signal: 2,
            timeout: Duration::from_secs(2),
        },
        restart: RestartConfig {
            policy: RestartPolicy::Permanent,
            backoff: BackoffConfig {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
                multiplier: 2.0,
                jitter: 0.1,
            },
            reset_after: Duration::from_secs(30),
            intensity: Intensity {
                max: 2,
                within: Duration::from_secs(5),
            },
        },
        ready: Some(ReadyConfig::Tcp {
            addr: "127.0.0.1:{port}".into(),
            timeout: Duration::from_secs(10),
        }),
        ports: 20000..=20999,
        min: 1,
        max: 8,
        sessions_per_worker: 3,
        idle_timeout: Duration::from_secs(90),
        token_ttl: Duration::from_secs(600),
        rollout: warden_actors::RolloutPolicy::ConfigOnly,
    };
    let app = supervisor(&config.root, "app");
    assert_eq!(app.children, vec![ChildConfig::Pool(shiny)]);
    let child = &app.children[0];
    assert_eq!(child.name(), "shiny");
    assert_eq!(child.path(), "/app/shiny");
    assert_eq!(child.line(), line_of(POOL_EXAMPLE, "name = \"shiny\"") - 1);
}

#[test]
fn pool_without_options_gets_every_default() {
    let (dir, config) = load_ok(POOL_EXAMPLE);
    let expected = PoolConfig {
        name: "plain".into(),
        path: "/plain".into(),
        line: line_of(POOL_EXAMPLE, "name = \"plain\"") - 1,
        command: vec!["plain".into()],
        cwd: dir.path().to_path_buf(),
        run_as: None,
        env: Vec::new(),
        stop: StopConfig::default(),
        // the [restart] table, as for a service
        restart: RestartConfig {
            policy: RestartPolicy::Transient,
            backoff: BackoffConfig {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
                multiplier: 2.0,
                jitter: 0.1,
            },
            reset_after: Duration::from_secs(30),
            intensity: Intensity {
                max: 10,
                within: Duration::from_secs(60),
            },
        },
        ready: None,
        ports: 30000..=30003,
        min: 0,
        max: 4,
        sessions_per_worker: 10,
        idle_timeout: Duration::from_secs(300),
        token_ttl: Duration::from_secs(600),
        rollout: warden_actors::RolloutPolicy::ConfigOnly,
    };
    assert_eq!(*pool(&config.root, "plain"), expected);
    assert_eq!(paths(&config.root), ["/app", "/plain"]);
    assert_eq!(config.cluster, ClusterConfig { redis_url: None });
}

#[test]
fn the_design_pool_example_is_accepted() {
    let text = r#"
[[pool]]                           # a pool of app workers (issue: pools)
name = "shiny"
command = ["./app", "--port", "{port}"]   # {port} and {worker_id} also in env, ready
ports = "20000-20999"              # ports handed to workers
min = 0
max = 4
sessions_per_worker = 10
idle_timeout = "5m"
ready = { tcp = "127.0.0.1:{port}" }

[cluster]
redis_url = "redis://127.0.0.1:6379"
"#;
    let (_dir, config) = load_ok(text);
    let shiny = pool(&config.root, "shiny");
    assert_eq!(shiny.path, "/shiny");
    assert_eq!(shiny.ports, 20000..=20999);
    assert_eq!((shiny.min, shiny.max), (0, 4));
    assert_eq!(shiny.sessions_per_worker, 10);
    assert_eq!(shiny.idle_timeout, Duration::from_secs(300));
    assert_eq!(
        shiny.ready,
        Some(ReadyConfig::Tcp {
            addr: "127.0.0.1:{port}".into(),
            timeout: Duration::from_secs(30)
        })
    );
    assert_eq!(
        config.cluster.redis_url.as_deref(),
        Some("redis://127.0.0.1:6379")
    );
}

#[test]
fn pool_ports_read_a_range_or_one_port() {
    for (ports, range) in [
        ("\"20000-20999\"", 20000..=20999),
        ("\"1-4\"", 1..=4),
        ("\"65532-65535\"", 65532..=65535),
        ("\" 20000 - 20003 \"", 20000..=20003),
        ("\"20000\"", 20000..=20000),
        ("20000", 20000..=20000),
        ("\"20000-20000\"", 20000..=20000),
    ] {
        let max = if range.start() == range.end() { 1 } else { 4 };
        let text =
            format!("[[pool]]\nname = \"p\"\ncommand = [\"p\"]\nports = {ports}\nmax = {max}\n");
        let (_dir, config) = load_ok(&text);
        assert_eq!(pool(&config.root, "p").ports, range, "{ports}");
    }
}

#[test]
fn bad_pool_ports_are_refused_naming_the_key() {
    for (ports, says) in [
        (
            "\"20-10\"",
            "the first port (20) is greater than the last (10)",
        ),
        ("\"0-5\"", "port 0 is not from 1 to 65535"),
        ("\"x\"", "expected a range such as \"20000-20999\""),
        ("\"\"", "expected a range"),
        ("\"-5\"", "expected a range"),
        ("\"5-\"", "expected a range"),
        ("\"1-2-3\"", "expected a range"),
        ("\"+5\"", "expected a range"),
        ("\"20000-70000\"", "port 70000 is not from 1 to 65535"),
        (
            "\"99999999999999999999\"",
            "port 99999999999999999999 is not from 1 to 65535",
        ),
        ("0", "port 0 is not from 1 to 65535"),
        ("-1", "port -1 is not from 1 to 65535"),
        ("70000", "port 70000"),
    ] {
        let text = format!("[[pool]]\nname = \"p\"\ncommand = [\"p\"]\nmax = 1\nports = {ports}\n");
        assert_refused(
            &text,
            "ports",
            "ports",
            &[
                &format!("[[pool]] \"p\": key `ports`: invalid ports {ports}"),
                says,
            ],
        );
    }
    let text = "[[pool]]\nname = \"p\"\ncommand = [\"p\"]\nports = [1, 2]\n";
    assert_refused(
        text,
        "ports",
        "ports",
        &["[[pool]] \"p\": key `ports`", "invalid type"],
    );
}

#[test]
fn pool_min_above_max_is_refused() {
    let text =
        "[[pool]]\nname = \"p\"\ncommand = [\"p\"]\nports = \"1000-1999\"\nmin = 5\nmax = 3\n";
    assert_refused(
        text,
        "min",
        "min",
        &["[[pool]] \"p\": key `min`: min (5) must not be greater than max (3)"],
    );
    let text = "[[pool]]\nname = \"p\"\ncommand = [\"p\"]\nports = \"1000-1999\"\nmin = 5\n";
    assert_refused(
        text,
        "min",
        "min",
        &["min (5) must not be greater than max (4, the default)"],
    );
    let text =
        "[[pool]]\nname = \"p\"\ncommand = [\"p\"]\nports = \"1000-1999\"\nmin = 3\nmax = 3\n";
    let (_dir, config) = load_ok(text);
    assert_eq!(
        (pool(&config.root, "p").min, pool(&config.root, "p").max),
        (3, 3)
    );
}

#[test]
fn pool_max_above_the_number_of_ports_is_refused() {
    let text = "[[pool]]\nname = \"p\"\ncommand = [\"p\"]\nports = \"1000-1002\"\nmax = 4\n";
    assert_refused(
        text,
        "max",
        "max",
        &["[[pool]] \"p\": key `max`: max (4) must not be more than the 3 ports of `ports` (\"1000-1002\")"],
    );
    // the default max of 4 needs four ports: the range is at fault
    let text = "[[pool]]\nname = \"p\"\ncommand = [\"p\"]\nports = 1000\n";
    assert_refused(
        text,
        "ports",
        "ports",
        &[
            "1000 holds 1 port, fewer than the default max of 4",
            "set `max` to at most 1",
        ],
    );
    let text = "[[pool]]\nname = \"p\"\ncommand = [\"p\"]\nports = \"1000-1002\"\nmax = 3\n";
    let (_dir, config) = load_ok(text);
    assert_eq!(pool(&config.root, "p").max, 3);
}

#[test]
fn pool_counts_of_zero_are_refused() {
    let base = "[[pool]]\nname = \"p\"\ncommand = [\"p\"]\nports = \"1000-1999\"\n";
    for (line, key, says) in [
        ("max = 0", "max", "must be at least 1"),
        (
            "sessions_per_worker = 0",
            "sessions_per_worker",
            "must be at least 1",
        ),
        (
            "idle_timeout = \"0s\"",
            "idle_timeout",
            "must be longer than zero",
        ),
    ] {
        let text = format!("{base}{line}\n");
        assert_refused(
            &text,
            line,
            key,
            &[&format!("[[pool]] \"p\": key `{key}`: {says}")],
        );
    }
    let text = format!("{base}idle_timeout = 5\n");
    assert_refused(&text, "idle_timeout", "idle_timeout", &["duration"]);
    let text = format!("{base}min = -1\n");
    assert_refused(&text, "min", "min", &["[[pool]] \"p\": key `min`"]);
}

#[test]
fn unknown_placeholder_is_refused_in_a_pool() {
    let base = "[[pool]]\nname = \"p\"\nports = \"1000-1999\"\n";
    let text = format!("{base}command = [\"app\", \"--port={{nope}}\"]\n");
    assert_refused(
        &text,
        "command",
        "command",
        &[
            "[[pool]] \"p\": key `command`: unknown placeholder `{nope}`",
            "`{port}` and `{worker_id}`",
        ],
    );
    let text =
        format!("{base}command = [\"app\"]\nenv = {{ A = \"{{port}}\", B = \"{{Port}}\" }}\n");
    assert_refused(
        &text,
        "env",
        "env.B",
        &["[[pool]] \"p\": key `env.B`: unknown placeholder `{Port}`"],
    );
    let text = format!("{base}command = [\"app\"]\nready = {{ tcp = \"127.0.0.1:{{worker}}\" }}\n");
    assert_refused(
        &text,
        "ready",
        "ready.tcp",
        &["[[pool]] \"p\": key `ready.tcp`: unknown placeholder `{worker}`"],
    );
}

#[test]
fn braces_that_are_not_placeholders_are_kept_as_written() {
    let text = r#"
[[pool]]
name = "p"
command = ["app", "{}", "{ port }", "{{port}}", "{a-b}", "{", "}{port}{worker_id}"]
ports = "1000-1999"

[[service]]
name = "s"
command = ["s", "{nope}", "{port}"]
"#;
    let (_dir, config) = load_ok(text);
    assert_eq!(
        pool(&config.root, "p").command,
        [
            "app",
            "{}",
            "{ port }",
            "{{port}}",
            "{a-b}",
            "{",
            "}{port}{worker_id}"
        ]
    );
    // a service is not a pool: nothing is filled in, nothing is refused
    assert_eq!(
        service(&config.root, "s").command,
        ["s", "{nope}", "{port}"]
    );
}

#[test]
fn expand_placeholders_fills_in_port_and_worker_id() {
    assert_eq!(
        expand_placeholders("127.0.0.1:{port}/{worker_id}/{port}", 20001, "7"),
        "127.0.0.1:20001/7/20001"
    );
    assert_eq!(expand_placeholders("{\"a\":{x}}", 1, "w"), "{\"a\":{x}}");
}

#[test]
fn pool_ready_tcp_may_hold_the_port_placeholder() {
    let text = r#"
[[pool]]
name = "a"
command = ["a"]
ports = "20000-20999"
ready = { tcp = "127.0.0.1:{port}" }
[[pool]]
name = "b"
command = ["b"]
ports = "20000-20999"
ready = { tcp = "[::1]:{port}", timeout = "3s" }
[[pool]]
name = "c"
command = ["c"]
ports = "20000-20999"
ready = { tcp = "127.0.0.1:9000" }
[[pool]]
name = "d"
command = ["d"]
ports = "20000-20999"
ready = { notify = true }
[[pool]]
name = "e"
command = ["e"]
ports = "20000-20999"
ready = { delay = "1s" }
"#;
    let (_dir, config) = load_ok(text);
    let thirty = Duration::from_secs(30);
    assert_eq!(
        pool(&config.root, "a").ready,
        Some(ReadyConfig::Tcp {
            addr: "127.0.0.1:{port}".into(),
            timeout: thirty
        })
    );
    assert_eq!(
        pool(&config.root, "b").ready,
        Some(ReadyConfig::Tcp {
            addr: "[::1]:{port}".into(),
            timeout: Duration::from_secs(3)
        })
    );
    assert!(matches!(
        pool(&config.root, "c").ready,
        Some(ReadyConfig::Tcp { .. })
    ));
    assert_eq!(
        pool(&config.root, "d").ready,
        Some(ReadyConfig::Notify { timeout: thirty })
    );
    assert_eq!(
        pool(&config.root, "e").ready,
        Some(ReadyConfig::Delay {
            delay: Duration::from_secs(1)
        })
    );
}

#[test]
fn pool_ready_tcp_is_checked_with_the_ports_filled_in() {
    let base = "[[pool]]\nname = \"p\"\ncommand = [\"p\"]\nports = \"20000-20999\"\n";
    for (addr, says) in [
        ("127.0.0.1:{port}0", "(read as \"127.0.0.1:200000\")"),
        ("{port}", "(read as \"20000\")"),
        (
            "127.0.0.1",
            "invalid address \"127.0.0.1\": expected HOST:PORT",
        ),
        (
            "127.0.0.1:{worker_id}{port}",
            "(read as \"127.0.0.1:w120000\")",
        ),
    ] {
        let text = format!("{base}ready = {{ tcp = {addr:?} }}\n");
        assert_refused(
            &text,
            "ready",
            "ready.tcp",
            &[
                &format!("[[pool]] \"p\": key `ready.tcp`: invalid address {addr:?}"),
                says,
            ],
        );
    }
    // the last port counts too
    let text = "[[pool]]\nname = \"p\"\ncommand = [\"p\"]\nports = \"6000-7000\"\nready = { tcp = \"h:{port}9\" }\n";
    assert_refused(text, "ready", "ready.tcp", &["(read as \"h:70009\")"]);
    let text = "[[pool]]\nname = \"p\"\ncommand = [\"p\"]\nports = \"1000-6000\"\nready = { tcp = \"h:{port}9\" }\n";
    let (_dir, config) = load_ok(text);
    assert!(pool(&config.root, "p").ready.is_some());
    // a worker id in the host is fine
    let text = "[[pool]]\nname = \"p\"\ncommand = [\"p\"]\nports = \"1000-6000\"\nready = { tcp = \"{worker_id}.local:{port}\" }\n";
    let (_dir, config) = load_ok(text);
    assert!(pool(&config.root, "p").ready.is_some());
}

#[test]
fn ready_ipc_is_refused_on_a_pool() {
    let text = "[[pool]]\nname = \"p\"\ncommand = [\"p\"]\nports = \"1000-1999\"\nready = { ipc = true }\n";
    assert_refused(
        text,
        "ready",
        "ready.ipc",
        &["[[pool]] \"p\": key `ready.ipc`: `ipc = true` is only for [[outboard]] children, not a [[pool]]"],
    );
    let text = "[[pool]]\nname = \"p\"\ncommand = [\"p\"]\nports = \"1000-1999\"\nready = { timeout = \"1s\" }\n";
    assert_refused(
        text,
        "ready",
        "ready",
        &["needs one of `tcp`, `delay` or `notify`"],
    );
}

#[test]
fn unknown_key_in_a_pool_is_named_with_the_expected_keys() {
    let text = "[[pool]]\nname = \"p\"\ncommand = [\"p\"]\nports = \"1000-1999\"\nsessions = 3\n";
    assert_refused(
        text,
        "sessions",
        "sessions",
        &[
            "unknown key `sessions` in [[pool]] \"p\"",
            "expected one of: name, supervisor, command, cwd, user, group, env, stop, restart, ready, ports, min, max, sessions_per_worker, idle_timeout",
        ],
    );
    // and the pool keys are unknown in a service
    let text = "[[service]]\nname = \"s\"\ncommand = [\"s\"]\nports = \"1000-1999\"\n";
    assert_refused(
        text,
        "ports",
        "ports",
        &["unknown key `ports` in [[service]] \"s\""],
    );
}

#[test]
fn pool_service_keys_are_checked_as_for_services() {
    let base = "[[pool]]\nname = \"p\"\nports = \"1000-1999\"\n";
    let text = format!("{base}command = []\n");
    assert_refused(
        &text,
        "command",
        "command",
        &["[[pool]] \"p\": key `command`: must not be empty"],
    );
    let text = format!("{base}command = [\"p\"]\nstop = {{ signal = \"NOPE\" }}\n");
    assert_refused(
        &text,
        "stop",
        "stop.signal",
        &["[[pool]] \"p\"", "unknown signal"],
    );
    let text = format!("{base}command = [\"p\"]\nrestart = {{ policy = \"often\" }}\n");
    assert_refused(
        &text,
        "restart",
        "restart.policy",
        &["[[pool]] \"p\"", "unknown restart policy"],
    );
    let text = format!("{base}command = [\"p\"]\ncwd = \"\"\n");
    assert_refused(
        &text,
        "cwd",
        "cwd",
        &["[[pool]] \"p\": key `cwd`: must not be empty"],
    );
}

#[test]
fn pool_names_and_parents_are_checked_as_for_services() {
    let text = "[[pool]]\ncommand = [\"x\"]\nports = \"1000-1999\"\nname = \"a b\"\n";
    assert_refused(
        text,
        "name",
        "name",
        &["[[pool]] #1: key `name`: invalid name"],
    );
    let text = "[[pool]]\nname = \"p\"\ncommand = [\"x\"]\nports = \"1000-1999\"\nsupervisor = \"nowhere\"\n";
    assert_refused(
        text,
        "supervisor",
        "supervisor",
        &["[[pool]] \"p\": key `supervisor`: unknown supervisor /nowhere"],
    );
}

#[test]
fn a_pool_is_not_a_parent() {
    let text = r#"
[[pool]]
name = "shiny"
command = ["x"]
ports = "1000-1999"
[[service]]
name = "extra"
supervisor = "shiny"
command = ["x"]
"#;
    assert_refused(
        text,
        "supervisor = \"shiny\"",
        "supervisor",
        &["[[service]] \"extra\": key `supervisor`: /shiny is a [[pool]], not a supervisor"],
    );
    let text = r#"
[[supervisor]]
name = "app"
[[pool]]
name = "shiny"
supervisor = "app"
command = ["x"]
ports = "1000-1999"
[[supervisor]]
name = "inner"
parent = "app/shiny"
"#;
    assert_refused(
        text,
        "parent = \"app/shiny\"",
        "parent",
        &["/app/shiny is a [[pool]], not a supervisor"],
    );
    let text = r#"
[[pool]]
name = "shiny"
command = ["x"]
ports = "1000-1999"
[[pool]]
name = "inner"
supervisor = "shiny"
command = ["x"]
ports = "2000-2999"
"#;
    assert_refused(
        text,
        "supervisor = \"shiny\"",
        "supervisor",
        &[
            "[[pool]] \"inner\"",
            "/shiny is a [[pool]], not a supervisor",
        ],
    );
}

#[test]
fn duplicate_name_between_a_pool_and_a_service_is_refused() {
    let text = r#"
[[service]]
name = "twin"
command = ["x"]

[[pool]]
name = "twin" # the pool
command = ["y"]
ports = "1000-1999"
"#;
    assert_refused(
        text,
        "# the pool",
        "name",
        &[
            "[[pool]] \"twin\": key `name`: duplicate name \"twin\"",
            "the root",
            "line 2",
        ],
    );
    // whichever table comes first in the file, the later header is the duplicate
    let text = r#"
[[supervisor]]
name = "app"

[[pool]]
name = "twin"
supervisor = "app"
command = ["y"]
ports = "1000-1999"

[[service]]
name = "twin" # the service
supervisor = "/app"
command = ["x"]
"#;
    assert_refused(
        text,
        "# the service",
        "name",
        &[
            "[[service]] \"twin\": key `name`: duplicate name \"twin\"",
            "/app already has a child",
            "line 5",
        ],
    );
    let text = "[[supervisor]]\nname = \"x\"\n[[pool]]\nname = \"x\" # the pool\ncommand = [\"x\"]\nports = \"1000-1999\"\n";
    assert_refused(
        text,
        "# the pool",
        "name",
        &["[[pool]] \"x\": key `name`: duplicate name \"x\"", "line 1"],
    );
}

#[test]
fn pools_take_their_place_in_file_order_among_their_siblings() {
    let text = r#"
[[pool]]
name = "p1"
command = ["p1"]
ports = "1000-1999"

[[service]]
name = "s1"
command = ["s1"]

[[supervisor]]
name = "app"

[[pool]]
name = "deep"
supervisor = "app"
command = ["deep"]
ports = "2000-2999"

[[outboard]]
name = "o1"
supervisor = "/app"
command = ["o1"]

[[pool]]
name = "p2"
command = ["p2"]
ports = "3000-3999"

[[service]]
name = "s2"
command = ["s2"]
"#;
    let (_dir, config) = load_ok(text);
    assert_eq!(paths(&config.root), ["/p1", "/s1", "/app", "/p2", "/s2"]);
    let app = supervisor(&config.root, "app");
    assert_eq!(paths(app), ["/app/deep", "/app/o1"]);
    assert_eq!(pool(app, "deep").line, line_of(text, "name = \"deep\"") - 1);
    assert_eq!(
        pool(&config.root, "p2").line,
        line_of(text, "name = \"p2\"") - 1
    );
}

#[test]
fn cluster_redis_url_is_read() {
    for url in [
        "redis://127.0.0.1:6379",
        "redis://cache.example.com:6380/2",
        "redis://:secret@localhost",
    ] {
        let text = format!("[cluster]\nredis_url = {url:?}\n");
        let (_dir, config) = load_ok(&text);
        assert_eq!(config.cluster.redis_url.as_deref(), Some(url));
    }
    let (_dir, config) = load_ok("[cluster]\n");
    assert_eq!(config.cluster, ClusterConfig::default());
    assert_eq!(config.cluster.redis_url, None);
}

#[test]
fn a_bad_cluster_redis_url_is_refused() {
    for url in [
        "http://127.0.0.1:6379",
        "127.0.0.1:6379",
        "redis://",
        "REDIS://x",
        "redis:/x",
        "redis://a b",
        "",
    ] {
        let text = format!("\n[cluster]\nredis_url = {url:?}\n");
        assert_refused(
            &text,
            "redis_url",
            "redis_url",
            &[
                &format!("[cluster]: key `redis_url`: invalid Redis URL {url:?}"),
                "redis://",
            ],
        );
    }
    assert_refused(
        "[cluster]\nredis_url = 6379\n",
        "redis_url",
        "redis_url",
        &["[cluster]: key `redis_url`", "invalid type"],
    );
    assert_refused(
        "[cluster]\nredis = \"redis://x\"\n",
        "redis =",
        "redis",
        &[
            "unknown key `redis` in [cluster]",
            "expected one of: redis_url",
        ],
    );
}

/// rediss:// is refused here, at check, rather than failing at up (no TLS Redis client is
/// built in); the message hides the URL's password.
#[test]
fn a_rediss_url_is_refused_at_check_with_its_password_hidden() {
    let error = assert_refused(
        "\n[cluster]\nredis_url = \"rediss://:hunter2@cache.example.com:6380/2\"\n",
        "redis_url",
        "redis_url",
        &[
            "[cluster]: key `redis_url`",
            "rediss:// (TLS) is not supported",
            "rediss://:***@cache.example.com:6380/2",
        ],
    );
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

#[test]
fn odd_pool_input_is_refused_without_panicking() {
    for text in [
        "[[pool]]",
        "pool = 3",
        "pool = [1]",
        "pool = [{ name = \"a\", command = [\"a\"], ports = \"1-9\", max = 99999999999 }]",
        "[[pool]]\nname = \"a\"\ncommand = [\"a\"]\nports = \"\u{e9}-\u{e9}\"",
        "[[pool]]\nname = \"a\"\ncommand = [\"a\"]\nports = \"1-65535\"\nmax = 65536",
        "[[pool]]\nname = \"a\"\ncommand = [\"a\"]\nports = 1.5",
        "[[pool]]\nname = \"a\"\ncommand = [\"a\"]\nports = \"1-9\"\nidle_timeout = \"99999999999999999999y\"",
        "[[pool]]\nname = \"a\"\ncommand = [\"{\u{e9}}\"]\nports = \"1-9\"\nready = { tcp = \"{\" }",
        "[[pool]]\nname = \"a\"\ncommand = [\"a{\"]\nports = \"1-9\"\nenv = { X = \"{\u{0}}\" }",
        "[[pool]]\nname = \"a\"\ncommand = [\"a\"]\nports = \"1-9\"\n[[pool]]\nname = \"a\"\ncommand = [\"a\"]\nports = \"1-9\"",
        "cluster = 3",
        "cluster = { redis_url = [] }",
    ] {
        let error = parse(text, Path::new("w.toml")).expect_err(text);
        assert!(error.line().is_some(), "{text:?}: {error}");
        assert!(!error.to_string().contains('\n'), "{text:?}: {error}");
    }
}

/// A ready check with no time (`timeout = "0s"`) can never pass: refused, like every
/// other zero duration, naming the line and key (old code: accepted, then the child
/// restarted until it was `failed`).
#[test]
fn a_zero_ready_timeout_is_refused() {
    let text = "[[service]]\nname = \"api\"\ncommand = [\"sleep\", \"9\"]\nready = { tcp = \"127.0.0.1:9\", timeout = \"0s\" }\n";
    assert_refused(
        text,
        "ready = ",
        "ready.timeout",
        &["must be longer than 0"],
    );
}

/// A `[spoke]` without `hub` or `name` is refused naming the line of the table (old
/// code: no line at all).
#[test]
fn a_spoke_table_without_hub_or_name_is_refused_at_its_line() {
    let no_hub =
        "[[service]]\nname = \"a\"\ncommand = [\"sleep\", \"9\"]\n\n[spoke]\nname = \"edge-1\"\n";
    let error = load_err(no_hub);
    assert_eq!(error.key(), Some("hub"), "{error}");
    let line = error.line().expect("a line");
    assert!((5..=6).contains(&line), "line {line} of: {error}");
    let no_name = "[spoke]\nhub = \"ws://127.0.0.1:9/api/v1/hub/connect\"\n";
    let error = load_err(no_name);
    assert_eq!(error.key(), Some("name"), "{error}");
    assert!(error.line().is_some_and(|l| l <= 2), "{error}");
    assert!(error.to_string().contains("is required"), "{error}");
}
