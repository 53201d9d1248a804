//! The admin HTTP API (actix-web). Routes, fields and statuses are those of docs/api.md;
//! every route but the health checks, the dashboard's sign-in pages ([`ui`]), the GitHub
//! webhook (its HMAC signature) and a spoke's connection (its credential) needs
//! `Authorization: Bearer <token>`: the admin token for anything, the read-only token
//! (`read_token_file`) for GET only (403 otherwise). `/readyz` names the actors it waits
//! for only to a caller with a token.
//! Without a bearer header, the dashboard's session cookie authenticates `/api/v1/*`
//! (see [`ui`]: a state change with it needs a same-origin `Origin` or its CSRF header).
//! Served over HTTPS when `[admin] tls` is set. Every error is JSON `{"error": "..."}`;
//! request bodies are limited to [`MAX_BODY`].
//! Requests are carried out by the [`Controller`], the same actor that serves the control
//! socket; this module only translates HTTP to [`Request`] and [`Response`] to HTTP.

mod actors;
mod deploys;
mod events;
mod health;
mod operations;
mod pools;
pub mod ui;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use actix::Addr;
use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::{web, App, FromRequest, HttpRequest, HttpResponse, HttpServer, ResponseError};
use warden_supervisors::ActorTree;

pub(crate) use actors::parse_tail;
pub use actors::CALL_TIMEOUT_MS;
pub use webhooks::{sign, signature_matches, WebhookSecret, WEBHOOK_MAX_BODY, WEBHOOK_PATH};

use crate::control::protocol::{Failure, Request, Response};
use crate::control::{Controller, Liveness};
use crate::token::{Access, ApiTokens};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The actor tree (for the event stream).
    pub tree: Arc<ActorTree>,
    /// The bearer tokens.
    pub tokens: ApiTokens,
    /// Carries out requests.
    pub controller: Addr<Controller>,
    /// What `/healthz` and `/readyz` answer from (never through the Controller).
    pub liveness: Arc<Liveness>,
    /// The last `GET /api/v1/actors` body and the tree version it was made from: while
    /// nothing changes, the listing is served without rebuilding it.
    pub listing: Arc<std::sync::Mutex<Option<(u64, web::Bytes)>>>,
    /// The hub, on a warden with `[hub] enabled = true` (routes in [`crate::hub::routes`]).
    pub hub: Option<Arc<crate::hub::Hub>>,
    /// The deploys, which `POST /webhooks/github` asks for.
    pub deploys: Option<Arc<warden_actors::Deploys>>,
    /// The key of `POST /webhooks/github` (none: no `[webhooks]`, the route answers 404).
    pub webhook_secret: WebhookSecret,
}

/// An API error: a status and a sentence, answered as `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(serde_json::json!({ "error": self.message }))
    }
}

impl From<Failure> for ApiError {
    fn from(f: Failure) -> Self {
        let status =
            StatusCode::from_u16(f.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, f.message)
    }
}

/// Proof that the request carried a bearer token that allows it.
#[derive(Debug)]
pub(crate) struct Authorized;

impl FromRequest for Authorized {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(check_token(req))
    }
}

pub(crate) fn check_token(req: &HttpRequest) -> Result<Authorized, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let state = req
        .app_data::<web::Data<AdminState>>()
        .ok_or_else(|| unauthorized("server misconfigured: no token"))?;
    let access = match req.headers().get(actix_web::http::header::AUTHORIZATION) {
        Some(header) => {
            let presented = header
                .to_str()
                .ok()
                .and_then(|h| h.strip_prefix("Bearer "))
                .ok_or_else(|| {
                    unauthorized("malformed Authorization header: expected 'Bearer <token>'")
                })?;
            state
                .tokens
                .access(presented.trim())
                .ok_or_else(|| unauthorized("wrong bearer token"))?
        }
        None => ui::cookie_access(req).ok_or_else(|| {
            unauthorized("missing bearer token (Authorization: Bearer <token>)")
        })??,
    };
    match access {
        Access::Full => Ok(Authorized),
        Access::ReadOnly if req.method() == actix_web::http::Method::GET => Ok(Authorized),
        Access::ReadOnly => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "the read-only token may only GET: {} {} needs the admin token",
                req.method(),
                req.path()
            ),
        )),
    }
}

/// Asks the controller.
pub(crate) async fn ask(state: &AdminState, request: Request) -> Result<Response, ApiError> {
    match state.controller.send(request).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "warden is stopping",
        )),
    }
}

pub(crate) fn unexpected(r: &Response) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("unexpected answer from the controller: {r:?}"),
    )
}

/// Turns a controller answer into the JSON body the design fixes for it.
pub(crate) fn json(response: Response) -> Result<HttpResponse, ApiError> {
    match response {
        Response::Actors(views) => Ok(HttpResponse::Ok().json(views)),
        Response::Tree(node) => Ok(HttpResponse::Ok().json(node)),
        Response::Actor(view) => Ok(HttpResponse::Ok().json(view)),
        Response::Reloaded(changes) => Ok(HttpResponse::Ok().json(changes)),
        Response::Draining => {
            Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "draining" })))
        }
        Response::Reply(value) => Ok(HttpResponse::Ok().json(value)),
        Response::Session(session) => Ok(HttpResponse::Created().json(session)),
        Response::Released => Ok(HttpResponse::NoContent().finish()),
        Response::RolledOut(summary) => Ok(HttpResponse::Ok().json(summary)),
        Response::Token(check) => Ok(HttpResponse::Ok().json(check)),
        Response::Activated => {
            Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "active" })))
        }
        Response::Reexecuting { binary, version } => Ok(HttpResponse::Ok().json(
            serde_json::json!({ "status": "reexecuting", "binary": binary, "version": version }),
        )),
        Response::DeployAccepted(record) => Ok(HttpResponse::Accepted().json(record)),
        Response::DeployList(records) => Ok(HttpResponse::Ok().json(records)),
        Response::DeployConfirmed(record) => Ok(HttpResponse::Ok().json(record)),
        Response::Logs(bytes) => Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(bytes)),
        other => Err(unexpected(&other)),
    }
}

/// Reads a request body of at most [`MAX_BODY`] bytes (413 past it).
pub(crate) async fn read_body(payload: web::Payload) -> Result<web::BytesMut, ApiError> {
    read_body_up_to(payload, MAX_BODY).await
}

/// Reads a request body of at most `limit` bytes (413 past it).
pub(crate) async fn read_body_up_to(
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    use futures_util::StreamExt as _;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("cannot read body: {e}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body over the limit of {limit} bytes"),
    )
}

/// The body limit of the route at `path`: [`MAX_BODY`], or [`WEBHOOK_MAX_BODY`] for the
/// webhook.
fn body_limit(path: &str) -> usize {
    if path == WEBHOOK_PATH {
        WEBHOOK_MAX_BODY
    } else {
        MAX_BODY
    }
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route {} {}", req.method(), req.path()),
    )
    .error_response()
}

/// Largest request body accepted on any route but the webhook's.
pub const MAX_BODY: usize = 64 * 1024;

/// Registers every route on an actix-web app.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/api/v1/tree", web::get().to(actors::tree))
        .route("/api/v1/actors", web::get().to(actors::actors))
        .route("/api/v1/events", web::get().to(events::events))
        .route("/api/v1/reload", web::post().to(operations::reload))
        .route("/api/v1/drain", web::post().to(operations::drain))
        .route(
            "/api/v1/admin/activate",
            web::post().to(operations::activate),
        )
        .route("/api/v1/admin/reexec", web::post().to(operations::reexec))
        .route("/api/v1/admin/deploy", web::post().to(deploys::deploy_self))
        .route(
            "/api/v1/admin/deploys",
            web::get().to(deploys::deploys_self),
        )
        .route(
            "/api/v1/admin/deploys/{id}/confirm",
            web::post().to(deploys::confirm_self),
        )
        .route("/webhooks/github", web::post().to(webhooks::github))
        .route("/api/v1/actors/{path:.*}", web::get().to(actors::actor_get))
        .route(
            "/api/v1/actors/{path:.*}",
            web::post().to(actors::actor_post),
        )
        .route("/api/v1/pools/{path:.*}", web::post().to(pools::pool_post))
        .route(
            "/api/v1/pools/{path:.*}",
            web::delete().to(pools::pool_delete),
        )
        .configure(crate::hub::routes::routes)
        .configure(ui::routes);
}

/// Binds the admin API on `listen` (bound before this returns, so it answers from then
/// on), over HTTPS with `tls` (see [`crate::admin_tls`]) or plain HTTP without, and
/// returns the server to spawn and the address it got.
pub fn serve(
    listener: std::net::TcpListener,
    state: AdminState,
    tls: Option<rustls::ServerConfig>,
) -> std::io::Result<(Server, SocketAddr)> {
    let events = web::Data::new(events::EventLog::start(&state.tree)?);
    let ui = web::Data::new(ui::UiState::new(tls.is_some()));
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(events.clone())
            .app_data(ui.clone())
            .wrap_fn(|req, srv| {
                use actix_web::dev::Service as _;
                let limit = body_limit(req.path());
                let too_big = req
                    .headers()
                    .get(actix_web::http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok())
                    .is_some_and(|n| n > limit);
                let fut = (!too_big).then(|| srv.call(req));
                async move {
                    match fut {
                        Some(fut) => fut.await,
                        None => Err(too_large(limit).into()),
                    }
                }
            })
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .configure(routes)
            .default_service(web::to(not_found))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(1);
    let bound = listener.local_addr()?;
    let server = match tls {
        Some(config) => server.listen_rustls_0_23(listener, config)?,
        None => server.listen(listener)?,
    };
    Ok((server.run(), bound))
}
