//! One POST of a notification, with its deadline, and the one resend a 429 allows.
//!
//! An event is posted at most twice: once, and once more only when the first answer was
//! 429 (the platform did not take it), after its `Retry-After`. Nothing else is resent:
//! a timeout or an error answer may hide a message that was posted, and a second copy in
//! a channel is worse than a line in warden's log.

use std::time::Duration;

use awc::http::StatusCode;

/// The longest `Retry-After` waited for; a longer one is cut to this (the queue behind
/// the event waits as long).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The wait after a 429 without a readable `Retry-After`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A 2xx answer.
    Delivered,
    /// Not delivered (or not known to be): why.
    Failed(String),
}

/// The HTTP client of one notifier: rustls (ring, the Mozilla roots) for https://, no
/// redirect followed (the URL is a secret: it goes nowhere else), `deadline` for each
/// request.
pub(super) fn client(deadline: Duration) -> awc::Client {
    let connector = awc::Connector::new().timeout(deadline);
    let connector = match crate::link::tls_config(None) {
        Ok(config) => connector.rustls_0_23(config),
        Err(e) => {
            tracing::error!(error = %e, "notifiers: cannot set up TLS; https:// notifiers will fail");
            connector
        }
    };
    awc::Client::builder()
        .timeout(deadline)
        .disable_redirects()
        .connector(connector)
        .finish()
}

/// Posts `body` (JSON) to the URL of the notifier `name`, each try within `deadline`;
/// one resend after a 429.
pub(super) async fn post(
    client: &awc::Client,
    name: &str,
    url: &str,
    body: Vec<u8>,
    deadline: Duration,
) -> Outcome {
    for attempt in 1..=2 {
        let request = client
            .post(url)
            .insert_header((awc::http::header::CONTENT_TYPE, "application/json"))
            .timeout(deadline)
            .send_body(body.clone());
        let response = match tokio::time::timeout(deadline, request).await {
            Err(_) => return Outcome::Failed(format!("no answer within {deadline:?}")),
            Ok(Err(e)) => return Outcome::Failed(format!("request failed: {e}")),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        if status != StatusCode::TOO_MANY_REQUESTS {
            return Outcome::Failed(format!("answered {status}"));
        }
        if attempt == 2 {
            break;
        }
        let wait = retry_after(
            response
                .headers()
                .get(awc::http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
        );
        tracing::info!(
            notifier = %name,
            wait_ms = wait.as_millis() as u64,
            "notifier rate-limited (429): one resend after Retry-After"
        );
        drop(response);
        tokio::time::sleep(wait).await;
    }
    Outcome::Failed("answered 429 Too Many Requests twice: dropped".into())
}

/// The wait a `Retry-After` header asks for: seconds (Discord sends decimals), at most
/// [`MAX_RETRY_AFTER`]; [`DEFAULT_RETRY_AFTER`] when missing or not a number of seconds
/// (an HTTP date included).
pub fn retry_after(header: Option<&str>) -> Duration {
    header
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map_or(DEFAULT_RETRY_AFTER, |secs| {
            Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_is_capped() {
        assert_eq!(retry_after(Some("2")), Duration::from_secs(2));
        assert_eq!(retry_after(Some(" 0.5 ")), Duration::from_millis(500));
        assert_eq!(retry_after(Some("3600")), MAX_RETRY_AFTER);
        assert_eq!(retry_after(Some("-1")), DEFAULT_RETRY_AFTER);
        assert_eq!(retry_after(Some("NaN")), DEFAULT_RETRY_AFTER);
        assert_eq!(
            retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            DEFAULT_RETRY_AFTER
        );
        assert_eq!(retry_after(None), DEFAULT_RETRY_AFTER);
    }
}
