//! The actor routes: `/api/v1/tree`, `/api/v1/actors` (cached while the tree does not
//! change), one actor, its logs, and start/stop/restart/call.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{ask, json, read_body, AdminState, ApiError, Authorized};
use crate::control::protocol::{Request, Response, MAX_TAIL};

pub(super) async fn tree(
    _: Authorized,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    json(ask(&state, Request::Tree).await?)
}

pub(super) async fn actors(
    _: Authorized,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let version = state.tree.version();
    let cached = state
        .listing
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
        .filter(|(v, _)| *v == version)
        .map(|(_, body)| body.clone());
    let body = match cached {
        Some(body) => body,
        None => {
            let Response::Actors(views) = ask(&state, Request::Status).await? else {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "unexpected answer",
                ));
            };
            let body = web::Bytes::from(serde_json::to_vec(&views).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot encode: {e}"),
                )
            })?);
            // Labelled with the version read before the snapshot: if the tree changed
            // meanwhile, the next request sees a newer version and rebuilds.
            *state
                .listing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((version, body.clone()));
            body
        }
    };
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    tail: Option<String>,
}

const DEFAULT_TAIL: usize = 100;

/// `GET /api/v1/actors/{path}` and `GET /api/v1/actors/{path}/logs`.
pub(super) async fn actor_get(
    _: Authorized,
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let path = req.match_info().query("path").trim_matches('/').to_owned();
    match ask(&state, Request::Actor { path: path.clone() }).await {
        Ok(response) => json(response),
        Err(not_found) if not_found.status == StatusCode::NOT_FOUND => {
            if let Some(request) = super::deploys::get_request(&path) {
                return json(ask(&state, request).await?);
            }
            match path.strip_suffix("/logs") {
                Some(target) if !target.is_empty() => {
                    let tail = parse_tail(req.query_string())?;
                    json(
                        ask(
                            &state,
                            Request::Logs {
                                path: target.to_owned(),
                                tail,
                            },
                        )
                        .await?,
                    )
                }
                _ => Err(not_found),
            }
        }
        Err(e) => Err(e),
    }
}

/// The `tail` of a logs query: 100 when absent, at most [`MAX_TAIL`] (400 otherwise).
pub(crate) fn parse_tail(query: &str) -> Result<usize, ApiError> {
    let query = web::Query::<LogsQuery>::from_query(query)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad query: {e}")))?;
    match query.tail.as_deref() {
        None => Ok(DEFAULT_TAIL),
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= MAX_TAIL)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("tail must be a whole number from 0 to {MAX_TAIL}, not {t:?}"),
                )
            }),
    }
}

/// `POST /api/v1/actors/{path}/start|stop|restart|call` (and the deploy actions).
pub(super) async fn actor_post(
    _: Authorized,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    // start/stop/restart take no body; one that is sent is still held to the limit.
    let body = read_body(payload).await?;
    let raw = req.match_info().query("path").trim_matches('/');
    if let Some(request) = super::deploys::post_request(raw) {
        return json(ask(&state, request).await?);
    }
    let (target, action) = raw.rsplit_once('/').unwrap_or(("", raw));
    let request = match action {
        "call" => Request::Call {
            path: target.to_owned(),
            body: serde_json::from_slice(&body).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("the call body is not JSON: {e}"),
                )
            })?,
            timeout_ms: CALL_TIMEOUT_MS,
        },
        "start" => Request::Start {
            path: target.to_owned(),
        },
        "stop" => Request::Stop {
            path: target.to_owned(),
        },
        "restart" => Request::Restart {
            path: target.to_owned(),
        },
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such action {other:?}: expected start, stop, restart, call, deploy or deploys/ID/confirm"),
            ))
        }
    };
    if target.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no actor given"));
    }
    json(ask(&state, request).await?)
}

/// How long `POST .../call` waits for the child's reply before answering 504.
pub const CALL_TIMEOUT_MS: u64 = 10_000;
