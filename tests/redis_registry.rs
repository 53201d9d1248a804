//! Tests of the Redis session registry against a real `redis-server` (each test starts its
//! own on a free loopback port and kills it at the end): put/list/remove, two registries
//! sharing one Redis, a clear error for an unreachable Redis, and serving from local state
//! while Redis is killed or frozen, then resyncing once it is back.

mod support;

use std::time::{Duration, Instant};

use support::free_port;
use support::redis::Redis;

use warden_actors::{RedisRegistry, Session, SessionRegistry};
use warden_supervisors::ActorPath;

/// The longest a registry call may take while Redis is dead or frozen (1 s timeouts).
const CALL_BOUND: Duration = Duration::from_secs(2);

fn pool(path: &str) -> ActorPath {
    ActorPath::parse(path).expect("a valid pool path")
}

fn session(id: &str, worker: &str, port: u16) -> Session {
    Session {
        session_id: id.to_owned(),
        worker: ActorPath::parse(worker).expect("a valid worker path"),
        port,
    }
}

fn ids(sessions: &[Session]) -> Vec<String> {
    let mut ids: Vec<String> = sessions.iter().map(|s| s.session_id.clone()).collect();
    ids.sort();
    ids
}

/// Waits for a registry call from this plain test thread (the registry's own thread does
/// the Redis work).
fn wait<F: std::future::Future>(call: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
        .block_on(call)
}

/// Runs `f`, asserting it returns within [`CALL_BOUND`].
fn bounded<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = f();
    let took = started.elapsed();
    assert!(took < CALL_BOUND, "{what} took {took:?}");
    value
}

/// Polls `f` every 50 ms until it is true, for at most 10 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn put_list_remove_round_trip() {
    let redis = Redis::start(free_port());
    let registry = RedisRegistry::connect(&redis.url()).expect("connect");
    let p = pool("/shiny");
    let other = pool("/other");
    assert!(wait(registry.list(&p)).expect("list").is_empty());

    let a = session("a1", "/shiny/w1", 20000);
    let b = session("b2", "/shiny/w2", 20001);
    wait(registry.put(&p, &a)).expect("put a");
    wait(registry.put(&p, &b)).expect("put b");
    wait(registry.put(&other, &session("c3", "/other/w1", 21000))).expect("put c");

    let listed = wait(registry.list(&p)).expect("list");
    assert_eq!(ids(&listed), ["a1", "b2"]);
    assert!(listed.contains(&a) && listed.contains(&b));
    assert_eq!(ids(&wait(registry.list(&other)).expect("list")), ["c3"]);

    assert_eq!(wait(registry.remove(&p, "a1")).expect("remove"), Some(a));
    assert_eq!(wait(registry.remove(&p, "a1")).expect("remove again"), None);
    assert_eq!(
        wait(registry.remove(&p, "nope")).expect("remove unknown"),
        None
    );
    assert_eq!(wait(registry.list(&p)).expect("list"), vec![b]);
    assert!(!registry.is_degraded());
    assert!(format!("{registry:?}").contains(&redis.url()));
}

#[test]
fn two_registries_share_sessions() {
    let redis = Redis::start(free_port());
    let one = RedisRegistry::connect(&redis.url()).expect("connect one");
    let two = RedisRegistry::connect(&redis.url()).expect("connect two");
    let p = pool("/shiny");

    let s1 = session("s1", "/shiny/w1", 20000);
    let s2 = session("s2", "/shiny/w2", 20001);
    wait(one.put(&p, &s1)).expect("put s1");
    wait(two.put(&p, &s2)).expect("put s2");
    assert_eq!(ids(&wait(one.list(&p)).expect("list one")), ["s1", "s2"]);
    assert_eq!(ids(&wait(two.list(&p)).expect("list two")), ["s1", "s2"]);

    // A session released through the other warden is gone for both.
    assert_eq!(wait(two.remove(&p, "s1")).expect("remove"), Some(s1));
    assert_eq!(wait(one.list(&p)).expect("list one"), vec![s2.clone()]);
    assert_eq!(wait(one.remove(&p, "s1")).expect("remove again"), None);
    assert_eq!(wait(two.list(&p)).expect("list two"), vec![s2]);
}

#[test]
fn unreachable_redis_is_a_clear_error() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let err = RedisRegistry::connect(&url).expect_err("nothing listens there");
    assert!(started.elapsed() < Duration::from_secs(2), "took too long");
    assert!(
        err.contains(&format!("cannot reach Redis at {url}")),
        "error: {err}"
    );

    let err = RedisRegistry::connect("http://127.0.0.1:1").expect_err("not a Redis URL");
    assert!(err.contains("http://127.0.0.1:1"), "error: {err}");

    let err = RedisRegistry::connect(&format!("redis://:hunter2@127.0.0.1:{}/0", free_port()))
        .expect_err("nothing listens there");
    assert!(!err.contains("hunter2"), "password leaked: {err}");
    assert!(err.contains(":***@127.0.0.1"), "error: {err}");
}

#[test]
fn redis_killed_then_restarted_serves_locally_and_resyncs() {
    let port = free_port();
    let redis = Redis::start(port);
    let url = redis.url();
    let one = RedisRegistry::connect(&url).expect("connect one");
    let two = RedisRegistry::connect(&url).expect("connect two");
    let p = pool("/shiny");

    let before1 = session("before1", "/shiny/w1", 20000);
    let before2 = session("before2", "/shiny/w1", 20000);
    let theirs = session("theirs", "/shiny/w2", 20001);
    wait(one.put(&p, &before1)).expect("put");
    wait(one.put(&p, &before2)).expect("put");
    wait(two.put(&p, &theirs)).expect("put");
    assert_eq!(
        ids(&wait(one.list(&p)).expect("list")),
        ["before1", "before2", "theirs"]
    );

    redis.kill();

    // Every call keeps working, from local state, in bounded time.
    let during = session("during", "/shiny/w3", 20002);
    bounded("put while down", || wait(one.put(&p, &during))).expect("put while down");
    assert!(one.is_degraded());
    let removed = bounded("remove while down", || wait(one.remove(&p, "before1")));
    assert_eq!(removed.expect("remove while down"), Some(before1.clone()));
    let listed = bounded("list while down", || wait(one.list(&p))).expect("list while down");
    assert_eq!(ids(&listed), ["before2", "during", "theirs"]);
    let started = Instant::now();
    for i in 0..20 {
        let s = session(&format!("burst{i:02}"), "/shiny/w3", 20002);
        bounded("put while down", || wait(one.put(&p, &s))).expect("put while down");
        bounded("remove while down", || wait(one.remove(&p, &s.session_id))).expect("remove");
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "40 calls while down took {:?}",
        started.elapsed()
    );
    assert!(one.is_degraded());

    // Redis comes back empty on the same port; a copy of `before1` that survived somewhere
    // (say, a snapshot) must still be deleted by the resync.
    let redis = Redis::start(port);
    let seed = RedisRegistry::connect(&url).expect("connect seed");
    wait(seed.put(&p, &before1)).expect("seed before1");

    eventually("registry one resynced", || {
        bounded("list after restart", || wait(one.list(&p))).expect("list");
        !one.is_degraded()
    });
    let fresh = RedisRegistry::connect(&url).expect("connect fresh");
    // `two` held `theirs`: it writes it back on its own resync.
    eventually("registry two resynced", || {
        bounded("list after restart", || wait(two.list(&p))).expect("list");
        !two.is_degraded()
    });
    let in_redis = wait(fresh.list(&p)).expect("list fresh");
    assert_eq!(ids(&in_redis), ["before2", "during", "theirs"]);
    assert!(in_redis.contains(&during));
    assert_eq!(ids(&wait(two.list(&p)).expect("list two")), ids(&in_redis));
    assert_eq!(ids(&wait(one.list(&p)).expect("list one")), ids(&in_redis));

    // Fully back: writes go to Redis again.
    wait(one.remove(&p, "during")).expect("remove");
    assert_eq!(
        ids(&wait(two.list(&p)).expect("list two")),
        ["before2", "theirs"]
    );
    drop(redis);
}

#[test]
fn redis_frozen_calls_stay_bounded_and_resync_on_resume() {
    let redis = Redis::start(free_port());
    let one = RedisRegistry::connect(&redis.url()).expect("connect one");
    let two = RedisRegistry::connect(&redis.url()).expect("connect two");
    let p = pool("/frozen");
    let kept = session("kept", "/frozen/w1", 20000);
    let gone = session("gone", "/frozen/w1", 20000);
    wait(one.put(&p, &kept)).expect("put");
    wait(one.put(&p, &gone)).expect("put");

    // SIGSTOP: connections are accepted by the kernel but nothing answers.
    redis.signal(libc::SIGSTOP);
    let added = session("added", "/frozen/w2", 20001);
    bounded("put while frozen", || wait(one.put(&p, &added))).expect("put");
    assert!(one.is_degraded());
    std::thread::sleep(Duration::from_millis(600));
    let removed = bounded("remove while frozen", || wait(one.remove(&p, "gone"))).expect("remove");
    assert_eq!(removed, Some(gone));
    std::thread::sleep(Duration::from_millis(600));
    let listed = bounded("list while frozen", || wait(one.list(&p))).expect("list");
    assert_eq!(ids(&listed), ["added", "kept"]);

    // Redis kept its data: the resync must add `added` and delete `gone`.
    redis.signal(libc::SIGCONT);
    eventually("registry one resynced", || {
        bounded("list after resume", || wait(one.list(&p))).expect("list");
        !one.is_degraded()
    });
    assert_eq!(
        ids(&wait(two.list(&p)).expect("list two")),
        ["added", "kept"]
    );
}

/// The README's goal for the Redis registry is at least 5,000 acquire + release pairs
/// per second (release build). This debug-build test holds a floor of 500 put + remove
/// pairs/s: room for a busy 2-core CI running other builds (the async registry, one
/// thread hop per call, measured 1,800 pairs/s in a debug build under such load), while a
/// call that waits on a timeout (>= 500 ms) still fails it at once. The release figure comes from `examples/bench_sessions.rs`.
#[test]
fn put_remove_pairs_run_at_least_500_per_second() {
    let redis = Redis::start(free_port());
    let registry = RedisRegistry::connect(&redis.url()).expect("connect");
    let p = pool("/bench");
    let n = 2000;
    let started = Instant::now();
    for i in 0..n {
        let s = session(&format!("s{i}"), "/bench/w1", 20000);
        wait(registry.put(&p, &s)).expect("put");
        assert_eq!(
            wait(registry.remove(&p, &s.session_id)).expect("remove"),
            Some(s)
        );
    }
    let took = started.elapsed();
    let rate = f64::from(n) / took.as_secs_f64();
    println!("redis registry: {n} put+remove pairs in {took:?} = {rate:.0} pairs/s");
    assert!(wait(registry.list(&p)).expect("list").is_empty());
    assert!(!registry.is_degraded());
    assert!(
        rate >= 500.0,
        "{rate:.0} put+remove pairs/s, under the floor of 500/s (goal 5,000/s)"
    );
}
