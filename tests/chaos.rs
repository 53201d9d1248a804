//! Chaos: warden is SIGKILLed at random moments (0-150 ms after it was spawned, or 0.3-2 s
//! after its tree is up; seeded, the seed is printed) and started again on the same state_dir, while
//! three services crash-loop beside a steady service, an `[[outboard]]` child
//! (`outboard_echo`) and a `[[pool]]` (memory registry, scaled up by sessions before some
//! kills). Every other round the kill comes only once the tree is up; in the others it may
//! land in the middle of start-up or adoption.
//!
//! What it checks, against a census of /proc by each process's `WARDEN_ACTOR` (see
//! `support::census`), i.e. independently of what warden says:
//! - "Nothing runs twice" (design.md, Robustness; SEMANTICS 24): at every census, every
//!   ~50 ms, with or without a warden running, no actor has two live instances (process
//!   groups).
//! - Once the tree is up after a restart: every steady actor the API shows `running` (the
//!   service, the outboard child, each pool worker) runs exactly once, as the pid the API
//!   reports, and no marked process is left that the API does not account for: a process
//!   of a dead warden is adopted or stopped, never left running unclaimed.
//! - `restarts` of an actor never goes down while one warden runs. Restart counts are per
//!   warden run: the API of a restarted warden starts every actor at 0 (adoption is not a
//!   restart), so nothing is asserted across runs; the test prints what it saw.
//! - At the end, the crashers still crash-loop (not `failed`), and SIGTERM stops everything
//!   with exit 0 leaving no process behind.
//!
//! Bounded: `WARDEN_CHAOS_SECS` seconds of kills (default 35; about 60 s in all), then a
//! final round. `WARDEN_CHAOS_SEED` replays a seed. `scripts/chaos.sh MINUTES` runs longer.
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::census::{instances_by_actor, marked, Reaper};
use support::example_bin::example_bin;
use support::rng::Rng;
use support::*;

const CRASHERS: [&str; 3] = ["/crash1", "/crash2", "/crash3"];
const POOL_MIN: usize = 2;
const POOL_MAX: usize = 3;
/// Start-up, adoption and python workers on 2 busy CI cores.
const UP: Duration = Duration::from_secs(30);
/// How long a dead warden's processes may take to be adopted or stopped once the tree is up.
const SETTLE: Duration = Duration::from_secs(10);

/// A worker: listens on `$PORT` (for its `tcp` ready check) and sleeps.
const SERVER: &str = "import socket,os,time; s=socket.socket(); \
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(); time.sleep(100000)";

fn chaos_secs() -> u64 {
    std::env::var("WARDEN_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(35)
}

fn chaos_seed() -> u64 {
    std::env::var("WARDEN_CHAOS_SEED")
        .ok()
        .and_then(|s| {
            let s = s.trim_start_matches("0x");
            u64::from_str_radix(s, 16).ok()
        })
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

fn config(dir: &tempfile::TempDir, echo: &Path, (lo, hi): (u16, u16)) -> String {
    let mut body = format!(
        "[[service]]\nname = \"steady\"\ncommand = {}\n\n",
        sh(&format!(
            "echo \"start $$\" >> '{}'; exec sleep 1000",
            abs(dir, "steady.txt")
        ))
    );
    for path in CRASHERS {
        let name = path.trim_start_matches('/');
        body.push_str(&format!(
            "[[service]]\nname = \"{name}\"\ncommand = {}\n\
             restart = {{ backoff = {{ initial = \"10ms\", max = \"40ms\" }}, \
             intensity = {{ max = 1000000, within = \"1s\" }} }}\n\n",
            sh(&format!(
                "echo start >> '{}'; sleep 0.0$(($$ % 9 + 1)); exit 1",
                abs(dir, &format!("{name}.txt"))
            ))
        ));
    }
    body.push_str(&format!(
        "[[outboard]]\nname = \"echo\"\ncommand = [{}]\nready = {{ ipc = true }}\n\
         heartbeat = \"1s\"\nmissed = 5\n\n",
        toml_str(&echo.to_string_lossy())
    ));
    body.push_str(&format!(
        "[[pool]]\nname = \"pool\"\n\
         command = [\"python3\", \"-c\", \"{SERVER}\", \"--port\", \"{{port}}\"]\n\
         ports = \"{lo}-{hi}\"\nmin = {POOL_MIN}\nmax = {POOL_MAX}\nsessions_per_worker = 1\n\
         ready = {{ tcp = \"127.0.0.1:{{port}}\", timeout = \"20s\" }}\n\
         stop = {{ signal = \"TERM\", timeout = \"2s\" }}\n"
    ));
    body
}

/// One actor as the API lists it.
#[derive(Debug, Clone)]
struct Listed {
    path: String,
    kind: String,
    state: String,
    pid: Option<u32>,
    restarts: u64,
}

/// `GET /api/v1/actors`, or None while warden does not answer.
fn listed(w: &Warden) -> Option<Vec<Listed>> {
    let token = std::fs::read_to_string(w.path("state/admin.token")).ok()?;
    let r = http(w.port, "GET", "/api/v1/actors", Some(token.trim()), None).ok()?;
    if r.status != 200 {
        return None;
    }
    let Value::Array(items) = r.json() else {
        return None;
    };
    Some(
        items
            .iter()
            .map(|a| Listed {
                path: a["path"].as_str().unwrap_or("").to_owned(),
                kind: a["kind"].as_str().unwrap_or("").to_owned(),
                state: a["state"].as_str().unwrap_or("").to_owned(),
                pid: a["pid"].as_u64().map(|p| p as u32),
                restarts: a["restarts"].as_u64().unwrap_or(0),
            })
            .collect(),
    )
}

/// Steady actors (not crash-looping) that are processes: the service, the outboard child,
/// the pool's workers.
fn steady(actors: &[Listed]) -> impl Iterator<Item = &Listed> {
    actors.iter().filter(|a| {
        matches!(a.kind.as_str(), "service" | "outboard" | "worker")
            && !CRASHERS.contains(&a.path.as_str())
    })
}

/// The tree is up: the steady service, the outboard child and the pool run, with at least
/// `min` workers, every listed worker running.
fn tree_up(actors: &[Listed]) -> bool {
    let running = |p: &str| actors.iter().any(|a| a.path == p && a.state == "running");
    let workers: Vec<&Listed> = actors.iter().filter(|a| a.kind == "worker").collect();
    running("/steady")
        && running("/echo")
        && running("/pool")
        && workers.len() >= POOL_MIN
        && workers.iter().all(|a| a.state == "running")
}

/// The chaos run's record of what it saw, printed at the end and in every failure.
struct Chaos {
    seed: u64,
    state: PathBuf,
    round: usize,
    censuses: u64,
    /// `restarts` per path as the current warden last reported them.
    restarts: HashMap<String, u64>,
    /// What the API reported for the steady service just after each restart (per run).
    restarts_after_restart: Vec<u64>,
}

impl Chaos {
    fn when(&self) -> String {
        format!("round {} (seed {:#x})", self.round, self.seed)
    }

    /// Asserts that no actor has two live instances right now.
    fn at_most_once(&mut self) {
        self.censuses += 1;
        let census = marked(&self.state);
        for (actor, groups) in instances_by_actor(&census) {
            assert!(
                groups.len() <= 1,
                "{}: {actor} runs twice: process groups {groups:?}; census {census:?}",
                self.when()
            );
        }
    }

    /// Records the API's restart counts and asserts none went down in this run.
    fn restarts_never_go_down(&mut self, actors: &[Listed]) {
        for a in actors {
            let before = self.restarts.insert(a.path.clone(), a.restarts);
            if let Some(before) = before {
                assert!(
                    a.restarts >= before,
                    "{}: restarts of {} went down from {before} to {} within one warden run",
                    self.when(),
                    a.path,
                    a.restarts
                );
            }
        }
    }

    /// What the census says that the API does not account for: a steady actor that does
    /// not run exactly once as the API's pid, or a marked process of an actor the API does
    /// not list (e.g. an old worker nobody adopted or stopped).
    fn mismatches(&self, actors: &[Listed]) -> Vec<String> {
        let census = marked(&self.state);
        let by_actor = instances_by_actor(&census);
        let mut wrong = Vec::new();
        for a in steady(actors).filter(|a| a.state == "running") {
            let groups = by_actor.get(&a.path).cloned().unwrap_or_default();
            if a.pid.is_none() || groups != [a.pid.unwrap_or(0)] {
                wrong.push(format!(
                    "{} (API pid {:?}) runs as process groups {groups:?}",
                    a.path, a.pid
                ));
            }
        }
        for (actor, groups) in &by_actor {
            let known = actors.iter().find(|a| &a.path == actor);
            let claimed = match known {
                None => false,
                Some(a) if CRASHERS.contains(&a.path.as_str()) => true,
                Some(a) => a.pid.is_some_and(|p| groups.contains(&p)),
            };
            if !claimed {
                wrong.push(format!(
                    "process groups {groups:?} of {actor:?} are not what the API lists ({:?})",
                    known.map(|a| (&a.state, a.pid))
                ));
            }
        }
        wrong
    }

    /// Waits until the tree is up, then until the census matches the API (bounded),
    /// checking "at most once" all along.
    fn verify_up(&mut self, w: &mut Warden) {
        let deadline = Instant::now() + UP;
        let actors = loop {
            if let Some(status) = w.try_wait() {
                panic!(
                    "{}: warden exited ({status}): {}",
                    self.when(),
                    w.stderr_text()
                );
            }
            self.at_most_once();
            if let Some(actors) = listed(w) {
                self.restarts_never_go_down(&actors);
                if tree_up(&actors) {
                    break actors;
                }
                assert!(
                    Instant::now() < deadline,
                    "{}: the tree is not up within {UP:?}: {actors:?}\n{}",
                    self.when(),
                    w.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(a) = actors.iter().find(|a| a.path == "/steady") {
            self.restarts_after_restart.push(a.restarts);
        }
        let deadline = Instant::now() + SETTLE;
        loop {
            self.at_most_once();
            let Some(actors) = listed(w) else {
                panic!("{}: warden stopped answering", self.when());
            };
            self.restarts_never_go_down(&actors);
            let wrong = self.mismatches(&actors);
            if wrong.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {SETTLE:?} after the tree was up, the processes do not match the API:\n  {}\ncensus: {:?}\nAPI: {actors:?}\n{}",
                self.when(),
                wrong.join("\n  "),
                marked(&self.state),
                w.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Checks "at most once" every ~50 ms until `until`.
    fn watch_until(&mut self, w: &Warden, until: Instant) {
        while Instant::now() < until {
            self.at_most_once();
            if let Some(actors) = listed(w) {
                self.restarts_never_go_down(&actors);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Opens sessions until the pool runs `POOL_MAX` workers (one session each).
fn scale_pool_up(w: &Warden) {
    for _ in 0..POOL_MAX {
        let _ = http(
            w.port,
            "POST",
            "/api/v1/pools/pool/sessions",
            Some(&w.token()),
            Some(b"{}"),
        );
    }
}

#[test]
fn warden_killed_at_random_moments_never_runs_anything_twice_nor_leaves_a_process_unclaimed() {
    let began = Instant::now();
    let seed = chaos_seed();
    let secs = chaos_secs();
    eprintln!("chaos: seed {seed:#x} (WARDEN_CHAOS_SEED to replay), {secs} s of kills");
    let echo = example_bin("outboard_echo");
    let dir = temp_dir();
    let state = dir.path().join("state");
    let _reaper = Reaper(state.clone());
    let body = config(&dir, &echo, free_span(POOL_MAX as u16 + 1));
    let mut rng = Rng::new(seed);
    let mut chaos = Chaos {
        seed,
        state: state.clone(),
        round: 0,
        censuses: 0,
        restarts: HashMap::new(),
        restarts_after_restart: Vec::new(),
    };
    let mut dir = dir;
    let mut early_kills = 0;
    while began.elapsed() < Duration::from_secs(secs) {
        chaos.round += 1;
        chaos.restarts.clear();
        let settled = chaos.round % 2 == 1;
        let mut w = if settled {
            Warden::start_in(dir, &body)
        } else {
            Warden::spawn_in(dir, &body)
        };
        let started = Instant::now();
        if settled {
            chaos.verify_up(&mut w);
            if chaos.round % 4 == 1 {
                scale_pool_up(&w);
            }
        }
        // Settled rounds: 0.3-2 s after the tree is up. The others: 0-150 ms after warden
        // was spawned, often in the middle of start-up or adoption.
        let kill_at = if settled {
            Instant::now() + Duration::from_millis(rng.between(300, 2000))
        } else {
            started + Duration::from_millis(rng.between(0, 150))
        };
        chaos.watch_until(&w, kill_at);
        if !settled && listed(&w).is_none_or(|a| !tree_up(&a)) {
            early_kills += 1;
        }
        w.crash();
        chaos.at_most_once();
        dir = w.into_dir();
    }

    // The last start: everything adopted or replaced, once each; the crashers still loop.
    chaos.round += 1;
    chaos.restarts.clear();
    let mut w = Warden::start_in(dir, &body);
    chaos.verify_up(&mut w);
    for path in CRASHERS {
        let file = abs(&w.dir, &format!("{}.txt", path.trim_start_matches('/')));
        let n = lines(Path::new(&file)).len();
        wait_until(
            &format!("{path} keeps being restarted"),
            Duration::from_secs(15),
            || lines(Path::new(&file)).len() > n + 2,
        );
        let a = w.actor(path);
        assert_ne!(a["state"], "failed", "{}: {a}", chaos.when());
    }
    let steady_starts = lines(&w.path("steady.txt")).len();
    eprintln!(
        "chaos: {} warden runs ({early_kills} killed before the tree was up), {} censuses, \
         /steady started {steady_starts} times; its `restarts` as each new warden first \
         listed it: {:?} (per-run counts)",
        chaos.round, chaos.censuses, chaos.restarts_after_restart
    );
    let status = w.signal_and_wait(15, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", w.stderr_text());
    wait_until(
        "no process of this warden left",
        Duration::from_secs(10),
        || marked(&state).is_empty(),
    );
    eprintln!("chaos: took {:?}", began.elapsed());
}
