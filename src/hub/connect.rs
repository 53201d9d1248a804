//! `GET /api/v1/hub/connect`: a spoke's WebSocket. The first message must be a binary
//! hello (at most [`MAX_HELLO_BYTES`], within [`CONNECT_TIMEOUT`]); the hub answers with
//! a welcome (and a credential at enrollment) or a terminal refusal. Then verbs go down
//! the socket and replies come back by id. A bad message closes this connection only;
//! a revocation closes it at once; a peer silent past [`PEER_DEADLINE`] is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Session};
use warden_actors::link::protocol::{
    self, HubFrame, SpokeFrame, MAX_HELLO_BYTES, MAX_MESSAGE_BYTES, PROTOCOL_VERSION,
};
use warden_actors::link::{CONNECT_TIMEOUT, PEER_DEADLINE, PING_EVERY, WRITE_DEADLINE};

use super::store::Refusal;
use super::Hub;

/// Upgrades the request and runs the connection on this worker.
pub(super) async fn upgrade(
    hub: Arc<Hub>,
    req: &HttpRequest,
    body: web::Payload,
) -> actix_web::Result<HttpResponse> {
    use actix_web::FromRequest as _;
    // Frames are limited as their headers arrive: the hello's size until it is accepted.
    let limit = Arc::new(AtomicUsize::new(MAX_HELLO_BYTES + 64));
    let guarded: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<web::Bytes, actix_web::error::PayloadError>>>,
    > = Box::pin(super::frame_guard::FrameGuard::new(
        body.into_inner(),
        limit.clone(),
    ));
    let mut guarded = actix_web::dev::Payload::from(guarded);
    let body = web::Payload::from_request(req, &mut guarded).await?;
    let (response, session, stream) = actix_ws::handle(req, body)?;
    let stream = stream
        .max_frame_size(MAX_MESSAGE_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE_BYTES);
    let peer = req
        .peer_addr()
        .map_or_else(|| "?".to_owned(), |a| a.to_string());
    actix_rt::spawn(async move {
        if let Err(why) = run(&hub, session, stream, &limit).await {
            tracing::info!(%peer, %why, "spoke connection closed");
        }
    });
    Ok(response)
}

fn close_reason(code: CloseCode, why: &str) -> Option<CloseReason> {
    // A close frame's payload is at most 125 bytes; keep the reason well inside it.
    let mut description = why.to_owned();
    if description.len() > 100 {
        let mut cut = 100;
        while !description.is_char_boundary(cut) {
            cut -= 1;
        }
        description.truncate(cut);
    }
    Some(CloseReason {
        code,
        description: Some(description),
    })
}

async fn write(session: &mut Session, frame: &HubFrame) -> Result<(), String> {
    match tokio::time::timeout(WRITE_DEADLINE, session.binary(protocol::encode(frame))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("the spoke's socket is closed".to_owned()),
        Err(_) => Err(format!("a write to the spoke took over {WRITE_DEADLINE:?}")),
    }
}

/// Refuses the hello with `refusal` and closes.
async fn refuse(mut session: Session, name: &str, refusal: &str) -> Result<(), String> {
    tracing::warn!(spoke = %name, reason = %refusal, "refused a spoke");
    let _ = write(
        &mut session,
        &HubFrame::Refused {
            reason: refusal.to_owned(),
        },
    )
    .await;
    let _ = session
        .close(close_reason(CloseCode::Policy, refusal))
        .await;
    Err(format!("refused {name}: {refusal}"))
}

/// Closes with a protocol error.
async fn protocol_error(session: Session, why: String) -> Result<(), String> {
    let _ = session.close(close_reason(CloseCode::Protocol, &why)).await;
    Err(why)
}

async fn run(
    hub: &Hub,
    mut session: Session,
    mut stream: actix_ws::AggregatedMessageStream,
    limit: &AtomicUsize,
) -> Result<(), String> {
    // The hello: the first message, binary, small, in time.
    let first = tokio::time::timeout(CONNECT_TIMEOUT, stream.recv()).await;
    let hello = match first {
        Err(_) => return protocol_error(session, "no hello in time".into()).await,
        Ok(None) => return Err("closed before the hello".into()),
        Ok(Some(Err(e))) => return protocol_error(session, format!("bad hello: {e}")).await,
        Ok(Some(Ok(AggregatedMessage::Binary(bytes)))) => {
            match protocol::decode::<SpokeFrame>(&bytes, MAX_HELLO_BYTES) {
                Ok(frame) => frame,
                Err(e) => return protocol_error(session, format!("bad hello: {e}")).await,
            }
        }
        Ok(Some(Ok(_))) => {
            return protocol_error(session, "the first message must be a binary hello".into()).await
        }
    };
    let SpokeFrame::Hello {
        version,
        name,
        auth,
    } = hello
    else {
        return protocol_error(session, "the first message must be a hello".into()).await;
    };
    if !protocol::valid_name(&name) {
        return refuse(
            session,
            "?",
            "invalid spoke name: expected 1-64 of [A-Za-z0-9_.-]",
        )
        .await;
    }
    if version != PROTOCOL_VERSION {
        let why = format!(
            "protocol version {version} is not supported (this hub speaks {PROTOCOL_VERSION})"
        );
        return refuse(session, &name, &why).await;
    }
    // `presented` is what the connection proves itself with from now on; `handed` is
    // the credential to give the spoke at enrollment.
    let (presented, handed) = match auth {
        protocol::Auth::Join { token } => match hub.store.enroll(&name, &token) {
            Ok(credential) => {
                // Durable before the spoke hears of it: a hub that dies now still knows
                // the credential the spoke will present.
                let store = hub.store.clone();
                let saved = web::block(move || store.persist()).await;
                if !matches!(saved, Ok(Ok(()))) {
                    hub.store.revoke_spoke(&name);
                    return refuse(session, &name, "the hub cannot save the enrollment").await;
                }
                tracing::info!(spoke = %name, "spoke enrolled");
                (credential.clone(), Some(credential))
            }
            Err(refusal @ (Refusal::Expired | Refusal::UnknownToken)) => {
                // An expired token is dropped from the store: keep the file in step.
                let store = hub.store.clone();
                let _ = web::block(move || store.persist()).await;
                return refuse(session, &name, &refusal.to_string()).await;
            }
            Err(refusal) => return refuse(session, &name, &refusal.to_string()).await,
        },
        protocol::Auth::Credential { credential } => {
            match hub.store.authenticate(&name, &credential) {
                Ok(()) => (credential, None),
                Err(refusal) => return refuse(session, &name, &refusal.to_string()).await,
            }
        }
    };
    // Checked again once registered: a revocation since the check above is not missed.
    let mut registered = match hub.admit(&name, &presented, version) {
        Ok(registered) => registered,
        Err(refusal) => return refuse(session, &name, &refusal.to_string()).await,
    };
    limit.store(MAX_MESSAGE_BYTES, Ordering::Relaxed);
    let generation = registered.generation;
    let result = serve(&mut session, &mut stream, &mut registered, handed).await;
    hub.registry.remove(&name, generation);
    registered.pending.fail_all();
    let why = match &result {
        Ok(()) => "closed".to_owned(),
        Err(e) => e.clone(),
    };
    let _ = session.close(close_reason(CloseCode::Away, &why)).await;
    tracing::info!(spoke = %name, generation, %why, "spoke disconnected");
    Ok(())
}

async fn serve(
    session: &mut Session,
    stream: &mut actix_ws::AggregatedMessageStream,
    registered: &mut super::registry::Registered,
    credential: Option<String>,
) -> Result<(), String> {
    write(session, &HubFrame::Welcome { credential }).await?;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            biased;
            changed = registered.close.changed() => {
                let reason = registered.close.borrow().clone();
                return Err(match (changed, reason) {
                    (Ok(()), Some(reason)) => reason,
                    _ => "the hub is stopping".to_owned(),
                });
            }
            message = stream.recv() => {
                last_heard = tokio::time::Instant::now();
                match message {
                    Some(Ok(AggregatedMessage::Binary(bytes))) => {
                        match protocol::decode::<SpokeFrame>(&bytes, MAX_MESSAGE_BYTES) {
                            Ok(SpokeFrame::Reply { id, answer }) => registered.pending.complete(id, answer),
                            Ok(SpokeFrame::Hello { .. }) => return Err("a second hello".into()),
                            Err(e) => return Err(format!("bad message: {e}")),
                        }
                    }
                    Some(Ok(AggregatedMessage::Ping(data))) => {
                        let pong = tokio::time::timeout(WRITE_DEADLINE, session.pong(&data)).await;
                        if !matches!(pong, Ok(Ok(()))) {
                            return Err("cannot answer the spoke's ping".into());
                        }
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Text(_))) => return Err("text messages are not part of the protocol".into()),
                    Some(Ok(AggregatedMessage::Close(_))) | None => return Ok(()),
                    Some(Err(e)) => return Err(format!("protocol error: {e}")),
                }
            }
            Some(outbound) = registered.queue.recv() => {
                write(session, &HubFrame::Request { id: outbound.id, verb: outbound.verb }).await?;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > PEER_DEADLINE {
                    return Err(format!("the spoke was silent for {PEER_DEADLINE:?}"));
                }
                let ping = tokio::time::timeout(WRITE_DEADLINE, session.ping(b"")).await;
                if !matches!(ping, Ok(Ok(()))) {
                    return Err("cannot ping the spoke".into());
                }
            }
        }
    }
}
