//! Whole-warden operations: reload, drain, activate (a `--passive` warden) and reexec.

use actix_web::{web, HttpResponse};

use super::{ask, json, read_body, AdminState, ApiError, Authorized};
use crate::control::protocol::Request;

/// A POST that takes no body (one sent is still held to the limit) and carries out
/// `request`.
async fn command(
    payload: web::Payload,
    state: &AdminState,
    request: Request,
) -> Result<HttpResponse, ApiError> {
    read_body(payload).await?;
    json(ask(state, request).await?)
}

pub(super) async fn reload(
    _: Authorized,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    command(payload, &state, Request::Reload).await
}

pub(super) async fn activate(
    _: Authorized,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    command(payload, &state, Request::Activate).await
}

pub(super) async fn reexec(
    _: Authorized,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    command(payload, &state, Request::Reexec).await
}

pub(super) async fn drain(
    _: Authorized,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    command(payload, &state, Request::Drain).await
}
