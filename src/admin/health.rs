//! `/healthz`, `/readyz` (answered on the HTTP workers from [`crate::control::Liveness`],
//! never through the Controller) and `/metrics`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::{ask, check_token, unexpected, AdminState, ApiError, Authorized};
use crate::control::protocol::{Health, Request, Response};

/// `GET /healthz`: answered on the HTTP worker thread from [`Liveness`], so it answers
/// however busy the supervision thread is.
pub(super) async fn healthz(state: web::Data<AdminState>) -> HttpResponse {
    match state.liveness.health() {
        Health::Ok => HttpResponse::Ok().json(serde_json::json!({ "status": "ok" })),
        Health::Draining => {
            HttpResponse::ServiceUnavailable().json(serde_json::json!({ "status": "draining" }))
        }
    }
}

/// `GET /readyz`: from [`Liveness`] and the shared tree, like `/healthz`. The paths of
/// the actors it waits for are told only to a caller with a token (admin or read-only):
/// to anyone else `waiting` is null, so an open probe port does not list what is down.
pub(super) async fn readyz(
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    match state.liveness.ready(&state.tree) {
        Response::Ready { ready: true, .. } => {
            Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready", "waiting": [] })))
        }
        Response::Ready {
            ready: false,
            waiting,
        } => {
            let waiting = check_token(&req).is_ok().then_some(waiting);
            Ok(HttpResponse::ServiceUnavailable()
                .json(serde_json::json!({ "status": "not ready", "waiting": waiting })))
        }
        other => Err(unexpected(&other)),
    }
}

pub(super) async fn metrics(
    _: Authorized,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    match ask(&state, Request::Metrics).await? {
        Response::Metrics(text) => Ok(HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text)),
        other => Err(unexpected(&other)),
    }
}
