//! The pool routes: sessions (acquire, release), rollout and worker token checks.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{ask, json, read_body, AdminState, ApiError, Authorized};
use crate::control::protocol::Request;

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
pub(super) async fn pool_post(
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
pub(super) async fn pool_delete(
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
