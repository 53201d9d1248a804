//! The hub's HTTP routes on the admin listener. Every route but `connect` needs the
//! admin bearer token; `connect` is authenticated by the spoke's hello instead.
//! Relayed routes answer exactly what the spoke's own API answered (status, type, body);
//! 404 unknown spoke, 503 not connected, 504 after [`super::registry::VERB_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use warden_actors::link::protocol::{self, Answer, Body, Verb};

use super::registry::RelayError;
use super::Hub;
use crate::admin::{AdminState, ApiError, Authorized};

/// Registers the hub's routes (they answer 404 on a warden that is no hub).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/hub/connect", web::get().to(connect))
        .route("/api/v1/hub/tokens", web::post().to(create_token))
        .route("/api/v1/hub/tokens", web::get().to(list_tokens))
        .route("/api/v1/hub/tokens/{id}", web::delete().to(revoke_token))
        .route("/api/v1/spokes", web::get().to(list_spokes))
        .route("/api/v1/spokes/{name}", web::delete().to(revoke_spoke))
        .route("/api/v1/spokes/{name}/tree", web::get().to(relay_tree))
        .route("/api/v1/spokes/{name}/actors", web::get().to(relay_actors))
        .route(
            "/api/v1/spokes/{name}/actors/{path:.*}",
            web::get().to(relay_actor_get),
        )
        .route(
            "/api/v1/spokes/{name}/actors/{path:.*}",
            web::post().to(relay_actor_post),
        );
}

fn hub(state: &AdminState) -> Result<Arc<Hub>, ApiError> {
    state.hub.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "this warden is not a hub (set [hub] enabled = true)",
        )
    })
}

async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AdminState>,
) -> actix_web::Result<HttpResponse> {
    let hub = hub(&state)?;
    super::connect::upgrade(hub, &req, body).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
    #[serde(default, with = "humantime_serde")]
    ttl: Option<Duration>,
}

/// Longest join-token lifetime accepted (a year).
const MAX_TOKEN_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

async fn persist(hub: &Hub) -> Result<(), ApiError> {
    let store = hub.store.clone();
    match web::block(move || store.persist()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
    }
}

async fn create_token(
    _: Authorized,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let hub = hub(&state)?;
    let body = crate::admin::read_body(payload).await?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let request: TokenBody = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "token body: {e} (expected {{\"name\": \"edge-1\", \"ttl\": \"1h\"}})"
        ))
    })?;
    if !protocol::valid_name(&request.name) {
        return Err(bad(format!(
            "invalid spoke name {:?}: expected 1-64 of [A-Za-z0-9_.-]",
            request.name
        )));
    }
    let ttl = request.ttl.unwrap_or(hub.token_ttl);
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(bad(format!(
            "ttl must be more than 0 and at most {}",
            humantime::format_duration(MAX_TOKEN_TTL)
        )));
    }
    let token = hub
        .store
        .create_token(&request.name, ttl)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    persist(&hub).await?;
    Ok(HttpResponse::Created().json(token))
}

async fn list_tokens(
    _: Authorized,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(hub(&state)?.store.tokens()))
}

async fn revoke_token(
    _: Authorized,
    id: web::Path<String>,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let hub = hub(&state)?;
    if !hub.store.revoke_token(&id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no outstanding join token {:?}", id.as_str()),
        ));
    }
    persist(&hub).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn list_spokes(
    _: Authorized,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let hub = hub(&state)?;
    let spokes: Vec<_> = hub
        .store
        .spokes()
        .into_iter()
        .map(|(name, enrolled_at)| {
            let live = hub.registry.live(&name);
            serde_json::json!({
                "name": name,
                "connected": live.is_some(),
                "enrolled_at": enrolled_at,
                "connected_at": live.as_ref().map(|l| l.connected_at),
                "version": live.as_ref().map(|l| l.version),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(spokes))
}

async fn revoke_spoke(
    _: Authorized,
    name: web::Path<String>,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let hub = hub(&state)?;
    // The live connection is closed first, at once; the file follows.
    let enrolled = hub.store.revoke_spoke(&name);
    let connected = hub.registry.disconnect(&name, "the spoke was revoked");
    if !enrolled && !connected {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no spoke {name:?}"),
        ));
    }
    tracing::info!(spoke = %name, "spoke revoked");
    persist(&hub).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Sends `verb` to spoke `name` and answers what it answered.
async fn relay(state: &AdminState, name: &str, verb: Verb) -> Result<HttpResponse, ApiError> {
    relay_answer(state, name, verb).await.map(respond)
}

/// The spoke's answer to `verb`, or the hub's own error (no such spoke, not connected,
/// busy, timeout).
async fn relay_answer(state: &AdminState, name: &str, verb: Verb) -> Result<Answer, ApiError> {
    let hub = hub(state)?;
    let no_spoke = || ApiError::new(StatusCode::NOT_FOUND, format!("no spoke {name:?}"));
    // A revoked spoke is no spoke, even while its connection is being closed.
    if !hub.store.is_enrolled(name) {
        return Err(no_spoke());
    }
    match hub.registry.call(name, verb).await {
        Ok(answer) => Ok(answer),
        Err(RelayError::NotConnected) if !hub.store.is_enrolled(name) => Err(no_spoke()),
        Err(RelayError::NotConnected) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "spoke not connected",
        )),
        Err(e @ (RelayError::Busy | RelayError::Dropped)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )),
        Err(e @ RelayError::Timeout(_)) => {
            Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, e.to_string()))
        }
    }
}

fn respond(answer: Answer) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = match answer.body_kind {
        Body::Json => "application/json",
        Body::Text => "text/plain; charset=utf-8",
    };
    HttpResponse::build(status)
        .content_type(content_type)
        .body(answer.body)
}

async fn relay_tree(
    _: Authorized,
    name: web::Path<String>,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    relay(&state, &name, Verb::Tree).await
}

async fn relay_actors(
    _: Authorized,
    name: web::Path<String>,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    relay(&state, &name, Verb::Actors).await
}

/// `GET .../actors/{path}` and `.../actors/{path}/logs?tail=N`, read as the spoke's own
/// API reads them: the actor at the whole path first (so an actor named `logs` is an
/// actor), and only when there is none, the logs of the path before `/logs`.
async fn relay_actor_get(
    _: Authorized,
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let name = req.match_info().query("name").to_owned();
    let raw = req.match_info().query("path").trim_matches('/');
    if raw.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no actor given"));
    }
    let actor = relay_answer(
        &state,
        &name,
        Verb::Actor {
            path: format!("/{raw}"),
        },
    )
    .await?;
    let target = match raw.strip_suffix("/logs") {
        Some(target) if !target.is_empty() && actor.status == StatusCode::NOT_FOUND.as_u16() => {
            target
        }
        _ => return Ok(respond(actor)),
    };
    // Held to the same rule as the local route (whole number, at most MAX_TAIL).
    let tail = u32::try_from(crate::admin::parse_tail(req.query_string())?)
        .unwrap_or_else(|_| unreachable!("parse_tail allows at most MAX_TAIL"));
    let verb = Verb::Logs {
        path: format!("/{target}"),
        tail,
    };
    relay(&state, &name, verb).await
}

/// `POST .../actors/{path}/start|stop|restart`.
async fn relay_actor_post(
    _: Authorized,
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let name = req.match_info().query("name").to_owned();
    let raw = req.match_info().query("path").trim_matches('/');
    let (target, action) = raw.rsplit_once('/').unwrap_or(("", raw));
    if target.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no actor given"));
    }
    let path = format!("/{target}");
    let verb = match action {
        "start" => Verb::Start { path },
        "stop" => Verb::Stop { path },
        "restart" => Verb::Restart { path },
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such relayed action {other:?}: expected start, stop or restart"),
            ))
        }
    };
    relay(&state, &name, verb).await
}
