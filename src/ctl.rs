//! `warden ctl`: drive a running warden from scripts and terminals, over its control
//! socket (default) or its admin HTTP API (`--admin URL`). A readable table by default,
//! `--json` for scripts. Exit codes: 0 done, 1 the operation failed (an unknown path
//! included), 2 usage or connection error (a refused token and an untrusted certificate
//! included).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use warden_supervisors::{ActorView, TreeNode};

use crate::control::client::{Client, ClientError};
use crate::control::protocol::{FailureKind, Health, Request, Response};

/// Where to reach warden and how to print.
#[derive(Debug, Clone)]
pub struct CtlOptions {
    /// The config file (for the socket path and the token file).
    pub config: PathBuf,
    /// Use the admin HTTP API at this URL instead of the socket.
    pub admin: Option<String>,
    /// The token file for `--admin` (default: the config's).
    pub token_file: Option<PathBuf>,
    /// Print JSON instead of tables.
    pub json: bool,
    /// `logs --raw`: write the log bytes as they are, even to a terminal.
    pub raw: bool,
    /// Drive this spoke through the hub (whose admin API `admin`, or the config's, is).
    pub spoke: Option<String>,
    /// PEM CA certificates an `https://` admin API must chain to (instead of the
    /// Mozilla roots, or of the config's own `[admin] tls.cert`).
    pub ca_file: Option<PathBuf>,
}

/// Exit code: the operation failed.
const FAILED: u8 = 1;
/// Exit code: usage or connection error.
const USAGE: u8 = 2;

fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(USAGE)
}

fn connect(options: &CtlOptions) -> Result<Client, ExitCode> {
    let config = || {
        crate::config::locate(&options.config).map_err(|e| {
            usage_error(format!(
                "{e}\n(ctl reads the config to find warden's control socket and token; give -c FILE)"
            ))
        })
    };
    let http = || {
        crate::hub::cli::endpoint(
            &options.config,
            options.admin.as_deref(),
            options.token_file.as_deref(),
            options.ca_file.as_deref(),
        )
        .map_err(usage_error)
    };
    if let Some(spoke) = &options.spoke {
        let end = http()?;
        return Ok(Client::http_spoke(&end.base, end.token, &end.trust, spoke));
    }
    match &options.admin {
        Some(_) => {
            let end = http()?;
            Ok(Client::http(&end.base, end.token, &end.trust))
        }
        None => {
            let socket = crate::layout::StateLayout::new(config()?.state_dir).control_socket();
            Client::connect_socket(&socket).map_err(|e| match e {
                ClientError::Connect { .. } => {
                    usage_error(format!("{e} (is warden up with this config?)"))
                }
                other => usage_error(other),
            })
        }
    }
}

/// Runs one request and prints its answer; returns the exit code.
pub fn run(options: &CtlOptions, request: Request) -> ExitCode {
    let mut client = match connect(options) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = match client.ask(request.clone()) {
        Ok(r) => r,
        Err(e) => return usage_error(e),
    };
    match result {
        Ok(response) => print_response(options, &request, response),
        Err(failure) => {
            if options.json {
                println!(
                    "{}",
                    serde_json::json!({ "error": failure.message, "kind": failure.kind })
                );
            } else {
                eprintln!("error: {failure}");
            }
            // A refused token is a usage error, as a refused peer on the socket is.
            match failure.kind {
                FailureKind::Unauthorized => ExitCode::from(USAGE),
                _ => ExitCode::from(FAILED),
            }
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot encode the answer: {e}"),
    }
}

fn print_response(options: &CtlOptions, request: &Request, response: Response) -> ExitCode {
    let json = options.json;
    match response {
        Response::Actors(views) => {
            if json {
                print_json(&views);
            } else {
                print_table(&views);
            }
        }
        Response::Actor(view) => {
            if json {
                print_json(&view);
            } else {
                print_table(std::slice::from_ref(&view));
            }
        }
        Response::Tree(node) => {
            if json {
                print_json(&node);
            } else {
                print_tree(&node, 0);
            }
        }
        Response::Logs(bytes) => {
            use std::io::IsTerminal as _;
            let mut stdout = std::io::stdout();
            // A child writes what it likes to its log: escape sequences must not reach
            // the operator's terminal (title, clipboard, hidden lines) unless asked.
            if stdout.is_terminal() && !options.raw {
                let _ = stdout.write_all(&escape_controls(&bytes));
            } else {
                let _ = stdout.write_all(&bytes);
            }
        }
        Response::Reloaded(changes) => {
            if json {
                print_json(&changes);
            } else {
                let list = |v: &[warden_supervisors::ActorPath]| {
                    if v.is_empty() {
                        "-".to_owned()
                    } else {
                        v.iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(" ")
                    }
                };
                println!("added:   {}", list(&changes.added));
                println!("removed: {}", list(&changes.removed));
                println!("changed: {}", list(&changes.changed));
            }
        }
        Response::Draining => {
            if json {
                print_json(&serde_json::json!({ "status": "draining" }));
            } else {
                println!("draining");
            }
        }
        Response::Health(health) => {
            let status = match health {
                Health::Ok => "ok",
                Health::Draining => "draining",
            };
            if json {
                print_json(&serde_json::json!({ "status": status }));
            } else {
                println!("{status}");
            }
        }
        Response::Ready { ready, waiting } => {
            if json {
                print_json(&serde_json::json!({ "ready": ready, "waiting": waiting }));
            } else {
                println!("{}", if ready { "ready" } else { "not ready" });
            }
        }
        Response::Metrics(text) => print!("{text}"),
        Response::Reply(value) => print_json(&value),
        Response::Session(session) => print_json(&session),
        Response::Released => {}
        Response::RolledOut(summary) => print_json(&summary),
        Response::Token(check) => print_json(&check),
        Response::Activated => println!("active"),
        Response::DeployAccepted(record) | Response::DeployConfirmed(record) => {
            if json {
                print_json(&record);
            } else {
                let what = match request {
                    Request::ConfirmDeploy { .. } => "confirmed",
                    _ => "requested",
                };
                println!("deploy {} {what}: {}", record.id, deploy_state(&record));
            }
        }
        Response::DeployList(records) => {
            if json {
                print_json(&records);
            } else {
                print_deploys(&records);
            }
        }
        Response::Reexecuting { binary, version } => {
            if json {
                print_json(&serde_json::json!({
                    "status": "reexecuting", "binary": binary, "version": version,
                }));
            } else {
                println!("reexecuting {binary} ({version}): every child keeps running");
            }
        }
    }
    let _ = request;
    ExitCode::SUCCESS
}

fn deploy_state(record: &warden_actors::DeployRecord) -> String {
    serde_json::to_value(record.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Deploys as a table: id, state, commit, when asked, and what failed.
fn print_deploys(records: &[warden_actors::DeployRecord]) {
    let rows: Vec<[String; 5]> = records
        .iter()
        .map(|r| {
            let commit = r
                .commit
                .as_deref()
                .map(|c| c.chars().take(12).collect())
                .unwrap_or_else(|| "-".to_owned());
            let note = match (&r.failed_step, &r.reason) {
                (Some(step), Some(reason)) => format!("{step}: {reason}"),
                (None, Some(reason)) => reason.clone(),
                _ => String::new(),
            };
            [
                r.id.clone(),
                deploy_state(r),
                commit,
                format!("{} ago", age(Some(r.requested_at))),
                note,
            ]
        })
        .collect();
    print_columns(["ID", "STATE", "COMMIT", "REQUESTED", "INFO"], &rows);
}

fn age(at: Option<warden_supervisors::Timestamp>) -> String {
    let Some(at) = at else { return "-".to_owned() };
    let secs = SystemTime::now()
        .duration_since(at.0)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

fn print_table(views: &[ActorView]) {
    let rows: Vec<[String; 6]> = views
        .iter()
        .map(|v| {
            let i = &v.info;
            let note = if let Some(reason) = &i.failed_reason {
                reason.clone()
            } else if let Some(next) = i.next_restart_at {
                format!(
                    "restart in {} (attempt {})",
                    humantime::format_duration(Duration::from_millis(
                        next.0
                            .duration_since(SystemTime::now())
                            .map(|d| d.as_millis() as u64)
                            .unwrap_or(0)
                    )),
                    i.backoff.attempt
                )
            } else if let Some(exit) = &i.last_exit {
                format!("last: {}", exit.reason)
            } else {
                String::new()
            };
            [
                i.path.to_string(),
                serde_json::to_value(i.kind)
                    .ok()
                    .and_then(|k| k.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                i.state.to_string(),
                i.pid
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".to_owned()),
                i.restarts.to_string(),
                if i.state == warden_supervisors::ActorState::Running {
                    format!("up {} {note}", age(i.started_at))
                        .trim_end()
                        .to_owned()
                } else {
                    note
                },
            ]
        })
        .collect();
    print_columns(["PATH", "KIND", "STATE", "PID", "RESTARTS", "INFO"], &rows);
}

/// Prints `rows` under `header` in aligned columns; the last column is not padded.
fn print_columns<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (k, cell) in cells.iter().enumerate() {
            if k + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[k]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(&header);
    for row in rows {
        line(&row.each_ref().map(String::as_str));
    }
}

fn print_tree(node: &TreeNode, depth: usize) {
    let i = &node.info;
    let name = if i.path.is_root() {
        "/"
    } else {
        i.name.as_str()
    };
    let pid = i.pid.map(|p| format!(" pid {p}")).unwrap_or_default();
    println!("{}{name} [{}]{pid}", "  ".repeat(depth), i.state);
    for child in &node.children {
        print_tree(child, depth + 1);
    }
}

/// `bytes` fit for a terminal: every control character but newline and tab (C0, DEL, the
/// C1 range U+0080..U+009F, and bytes that are not UTF-8) is written out as a visible
/// escape (`\x1b`, `\u{9b}`), so that nothing a child logged can drive the terminal.
pub fn escape_controls(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' | '\t' => out.push(c as u8),
                c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                    out.extend_from_slice(format!("\\x{:02x}", u32::from(c)).as_bytes());
                }
                c if c.is_control() => {
                    out.extend_from_slice(format!("\\u{{{:x}}}", u32::from(c)).as_bytes());
                }
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        for b in chunk.invalid() {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn control_bytes_are_escaped_and_text_is_kept() {
        let raw = "ok\tline\n\x1b]52;c;aGk=\x07\x1b[2Jé\r\u{9b}\n".as_bytes();
        let mut with_invalid = raw.to_vec();
        with_invalid.push(0xff);
        let shown = String::from_utf8(escape_controls(&with_invalid)).unwrap();
        assert_eq!(
            shown,
            "ok\tline\n\\x1b]52;c;aGk=\\x07\\x1b[2Jé\\x0d\\u{9b}\n\\xff"
        );
    }
}
