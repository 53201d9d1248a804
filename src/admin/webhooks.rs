//! `POST /webhooks/github`: GitHub's push webhook. No bearer token: the HMAC-SHA256 of
//! the raw body under the `[webhooks] github_secret_file` key (`X-Hub-Signature-256`,
//! compared in constant time) is the authentication, checked before anything of the body
//! is parsed. Bodies up to [`WEBHOOK_MAX_BODY`] (not the API's 64 KiB). `ping` → 200;
//! `push` → 202 `{"deploys":[paths]}` for every lane whose repository (`owner/name`) and
//! branch match; a delivery id (`X-GitHub-Delivery`) seen before → 200
//! `{"duplicate":true}`. It answers before any step runs: the deploys run on their own
//! thread.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use super::{AdminState, ApiError};

/// The webhook's route.
pub const WEBHOOK_PATH: &str = "/webhooks/github";

/// Largest webhook body accepted (GitHub caps its payloads at 25 MB; a push with many
/// commits is well under this).
pub const WEBHOOK_MAX_BODY: usize = 1024 * 1024;

/// The key of the webhook's signatures, or none (no `[webhooks]`: the route answers
/// 404). Shared by the route and the reloader, so a reload can rotate, add or remove it.
/// Its `Debug` shows nothing of it.
#[derive(Clone, Default)]
pub struct WebhookSecret(Arc<std::sync::RwLock<Option<Vec<u8>>>>);

impl WebhookSecret {
    /// The key `text` (as read from `github_secret_file`), or none.
    pub fn new(text: Option<&str>) -> Self {
        let secret = Self::default();
        secret.replace(text);
        secret
    }

    /// Replaces the key (a reload re-read `github_secret_file`, or added or removed
    /// `[webhooks]`): every clone of this handle verifies with the new key from now on.
    pub fn replace(&self, text: Option<&str>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            text.map(|t| t.as_bytes().to_vec());
    }

    fn is_set(&self) -> bool {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    /// Whether `signature` signs `body` under the key (never without a key).
    fn matches(&self, body: &[u8], signature: &str) -> bool {
        let key = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        key.as_deref()
            .is_some_and(|key| signature_matches(key, body, signature))
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

/// The `X-Hub-Signature-256` value of `body` under `secret`: `sha256=<64 hex digits>`
/// (what GitHub sends; for tests and benchmarks that play GitHub).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", warden_actors::hex(&mac(secret, body)))
}

fn mac(secret: &[u8], body: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length: `new_from_slice` cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Whether `header` (`sha256=<64 hex digits>`) is the HMAC-SHA256 of `body` under
/// `secret`, compared in constant time.
pub fn signature_matches(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(given) = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(warden_actors::unhex)
    else {
        return false;
    };
    let expected = mac(secret, body);
    given.len() == expected.len() && bool::from(expected.as_slice().ct_eq(&given))
}

#[derive(Deserialize)]
struct PushEvent {
    #[serde(rename = "ref")]
    reference: String,
    after: Option<String>,
    repository: Repository,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// `POST /webhooks/github`.
pub(super) async fn github(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let secret = &state.webhook_secret;
    let (true, Some(deploys)) = (secret.is_set(), &state.deploys) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "webhooks are not configured here ([webhooks] github_secret_file)",
        ));
    };
    let body = super::read_body_up_to(payload, WEBHOOK_MAX_BODY).await?;
    let signature = header(&req, "X-Hub-Signature-256").ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing X-Hub-Signature-256 (set the webhook's secret on GitHub)",
        )
    })?;
    if !secret.matches(&body, signature) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad X-Hub-Signature-256: not signed with this warden's webhook secret",
        ));
    }
    let event = header(&req, "X-GitHub-Event").unwrap_or("");
    match event {
        "ping" => Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "pong" }))),
        "push" => {
            let push: PushEvent = serde_json::from_slice(&body).map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("not a push event: {e}"))
            })?;
            let Some(branch) = push.reference.strip_prefix("refs/heads/") else {
                // A tag: no branch deploys.
                return Ok(HttpResponse::Accepted().json(serde_json::json!({ "deploys": [] })));
            };
            // A deleted branch has no commit to deploy.
            let commit = push.after.filter(|c| !c.bytes().all(|b| b == b'0'));
            if commit.is_none() {
                return Ok(HttpResponse::Accepted().json(serde_json::json!({ "deploys": [] })));
            }
            let delivery = header(&req, "X-GitHub-Delivery");
            match deploys.push(delivery, &push.repository.full_name, branch, commit) {
                warden_actors::deploy::Push::Duplicate => {
                    Ok(HttpResponse::Ok().json(serde_json::json!({ "duplicate": true })))
                }
                warden_actors::deploy::Push::Deploys(paths) => {
                    // Accepted means on disk: a warden killed after this answer still
                    // knows of the deploys (and of the delivery id).
                    deploys.durable().await;
                    Ok(HttpResponse::Accepted().json(serde_json::json!({ "deploys": paths })))
                }
            }
        }
        other => Ok(HttpResponse::Ok().json(serde_json::json!({ "ignored": other }))),
    }
}

#[cfg(test)]
mod tests {
    use super::{sign, signature_matches};

    /// GitHub's published example ("Validating webhook deliveries").
    #[test]
    fn githubs_test_vector_verifies() {
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signature_matches(secret, body, header));
        assert!(!signature_matches(secret, b"Hello, World?", header));
        assert!(!signature_matches(b"another secret", body, header));
        assert!(!signature_matches(secret, body, "sha256=757107ea"));
        assert!(!signature_matches(
            secret,
            body,
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        ));
        assert!(!signature_matches(secret, body, ""));
        assert_eq!(sign(secret, body), header);
    }
}
