//! The Redis [`SessionRegistry`](crate::SessionRegistry), so that wardens on one host
//! share pool sessions (e.g. during a rolling update of warden itself).
//!
//! Each pool's sessions live in one Redis hash, `warden:pool:<pool path>:sessions`
//! (`warden:pool:/shiny:sessions`), field = session id, value = the [`Session`] as JSON.
//! Every warden connected to the same Redis sees the sessions the others placed.
//!
//! Redis is not a single point of failure: the registry keeps a local copy of every
//! session it wrote or read. When a Redis call fails (connection lost, timeout) it logs
//! one warning for the outage, becomes *degraded* and serves from that copy: `put` and
//! `remove` still succeed locally, `list` answers the local copy. It tries to reconnect on
//! a later call, at most once every 500 ms; once Redis answers again it
//! resyncs (writes back the sessions this process holds that Redis lacks, deletes those
//! removed during the outage, then adopts Redis's view, which includes what other wardens
//! added) and logs that it did. Every Redis exchange is a single command with a 1 s
//! connect and read/write timeout (`remove` and the per-pool resync are small Lua scripts,
//! atomic and one reply each), so a call on a dead or frozen Redis returns within ~1 s.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::{Connection, RedisResult};
use warden_supervisors::ActorPath;

use crate::pool::{Session, SessionRegistry};

/// Timeout to open a connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Timeout of each read and write on the Redis connection.
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// What a call that reconnects may spend in all (connect, resync, command), roughly.
const CALL_BUDGET: Duration = Duration::from_secs(1);
/// The shortest read/write timeout given to the rest of a call after a slow reconnect.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
/// While Redis is unreachable, reconnection is tried at most this often.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);

/// A [`SessionRegistry`] kept in Redis (`[cluster] redis_url`), shared by every warden
/// using the same Redis, that keeps serving from a local copy while Redis is unreachable
/// and resyncs when it is back (see the module documentation).
pub struct RedisRegistry {
    /// The URL, password hidden: for messages.
    url: String,
    client: redis::Client,
    state: Mutex<State>,
    /// Who this warden is among those sharing the Redis (its state_dir): port claims are
    /// tagged with it, so a restarted warden takes back what it held before a crash.
    instance: String,
}

#[derive(Default)]
struct State {
    conn: Option<Connection>,
    /// In an outage: the warning was logged, a resync is due once Redis answers.
    degraded: bool,
    /// The last failed attempt to reach Redis (to pace reconnections).
    last_failure: Option<Instant>,
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
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("RedisRegistry")
            .field("url", &self.url)
            .field("connected", &state.conn.is_some())
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

/// `url` with its password (if any) replaced by `***`, fit for messages and logs.
fn redact(url: &str) -> String {
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
    /// Connects to the Redis at `url` (`redis://host:port/db`) and checks it answers PING
    /// (1 s to connect, 1 s to answer). The error names the URL: `cannot reach Redis at
    /// redis://127.0.0.1:6390: ...`.
    pub fn connect(url: &str) -> Result<Self, String> {
        let shown = redact(url);
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| format!("invalid Redis URL {shown}: {e}"))?;
        // No CLIENT SETINFO on connect: against a frozen Redis each setup command costs a
        // full read timeout, and a reconnection must stay within about one timeout.
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        let client = redis::Client::open(info.set_redis_settings(settings))
            .map_err(|e| format!("invalid Redis URL {shown}: {e}"))?;
        let mut conn = open(&client).map_err(|e| format!("cannot reach Redis at {shown}: {e}"))?;
        redis::cmd("PING")
            .query::<String>(&mut conn)
            .map_err(|e| format!("cannot reach Redis at {shown}: {e}"))?;
        Ok(Self {
            url: shown,
            instance: String::new(),
            client,
            state: Mutex::new(State {
                conn: Some(conn),
                ..State::default()
            }),
        })
    }

    /// The Redis URL (password hidden).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether Redis was unreachable on the last try (calls are served locally).
    pub fn is_degraded(&self) -> bool {
        self.lock().degraded
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Names this warden among those sharing the Redis (e.g. its state_dir).
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = instance.into();
        self
    }

    /// How a port claim of `worker` by this warden is written.
    fn owned(&self, worker: &ActorPath) -> String {
        format!("{worker}@{}", self.instance)
    }

    /// Runs `f` on the Redis connection, (re)connecting and resyncing first if needed.
    /// `None` when Redis is unreachable (the registry is then degraded).
    fn with_redis<T>(
        &self,
        state: &mut State,
        f: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> Option<T> {
        let mut reconnected = false;
        if state.conn.is_none() {
            if state
                .last_failure
                .is_some_and(|t| t.elapsed() < RECONNECT_EVERY)
            {
                return None;
            }
            let started = Instant::now();
            match open(&self.client) {
                Ok(conn) => {
                    // What is left of this call's budget is all the resync and the
                    // command get, so that one call stays near CALL_BUDGET.
                    let left = CALL_BUDGET
                        .saturating_sub(started.elapsed())
                        .max(MIN_TIMEOUT);
                    if let Err(e) = set_timeouts(&conn, left) {
                        self.outage(state, &e);
                        return None;
                    }
                    state.conn = Some(conn);
                    reconnected = true;
                }
                Err(e) => {
                    self.outage(state, &e);
                    return None;
                }
            }
            if state.degraded {
                if let Err(e) = self.resync(state) {
                    self.outage(state, &e);
                    return None;
                }
            }
        }
        let conn = state.conn.as_mut()?;
        let result = f(conn).and_then(|value| {
            if reconnected {
                set_timeouts(conn, IO_TIMEOUT)?;
            }
            Ok(value)
        });
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.outage(state, &e);
                None
            }
        }
    }

    /// Redis failed: drop the connection, warn once per outage.
    fn outage(&self, state: &mut State, error: &redis::RedisError) {
        state.conn = None;
        state.last_failure = Some(Instant::now());
        if !state.degraded {
            state.degraded = true;
            tracing::warn!(
                url = %self.url,
                error = %error,
                "Redis is unreachable: pools serve sessions from local state until it is back"
            );
        }
    }

    /// After an outage: puts back the sessions this process holds that Redis lacks,
    /// deletes those removed meanwhile, then takes Redis's view of each pool.
    fn resync(&self, state: &mut State) -> RedisResult<()> {
        let State { conn, pools, .. } = state;
        let Some(conn) = conn.as_mut() else {
            return Ok(());
        };
        let (mut written, mut deleted) = (0usize, 0usize);
        for (pool, local) in pools.iter_mut() {
            let key = key(pool);
            // One command per pool (one reply, so one read timeout at most).
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(RESYNC_SCRIPT)
                .arg(1)
                .arg(&key)
                .arg(local.removed.len());
            for id in &local.removed {
                cmd.arg(id);
            }
            for id in &local.own {
                if let Some(session) = local.sessions.get(id) {
                    let json = serde_json::to_string(session).map_err(|e| {
                        redis::RedisError::from((
                            redis::ErrorKind::Client,
                            "cannot encode a session",
                            e.to_string(),
                        ))
                    })?;
                    cmd.arg(id).arg(json);
                }
            }
            let (added, raw): (usize, HashMap<String, String>) = cmd.query(conn)?;
            written += added;
            deleted += local.removed.len();
            local.removed.clear();
            local.sessions = parse_all(pool, raw);
            let sessions = &local.sessions;
            local.own.retain(|id| sessions.contains_key(id));
        }
        state.degraded = false;
        state.last_failure = None;
        tracing::info!(
            url = %self.url,
            written,
            deleted,
            "Redis is back: sessions resynced"
        );
        Ok(())
    }
}

/// Opens a connection with the module's timeouts.
fn open(client: &redis::Client) -> RedisResult<Connection> {
    let conn = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    set_timeouts(&conn, IO_TIMEOUT)?;
    Ok(conn)
}

fn set_timeouts(conn: &Connection, timeout: Duration) -> RedisResult<()> {
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))
}

impl SessionRegistry for RedisRegistry {
    fn put(&self, pool: &ActorPath, session: &Session) -> Result<(), String> {
        let json = serde_json::to_string(session)
            .map_err(|e| format!("cannot encode session {}: {e}", session.session_id))?;
        let mut state = self.lock();
        let key = key(pool);
        // Degraded or not, the session is recorded locally; Redis gets it now or on resync.
        self.with_redis(&mut state, |conn| {
            redis::cmd("HSET")
                .arg(&key)
                .arg(&session.session_id)
                .arg(&json)
                .query::<()>(conn)
        });
        let local = state.pools.entry(pool.clone()).or_default();
        local
            .sessions
            .insert(session.session_id.clone(), session.clone());
        local.own.insert(session.session_id.clone());
        local.removed.remove(&session.session_id);
        Ok(())
    }

    fn remove(&self, pool: &ActorPath, session_id: &str) -> Result<Option<Session>, String> {
        let mut state = self.lock();
        let key = key(pool);
        let in_redis = self.with_redis(&mut state, |conn| {
            redis::cmd("EVAL")
                .arg(REMOVE_SCRIPT)
                .arg(1)
                .arg(&key)
                .arg(session_id)
                .query::<Option<String>>(conn)
        });
        let local = state.pools.entry(pool.clone()).or_default();
        let known = local.sessions.remove(session_id);
        let was_own = local.own.remove(session_id);
        match in_redis {
            Some(Some(json)) => match serde_json::from_str::<Session>(&json) {
                Ok(session) => Ok(Some(session)),
                Err(e) => {
                    tracing::warn!(pool = %pool, session = %session_id, error = %e, "removed an unreadable session from Redis");
                    Ok(known)
                }
            },
            // Redis lacks it: another warden removed it, unless it was ours.
            Some(None) => Ok(known.filter(|_| was_own)),
            None => {
                if known.is_some() {
                    local.removed.insert(session_id.to_owned());
                }
                Ok(known)
            }
        }
    }

    fn shared(&self) -> bool {
        true
    }

    fn next_worker(&self, pool: &ActorPath) -> Option<u64> {
        let mut state = self.lock();
        let key = format!("warden:pool:{pool}:next_worker");
        self.with_redis(&mut state, |conn| {
            redis::cmd("INCR").arg(&key).query::<u64>(conn)
        })
    }

    fn release_own_ports(&self, pool: &ActorPath) {
        let mut state = self.lock();
        let key = format!("warden:pool:{pool}:ports");
        let suffix = format!("@{}", self.instance);
        // Claims left by this warden's earlier run (a crash keeps them): given back.
        let script = "local n = 0 local all = redis.call('HGETALL', KEYS[1]) \
                      for i = 1, #all, 2 do local v = all[i + 1] \
                      if string.sub(v, -string.len(ARGV[1])) == ARGV[1] then redis.call('HDEL', KEYS[1], all[i]) n = n + 1 end end \
                      return n";
        self.with_redis(&mut state, |conn| {
            redis::cmd("EVAL")
                .arg(script)
                .arg(1)
                .arg(&key)
                .arg(&suffix)
                .query::<i64>(conn)
        });
    }

    fn claim_port(&self, pool: &ActorPath, port: u16, worker: &ActorPath) -> bool {
        let worker = &self.owned(worker);
        let mut state = self.lock();
        let key = format!("warden:pool:{pool}:ports");
        // HSETNX, or the same worker claiming again: one round trip.
        let script = "if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then return 1 end \
                      if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return 1 end return 0";
        let claimed = self.with_redis(&mut state, |conn| {
            redis::cmd("EVAL")
                .arg(script)
                .arg(1)
                .arg(&key)
                .arg(port)
                .arg(worker)
                .query::<i64>(conn)
        });
        // Unreachable: decide locally (the pool's own list still keeps its ports apart).
        claimed.is_none_or(|c| c == 1)
    }

    fn release_port(&self, pool: &ActorPath, port: u16, worker: &ActorPath) {
        let worker = &self.owned(worker);
        let mut state = self.lock();
        let key = format!("warden:pool:{pool}:ports");
        let script = "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end return 0";
        self.with_redis(&mut state, |conn| {
            redis::cmd("EVAL")
                .arg(script)
                .arg(1)
                .arg(&key)
                .arg(port)
                .arg(worker)
                .query::<i64>(conn)
        });
    }

    fn list(&self, pool: &ActorPath) -> Result<Vec<Session>, String> {
        let mut state = self.lock();
        let key = key(pool);
        let raw = self.with_redis(&mut state, |conn| {
            redis::cmd("HGETALL")
                .arg(&key)
                .query::<HashMap<String, String>>(conn)
        });
        let local = state.pools.entry(pool.clone()).or_default();
        if let Some(raw) = raw {
            // Redis is the truth while it answers.
            local.sessions = parse_all(pool, raw);
            let sessions = &local.sessions;
            local.own.retain(|id| sessions.contains_key(id));
        }
        let mut sessions: Vec<Session> = local.sessions.values().cloned().collect();
        sessions.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        Ok(sessions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            redact("redis://:secret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact("redis://user:secret@host/0"),
            "redis://user:***@host/0"
        );
        assert_eq!(redact("redis://user@host"), "redis://user@host");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn keys_name_the_pool() {
        let pool = ActorPath::parse("/shiny").expect("a valid path");
        assert_eq!(key(&pool), "warden:pool:/shiny:sessions");
    }
}
