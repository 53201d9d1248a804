//! The client end of the control protocol, for `warden ctl`: over the local control
//! socket, or over the admin HTTP API with `--admin URL`. Both answer the same
//! [`Response`]s and [`Failure`]s.

use std::io;
use std::path::Path;
use std::time::Duration;

use interprocess::local_socket::prelude::*;
use interprocess::local_socket::{GenericFilePath, Stream};
use warden_supervisors::wire::{self, MAX_FRAME};
use warden_supervisors::{ActorView, TreeNode};

use super::protocol::{
    ClientFrame, Failure, FailureKind, Request, Response, ServerFrame, PROTOCOL_VERSION,
};

/// Why a request could not even be asked (exit code 2 in `warden ctl`).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not reach warden.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// Socket path or URL.
        target: String,
        /// Why.
        source: io::Error,
    },
    /// The admin API gave no answer over HTTP(S): the message names why (an untrusted
    /// certificate included).
    #[error("{0}")]
    Transport(String),
    /// warden answered something that is not the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// warden refused the connection (version mismatch).
    #[error("refused by warden: {0}")]
    Refused(String),
}

/// A connection to a running warden.
#[derive(Debug)]
pub enum Client {
    /// Over the control socket.
    Socket {
        /// The connection.
        stream: Stream,
        /// The next request id.
        next_id: u64,
    },
    /// Over the admin HTTP API.
    Http {
        /// `http://host:port`.
        base: String,
        /// The bearer token.
        token: String,
        /// The HTTP agent.
        agent: ureq::Agent,
        /// Where the actor routes are: `/api/v1`, or `/api/v1/spokes/NAME` on a hub.
        api: String,
    },
}

impl Client {
    /// Connects to the control socket at `path` and shakes hands.
    pub fn connect_socket(path: &Path) -> Result<Self, ClientError> {
        let target = path.display().to_string();
        let name = path
            .to_fs_name::<GenericFilePath>()
            .map_err(|source| ClientError::Connect {
                target: target.clone(),
                source,
            })?;
        let mut stream = Stream::connect(name).map_err(|source| ClientError::Connect {
            target: target.clone(),
            source,
        })?;
        let hello = ClientFrame::Hello {
            protocol: PROTOCOL_VERSION,
            client: format!("warden-ctl {}", env!("CARGO_PKG_VERSION")),
        };
        send(&mut stream, &hello)?;
        match receive(&mut stream)? {
            ServerFrame::Welcome { .. } => Ok(Client::Socket { stream, next_id: 1 }),
            ServerFrame::Error { message } => Err(ClientError::Refused(message)),
            other => Err(ClientError::Protocol(format!(
                "expected welcome, got {other:?}"
            ))),
        }
    }

    /// A client of the admin API at `base` (e.g. `http://127.0.0.1:7700`, or `https://`
    /// with a certificate that chains to `trust`).
    pub fn http(base: &str, token: String, trust: &Trust) -> Self {
        let agent = http_agent(trust, Duration::from_secs(600));
        Client::Http {
            base: base.trim_end_matches('/').to_owned(),
            token,
            agent,
            api: "/api/v1".to_owned(),
        }
    }

    /// A client of the spoke `name` through the hub whose admin API is at `base`: the
    /// actor verbs (status, tree, start, stop, restart, logs, wait) are relayed.
    pub fn http_spoke(base: &str, token: String, trust: &Trust, name: &str) -> Self {
        let mut client = Self::http(base, token, trust);
        if let Client::Http { api, .. } = &mut client {
            *api = format!("/api/v1/spokes/{name}");
        }
        client
    }

    /// Asks one request.
    pub fn ask(&mut self, request: Request) -> Result<Result<Response, Failure>, ClientError> {
        match self {
            Client::Socket { stream, next_id } => {
                let id = *next_id;
                *next_id += 1;
                send(stream, &ClientFrame::Request { id, request })?;
                match receive(stream)? {
                    ServerFrame::Reply { id: got, result } if got == id => Ok(result),
                    ServerFrame::Error { message } => Err(ClientError::Refused(message)),
                    other => Err(ClientError::Protocol(format!("unexpected frame {other:?}"))),
                }
            }
            Client::Http {
                base,
                token,
                agent,
                api,
            } => http_ask(agent, base, api, token, request),
        }
    }
}

/// Which certificates an HTTPS admin API must chain to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Trust {
    /// The Mozilla roots compiled in (`--admin https://...` without `--ca-file`).
    #[default]
    MozillaRoots,
    /// Only these certificates (DER), as trust anchors: those of `--ca-file`, or the
    /// config's own `[admin] tls.cert` when talking to its own listener.
    Only(Vec<Vec<u8>>),
}

impl Trust {
    /// The certificates of the PEM file at `path` (at least one, each usable as a
    /// trust anchor); errors name the file and what is wrong with it.
    pub fn from_pem_file(path: &Path) -> Result<Self, String> {
        crate::config::ca_roots(path)
            .map(|certs| Trust::Only(certs.iter().map(|c| c.as_ref().to_vec()).collect()))
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The HTTP(S) agent of the CLI: `timeout` for a whole request, statuses answered (not
/// errors), rustls with ring for `https://`, verifying against `trust`.
pub fn http_agent(trust: &Trust, timeout: Duration) -> ureq::Agent {
    let roots = match trust {
        Trust::MozillaRoots => ureq::tls::RootCerts::WebPki,
        Trust::Only(certs) => certs
            .iter()
            .map(|der| ureq::tls::Certificate::from_der(der).to_owned())
            .into(),
    };
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::Rustls)
                .root_certs(roots)
                .build(),
        )
        .build()
        .new_agent()
}

/// Why a request to the admin API at `base` got no answer, said for an operator: an
/// untrusted or wrong certificate is named as such, with what to do about it.
pub fn describe_transport_error(base: &str, error: &ureq::Error) -> String {
    let tls = match error {
        ureq::Error::Rustls(e) => Some(e),
        ureq::Error::Io(e) => e.get_ref().and_then(|inner| inner.downcast_ref()),
        _ => None,
    };
    match tls {
        // webpki's error has no type rustls exposes: told by its name.
        Some(e @ rustls::Error::InvalidCertificate(_))
            if format!("{e:?}").contains("CaUsedAsEndEntity") =>
        {
            format!(
                "cannot connect to {base}: the server's TLS certificate is not trusted ({e}): \
                 it is a CA certificate (basicConstraints CA:TRUE, what `openssl req -x509` \
                 makes by default) used as the server's own; make it with \
                 `-addext basicConstraints=critical,CA:FALSE`, or sign it with a CA and give \
                 that CA with --ca-file"
            )
        }
        Some(e @ rustls::Error::InvalidCertificate(_)) => format!(
            "cannot connect to {base}: the server's TLS certificate is not trusted ({e}); give --ca-file \
             with the CA (or the self-signed certificate) that signed it, and a URL with \
             a host name the certificate names"
        ),
        Some(e) => format!("cannot connect to {base}: TLS handshake failed: {e}"),
        None if base.starts_with("http://") && error.to_string().contains("parse fail") => {
            format!("cannot connect to {base}: {error} (is the admin API HTTPS? then use https://)")
        }
        None => format!("cannot connect to {base}: {error}"),
    }
}

fn send(stream: &mut Stream, frame: &ClientFrame) -> Result<(), ClientError> {
    let payload = wire::encode(frame).map_err(|e| ClientError::Protocol(e.to_string()))?;
    wire::write_frame_blocking(stream, &payload, MAX_FRAME)
        .map_err(|e| ClientError::Protocol(e.to_string()))
}

fn receive(stream: &mut Stream) -> Result<ServerFrame, ClientError> {
    match wire::read_frame_blocking(stream, MAX_FRAME) {
        Ok(Some(payload)) => {
            wire::decode(&payload).map_err(|e| ClientError::Protocol(e.to_string()))
        }
        Ok(None) => Err(ClientError::Protocol(
            "warden closed the connection".to_owned(),
        )),
        Err(e) => Err(ClientError::Protocol(e.to_string())),
    }
}

/// `wait` over HTTP: the API has no wait route, so poll each actor until all run.
fn http_wait(
    agent: &ureq::Agent,
    base: &str,
    api: &str,
    token: &str,
    paths: &[String],
    timeout_ms: u64,
) -> Result<Result<Response, Failure>, ClientError> {
    let deadline = std::time::Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let mut views = Vec::with_capacity(paths.len());
        let mut pending = Vec::new();
        for path in paths {
            match http_ask(
                agent,
                base,
                api,
                token,
                Request::Actor { path: path.clone() },
            )? {
                Ok(Response::Actor(view)) => {
                    if view.info.state != warden_supervisors::ActorState::Running {
                        pending.push(format!("{} is {}", view.info.path, view.info.state));
                    }
                    views.push(*view);
                }
                Ok(other) => {
                    return Err(ClientError::Protocol(format!(
                        "unexpected answer {other:?}"
                    )))
                }
                Err(failure) => return Ok(Err(failure)),
            }
        }
        if pending.is_empty() {
            return Ok(Ok(Response::Actors(views)));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(Err(Failure::new(
                FailureKind::Timeout,
                format!(
                    "not running after {}: {}",
                    humantime::format_duration(Duration::from_millis(timeout_ms)),
                    pending.join(", ")
                ),
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_ask(
    agent: &ureq::Agent,
    base: &str,
    api: &str,
    token: &str,
    request: Request,
) -> Result<Result<Response, Failure>, ClientError> {
    let actor_url = |path: &str, suffix: &str| {
        format!(
            "{base}{api}/actors/{}{suffix}",
            path.trim_start_matches('/')
        )
    };
    // `/` is warden's own deploy, under /api/v1/admin.
    let deploy_url = |path: &str, suffix: &str| {
        if path.trim_matches('/').is_empty() {
            format!("{base}/api/v1/admin{suffix}")
        } else {
            actor_url(path, suffix)
        }
    };
    let relayed = matches!(
        request,
        Request::Status
            | Request::Tree
            | Request::Actor { .. }
            | Request::Start { .. }
            | Request::Stop { .. }
            | Request::Restart { .. }
            | Request::Logs { .. }
            | Request::Wait { .. }
    );
    if api != "/api/v1" && !relayed {
        return Ok(Err(Failure::new(
            FailureKind::BadRequest,
            "only status, tree, start, stop, restart, logs and wait are relayed to a spoke",
        )));
    }
    let (method, url) = match &request {
        Request::Health => ("GET", format!("{base}/healthz")),
        Request::Ready => ("GET", format!("{base}/readyz")),
        Request::Status => ("GET", format!("{base}{api}/actors")),
        Request::Tree => ("GET", format!("{base}{api}/tree")),
        Request::Actor { path } => ("GET", actor_url(path, "")),
        Request::Start { path } => ("POST", actor_url(path, "/start")),
        Request::Stop { path } => ("POST", actor_url(path, "/stop")),
        Request::Restart { path } => ("POST", actor_url(path, "/restart")),
        Request::Logs { path, tail } => ("GET", actor_url(path, &format!("/logs?tail={tail}"))),
        Request::Reload => ("POST", format!("{base}/api/v1/reload")),
        Request::Call { path, .. } => ("POST", actor_url(path, "/call")),
        Request::Acquire { .. }
        | Request::Release { .. }
        | Request::Rollout { .. }
        | Request::VerifyToken { .. }
        | Request::Activate => {
            return Ok(Err(Failure::new(
                FailureKind::BadRequest,
                "pool sessions are not a ctl verb: use the HTTP API",
            )))
        }
        Request::Drain => ("POST", format!("{base}/api/v1/drain")),
        Request::Reexec => ("POST", format!("{base}/api/v1/admin/reexec")),
        Request::Deploy { path } => ("POST", deploy_url(path, "/deploy")),
        Request::Deploys { path } => ("GET", deploy_url(path, "/deploys")),
        Request::ConfirmDeploy { path, id } => {
            ("POST", deploy_url(path, &format!("/deploys/{id}/confirm")))
        }
        Request::Metrics => ("GET", format!("{base}/metrics")),
        Request::Wait { paths, timeout_ms } => {
            return http_wait(agent, base, api, token, paths, *timeout_ms)
        }
    };
    let auth = format!("Bearer {token}");
    let connect = |e: ureq::Error| ClientError::Transport(describe_transport_error(base, &e));
    let mut response = if method == "GET" {
        agent
            .get(&url)
            .header("Authorization", &auth)
            .call()
            .map_err(connect)?
    } else {
        agent
            .post(&url)
            .header("Authorization", &auth)
            .send_empty()
            .map_err(connect)?
    };
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_vec()
        .map_err(|e| ClientError::Protocol(format!("cannot read the answer: {e}")))?;
    let protocol =
        |e: serde_json::Error| ClientError::Protocol(format!("unexpected answer from {url}: {e}"));
    if status >= 400 && !matches!(request, Request::Health | Request::Ready) {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        let kind = match status {
            400 => FailureKind::BadRequest,
            401 | 403 => FailureKind::Unauthorized,
            404 => FailureKind::NotFound,
            409 => FailureKind::Conflict,
            413 => FailureKind::TooLarge,
            503 => FailureKind::Unavailable,
            504 => FailureKind::Timeout,
            _ => FailureKind::Internal,
        };
        return Ok(Err(Failure::new(kind, message)));
    }
    let response = match request {
        Request::Health => {
            let v: serde_json::Value = serde_json::from_slice(&body).map_err(protocol)?;
            Response::Health(if v["status"] == "draining" {
                super::protocol::Health::Draining
            } else {
                super::protocol::Health::Ok
            })
        }
        Request::Ready => {
            let v: serde_json::Value = serde_json::from_slice(&body).map_err(protocol)?;
            let waiting = serde_json::from_value(v["waiting"].clone()).unwrap_or_default();
            Response::Ready {
                ready: status == 200,
                waiting,
            }
        }
        Request::Status => {
            Response::Actors(serde_json::from_slice::<Vec<ActorView>>(&body).map_err(protocol)?)
        }
        Request::Tree => Response::Tree(Box::new(
            serde_json::from_slice::<TreeNode>(&body).map_err(protocol)?,
        )),
        Request::Actor { .. }
        | Request::Start { .. }
        | Request::Stop { .. }
        | Request::Restart { .. } => Response::Actor(Box::new(
            serde_json::from_slice::<ActorView>(&body).map_err(protocol)?,
        )),
        Request::Logs { .. } => Response::Logs(body),
        Request::Reload => Response::Reloaded(serde_json::from_slice(&body).map_err(protocol)?),
        Request::Drain => Response::Draining,
        Request::Reexec => {
            let v: serde_json::Value = serde_json::from_slice(&body).map_err(protocol)?;
            let text = |key: &str| v[key].as_str().unwrap_or_default().to_owned();
            Response::Reexecuting {
                binary: text("binary"),
                version: text("version"),
            }
        }
        Request::Metrics => Response::Metrics(String::from_utf8_lossy(&body).into_owned()),
        Request::Deploy { .. } => {
            Response::DeployAccepted(serde_json::from_slice(&body).map_err(protocol)?)
        }
        Request::Deploys { .. } => {
            Response::DeployList(serde_json::from_slice(&body).map_err(protocol)?)
        }
        Request::ConfirmDeploy { .. } => {
            Response::DeployConfirmed(serde_json::from_slice(&body).map_err(protocol)?)
        }
        Request::Call { .. } => Response::Reply(serde_json::from_slice(&body).map_err(protocol)?),
        Request::Acquire { .. }
        | Request::Release { .. }
        | Request::Rollout { .. }
        | Request::VerifyToken { .. }
        | Request::Activate => {
            return Err(ClientError::Protocol(
                "pool requests are not asked over HTTP by ctl".to_owned(),
            ))
        }
        // Answered by `http_wait` before any request is sent.
        Request::Wait { .. } => {
            return Err(ClientError::Protocol(
                "wait is polled, not asked".to_owned(),
            ))
        }
    };
    Ok(Ok(response))
}
