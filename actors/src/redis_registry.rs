//! The Redis [`SessionRegistry`](crate::SessionRegistry), so that wardens on one host
//! share pool sessions (e.g. during a rolling update of warden itself).
//!
//! Each pool's sessions live in one Redis hash, `warden:pool:<pool path>:sessions`
//! (`warden:pool:/shiny:sessions`), field = session id, value = the [`Session`] as JSON.
//! Every warden connected to the same Redis sees the sessions the others placed.
//!
//! Nothing here runs on the supervision thread: the registry owns a thread
//! (`warden-redis`) with its own tokio runtime and an async [`ConnectionManager`]; every
//! call is a task on that runtime whose result the caller awaits, and every Redis exchange
//! is bounded ([`IO_TIMEOUT`]; connecting, [`CONNECT_TIMEOUT`]).
//!
//! Redis is not a single point of failure: the registry keeps a local copy of every
//! session it wrote or read. When a Redis call fails (connection lost, timeout) it logs
//! one warning for the outage, becomes *degraded* and serves from that copy at once
//! (no Redis call is tried while degraded): `put` and `remove` still succeed locally,
//! `list` answers the local copy. A background task PINGs Redis every 500 ms; once it
//! answers, it resyncs (writes back the sessions this process holds that Redis lacks,
//! deletes those removed during the outage, then adopts Redis's view, which includes what
//! other wardens added; `remove` and the per-pool resync are small Lua scripts, atomic and
//! one reply each) and logs that it did.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue};
use warden_supervisors::ActorPath;

use crate::pool::{RegistryFuture, Session, SessionRegistry};

/// Timeout to open a connection to Redis (and, at start, to get its PING answered).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Timeout of each Redis exchange.
const IO_TIMEOUT: Duration = Duration::from_millis(500);
/// While Redis is unreachable, it is tried this often.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);

/// A [`SessionRegistry`] kept in Redis (`[cluster] redis_url`), shared by every warden
/// using the same Redis, that keeps serving from a local copy while Redis is unreachable
/// and resyncs when it is back (see the module documentation).
pub struct RedisRegistry {
    inner: Arc<Inner>,
    runtime: tokio::runtime::Handle,
    /// Dropped with the registry: ends the `warden-redis` thread.
    _stop: tokio::sync::oneshot::Sender<()>,
}

struct Inner {
    /// The URL, password hidden: for messages.
    url: String,
    conn: ConnectionManager,
    state: Mutex<State>,
    /// Who this warden is among those sharing the Redis (its state_dir): port claims are
    /// tagged with it, so a restarted warden takes back what it held before a crash.
    instance: Mutex<String>,
}

#[derive(Default)]
struct State {
    /// In an outage: calls are served locally, a resync is due once Redis answers.
    degraded: bool,
    /// The task that waits for Redis to come back runs.
    recovering: bool,
    /// Counts local changes made while degraded (a resync that raced one goes again).
    changes: u64,
    pools: HashMap<ActorPath, Local>,
}

/// The local copy of one pool's sessions.
#[derive(Default)]
struct Local {
    /// Every session known: those this process put, and those last read from Redis.
    sessions: HashMap<String, Session>,
    /// The ids this process put (and did not remove): written back to Redis on resync.
    own: HashSet<String>,
    /// The ids removed while degraded: deleted from Redis on resync.
    removed: HashSet<String>,
}

impl fmt::Debug for RedisRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("RedisRegistry")
            .field("url", &self.inner.url)
            .field("degraded", &state.degraded)
            .field("pools", &state.pools.len())
            .finish_non_exhaustive()
    }
}

/// Removes one session atomically and answers it (nil if absent).
/// KEYS[1]: the pool's hash; ARGV[1]: the session id.
const REMOVE_SCRIPT: &str = "\
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then redis.call('HDEL', KEYS[1], ARGV[1]) end
return v";

/// The resync of one pool, atomically: deletes the ids removed during the outage, writes
/// the sessions this process holds that the hash lacks, answers `{written, HGETALL}`.
/// KEYS[1]: the pool's hash; ARGV: n, then n ids to delete, then (id, json) pairs.
const RESYNC_SCRIPT: &str = "\
local n = tonumber(ARGV[1])
for i = 2, n + 1 do redis.call('HDEL', KEYS[1], ARGV[i]) end
local written = 0
for i = n + 2, #ARGV - 1, 2 do
  written = written + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
end
return {written, redis.call('HGETALL', KEYS[1])}";

/// The Redis hash holding the sessions of `pool`.
fn key(pool: &ActorPath) -> String {
    format!("warden:pool:{pool}:sessions")
}

/// `url` with its password (if any) replaced by `***`, fit for messages and logs: the one
/// place that hides a URL's secret (config errors, warden's log, this registry's own
/// messages all go through it).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let hidden = match userinfo.find(':') {
                Some(colon) => format!("{}:***", &userinfo[..colon]),
                None => userinfo.to_owned(),
            };
            format!(
                "{}{hidden}{}",
                &url[..scheme_end + 3],
                &rest[at..] // from the '@' on
            )
        }
        None => url.to_owned(),
    }
}

/// Parses the sessions of a hash; entries that are not a valid session are skipped.
fn parse_all(pool: &ActorPath, raw: HashMap<String, String>) -> HashMap<String, Session> {
    raw.into_iter()
        .filter_map(|(id, json)| match serde_json::from_str::<Session>(&json) {
            Ok(session) => Some((id, session)),
            Err(e) => {
                tracing::warn!(pool = %pool, session = %id, error = %e, "skipping an unreadable session in Redis");
                None
            }
        })
        .collect()
}

impl RedisRegistry {
    /// Connects to the Redis at `url` (`redis://host:port/db`) and checks it answers PING,
    /// within about [`CONNECT_TIMEOUT`] (plus one [`IO_TIMEOUT`] for the PING). The error
    /// names the URL: `cannot reach Redis at redis://127.0.0.1:6390: ...`. Call it from a
    /// plain thread (warden does, before its System starts): it waits for the answer.
    pub fn connect(url: &str) -> Result<Self, String> {
        let shown = redact_url(url);
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| format!("invalid Redis URL {shown}: {e}"))?;
        // No CLIENT SETINFO on connect: against a frozen Redis each setup command costs a
        // full timeout.
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        let client = redis::Client::open(info.set_redis_settings(settings))
            .map_err(|e| format!("invalid Redis URL {shown}: {e}"))?;
        let (runtime, stop) =
            start_thread().map_err(|e| format!("cannot start the Redis thread: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(RECONNECT_EVERY);
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let connected = tokio::time::timeout(CONNECT_TIMEOUT + IO_TIMEOUT, async {
                let mut conn = ConnectionManager::new_with_config(client, config).await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await?;
                Ok::<_, redis::RedisError>(conn)
            })
            .await;
            let _ = tx.send(connected);
        });
        let conn = match rx.recv() {
            Ok(Ok(Ok(conn))) => conn,
            Ok(Ok(Err(e))) => return Err(format!("cannot reach Redis at {shown}: {e}")),
            Ok(Err(_)) => {
                return Err(format!(
                    "cannot reach Redis at {shown}: no answer within {:?}",
                    CONNECT_TIMEOUT + IO_TIMEOUT
                ))
            }
            Err(_) => {
                return Err(format!(
                    "cannot reach Redis at {shown}: the Redis thread ended"
                ))
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                url: shown,
                conn,
                state: Mutex::default(),
                instance: Mutex::default(),
            }),
            runtime,
            _stop: stop,
        })
    }

    /// The URL (password hidden).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Whether Redis was unreachable on the last try (calls are served locally).
    pub fn is_degraded(&self) -> bool {
        self.inner.lock().degraded
    }

    /// Names this warden among those sharing the Redis (e.g. its state_dir).
    pub fn with_instance(self, instance: impl Into<String>) -> Self {
        *self
            .inner
            .instance
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = instance.into();
        self
    }

    /// Runs `f` on the Redis thread; its answer comes back through the returned future
    /// (`lost` says what to answer if the task never finishes: the registry was dropped).
    fn run<T, F>(
        &self,
        lost: impl FnOnce(String) -> T + Send + 'static,
        f: impl FnOnce(Arc<Inner>) -> F,
    ) -> RegistryFuture<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let task = self.runtime.spawn(f(self.inner.clone()));
        Box::pin(async move {
            task.await
                .unwrap_or_else(|e| lost(format!("the Redis registry task ended: {e}")))
        })
    }

    /// Runs `f` on the Redis thread, nobody waiting for it.
    fn detach<F>(&self, f: impl FnOnce(Arc<Inner>) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(f(self.inner.clone()));
    }
}

/// Starts the `warden-redis` thread and its runtime; it ends when the sender is dropped.
fn start_thread() -> std::io::Result<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("warden-redis".into())
        .spawn(move || {
            let _ = runtime.block_on(stopped);
        })?;
    Ok((handle, stop))
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How a port claim of `worker` by this warden is written.
    fn owned(&self, worker: &ActorPath) -> String {
        let instance = self.instance.lock().unwrap_or_else(PoisonError::into_inner);
        format!("{worker}@{instance}")
    }

    fn suffix(&self) -> String {
        let instance = self.instance.lock().unwrap_or_else(PoisonError::into_inner);
        format!("@{instance}")
    }

    /// One bounded Redis exchange; `None` when degraded or when it fails (then degraded).
    async fn call<T: FromRedisValue>(self: &Arc<Self>, cmd: Cmd) -> Option<T> {
        if self.lock().degraded {
            return None;
        }
        match self.exchange(&cmd).await {
            Ok(value) => Some(value),
            Err(e) => {
                self.outage(&e);
                None
            }
        }
    }

    /// One bounded Redis exchange, degraded or not.
    async fn exchange<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, String> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(IO_TIMEOUT, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {IO_TIMEOUT:?}")),
        }
    }

    /// Redis failed: serve locally, warn once per outage, wait for it in the background.
    fn outage(self: &Arc<Self>, error: &str) {
        let mut state = self.lock();
        if !state.degraded {
            state.degraded = true;
            tracing::warn!(
                url = %self.url,
                error = %error,
                "Redis is unreachable: pools serve sessions from local state until it is back"
            );
        }
        if !state.recovering {
            state.recovering = true;
            tokio::spawn(self.clone().recover());
        }
    }

    /// PINGs Redis until it answers, then resyncs (again while local changes race it);
    /// the successful resync ends the outage.
    async fn recover(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RECONNECT_EVERY).await;
            if self.exchange::<String>(&redis::cmd("PING")).await.is_err() {
                continue;
            }
            match self.resync().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(url = %self.url, error = %e, "resync failed: trying again")
                }
            }
        }
    }

    /// After an outage: puts back the sessions this process holds that Redis lacks,
    /// deletes those removed meanwhile, then takes Redis's view of each pool. `false`
    /// when a local change raced it (it must run again).
    async fn resync(&self) -> Result<bool, String> {
        let (changes, plans) = {
            let state = self.lock();
            let mut plans = Vec::new();
            for (pool, local) in &state.pools {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(RESYNC_SCRIPT)
                    .arg(1)
                    .arg(key(pool))
                    .arg(local.removed.len());
                for id in &local.removed {
                    cmd.arg(id);
                }
                for id in &local.own {
                    if let Some(session) = local.sessions.get(id) {
                        let json = serde_json::to_string(session)
                            .map_err(|e| format!("cannot encode a session: {e}"))?;
                        cmd.arg(id).arg(json);
                    }
                }
                plans.push((pool.clone(), local.removed.clone(), cmd));
            }
            (state.changes, plans)
        };
        let mut answers = Vec::with_capacity(plans.len());
        for (pool, removed, cmd) in plans {
            let (added, raw): (usize, HashMap<String, String>) = self.exchange(&cmd).await?;
            answers.push((pool, removed, added, raw));
        }
        let mut state = self.lock();
        if state.changes != changes {
            return Ok(false);
        }
        let (mut written, mut deleted) = (0usize, 0usize);
        for (pool, removed, added, raw) in answers {
            let local = state.pools.entry(pool.clone()).or_default();
            written += added;
            deleted += removed.len();
            local.removed.retain(|id| !removed.contains(id));
            local.sessions = parse_all(&pool, raw);
            let sessions = &local.sessions;
            local.own.retain(|id| sessions.contains_key(id));
        }
        // Both under one lock: an outage right after this starts a new recovery.
        state.degraded = false;
        state.recovering = false;
        tracing::info!(url = %self.url, written, deleted, "Redis is back: sessions resynced");
        Ok(true)
    }

    async fn put(self: Arc<Self>, pool: ActorPath, session: Session) -> Result<(), String> {
        let json = serde_json::to_string(&session)
            .map_err(|e| format!("cannot encode session {}: {e}", session.session_id))?;
        {
            // Degraded or not, the session is recorded locally; Redis gets it now or on
            // resync.
            let mut state = self.lock();
            state.changes += 1;
            let local = state.pools.entry(pool.clone()).or_default();
            local
                .sessions
                .insert(session.session_id.clone(), session.clone());
            local.own.insert(session.session_id.clone());
            local.removed.remove(&session.session_id);
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(key(&pool)).arg(&session.session_id).arg(&json);
        self.call::<()>(cmd).await;
        Ok(())
    }

    async fn remove(
        self: Arc<Self>,
        pool: ActorPath,
        id: String,
    ) -> Result<Option<Session>, String> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(REMOVE_SCRIPT).arg(1).arg(key(&pool)).arg(&id);
        let in_redis = self.call::<Option<String>>(cmd).await;
        let mut state = self.lock();
        state.changes += 1;
        let local = state.pools.entry(pool.clone()).or_default();
        let known = local.sessions.remove(&id);
        let was_own = local.own.remove(&id);
        match in_redis {
            Some(Some(json)) => match serde_json::from_str::<Session>(&json) {
                Ok(session) => Ok(Some(session)),
                Err(e) => {
                    tracing::warn!(pool = %pool, session = %id, error = %e, "removed an unreadable session from Redis");
                    Ok(known)
                }
            },
            // Redis lacks it: another warden removed it, unless it was ours.
            Some(None) => Ok(known.filter(|_| was_own)),
            None => {
                if known.is_some() {
                    local.removed.insert(id);
                }
                Ok(known)
            }
        }
    }

    async fn list(self: Arc<Self>, pool: ActorPath) -> Result<Vec<Session>, String> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(key(&pool));
        let raw = self.call::<HashMap<String, String>>(cmd).await;
        let mut state = self.lock();
        let local = state.pools.entry(pool.clone()).or_default();
        if let Some(raw) = raw {
            // Redis is the truth while it answers.
            local.sessions = parse_all(&pool, raw);
            let sessions = &local.sessions;
            local.own.retain(|id| sessions.contains_key(id));
        }
        let mut sessions: Vec<Session> = local.sessions.values().cloned().collect();
        sessions.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        Ok(sessions)
    }
}

/// The Redis hash of the port claims of `pool`: field = port, value = `worker@instance`.
fn ports_key(pool: &ActorPath) -> String {
    format!("warden:pool:{pool}:ports")
}

impl SessionRegistry for RedisRegistry {
    fn put(&self, pool: &ActorPath, session: &Session) -> RegistryFuture<Result<(), String>> {
        let (pool, session) = (pool.clone(), session.clone());
        self.run(Err, move |inner| inner.put(pool, session))
    }

    fn remove(
        &self,
        pool: &ActorPath,
        session_id: &str,
    ) -> RegistryFuture<Result<Option<Session>, String>> {
        let (pool, id) = (pool.clone(), session_id.to_owned());
        self.run(Err, move |inner| inner.remove(pool, id))
    }

    fn list(&self, pool: &ActorPath) -> RegistryFuture<Result<Vec<Session>, String>> {
        let pool = pool.clone();
        self.run(Err, move |inner| inner.list(pool))
    }

    fn shared(&self) -> bool {
        true
    }

    fn next_worker(&self, pool: &ActorPath) -> RegistryFuture<Option<u64>> {
        let mut cmd = redis::cmd("INCR");
        cmd.arg(format!("warden:pool:{pool}:next_worker"));
        self.run(
            |_| None,
            move |inner| async move { inner.call::<u64>(cmd).await },
        )
    }

    fn claim_port(&self, pool: &ActorPath, port: u16, worker: &ActorPath) -> RegistryFuture<bool> {
        // HSETNX, or the same worker claiming again: one round trip.
        let script = "if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then return 1 end \
                      if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return 1 end return 0";
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script)
            .arg(1)
            .arg(ports_key(pool))
            .arg(port)
            .arg(self.inner.owned(worker));
        // Unreachable: decide locally (the pool's own list still keeps its ports apart).
        self.run(
            |_| true,
            move |inner| async move { inner.call::<i64>(cmd).await.is_none_or(|c| c == 1) },
        )
    }

    fn release_port(&self, pool: &ActorPath, port: u16, worker: &ActorPath) {
        let script = "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end return 0";
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script)
            .arg(1)
            .arg(ports_key(pool))
            .arg(port)
            .arg(self.inner.owned(worker));
        self.detach(move |inner| async move {
            inner.call::<i64>(cmd).await;
        });
    }

    fn release_own_ports_except(&self, pool: &ActorPath, keep: Vec<u16>) {
        // Claims left by this warden's earlier run (a crash keeps them) whose worker it
        // did not take back: given back.
        let script = "local keep = {} for i = 2, #ARGV do keep[ARGV[i]] = true end \
                      local n = 0 local all = redis.call('HGETALL', KEYS[1]) \
                      for i = 1, #all, 2 do local v = all[i + 1] \
                      if not keep[all[i]] and string.sub(v, -string.len(ARGV[1])) == ARGV[1] then redis.call('HDEL', KEYS[1], all[i]) n = n + 1 end end \
                      return n";
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script)
            .arg(1)
            .arg(ports_key(pool))
            .arg(self.inner.suffix());
        for port in keep {
            cmd.arg(port);
        }
        self.detach(move |inner| async move {
            inner.call::<i64>(cmd).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("redis://:secret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis://user:secret@host/0"),
            "redis://user:***@host/0"
        );
        assert_eq!(redact_url("redis://user@host"), "redis://user@host");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn keys_name_the_pool() {
        let pool = ActorPath::parse("/shiny").expect("a valid path");
        assert_eq!(key(&pool), "warden:pool:/shiny:sessions");
    }
}
