//! The spoke's link to its hub: the child `/_hub` of kind `link`. One run is one
//! WebSocket connection: dial the hub (awc), enroll with the join token or present the
//! saved credential, then serve the hub's verbs against the local tree until the
//! connection drops. A drop is an abnormal exit, so the supervisor's own backoff (with
//! jitter, `next_restart_at` visible) paces the reconnects; a refusal by the hub is
//! [`Exit::Refused`]: `failed`, with the hub's reason as `failed_reason`.

pub mod policy;
pub mod protocol;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{mpsc, oneshot, Semaphore};
use warden_supervisors::{ActorKind, ChildFactory, Exit, RunningChild, StartContext, StopMode};

use self::policy::SpokePolicy;
use self::protocol::{Answer, Auth, HubFrame, SpokeFrame, Verb};

/// How long dialing the hub and its answer to the hello may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often each side pings the other.
pub const PING_EVERY: Duration = Duration::from_secs(5);
/// A peer silent this long (no message, ping or pong) is dead: the connection is dropped.
pub const PEER_DEADLINE: Duration = Duration::from_secs(15);
/// Every write to the hub must be done within this.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// Verbs carried out at once; past it the hub hears 503 at once.
const MAX_VERBS_IN_FLIGHT: usize = 64;

/// Carries out a verb against the local tree, the way the admin API would answer it.
pub trait LocalVerbs: Send + Sync + 'static {
    /// Serves `verb` (already checked against `policy`; listings are pruned to it here).
    fn serve(&self, verb: Verb, policy: &SpokePolicy) -> LocalBoxFuture<'static, Answer>;
}

/// A spoke's `[spoke]` settings, as the link needs them.
#[derive(Clone)]
pub struct LinkSpec {
    /// `ws://` or `wss://` URL of the hub's connect route.
    pub hub: String,
    /// The spoke's name.
    pub name: String,
    /// Read at the first enrollment only.
    pub join_token_file: Option<PathBuf>,
    /// Where the credential is kept (0600).
    pub credential_file: PathBuf,
    /// The CAs trusted for `wss://` (`None`: the Mozilla roots compiled in).
    pub ca_roots: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
    /// What the hub may do.
    pub policy: SpokePolicy,
    /// Serves the verbs.
    pub verbs: Arc<dyn LocalVerbs>,
}

impl fmt::Debug for LinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkSpec")
            .field("hub", &self.hub)
            .field("name", &self.name)
            .field("credential_file", &self.credential_file)
            .field("ca_roots", &self.ca_roots.as_ref().map(Vec::len))
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Starts runs of the link, each on the link's own thread (an actix arbiter started with
/// the first run): dialing, TLS, encoding answers and writing to the hub never run on the
/// supervision thread.
#[derive(Debug)]
pub struct LinkFactory {
    spec: Arc<LinkSpec>,
    thread: std::sync::Mutex<Option<actix_rt::ArbiterHandle>>,
}

impl LinkFactory {
    /// A factory for `spec`.
    pub fn new(spec: LinkSpec) -> Self {
        Self {
            spec: Arc::new(spec),
            thread: std::sync::Mutex::new(None),
        }
    }

    /// The link's thread, started on first use (inside the running System).
    fn thread(&self) -> actix_rt::ArbiterHandle {
        let mut thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        thread
            .get_or_insert_with(|| actix_rt::Arbiter::new().handle())
            .clone()
    }
}

impl ChildFactory for LinkFactory {
    fn kind(&self) -> ActorKind {
        ActorKind::Link
    }

    fn start(&self, cx: StartContext) -> Result<RunningChild, String> {
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let (stop_tx, stop_rx) = oneshot::channel::<StopMode>();
        let spec = self.spec.clone();
        let path = cx.path.to_string();
        let (exit_tx, exit_rx) = oneshot::channel::<Exit>();
        let started = self.thread().spawn_fn(move || {
            actix_rt::spawn(async move {
                let exit = run(&spec, ready_tx, stop_rx).await;
                match &exit {
                    Exit::Refused(reason) => {
                        tracing::error!(actor = %path, hub = %spec.hub, %reason, "the hub refused this spoke: not retrying")
                    }
                    Exit::Normal => tracing::info!(actor = %path, "link stopped"),
                    other => {
                        tracing::warn!(actor = %path, hub = %spec.hub, reason = %other, "link to the hub lost")
                    }
                }
                let _ = exit_tx.send(exit);
            });
        });
        if !started {
            return Err("the link's thread is gone".to_owned());
        }
        let exit = async move {
            exit_rx
                .await
                .unwrap_or_else(|_| Exit::Fatal("the link's task ended without an exit".to_owned()))
        };
        // Ready once the hub welcomes the spoke. A run that ends before never becomes
        // ready: its exit (a refusal, or why the hub could not be reached) is what the
        // supervisor records, not a ready failure that would hide it.
        let ready = async move {
            if ready_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
            Ok(())
        };
        Ok(RunningChild {
            pid: None,
            ready: Some(Box::pin(ready)),
            exit: Box::pin(exit),
            stop: stop_tx,
            adopted: false,
            containment: None,
        })
    }
}

/// Runs `f` off the supervision thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

/// What the spoke presents: its credential if it has one, else the join token.
async fn proof(spec: &LinkSpec) -> Result<Auth, Exit> {
    let credential_file = spec.credential_file.clone();
    match blocking(move || std::fs::read_to_string(credential_file)).await {
        Ok(text) if !text.trim().is_empty() => {
            return Ok(Auth::Credential {
                credential: text.trim().to_owned(),
            })
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Exit::Fatal(format!(
                "cannot read the credential file {}: {e}",
                spec.credential_file.display()
            )))
        }
    }
    let Some(token_file) = spec.join_token_file.clone() else {
        return Err(Exit::Refused(format!(
            "no credential in {} and no join_token_file to enroll with",
            spec.credential_file.display()
        )));
    };
    let shown = token_file.display().to_string();
    match blocking(move || std::fs::read_to_string(token_file)).await {
        Ok(text) if !text.trim().is_empty() => Ok(Auth::Join {
            token: text.trim().to_owned(),
        }),
        Ok(_) => Err(Exit::Refused(format!(
            "the join token file {shown} is empty"
        ))),
        Err(e) => Err(Exit::Refused(format!(
            "no credential yet and the join token file {shown} cannot be read: {e}"
        ))),
    }
}

/// The TLS settings of `wss://` (and of the notifiers' `https://`, with `None`): rustls with ring, HTTP/1.1 only, trusting `ca_roots`
/// (`[spoke] ca_file`) or else the Mozilla roots.
pub(crate) fn tls_config(
    ca_roots: Option<&[rustls::pki_types::CertificateDer<'static>]>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let roots = match ca_roots {
        Some(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs {
                roots
                    .add(cert.clone())
                    .map_err(|e| rustls::Error::General(format!("ca_file: {e}")))?;
            }
            roots
        }
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One run: connect, enroll, serve until the connection ends or a stop is asked.
async fn run(
    spec: &LinkSpec,
    ready: oneshot::Sender<()>,
    mut stop: oneshot::Receiver<StopMode>,
) -> Exit {
    let auth = match proof(spec).await {
        Ok(auth) => auth,
        Err(exit) => return exit,
    };
    let enrolling = matches!(auth, Auth::Join { .. });
    let connector = match tls_config(spec.ca_roots.as_deref()) {
        Ok(config) => awc::Connector::new().rustls_0_23(config),
        Err(e) => return Exit::Fatal(format!("cannot set up TLS: {e}")),
    };
    // No `max_http_version` here: it would replace the TLS settings (ALPN already says
    // HTTP/1.1).
    let client = awc::Client::builder()
        .timeout(CONNECT_TIMEOUT)
        .connector(connector)
        .finish();
    let connect = client
        .ws(spec.hub.as_str())
        .max_frame_size(protocol::MAX_MESSAGE_BYTES)
        .connect();
    let mut framed = tokio::select! {
        connected = tokio::time::timeout(CONNECT_TIMEOUT, connect) => match connected {
            Ok(Ok((_, framed))) => framed,
            Ok(Err(e)) => return Exit::Fatal(format!("cannot reach the hub at {}: {e}", spec.hub)),
            Err(_) => return Exit::Fatal(format!("the hub at {} did not answer within {CONNECT_TIMEOUT:?}", spec.hub)),
        },
        _ = &mut stop => return Exit::Normal,
    };
    let hello = SpokeFrame::Hello {
        version: protocol::PROTOCOL_VERSION,
        name: spec.name.clone(),
        auth,
    };
    let sent = tokio::time::timeout(
        WRITE_DEADLINE,
        framed.send(awc::ws::Message::Binary(protocol::encode(&hello).into())),
    )
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return Exit::Fatal("the hub closed the connection before the hello".to_owned());
    }
    // The hub's one answer to the hello (a stop meanwhile ends the run at once).
    let answer = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            match framed.next().await {
                Some(Ok(awc::ws::Frame::Binary(bytes))) => {
                    return protocol::decode::<HubFrame>(&bytes, protocol::MAX_MESSAGE_BYTES)
                        .map_err(|e| e.to_string())
                }
                Some(Ok(awc::ws::Frame::Ping(_) | awc::ws::Frame::Pong(_))) => continue,
                Some(Ok(awc::ws::Frame::Close(reason))) => {
                    return Err(format!("the hub closed the connection: {reason:?}"))
                }
                Some(Ok(other)) => return Err(format!("unexpected message {other:?}")),
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the hub closed the connection".to_owned()),
            }
        }
    });
    let answer = tokio::select! {
        answer = answer => answer,
        _ = &mut stop => return Exit::Normal,
    };
    match answer {
        Ok(Ok(HubFrame::Welcome { credential })) => {
            if let Some(credential) = credential {
                let file = spec.credential_file.clone();
                if let Err(e) =
                    blocking(move || crate::write_durably(&file, credential.trim())).await
                {
                    return Exit::Refused(format!(
                        "enrolled, but cannot save the credential to {}: {e}",
                        spec.credential_file.display()
                    ));
                }
                tracing::info!(hub = %spec.hub, name = %spec.name, "enrolled with the hub");
            } else if enrolling {
                return Exit::Refused("the hub welcomed an enrollment without a credential".into());
            }
        }
        Ok(Ok(HubFrame::Refused { reason })) => return Exit::Refused(format!("hub: {reason}")),
        Ok(Ok(other)) => return Exit::Fatal(format!("the hub answered the hello with {other:?}")),
        Ok(Err(e)) => return Exit::Fatal(format!("no welcome from the hub: {e}")),
        Err(_) => {
            return Exit::Fatal(format!(
                "the hub did not answer the hello within {CONNECT_TIMEOUT:?}"
            ))
        }
    }
    let _ = ready.send(());
    serve(spec, framed, stop).await
}

type HubSocket = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

/// Writes one message within [`WRITE_DEADLINE`]; false if it could not.
async fn send(framed: &mut HubSocket, message: awc::ws::Message) -> bool {
    matches!(
        tokio::time::timeout(WRITE_DEADLINE, framed.send(message)).await,
        Ok(Ok(()))
    )
}

/// Serves the hub's requests until the connection ends.
async fn serve(
    spec: &LinkSpec,
    mut framed: HubSocket,
    mut stop: oneshot::Receiver<StopMode>,
) -> Exit {
    let (reply_tx, mut reply_rx) = mpsc::channel::<SpokeFrame>(MAX_VERBS_IN_FLIGHT);
    let permits = Arc::new(Semaphore::new(MAX_VERBS_IN_FLIGHT));
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = &mut stop => {
                let _ = send(&mut framed, awc::ws::Message::Close(Some(awc::ws::CloseCode::Away.into()))).await;
                return Exit::Normal;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > PEER_DEADLINE {
                    return Exit::Fatal(format!("the hub was silent for {PEER_DEADLINE:?}"));
                }
                if !send(&mut framed, awc::ws::Message::Ping(Default::default())).await {
                    return Exit::Fatal("cannot write to the hub".to_owned());
                }
            }
            Some(reply) = reply_rx.recv() => {
                let bytes = protocol::encode(&reply);
                if !send(&mut framed, awc::ws::Message::Binary(bytes.into())).await {
                    return Exit::Fatal("cannot write to the hub".to_owned());
                }
            }
            frame = framed.next() => {
                last_heard = tokio::time::Instant::now();
                let bytes = match frame {
                    Some(Ok(awc::ws::Frame::Binary(bytes))) => bytes,
                    Some(Ok(awc::ws::Frame::Ping(data))) => {
                        if !send(&mut framed, awc::ws::Message::Pong(data)).await {
                            return Exit::Fatal("cannot write to the hub".to_owned());
                        }
                        continue;
                    }
                    Some(Ok(awc::ws::Frame::Pong(_))) => continue,
                    Some(Ok(awc::ws::Frame::Close(reason))) => {
                        let why = reason
                            .and_then(|r| r.description)
                            .unwrap_or_else(|| "no reason given".to_owned());
                        return Exit::Fatal(format!("the hub closed the connection: {why}"));
                    }
                    Some(Ok(other)) => {
                        return Exit::Fatal(format!("unexpected message from the hub: {other:?}"));
                    }
                    Some(Err(e)) => return Exit::Fatal(format!("connection to the hub failed: {e}")),
                    None => return Exit::Fatal("the hub closed the connection".to_owned()),
                };
                let (id, verb) = match protocol::decode::<HubFrame>(&bytes, protocol::MAX_MESSAGE_BYTES) {
                    Ok(HubFrame::Request { id, verb }) => (id, verb),
                    Ok(other) => return Exit::Fatal(format!("unexpected frame from the hub: {other:?}")),
                    Err(e) => return Exit::Fatal(format!("bad frame from the hub: {e}")),
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    let busy = Answer::error(503, "the spoke is busy: too many verbs in flight");
                    let _ = reply_tx.try_send(SpokeFrame::Reply { id, answer: busy });
                    continue;
                };
                let answer = match spec.policy.check(&verb) {
                    Err(why) => {
                        tracing::warn!(verb = verb.name(), path = ?verb.path(), %why, "refused a verb from the hub");
                        Box::pin(futures_util::future::ready(Answer::error(403, &why)))
                    }
                    Ok(()) => spec.verbs.serve(verb, &spec.policy),
                };
                let reply_tx = reply_tx.clone();
                actix_rt::spawn(async move {
                    let answer = answer.await;
                    let _ = reply_tx.send(SpokeFrame::Reply { id, answer }).await;
                    drop(permit);
                });
            }
        }
    }
}
