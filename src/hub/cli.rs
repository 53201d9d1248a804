//! `warden hub ...`: the join tokens and spokes of a running hub, over its admin API.
//! Exit codes as for `ctl`: 0 done, 1 the hub refused (unknown id or name included),
//! 2 usage or connection error (a refused token and an untrusted certificate included).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::control::client::{describe_transport_error, http_agent, Trust};

/// `warden hub` and its options.
#[derive(Debug, clap::Args)]
pub struct HubArgs {
    /// The config file of the running hub (for its admin address and token).
    #[arg(short = 'c', long = "config", default_value = "warden.toml")]
    pub config: PathBuf,
    /// The hub's admin API (default: the config's [admin] listen, https:// when it has
    /// tls, trusting its tls.cert).
    #[arg(long)]
    pub admin: Option<String>,
    /// PEM file of the CA certificates an https:// admin API must chain to, instead of
    /// the Mozilla roots (or of the config's own [admin] tls.cert).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Token file (default: the config's).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub verb: HubVerb,
}

/// `warden hub` verbs.
#[derive(Debug, clap::Subcommand)]
pub enum HubVerb {
    /// Join tokens.
    #[command(subcommand)]
    Token(TokenVerb),
    /// Every enrolled spoke: name, connected, since when.
    Spokes,
    /// Delete a spoke's enrollment and close its connection at once.
    Revoke {
        /// The spoke's name.
        name: String,
    },
}

/// `warden hub token` verbs.
#[derive(Debug, clap::Subcommand)]
pub enum TokenVerb {
    /// Create a one-time join token for spoke NAME; prints `<id>.<secret>` once.
    Create {
        /// The spoke's name.
        name: String,
        /// Lifetime (default: the hub's [hub] token_ttl).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// Outstanding tokens (no secrets).
    List,
    /// Revoke an outstanding token.
    Revoke {
        /// The token's id (the part before the dot).
        id: String,
    },
}

/// Where an admin API is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http://host:port` or `https://host:port`, without a trailing `/`.
    pub base: String,
    /// The bearer token.
    pub token: String,
    /// The certificates an `https://` API must chain to.
    pub trust: Trust,
}

/// Where the admin API is, its token, and whom to trust: from the flags, else the
/// config. The config is only located ([`crate::config::locate`]), not loaded, so a
/// pending bad edit of it does not stop the CLI. Without `admin`, the config's own
/// listener: `https://` when `[admin]` has `tls`, trusting its `tls.cert` (a self-signed
/// one works). `ca_file` replaces the trusted roots in every case.
pub fn endpoint(
    config: &Path,
    admin: Option<&str>,
    token_file: Option<&Path>,
    ca_file: Option<&Path>,
) -> Result<Endpoint, String> {
    let locate = || crate::config::locate(config).map_err(|e| e.to_string());
    // The own listener's certificate is trusted only when no --admin names another.
    let (base, own_cert) = match admin {
        Some(url) => (url.trim_end_matches('/').to_owned(), None),
        None => {
            let found = locate()?;
            let mut listen = found.admin_listen.map_err(|e| e.to_string())?;
            if listen.ip().is_unspecified() {
                listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            match found.admin_cert {
                Some(cert) => (format!("https://{listen}"), Some(cert)),
                None => (format!("http://{listen}"), None),
            }
        }
    };
    let trust = match (ca_file, own_cert) {
        (Some(ca_file), _) => {
            Trust::from_pem_file(ca_file).map_err(|e| format!("--ca-file {e}"))?
        }
        (None, Some(cert)) => {
            Trust::from_pem_file(&cert).map_err(|e| format!("[admin] tls.cert {e}"))?
        }
        (None, None) => Trust::MozillaRoots,
    };
    let token_file = match token_file {
        Some(f) => f.to_owned(),
        None => locate()?.token_file,
    };
    let token = std::fs::read_to_string(&token_file)
        .map_err(|e| format!("cannot read token file {}: {e}", token_file.display()))?;
    Ok(Endpoint {
        base,
        token: token.trim().to_owned(),
        trust,
    })
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// Runs `warden hub ...`.
pub fn run(args: HubArgs) -> ExitCode {
    let Endpoint { base, token, trust } = match endpoint(
        &args.config,
        args.admin.as_deref(),
        args.token_file.as_deref(),
        args.ca_file.as_deref(),
    ) {
        Ok(e) => e,
        Err(e) => return fail(2, e),
    };
    let (method, path, body) = match &args.verb {
        HubVerb::Token(TokenVerb::Create { name, ttl }) => {
            let mut body = serde_json::json!({ "name": name });
            if let Some(ttl) = ttl {
                body["ttl"] = humantime::format_duration(*ttl).to_string().into();
            }
            ("POST", "/api/v1/hub/tokens".to_owned(), Some(body))
        }
        HubVerb::Token(TokenVerb::List) => ("GET", "/api/v1/hub/tokens".to_owned(), None),
        HubVerb::Token(TokenVerb::Revoke { id }) => {
            ("DELETE", format!("/api/v1/hub/tokens/{id}"), None)
        }
        HubVerb::Spokes => ("GET", "/api/v1/spokes".to_owned(), None),
        HubVerb::Revoke { name } => ("DELETE", format!("/api/v1/spokes/{name}"), None),
    };
    let agent = http_agent(&trust, Duration::from_secs(30));
    let url = format!("{base}{path}");
    let auth = format!("Bearer {token}");
    let sent = match (method, body) {
        ("POST", Some(body)) => agent
            .post(&url)
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(body.to_string()),
        ("DELETE", _) => agent.delete(&url).header("Authorization", &auth).call(),
        _ => agent.get(&url).header("Authorization", &auth).call(),
    };
    let mut response = match sent {
        Ok(r) => r,
        Err(e) => return fail(2, describe_transport_error(&base, &e)),
    };
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    if status >= 400 {
        let message = value["error"].as_str().unwrap_or(&text);
        // A refused token is a usage error (2), as in `ctl`; the hub refusing the
        // operation itself is 1.
        let code = if matches!(status, 401 | 403) { 2 } else { 1 };
        return fail(code, format!("{message} ({status})"));
    }
    if args.json {
        println!("{}", if text.is_empty() { "{}" } else { &text });
        return ExitCode::SUCCESS;
    }
    match &args.verb {
        HubVerb::Token(TokenVerb::Create { .. }) => {
            println!("{}", value["token"].as_str().unwrap_or_default());
            eprintln!(
                "join token for {} (id {}), valid until {}: it is shown only once",
                value["name"].as_str().unwrap_or_default(),
                value["id"].as_str().unwrap_or_default(),
                value["expires_at"].as_str().unwrap_or_default()
            );
        }
        HubVerb::Token(TokenVerb::List) => {
            println!("{:<18} {:<24} EXPIRES", "ID", "NAME");
            for t in value.as_array().into_iter().flatten() {
                println!(
                    "{:<18} {:<24} {}",
                    t["id"].as_str().unwrap_or_default(),
                    t["name"].as_str().unwrap_or_default(),
                    t["expires_at"].as_str().unwrap_or_default()
                );
            }
        }
        HubVerb::Spokes => {
            println!(
                "{:<24} {:<10} {:<26} ENROLLED",
                "NAME", "CONNECTED", "SINCE"
            );
            for s in value.as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<10} {:<26} {}",
                    s["name"].as_str().unwrap_or_default(),
                    if s["connected"].as_bool() == Some(true) {
                        "yes"
                    } else {
                        "no"
                    },
                    s["connected_at"].as_str().unwrap_or("-"),
                    s["enrolled_at"].as_str().unwrap_or_default()
                );
            }
        }
        HubVerb::Token(TokenVerb::Revoke { .. }) | HubVerb::Revoke { .. } => {}
    }
    ExitCode::SUCCESS
}
