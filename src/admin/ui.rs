//! The operator dashboard: `GET /ui` (one page, one script, one stylesheet, embedded in
//! the binary, served under a strict Content-Security-Policy with an ETag), and its
//! sign-in: `POST /ui/login` trades the admin (or read-only) token for an HttpOnly,
//! SameSite=Strict session cookie, `GET /ui/session` tells the page whether it is signed
//! in (and its CSRF value), `POST /ui/logout` ends the session.
//!
//! The cookie authenticates `/api/v1/*` (an `EventSource` cannot send a bearer header):
//! see [`cookie_access`]. A request with the cookie that changes state (anything but
//! GET and HEAD) needs a same-origin `Origin` or, without an `Origin`, the session's
//! `X-Warden-CSRF` value; a foreign `Origin` is refused (403) either way.

mod session;

use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};

pub use session::{Session, Sessions, COOKIE, MAX_SESSIONS, SESSION_TTL};

use super::{read_body, AdminState, ApiError};
use crate::token::Access;

/// The page, its script and its stylesheet.
const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

/// The embedded assets: (URL path, content type, body).
pub const ASSETS: [(&str, &str, &str); 3] = [
    ("/ui", "text/html; charset=utf-8", INDEX_HTML),
    ("/ui/app.js", "text/javascript; charset=utf-8", APP_JS),
    ("/ui/app.css", "text/css; charset=utf-8", APP_CSS),
];

/// The dashboard's Content-Security-Policy: nothing inline, nothing from elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// The header the page sends with each state-changing request.
pub const CSRF_HEADER: &str = "x-warden-csrf";

/// What the dashboard's handlers share: the sessions, and whether the listener is TLS
/// (the cookie is then `Secure`, and a same-origin `Origin` is `https://`).
#[derive(Debug)]
pub struct UiState {
    sessions: Sessions,
    tls: bool,
}

impl UiState {
    /// No sessions yet.
    pub fn new(tls: bool) -> Self {
        Self {
            sessions: Sessions::default(),
            tls,
        }
    }
}

/// Registers the dashboard's routes.
pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui", web::get().to(asset))
        .route("/ui/", web::get().to(asset))
        .route("/ui/app.js", web::get().to(asset))
        .route("/ui/app.css", web::get().to(asset))
        .route("/ui/login", web::post().to(login))
        .route("/ui/logout", web::post().to(logout))
        .route("/ui/session", web::get().to(session));
}

/// The strong ETag of each asset (a hash of its bytes), computed once.
fn etags() -> &'static [String; 3] {
    static ETAGS: OnceLock<[String; 3]> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS.map(|(_, _, body)| {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(body.as_bytes());
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
    })
}

/// The headers of every dashboard response.
fn hardened(mut builder: HttpResponseBuilder) -> HttpResponseBuilder {
    builder
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    builder
}

/// `GET /ui`, `/ui/app.js`, `/ui/app.css`: an embedded asset; 304 when `If-None-Match`
/// names its ETag. `Cache-Control: no-cache`: a browser revalidates, so a new warden
/// binary is seen at once.
async fn asset(req: HttpRequest) -> HttpResponse {
    let path = match req.path() {
        "/ui/" => "/ui",
        other => other,
    };
    let Some(i) = ASSETS.iter().position(|(p, _, _)| *p == path) else {
        return actix_web::ResponseError::error_response(&ApiError::new(
            StatusCode::NOT_FOUND,
            "no such asset",
        ));
    };
    let (_, content_type, body) = ASSETS[i];
    let etag = &etags()[i];
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut builder = hardened(if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    });
    builder
        .insert_header((header::ETAG, etag.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    if fresh {
        builder.finish()
    } else {
        builder.content_type(content_type).body(body)
    }
}

/// The session id the request's cookie names, if any.
fn cookie_id(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
}

/// Whether the request's `Origin` is this server's own: `None` without an `Origin`.
fn same_origin(req: &HttpRequest, tls: bool) -> Option<bool> {
    let origin = req.headers().get(header::ORIGIN)?;
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let scheme = if tls { "https" } else { "http" };
    Some(match (origin.to_str(), host) {
        (Ok(origin), Some(host)) => origin.eq_ignore_ascii_case(&format!("{scheme}://{host}")),
        _ => false,
    })
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message)
}

fn cross_origin(req: &HttpRequest) -> ApiError {
    forbidden(format!(
        "{} {} from another origin refused: the dashboard's cookie only works from its own page",
        req.method(),
        req.path()
    ))
}

/// Checks that a state-changing request made with `session`'s cookie comes from the
/// dashboard: a same-origin `Origin`, or no `Origin` and the session's CSRF value.
fn check_csrf(req: &HttpRequest, ui: &UiState, session: Option<&Session>) -> Result<(), ApiError> {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return Ok(());
    }
    match same_origin(req, ui.tls) {
        Some(true) => Ok(()),
        Some(false) => Err(cross_origin(req)),
        None => {
            let presented = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            match (session, presented) {
                (Some(s), Some(p)) if s.csrf_matches(p) => Ok(()),
                _ => Err(forbidden(format!(
                    "{} {} with the session cookie needs a same-origin Origin or the \
                     X-Warden-CSRF header of the dashboard",
                    req.method(),
                    req.path()
                ))),
            }
        }
    }
}

/// The access of a request to `/api/v1/*` that carries a live session cookie: `None`
/// when it carries none (or not on `/api/v1/`), a 403 when it changes state without
/// coming from the dashboard (see [`check_csrf`]).
pub(super) fn cookie_access(req: &HttpRequest) -> Option<Result<Access, ApiError>> {
    if !req.path().starts_with("/api/v1/") {
        return None;
    }
    let ui = req.app_data::<web::Data<UiState>>()?;
    let session = ui.sessions.get(&cookie_id(req)?)?;
    Some(check_csrf(req, ui, Some(&session)).map(|()| session.access))
}

/// The `Set-Cookie` value for session `id` (empty and expired to remove it).
fn set_cookie(id: &str, max_age: u64, tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

fn access_name(access: Access) -> &'static str {
    match access {
        Access::Full => "full",
        Access::ReadOnly => "read_only",
    }
}

/// What the page learns of its session: its access and CSRF value.
fn session_body(session: &Session) -> serde_json::Value {
    serde_json::json!({ "access": access_name(session.access), "csrf": session.csrf })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    token: String,
}

/// `POST /ui/login` `{"token"}` (JSON, from the dashboard's origin): 200
/// `{"access","csrf"}` and the session cookie; 401 for a wrong token, 400 for a bad body,
/// 403 from another origin.
async fn login(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AdminState>,
    ui: web::Data<UiState>,
) -> Result<HttpResponse, ApiError> {
    if same_origin(&req, ui.tls) == Some(false) {
        return Err(cross_origin(&req));
    }
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "POST /ui/login takes a JSON body {\"token\": \"...\"} (Content-Type: application/json)",
        ));
    }
    let body = read_body(payload).await?;
    let login: Login = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("bad sign-in body, expected {{\"token\": \"...\"}}: {e}"),
        )
    })?;
    let Some(access) = state.tokens.access(login.token.trim()) else {
        tracing::warn!(peer = ?req.peer_addr(), "dashboard sign-in with a wrong token");
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong token"));
    };
    let (id, session) = ui
        .sessions
        .open(access)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    tracing::info!(peer = ?req.peer_addr(), access = access_name(access), "dashboard sign-in");
    Ok(hardened(HttpResponse::Ok())
        .insert_header((
            header::SET_COOKIE,
            set_cookie(&id, SESSION_TTL.as_secs(), ui.tls),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(session_body(&session)))
}

/// `POST /ui/logout`: ends the session of the cookie (same rules as any state change
/// with it) and removes the cookie; 204.
async fn logout(req: HttpRequest, ui: web::Data<UiState>) -> Result<HttpResponse, ApiError> {
    let id = cookie_id(&req);
    let session = id.as_deref().and_then(|id| ui.sessions.get(id));
    check_csrf(&req, &ui, session.as_ref())?;
    if let Some(id) = id.filter(|_| session.is_some()) {
        ui.sessions.close(&id);
    }
    Ok(hardened(HttpResponse::NoContent())
        .insert_header((header::SET_COOKIE, set_cookie("", 0, ui.tls)))
        .finish())
}

/// `GET /ui/session`: 200 `{"access","csrf"}` for a live session cookie, else 401.
async fn session(req: HttpRequest, ui: web::Data<UiState>) -> Result<HttpResponse, ApiError> {
    let session = cookie_id(&req)
        .and_then(|id| ui.sessions.get(&id))
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "not signed in"))?;
    let mut builder = hardened(HttpResponse::Ok());
    builder.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    Ok(builder.json(session_body(&session)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assets_stay_under_100_kb() {
        let total: usize = ASSETS.iter().map(|(_, _, body)| body.len()).sum();
        assert!(total <= 100 * 1024, "dashboard assets are {total} bytes");
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = INDEX_HTML.to_ascii_lowercase();
        assert!(!page.contains("<style"), "inline <style> in index.html");
        assert!(
            !page.contains(" style="),
            "inline style attribute in index.html"
        );
        let handler = page.split_whitespace().find(|word| {
            word.split_once('=').is_some_and(|(name, _)| {
                name.starts_with("on") && name.chars().all(|c| c.is_ascii_lowercase())
            })
        });
        assert_eq!(handler, None, "inline event handler in index.html");
        for script in page.split("<script").skip(1) {
            let tag = script.split('>').next().unwrap_or_default();
            assert!(tag.contains("src="), "inline <script> in index.html");
        }
    }
}
