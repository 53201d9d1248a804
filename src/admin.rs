//! The admin HTTP API (actix-web). Routes, fields and statuses are those of `design.md`;
//! every route but `/healthz` and `/readyz` needs `Authorization: Bearer <token>`: the
//! admin token for anything, the read-only token (`read_token_file`) for GET only (403
//! otherwise). `/readyz` names the actors it waits for only to a caller with a token.
//! Served over HTTPS when `[admin] tls` is set. Every error is JSON `{"error": "..."}`;
//! request bodies are limited to [`MAX_BODY`].
//! Requests are carried out by the [`Controller`], the same actor that serves the control
//! socket; this module only translates HTTP to [`Request`] and [`Response`] to HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::{web, App, FromRequest, HttpRequest, HttpResponse, HttpServer, ResponseError};
use serde::Deserialize;
use warden_supervisors::ActorTree;

use crate::control::protocol::{Failure, Health, Request, Response, MAX_TAIL};
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
    match state.tokens.access(presented.trim()) {
        Some(Access::Full) => Ok(Authorized),
        Some(Access::ReadOnly) if req.method() == actix_web::http::Method::GET => Ok(Authorized),
        Some(Access::ReadOnly) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "the read-only token may only GET: {} {} needs the admin token",
                req.method(),
                req.path()
            ),
        )),
        None => Err(unauthorized("wrong bearer token")),
    }
}

/// Asks the controller.
async fn ask(state: &AdminState, request: Request) -> Result<Response, ApiError> {
    match state.controller.send(request).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "warden is stopping",
        )),
    }
}

fn unexpected(r: &Response) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("unexpected answer from the controller: {r:?}"),
    )
}

/// `GET /healthz`: answered on the HTTP worker thread from [`Liveness`], so it answers
/// however busy the supervision thread is.
async fn healthz(state: web::Data<AdminState>) -> HttpResponse {
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
async fn readyz(req: HttpRequest, state: web::Data<AdminState>) -> Result<HttpResponse, ApiError> {
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

async fn metrics(_: Authorized, state: web::Data<AdminState>) -> Result<HttpResponse, ApiError> {
    match ask(&state, Request::Metrics).await? {
        Response::Metrics(text) => Ok(HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text)),
        other => Err(unexpected(&other)),
    }
}

/// Turns a controller answer into the JSON body the design fixes for it.
fn json(response: Response) -> Result<HttpResponse, ApiError> {
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
        Response::Logs(bytes) => Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(bytes)),
        other => Err(unexpected(&other)),
    }
}

async fn tree(_: Authorized, state: web::Data<AdminState>) -> Result<HttpResponse, ApiError> {
    json(ask(&state, Request::Tree).await?)
}

async fn actors(_: Authorized, state: web::Data<AdminState>) -> Result<HttpResponse, ApiError> {
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

async fn reload(
    _: Authorized,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    command(payload, &state, Request::Reload).await
}

async fn activate(
    _: Authorized,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    command(payload, &state, Request::Activate).await
}

async fn reexec(
    _: Authorized,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    command(payload, &state, Request::Reexec).await
}

async fn drain(
    _: Authorized,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    command(payload, &state, Request::Drain).await
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    tail: Option<String>,
}

const DEFAULT_TAIL: usize = 100;

/// `GET /api/v1/actors/{path}` and `GET /api/v1/actors/{path}/logs`.
async fn actor_get(
    _: Authorized,
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let path = req.match_info().query("path").trim_matches('/').to_owned();
    match ask(&state, Request::Actor { path: path.clone() }).await {
        Ok(response) => json(response),
        Err(not_found) if not_found.status == StatusCode::NOT_FOUND => {
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

fn parse_tail(query: &str) -> Result<usize, ApiError> {
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

/// `POST /api/v1/actors/{path}/start|stop|restart`.
async fn actor_post(
    _: Authorized,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    // start/stop/restart take no body; one that is sent is still held to the limit.
    let body = read_body(payload).await?;
    let raw = req.match_info().query("path").trim_matches('/');
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
                format!("no such action {other:?}: expected start, stop, restart or call"),
            ))
        }
    };
    if target.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no actor given"));
    }
    json(ask(&state, request).await?)
}

/// `GET /api/v1/events`: Server-Sent Events, one `state` event per state change, and a
/// comment every 15 s to keep idle connections open.
async fn events(_: Authorized, state: web::Data<AdminState>) -> HttpResponse {
    use futures_util::stream;
    use tokio::sync::broadcast::error::RecvError;
    let rx = state.tree.subscribe();
    let stream = stream::unfold(rx, |mut rx| async move {
        let chunk = match tokio::time::timeout(Duration::from_secs(15), rx.recv()).await {
            Err(_) => ": keep-alive\n\n".to_owned(),
            Ok(Ok(event)) => match serde_json::to_string(&event) {
                Ok(data) => format!("event: state\ndata: {data}\n\n"),
                Err(_) => return None,
            },
            Ok(Err(RecvError::Lagged(missed))) => {
                format!("event: lagged\ndata: {{\"missed\":{missed}}}\n\n")
            }
            Ok(Err(RecvError::Closed)) => return None,
        };
        Some((Ok::<_, actix_web::Error>(web::Bytes::from(chunk)), rx))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(stream)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutBody {
    command: Option<Vec<String>>,
    env: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, with = "humantime_serde")]
    deadline: Option<Duration>,
}

/// How long old workers keep their sessions in a rollout unless the body says otherwise.
const ROLLOUT_DEADLINE: Duration = Duration::from_secs(600);

/// `POST /api/v1/pools/{path}/sessions` (body optional) and `.../rollout`.
async fn pool_post(
    _: Authorized,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    let raw = req.match_info().query("path").trim_matches('/');
    let (pool, action) = raw.rsplit_once('/').unwrap_or(("", raw));
    // `.../tokens/verify`: the pool is two segments up.
    if let ("verify", Some(pool)) = (action, pool.strip_suffix("/tokens")) {
        #[derive(Deserialize)]
        struct VerifyBody {
            token: String,
        }
        let check: VerifyBody = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("verify body: {e} (expected {{\"token\": \"...\"}})"),
            )
        })?;
        let request = Request::VerifyToken {
            pool: pool.to_owned(),
            token: check.token,
        };
        return json(ask(&state, request).await?);
    }
    let request = match action {
        "sessions" => Request::Acquire {
            pool: pool.to_owned(),
        },
        "rollout" => {
            let rollout: RolloutBody = serde_json::from_slice(&body).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("rollout body: {e} (expected {{\"command\": [...], \"env\": {{...}}, \"deadline\": \"10m\"}})"),
                )
            })?;
            Request::Rollout {
                pool: pool.to_owned(),
                command: rollout.command,
                env: rollout.env.map(|e| e.into_iter().collect()),
                deadline_ms: u64::try_from(
                    rollout.deadline.unwrap_or(ROLLOUT_DEADLINE).as_millis(),
                )
                .unwrap_or(u64::MAX),
            }
        }
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such pool action {other:?}: expected sessions or rollout"),
            ))
        }
    };
    if pool.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no pool given"));
    }
    json(ask(&state, request).await?)
}

/// `DELETE /api/v1/pools/{path}/sessions/{id}`.
async fn pool_delete(
    _: Authorized,
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let raw = req.match_info().query("path").trim_matches('/');
    let parsed = raw
        .rsplit_once('/')
        .and_then(|(rest, id)| rest.rsplit_once('/').map(|(pool, word)| (pool, word, id)));
    match parsed {
        Some((pool, "sessions", id)) if !pool.is_empty() && !id.is_empty() => json(
            ask(
                &state,
                Request::Release {
                    pool: pool.to_owned(),
                    session: id.to_owned(),
                },
            )
            .await?,
        ),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no route DELETE {}: expected /api/v1/pools/{{path}}/sessions/{{id}}",
                req.path()
            ),
        )),
    }
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
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body over the limit of {MAX_BODY} bytes"),
    )
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route {} {}", req.method(), req.path()),
    )
    .error_response()
}

/// How long `POST .../call` waits for the child's reply before answering 504.
pub const CALL_TIMEOUT_MS: u64 = 10_000;

/// Largest request body accepted on any route.
pub const MAX_BODY: usize = 64 * 1024;

/// Registers every route on an actix-web app.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .route("/api/v1/tree", web::get().to(tree))
        .route("/api/v1/actors", web::get().to(actors))
        .route("/api/v1/events", web::get().to(events))
        .route("/api/v1/reload", web::post().to(reload))
        .route("/api/v1/drain", web::post().to(drain))
        .route("/api/v1/admin/activate", web::post().to(activate))
        .route("/api/v1/admin/reexec", web::post().to(reexec))
        .route("/api/v1/actors/{path:.*}", web::get().to(actor_get))
        .route("/api/v1/actors/{path:.*}", web::post().to(actor_post))
        .route("/api/v1/pools/{path:.*}", web::post().to(pool_post))
        .route("/api/v1/pools/{path:.*}", web::delete().to(pool_delete))
        .configure(crate::hub::routes::routes);
}

/// Binds the admin API on `listen` (bound before this returns, so it answers from then
/// on), over HTTPS with `tls` (see [`crate::admin_tls`]) or plain HTTP without, and
/// returns the server to spawn and the address it got.
pub fn serve(
    listener: std::net::TcpListener,
    state: AdminState,
    tls: Option<rustls::ServerConfig>,
) -> std::io::Result<(Server, SocketAddr)> {
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap_fn(|req, srv| {
                use actix_web::dev::Service as _;
                let too_big = req
                    .headers()
                    .get(actix_web::http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok())
                    .is_some_and(|n| n > MAX_BODY);
                let fut = (!too_big).then(|| srv.call(req));
                async move {
                    match fut {
                        Some(fut) => fut.await,
                        None => Err(too_large().into()),
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
