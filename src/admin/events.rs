//! `GET /api/v1/events`: the Server-Sent Events stream of state changes, numbered, and
//! resumable after `Last-Event-ID`.
//!
//! One [`EventLog`] per admin server numbers the tree's state changes: a thread of its
//! own (never the supervision thread) receives them from [`ActorTree::subscribe`],
//! gives each the next id, keeps the last [`REPLAY`] in a ring and wakes the streams.
//! Every stream reads from that ring, so a live event and the same event replayed carry
//! the same id. Ids start at the log's start time in microseconds since the epoch: an id
//! from an earlier warden is older than the ring and answered with `event: lagged`, like
//! one that fell out of the ring; so is an id the log never gave.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use warden_supervisors::ActorTree;

use super::Authorized;

/// How many events the ring keeps for resuming streams.
pub(crate) const REPLAY: usize = 1024;
/// How long an idle stream waits before a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What an entry of the log is.
#[derive(Debug, Clone)]
enum Entry {
    /// A state change, as the JSON `data:` of an `event: state`.
    State(Arc<str>),
    /// The log itself missed this many events of the tree (its receiver fell behind).
    Missed(u64),
}

#[derive(Debug)]
struct Ring {
    /// The id of the first entry of `entries`.
    first: u64,
    entries: VecDeque<Entry>,
}

impl Ring {
    /// The id of the newest entry (one less than `first` while empty).
    fn newest(&self) -> u64 {
        self.first + self.entries.len() as u64 - 1
    }
}

/// The numbered log of the tree's state changes (see the module doc).
#[derive(Debug)]
pub(crate) struct EventLog {
    /// The id of this run's first event: an id below it is from an earlier run.
    start: u64,
    ring: Mutex<Ring>,
    newest: tokio::sync::watch::Sender<u64>,
}

/// What a stream reads next from the log.
#[derive(Debug)]
enum Next {
    /// The entries after the stream's last id, with their ids.
    Entries(Vec<(u64, Entry)>),
    /// The stream's last id is no longer (or never was) in the ring: it missed events
    /// (how many is unknown for an id of an earlier run or from the future).
    Gap { missed: Option<u64>, newest: u64 },
}

impl EventLog {
    /// Starts numbering the events of `tree` on a thread of its own; the thread ends
    /// when the tree's event bus closes.
    pub(crate) fn start(tree: &ActorTree) -> std::io::Result<Arc<EventLog>> {
        let first = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        let log = Arc::new(EventLog {
            start: first,
            ring: Mutex::new(Ring {
                first,
                entries: VecDeque::with_capacity(REPLAY),
            }),
            newest: tokio::sync::watch::channel(first - 1).0,
        });
        let mut rx = tree.subscribe();
        let writer = log.clone();
        std::thread::Builder::new()
            .name("warden-events".into())
            .spawn(move || {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    let entry = match rx.blocking_recv() {
                        Ok(event) => match serde_json::to_string(&event) {
                            Ok(data) => Entry::State(data.into()),
                            Err(e) => {
                                tracing::warn!(path = %event.path, error = %e, "cannot encode a state event");
                                continue;
                            }
                        },
                        Err(RecvError::Lagged(missed)) => Entry::Missed(missed),
                        Err(RecvError::Closed) => return,
                    };
                    writer.push(entry);
                }
            })?;
        Ok(log)
    }

    fn push(&self, entry: Entry) {
        let newest = {
            let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            if ring.entries.len() == REPLAY {
                ring.entries.pop_front();
                ring.first += 1;
            }
            ring.entries.push_back(entry);
            ring.newest()
        };
        self.newest.send_replace(newest);
    }

    /// The id of the newest event so far.
    fn newest(&self) -> u64 {
        self.ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .newest()
    }

    /// What follows `last`.
    fn after(&self, last: u64) -> Next {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let newest = ring.newest();
        if last > newest || last + 1 < ring.first {
            let known = last + 1 >= self.start && last <= newest;
            return Next::Gap {
                missed: known.then(|| ring.first.saturating_sub(last + 1)),
                newest,
            };
        }
        let skip = (last + 1 - ring.first) as usize;
        Next::Entries(
            ring.entries
                .iter()
                .enumerate()
                .skip(skip)
                .map(|(i, e)| (ring.first + i as u64, e.clone()))
                .collect(),
        )
    }
}

/// One `id:`-numbered SSE message.
fn message(id: u64, entry: &Entry) -> String {
    match entry {
        Entry::State(data) => format!("id: {id}\nevent: state\ndata: {data}\n\n"),
        Entry::Missed(missed) => lagged(id, Some(*missed)),
    }
}

fn lagged(id: u64, missed: Option<u64>) -> String {
    let missed = missed.map_or_else(|| "null".to_owned(), |n| n.to_string());
    format!("id: {id}\nevent: lagged\ndata: {{\"missed\":{missed}}}\n\n")
}

/// `GET /api/v1/events`: Server-Sent Events, one `state` event per state change, each
/// with an `id:`; with `Last-Event-ID` the events after it are sent first (or
/// `event: lagged` when they are gone); a comment every 15 s keeps an idle connection
/// open.
pub(super) async fn events(
    _: Authorized,
    req: HttpRequest,
    log: web::Data<Arc<EventLog>>,
) -> HttpResponse {
    use futures_util::stream;
    let log: Arc<EventLog> = log.get_ref().clone();
    let mut wake = log.newest.subscribe();
    wake.mark_changed();
    let resume = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let last = resume.unwrap_or_else(|| log.newest());
    let hello = web::Bytes::from_static(b": warden events\n\n");
    let start = (log, wake, last, Some(hello));
    let stream = stream::unfold(start, |(log, mut wake, mut last, hello)| async move {
        if let Some(hello) = hello {
            return Some((Ok::<_, actix_web::Error>(hello), (log, wake, last, None)));
        }
        loop {
            match tokio::time::timeout(KEEP_ALIVE, wake.changed()).await {
                Err(_) => {
                    let chunk = web::Bytes::from_static(b": keep-alive\n\n");
                    return Some((Ok(chunk), (log, wake, last, None)));
                }
                Ok(Err(_)) => return None,
                Ok(Ok(())) => {}
            }
            wake.borrow_and_update();
            let chunk = match log.after(last) {
                Next::Gap { missed, newest } => {
                    last = newest;
                    lagged(newest, missed)
                }
                Next::Entries(entries) if entries.is_empty() => continue,
                Next::Entries(entries) => {
                    let mut chunk = String::new();
                    for (id, entry) in &entries {
                        chunk.push_str(&message(*id, entry));
                        last = *id;
                    }
                    chunk
                }
            };
            return Some((Ok(web::Bytes::from(chunk)), (log, wake, last, None)));
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream)
}
