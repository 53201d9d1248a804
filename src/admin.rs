//! The admin HTTP API (actix-web): read the tree, drive actors, read their logs.
//! Routes, fields and statuses are those of `design.md`; every route but `/healthz` needs
//! `Authorization: Bearer <token>`; every error is JSON `{"error": "..."}`.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::{web, App, FromRequest, HttpRequest, HttpResponse, HttpServer, ResponseError};
use serde::Deserialize;
use warden_supervisors::{ActorKind, ActorPath, ActorTree, ControlError, ControlOp};

use crate::control::control;
use crate::layout::StateLayout;
use crate::token::AdminToken;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The actor tree.
    pub tree: Arc<ActorTree>,
    /// The bearer token.
    pub token: AdminToken,
    /// Where logs are.
    pub layout: StateLayout,
}

/// An API error: a status and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn not_found(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("no actor at {path}"))
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

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let status = match e {
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Conflict { .. } | ControlError::ShuttingDown(_) => StatusCode::CONFLICT,
        };
        Self::new(status, e.to_string())
    }
}

/// Proof that the request carried the right bearer token.
#[derive(Debug)]
struct Authorized;

impl FromRequest for Authorized {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(check_token(req))
    }
}

fn check_token(req: &HttpRequest) -> Result<Authorized, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let state = req
        .app_data::<web::Data<AdminState>>()
        .ok_or_else(|| unauthorized("server misconfigured: no token"))?;
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing bearer token (Authorization: Bearer <token>)"))?;
    let presented = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("malformed Authorization header: expected 'Bearer <token>'"))?;
    if state.token.matches(presented.trim()) {
        Ok(Authorized)
    } else {
        Err(unauthorized("wrong bearer token"))
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn tree(_: Authorized, state: web::Data<AdminState>) -> Result<HttpResponse, ApiError> {
    let root = state
        .tree
        .subtree(&ActorPath::root())
        .ok_or_else(|| ApiError::not_found("/"))?;
    Ok(HttpResponse::Ok().json(root))
}

async fn actors(_: Authorized, state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok().json(state.tree.descendants(&ActorPath::root()))
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    tail: Option<String>,
}

const DEFAULT_TAIL: usize = 100;
const MAX_TAIL: usize = 100_000;

/// `GET /api/v1/actors/{path}` and `GET /api/v1/actors/{path}/logs`.
async fn actor_get(
    _: Authorized,
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let raw = req.match_info().query("path").to_owned();
    let path = parse_path(&raw)?;
    if let Some(view) = state.tree.view(&path) {
        return Ok(HttpResponse::Ok().json(view));
    }
    if path.name() == "logs" {
        if let Some(target) = path.parent().filter(|p| !p.is_root()) {
            return logs(&state, &target, req.query_string());
        }
    }
    Err(ApiError::not_found(path.as_str()))
}

fn logs(state: &AdminState, path: &ActorPath, query: &str) -> Result<HttpResponse, ApiError> {
    let info = state
        .tree
        .get(path)
        .ok_or_else(|| ApiError::not_found(path.as_str()))?;
    let query = web::Query::<LogsQuery>::from_query(query)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad query: {e}")))?;
    let tail = match query.tail.as_deref() {
        None => DEFAULT_TAIL,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= MAX_TAIL)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("tail must be a whole number from 0 to {MAX_TAIL}, not {t:?}"),
                )
            })?,
    };
    if !matches!(
        info.kind,
        ActorKind::Service | ActorKind::Outboard | ActorKind::Worker
    ) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "{path} is a {} and has no log",
                serde_json::to_value(info.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
        ));
    }
    let file = state.layout.log_file(path);
    let bytes = warden_actors::tail_lines(&file, tail).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read {}: {e}", file.display()),
        )
    })?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(bytes))
}

/// `POST /api/v1/actors/{path}/start|stop|restart`.
async fn actor_post(
    _: Authorized,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    // start/stop/restart take no body; one that is sent is still held to the limit.
    read_body(payload).await?;
    let raw = req.match_info().query("path").to_owned();
    let path = parse_path(&raw)?;
    let op = match path.name() {
        "start" => ControlOp::Start,
        "stop" => ControlOp::Stop,
        "restart" => ControlOp::Restart,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such action {other:?}: expected start, stop or restart"),
            ))
        }
    };
    let target = path
        .parent()
        .filter(|p| !p.is_root())
        .ok_or_else(|| ApiError::not_found("/"))?;
    let view = control(&state.tree, &target, op).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Reads a request body of at most [`MAX_BODY`] bytes (413 past it).
async fn read_body(mut payload: web::Payload) -> Result<web::BytesMut, ApiError> {
    use futures_util::StreamExt as _;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("cannot read body: {e}"))
        })?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over the limit of {MAX_BODY} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn parse_path(raw: &str) -> Result<ActorPath, ApiError> {
    ActorPath::parse(raw)
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, format!("no actor at /{raw}: {e}")))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route {} {}", req.method(), req.path()),
    )
    .error_response()
}

/// Largest request body accepted on any route.
pub const MAX_BODY: usize = 64 * 1024;

/// Registers every route on an actix-web app.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/api/v1/tree", web::get().to(tree))
        .route("/api/v1/actors", web::get().to(actors))
        .route("/api/v1/actors/{path:.*}", web::get().to(actor_get))
        .route("/api/v1/actors/{path:.*}", web::post().to(actor_post));
}

/// Binds the admin API on `listen` (the socket is bound before this returns, so the API
/// answers from then on) and returns the server to spawn.
pub fn serve(listen: SocketAddr, state: AdminState) -> std::io::Result<(Server, SocketAddr)> {
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap_fn(|req, srv| {
                use actix_web::dev::Service as _;
                let too_large = req
                    .headers()
                    .get(actix_web::http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok())
                    .is_some_and(|n| n > MAX_BODY);
                let fut = (!too_large).then(|| srv.call(req));
                async move {
                    match fut {
                        Some(fut) => fut.await,
                        None => Err(ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("request body over the limit of {MAX_BODY} bytes"),
                        )
                        .into()),
                    }
                }
            })
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .app_data(
                web::JsonConfig::default()
                    .limit(MAX_BODY)
                    .error_handler(|e, _| {
                        let status = match &e {
                            actix_web::error::JsonPayloadError::OverflowKnownLength { .. }
                            | actix_web::error::JsonPayloadError::Overflow { .. } => {
                                StatusCode::PAYLOAD_TOO_LARGE
                            }
                            _ => StatusCode::BAD_REQUEST,
                        };
                        ApiError::new(status, e.to_string()).into()
                    }),
            )
            .configure(routes)
            .default_service(web::to(not_found))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(listen)?;
    let bound = server.addrs().first().copied().unwrap_or(listen);
    Ok((server.run(), bound))
}
