//! Notifiers: tell a chat channel (Slack, Mattermost, Discord) or any HTTP endpoint (a
//! generic JSON webhook) that a deploy started, succeeded or failed, or that an actor
//! gave up (state `failed`).
//!
//! [`Notifiers::publish`] never blocks and never fails its caller: each notifier has its
//! own bounded queue ([`QUEUE_CAPACITY`] events; when it is full the event is dropped,
//! counted and logged), and the posts run on a thread of their own (`warden-notify`, an
//! actix current-thread runtime for `awc`), never on the supervision thread. Each post
//! has a deadline; a 429 is posted once more after its `Retry-After`
//! ([`send::MAX_RETRY_AFTER`] at most); nothing else is resent, so each event reaches
//! each notifier at most once, and a failing notifier is a line in warden's log, nothing
//! more. Texts are cut to the platform's limit keeping their end ([`cut_keeping_end`]).
//!
//! ```no_run
//! use warden_actors::notifier::{Notifiers, NotifierSpec, NotifyEvent, Platform, EventKinds};
//! use warden_supervisors::ActorPath;
//!
//! let notifiers = Notifiers::start(vec![NotifierSpec {
//!     name: "ops".into(),
//!     platform: Platform::Slack,
//!     url: "https://hooks.slack.com/services/T/B/X".into(),
//!     events: EventKinds::ALL,
//!     timeout: std::time::Duration::from_secs(10),
//! }])?;
//! notifiers.publish(NotifyEvent::DeployStarted {
//!     path: ActorPath::parse("/api").unwrap(),
//!     id: "7".into(),
//!     commit: Some("9fceb02".into()),
//! });
//! # Ok::<(), std::io::Error>(())
//! ```

mod cut;
mod format;
pub mod send;

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use warden_supervisors::{ActorKind, ActorPath, ActorState, ActorTree, Timestamp};

pub use cut::{cut_keeping_end, marker, units};
pub use format::{
    DISCORD_LIMIT, MATTERMOST_LIMIT, SLACK_LIMIT, WEBHOOK_OUTPUT_LIMIT, WEBHOOK_VERSION,
};

/// Events waiting per notifier; one more is dropped (counted, logged).
pub const QUEUE_CAPACITY: usize = 64;
/// The deadline of each post unless the notifier sets its own (`timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a notifier posts, and in which format (`kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// `slack`: `{"text"}`, at most [`SLACK_LIMIT`] characters, `&<>` escaped.
    Slack,
    /// `mattermost`: `{"text"}`, at most [`MATTERMOST_LIMIT`] characters.
    Mattermost,
    /// `discord`: `{"content"}`, at most [`DISCORD_LIMIT`] characters, no mention pings.
    Discord,
    /// `webhook`: the generic JSON event (see the module `format`).
    Webhook,
}

impl Platform {
    /// Every platform with its name in the config (`kind`).
    pub const ALL: [(&'static str, Platform); 4] = [
        ("slack", Platform::Slack),
        ("mattermost", Platform::Mattermost),
        ("discord", Platform::Discord),
        ("webhook", Platform::Webhook),
    ];
}

/// Which events a notifier is sent (`events = ["deploy", "failed"]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventKinds {
    /// `deploy`: a deploy started, succeeded or failed.
    pub deploy: bool,
    /// `failed`: an actor gave up (state `failed`).
    pub failed: bool,
}

impl EventKinds {
    /// Both kinds (the default).
    pub const ALL: EventKinds = EventKinds {
        deploy: true,
        failed: true,
    };
    /// The names of the kinds in the config.
    pub const NAMES: [&'static str; 2] = ["deploy", "failed"];

    fn wants(&self, event: &NotifyEvent) -> bool {
        match event {
            NotifyEvent::ActorFailed { .. } => self.failed,
            _ => self.deploy,
        }
    }
}

/// Something a notifier tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyEvent {
    /// A deploy of the service at `path` started running its steps.
    DeployStarted {
        /// The service.
        path: ActorPath,
        /// The deploy's id.
        id: String,
        /// The commit deployed, when known.
        commit: Option<String>,
    },
    /// A deploy finished: the service restarted and is `running`.
    DeploySucceeded {
        /// The service.
        path: ActorPath,
        /// The deploy's id.
        id: String,
        /// The commit deployed, when known.
        commit: Option<String>,
    },
    /// A deploy failed at `step` (the running service was left alone, unless the step is
    /// `restart`).
    DeployFailed {
        /// The service.
        path: ActorPath,
        /// The deploy's id.
        id: String,
        /// The commit deployed, when known.
        commit: Option<String>,
        /// The step that failed (its name, or `restart`).
        step: String,
        /// Why (`exit code 1`, `timed out after 10m`, `interrupted`).
        reason: String,
        /// The last of the output (cut here to each platform's limit, keeping its end).
        output_tail: String,
    },
    /// An actor gave up: its state is `failed`.
    ActorFailed {
        /// The actor.
        path: ActorPath,
        /// Its `failed_reason`.
        reason: String,
    },
}

impl NotifyEvent {
    /// The event's name in the generic webhook's JSON (`event`).
    pub fn name(&self) -> &'static str {
        match self {
            NotifyEvent::DeployStarted { .. } => "deploy_started",
            NotifyEvent::DeploySucceeded { .. } => "deploy_succeeded",
            NotifyEvent::DeployFailed { .. } => "deploy_failed",
            NotifyEvent::ActorFailed { .. } => "actor_failed",
        }
    }

    /// The actor the event is about.
    pub fn path(&self) -> &ActorPath {
        match self {
            NotifyEvent::DeployStarted { path, .. }
            | NotifyEvent::DeploySucceeded { path, .. }
            | NotifyEvent::DeployFailed { path, .. }
            | NotifyEvent::ActorFailed { path, .. } => path,
        }
    }
}

/// An event and when it was published.
#[derive(Debug)]
struct Stamped {
    event: NotifyEvent,
    at: Timestamp,
}

/// One notifier (`[[notifier]]`). Its `Debug` hides the URL's path and password (the
/// URL is a secret).
#[derive(Clone, PartialEq, Eq)]
pub struct NotifierSpec {
    /// Its name, unique among notifiers.
    pub name: String,
    /// Its format (`kind`).
    pub platform: Platform,
    /// The URL posted to (a secret: show it through [`shown_url`] only).
    pub url: String,
    /// The events it is sent.
    pub events: EventKinds,
    /// The deadline of each post (connect, send, answer).
    pub timeout: Duration,
}

impl fmt::Debug for NotifierSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifierSpec")
            .field("name", &self.name)
            .field("platform", &self.platform)
            .field("url", &shown_url(&self.url))
            .field("events", &self.events)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Checks a notifier URL: `http://` or `https://`, a host, nothing awc would refuse.
pub fn check_url(url: &str) -> Result<(), String> {
    let shown = shown_url(url);
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{shown:?} is not an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.rsplit('@').next().unwrap_or("").is_empty() {
        return Err(format!("{shown:?} has no host"));
    }
    match url.parse::<awc::http::Uri>() {
        Ok(_) if !url.contains(char::is_whitespace) => Ok(()),
        _ => Err(format!("{shown:?} is not a valid URL")),
    }
}

/// `url` as logs and errors show it: scheme and host (a password hidden by
/// [`crate::redact_url`]), and `/***` for a path, which holds a webhook's secret.
pub fn shown_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "***".to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let origin = crate::redact_url(&url[..scheme_end + 3 + authority_end]);
    if authority_end < rest.len() {
        format!("{origin}/***")
    } else {
        origin
    }
}

/// What a notifier did so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotifierCounts {
    /// Events posted and answered 2xx.
    pub delivered: u64,
    /// Events posted and not delivered (an error, a timeout, a second 429).
    pub failed: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Debug)]
struct Queue {
    name: String,
    events: EventKinds,
    tx: mpsc::Sender<Arc<Stamped>>,
    counters: Arc<Counters>,
}

#[derive(Debug)]
struct Inner {
    queues: Vec<Queue>,
    /// Events queued and not yet handled, over every queue.
    pending: Arc<AtomicUsize>,
}

/// The notifiers of a warden: a cheap handle (clone it freely) to their queues. The
/// default has no notifier: publishing to it does nothing.
#[derive(Debug, Clone, Default)]
pub struct Notifiers {
    inner: Option<Arc<Inner>>,
}

impl Notifiers {
    /// No notifier.
    pub fn none() -> Self {
        Self::default()
    }

    /// Starts the sending thread of `specs` (none for an empty list).
    pub fn start(specs: Vec<NotifierSpec>) -> std::io::Result<Self> {
        if specs.is_empty() {
            return Ok(Self::none());
        }
        let pending = Arc::new(AtomicUsize::new(0));
        let mut queues = Vec::new();
        let mut workers = Vec::new();
        for spec in specs {
            let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
            let counters = Arc::new(Counters::default());
            queues.push(Queue {
                name: spec.name.clone(),
                events: spec.events,
                tx,
                counters: counters.clone(),
            });
            workers.push((spec, rx, counters));
        }
        let handled = pending.clone();
        std::thread::Builder::new()
            .name("warden-notify".into())
            .spawn(move || {
                let runtime = match actix_rt::Runtime::new() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!(error = %e, "notifiers: cannot start their runtime; nothing will be sent");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let tasks: Vec<_> = workers
                        .into_iter()
                        .map(|(spec, rx, counters)| {
                            actix_rt::spawn(run_queue(spec, rx, counters, handled.clone()))
                        })
                        .collect();
                    for task in tasks {
                        let _ = task.await;
                    }
                });
            })?;
        Ok(Self {
            inner: Some(Arc::new(Inner { queues, pending })),
        })
    }

    /// Whether there is no notifier at all.
    pub fn is_empty(&self) -> bool {
        self.inner.is_none()
    }

    /// Queues `event` for every notifier that wants it, and returns at once. A full queue
    /// drops the event for that notifier (counted in [`NotifierCounts::dropped`], logged).
    pub fn publish(&self, event: NotifyEvent) {
        let Some(inner) = &self.inner else { return };
        let stamped = Arc::new(Stamped {
            event,
            at: Timestamp::now(),
        });
        for queue in inner
            .queues
            .iter()
            .filter(|q| q.events.wants(&stamped.event))
        {
            inner.pending.fetch_add(1, Ordering::SeqCst);
            if queue.tx.try_send(stamped.clone()).is_err() {
                inner.pending.fetch_sub(1, Ordering::SeqCst);
                let dropped = queue.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    notifier = %queue.name,
                    path = %stamped.event.path(),
                    event = stamped.event.name(),
                    dropped,
                    "notifier queue full: event dropped"
                );
            }
        }
    }

    /// Waits (at most `within`) until every queued event has been handled (delivered or
    /// not); whether they all were.
    pub async fn flush(&self, within: Duration) -> bool {
        let Some(inner) = &self.inner else {
            return true;
        };
        let deadline = Instant::now() + within;
        while inner.pending.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Each notifier's name and counts, in config order.
    pub fn counts(&self) -> Vec<(String, NotifierCounts)> {
        let Some(inner) = &self.inner else {
            return Vec::new();
        };
        inner
            .queues
            .iter()
            .map(|q| {
                let counts = NotifierCounts {
                    delivered: q.counters.delivered.load(Ordering::Relaxed),
                    failed: q.counters.failed.load(Ordering::Relaxed),
                    dropped: q.counters.dropped.load(Ordering::Relaxed),
                };
                (q.name.clone(), counts)
            })
            .collect()
    }

    /// Tells every deploy transition of `events` (started, succeeded, failed), from a
    /// thread of its own that follows the deploy runner's broadcast.
    pub fn follow_deploys(
        &self,
        mut events: broadcast::Receiver<crate::DeployEvent>,
    ) -> std::io::Result<()> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        if !inner.queues.iter().any(|q| q.events.deploy) {
            return Ok(());
        }
        let notifiers = Arc::downgrade(inner);
        std::thread::Builder::new()
            .name("warden-notify-deploys".into())
            .spawn(move || loop {
                match events.blocking_recv() {
                    Ok(event) => {
                        let Some(inner) = notifiers.upgrade() else {
                            return;
                        };
                        if let Some(event) = NotifyEvent::of_deploy(event) {
                            Notifiers { inner: Some(inner) }.publish(event);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "notifiers: deploy events missed");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            })?;
        Ok(())
    }

    /// Publishes an [`NotifyEvent::ActorFailed`] (with its `failed_reason`) each time an
    /// actor of `tree` enters state `failed`. It listens on a thread of its own
    /// (`warden-notify-watch`), never on the supervision thread, and ends with the tree or
    /// when every handle to these notifiers is gone. Nothing to do without a notifier of
    /// `failed` events.
    pub fn watch_failures(&self, tree: &Arc<ActorTree>) -> std::io::Result<()> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        if !inner.queues.iter().any(|q| q.events.failed) {
            return Ok(());
        }
        let events = tree.subscribe();
        let tree = Arc::downgrade(tree);
        let notifiers = Arc::downgrade(inner);
        std::thread::Builder::new()
            .name("warden-notify-watch".into())
            .spawn(move || watch(events, tree, notifiers))?;
        Ok(())
    }
}

/// The loop of [`Notifiers::watch_failures`].
fn watch(
    mut events: broadcast::Receiver<warden_supervisors::LifecycleEvent>,
    tree: Weak<ActorTree>,
    notifiers: Weak<Inner>,
) {
    // Paths now `failed` and told: a second `failed` without a state between is not news.
    let mut told: HashSet<ActorPath> = HashSet::new();
    let tell = |path: ActorPath, told: &mut HashSet<ActorPath>| -> bool {
        let (Some(tree), Some(inner)) = (tree.upgrade(), notifiers.upgrade()) else {
            return false;
        };
        let info = tree.get(&path);
        // A deploy's actor that fails is told as its deploy's `DeployFailed` instead.
        if info.as_ref().is_some_and(|i| i.kind == ActorKind::Deploy) {
            return true;
        }
        let reason = info
            .and_then(|info| info.failed_reason)
            .unwrap_or_else(|| "no reason recorded".to_owned());
        if told.insert(path.clone()) {
            Notifiers { inner: Some(inner) }.publish(NotifyEvent::ActorFailed { path, reason });
        }
        true
    };
    loop {
        match events.blocking_recv() {
            Ok(event) if event.state == ActorState::Failed => {
                if !tell(event.path, &mut told) {
                    return;
                }
            }
            Ok(event) => {
                told.remove(&event.path);
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                // Events were missed: the tree itself says who is failed now.
                tracing::warn!(
                    missed,
                    "notifiers: fell behind the tree's events; reading the tree"
                );
                let Some(current) = tree.upgrade() else {
                    return;
                };
                let failed: Vec<ActorPath> = current
                    .descendants(&ActorPath::root())
                    .into_iter()
                    .filter(|view| view.info.state == ActorState::Failed)
                    .map(|view| view.info.path)
                    .collect();
                drop(current);
                told.retain(|path| failed.contains(path));
                for path in failed {
                    if !tell(path, &mut told) {
                        return;
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// One notifier's queue, served in order until every handle is gone.
async fn run_queue(
    spec: NotifierSpec,
    mut rx: mpsc::Receiver<Arc<Stamped>>,
    counters: Arc<Counters>,
    pending: Arc<AtomicUsize>,
) {
    let client = send::client(spec.timeout);
    let shown = shown_url(&spec.url);
    while let Some(stamped) = rx.recv().await {
        // A bug in the formatting loses that event, not the queue.
        let body = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            format::body(spec.platform, &spec.name, &stamped)
        }));
        let outcome = match body {
            Ok(body) => send::post(&client, &spec.name, &spec.url, body, spec.timeout).await,
            Err(_) => send::Outcome::Failed("formatting the message panicked".into()),
        };
        match outcome {
            send::Outcome::Delivered => {
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(notifier = %spec.name, path = %stamped.event.path(), event = stamped.event.name(), "notification delivered");
            }
            send::Outcome::Failed(why) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    notifier = %spec.name,
                    url = %shown,
                    path = %stamped.event.path(),
                    event = stamped.event.name(),
                    error = %why,
                    "notification not delivered"
                );
            }
        }
        pending.fetch_sub(1, Ordering::SeqCst);
    }
}

impl NotifyEvent {
    /// The notification of a deploy transition (`None` for a path that is not an actor
    /// path, which the deploy runner never sends).
    pub fn of_deploy(event: crate::DeployEvent) -> Option<Self> {
        use crate::DeployEvent as D;
        let actor = |path: &str| ActorPath::parse(path).ok();
        Some(match event {
            D::Started { path, id, commit } => Self::DeployStarted {
                path: actor(&path)?,
                id,
                commit,
            },
            D::Succeeded { path, id, commit } => Self::DeploySucceeded {
                path: actor(&path)?,
                id,
                commit,
            },
            D::Failed {
                path,
                id,
                commit,
                step,
                reason,
                output_tail,
            } => Self::DeployFailed {
                path: actor(&path)?,
                id,
                commit,
                step: step.unwrap_or_else(|| "deploy".to_owned()),
                reason,
                output_tail,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_hide_the_path_and_the_password() {
        assert_eq!(
            shown_url("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/***"
        );
        assert_eq!(
            shown_url("http://user:pw@127.0.0.1:9000/hook?x=1"),
            "http://user:***@127.0.0.1:9000/***"
        );
        assert_eq!(shown_url("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
        assert_eq!(shown_url("no scheme/secret"), "***");
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_pass() {
        assert!(check_url("https://hooks.slack.com/services/T/B/X").is_ok());
        assert!(check_url("http://127.0.0.1:8080/hook").is_ok());
        for bad in [
            "ftp://host/x",
            "hooks.slack.com/x",
            "http:///path",
            "https://",
            "http://host/a b",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        let e = check_url("file:///etc/secret-path").unwrap_err();
        assert!(!e.contains("secret-path"), "{e}");
    }
}
