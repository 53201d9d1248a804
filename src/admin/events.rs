//! `GET /api/v1/events`: the Server-Sent Events stream of state changes.

use std::time::Duration;

use actix_web::{web, HttpResponse};

use super::{AdminState, Authorized};

/// `GET /api/v1/events`: Server-Sent Events, one `state` event per state change, and a
/// comment every 15 s to keep idle connections open.
pub(super) async fn events(_: Authorized, state: web::Data<AdminState>) -> HttpResponse {
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
