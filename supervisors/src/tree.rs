//! The actor tree as others see it: one record per actor, kept current by the
//! supervisors, and the lifecycle event bus that announces every state change.
//!
//! Readers (the admin API, tests, embedders) never talk to a supervisor to read state:
//! they read this registry. Commands go to the parent supervisor's address, which the
//! registry also holds, so a path always reaches the current incarnation of an actor.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use actix::{Addr, WeakAddr};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::broadcast;

use crate::exit::LastExit;
use crate::path::ActorPath;
use crate::policy::BackoffInfo;
use crate::state::{ActorKind, ActorState};
use crate::supervisor::Supervisor;

/// A wall-clock time, shown as RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    /// Now.
    pub fn now() -> Self {
        Self(SystemTime::now())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text)
            .map(Timestamp)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

/// Everything the API shows of one actor, except its children.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorInfo {
    /// Absolute path.
    pub path: ActorPath,
    /// Name among its siblings (empty for the root).
    pub name: String,
    /// What kind of actor it is.
    pub kind: ActorKind,
    /// Where it is in its life.
    pub state: ActorState,
    /// OS process id of the current run, when it is a process.
    pub pid: Option<u32>,
    /// When the current (or latest) run started.
    pub started_at: Option<Timestamp>,
    /// Restarts so far, including those caused by siblings.
    pub restarts: u64,
    /// How the latest run ended.
    pub last_exit: Option<LastExit>,
    /// When a pending restart is due.
    pub next_restart_at: Option<Timestamp>,
    /// The backoff state.
    pub backoff: BackoffInfo,
    /// Why the actor was given up on.
    pub failed_reason: Option<String>,
    /// How the processes of the current (or latest) run are held together, for process
    /// kinds (`null` for the others).
    #[serde(default)]
    pub containment: Option<Containment>,
    /// Kind-specific details (a pool's sessions and workers), when the kind has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// Whether readiness (`/readyz`) waits for this actor while it is not running: it is
    /// meant to run (or is a `permanent` child given up on), not stopped by an operator,
    /// finished or removed. Not shown in the API.
    #[serde(skip)]
    pub awaited: bool,
}

impl ActorInfo {
    /// A record for an actor that has not started yet.
    pub fn new(path: ActorPath, kind: ActorKind, state: ActorState) -> Self {
        Self {
            name: path.name().to_owned(),
            path,
            kind,
            state,
            pid: None,
            started_at: None,
            restarts: 0,
            last_exit: None,
            next_restart_at: None,
            backoff: BackoffInfo {
                attempt: 0,
                delay_ms: 0,
            },
            failed_reason: None,
            containment: None,
            details: None,
            awaited: true,
        }
    }
}

/// What holds a process child's descendants together, so that a stop reaches them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Containment {
    /// A cgroup v2 of its own, ended with `cgroup.kill`: even a descendant that called
    /// setsid is stopped.
    Cgroup,
    /// Its own process group, ended with a group SIGKILL (a descendant that calls setsid
    /// escapes it).
    ProcessGroup,
}

/// One actor as `GET /api/v1/actors/{path}` shows it: its record and its children's paths.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActorView {
    /// The record.
    #[serde(flatten)]
    pub info: ActorInfo,
    /// Paths of the children, in start order.
    pub children: Vec<ActorPath>,
}

/// One actor with its children nested, as `GET /api/v1/tree` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TreeNode {
    /// The record.
    #[serde(flatten)]
    pub info: ActorInfo,
    /// The children, in start order.
    pub children: Vec<TreeNode>,
}

/// A state change, as sent on the event bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// Which actor.
    pub path: ActorPath,
    /// Its new state.
    pub state: ActorState,
    /// Its pid at that moment.
    pub pid: Option<u32>,
    /// When.
    pub at: Timestamp,
}

#[derive(Debug)]
struct Entry {
    info: ActorInfo,
    children: Vec<ActorPath>,
}

#[derive(Debug, Default)]
struct Registry {
    actors: HashMap<ActorPath, Entry>,
    /// Weak: the registry only finds supervisors, it never keeps one alive (the tree is
    /// shared with the root supervisor, which holds the tree: a strong address here
    /// would be a cycle).
    supervisors: HashMap<ActorPath, WeakAddr<Supervisor>>,
}

/// The shared registry of every actor's record, and the event bus.
#[derive(Debug)]
pub struct ActorTree {
    registry: RwLock<Registry>,
    events: broadcast::Sender<LifecycleEvent>,
    version: std::sync::atomic::AtomicU64,
}

impl Default for ActorTree {
    fn default() -> Self {
        Self::new()
    }
}

impl ActorTree {
    /// An empty tree (the root supervisor registers itself when it starts).
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(4096);
        Self {
            registry: RwLock::new(Registry::default()),
            events,
            version: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Receives every state change from now on. A receiver that falls more than 4096
    /// events behind is told how many it missed (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<LifecycleEvent> {
        self.events.subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every write to the registry goes through here, and bumps the version.
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        let guard = self
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        guard
    }

    /// A number that changes whenever any record changes: equal versions mean equal
    /// contents, so readers may cache what they derive from the tree.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Declares the children of `parent`, in order, replacing any earlier list (and the
    /// records of children no longer in it, with their subtrees).
    pub(crate) fn declare_children(&self, parent: &ActorPath, children: Vec<ActorInfo>) {
        let mut reg = self.write();
        let paths: Vec<ActorPath> = children.iter().map(|c| c.path.clone()).collect();
        if let Some(entry) = reg.actors.get_mut(parent) {
            let gone: Vec<ActorPath> = entry
                .children
                .iter()
                .filter(|p| !paths.contains(p))
                .cloned()
                .collect();
            entry.children = paths;
            for path in gone {
                remove_subtree(&mut reg, &path);
            }
        }
        for info in children {
            let path = info.path.clone();
            match reg.actors.get_mut(&path) {
                Some(entry) => entry.info = info,
                None => {
                    reg.actors.insert(
                        path,
                        Entry {
                            info,
                            children: Vec::new(),
                        },
                    );
                }
            }
        }
    }

    /// Adds the root's record.
    pub(crate) fn declare_root(&self, info: ActorInfo) {
        let mut reg = self.write();
        let path = info.path.clone();
        let children = reg
            .actors
            .remove(&path)
            .map(|e| e.children)
            .unwrap_or_default();
        reg.actors.insert(path, Entry { info, children });
    }

    /// Replaces the record of an actor and announces a state or pid change.
    pub(crate) fn publish(&self, info: &ActorInfo) {
        let changed = {
            let mut reg = self.write();
            match reg.actors.get_mut(&info.path) {
                Some(entry) => {
                    let changed = entry.info.state != info.state || entry.info.pid != info.pid;
                    let details = entry.info.details.take();
                    entry.info.clone_from(info);
                    if entry.info.details.is_none() {
                        entry.info.details = details;
                    }
                    changed
                }
                None => {
                    reg.actors.insert(
                        info.path.clone(),
                        Entry {
                            info: info.clone(),
                            children: Vec::new(),
                        },
                    );
                    true
                }
            }
        };
        if changed {
            // No receiver is not an error: nobody is listening.
            let _ = self.events.send(LifecycleEvent {
                path: info.path.clone(),
                state: info.state,
                pid: info.pid,
                at: Timestamp::now(),
            });
        }
    }

    /// Sets the kind-specific details of the actor at `path` (no event: details are not
    /// a state change).
    pub fn set_details(&self, path: &ActorPath, details: serde_json::Value) {
        if let Some(entry) = self.write().actors.get_mut(path) {
            entry.info.details = Some(details);
        }
    }

    pub(crate) fn register_supervisor(&self, path: &ActorPath, addr: Addr<Supervisor>) {
        self.write()
            .supervisors
            .insert(path.clone(), addr.downgrade());
    }

    /// The address of the supervisor at `path`, if it is alive.
    pub fn supervisor(&self, path: &ActorPath) -> Option<Addr<Supervisor>> {
        self.read()
            .supervisors
            .get(path)
            .and_then(WeakAddr::upgrade)
            .filter(Addr::connected)
    }

    /// The record of one actor.
    pub fn get(&self, path: &ActorPath) -> Option<ActorInfo> {
        self.read().actors.get(path).map(|e| e.info.clone())
    }

    /// One actor with its children's paths.
    pub fn view(&self, path: &ActorPath) -> Option<ActorView> {
        self.read().actors.get(path).map(|e| ActorView {
            info: e.info.clone(),
            children: e.children.clone(),
        })
    }

    /// Every actor below `path` (not `path` itself), parents before children, siblings
    /// in start order.
    pub fn descendants(&self, path: &ActorPath) -> Vec<ActorView> {
        let reg = self.read();
        let mut out = Vec::new();
        let mut stack: Vec<&ActorPath> = match reg.actors.get(path) {
            Some(e) => e.children.iter().rev().collect(),
            None => return out,
        };
        while let Some(p) = stack.pop() {
            if let Some(e) = reg.actors.get(p) {
                out.push(ActorView {
                    info: e.info.clone(),
                    children: e.children.clone(),
                });
                stack.extend(e.children.iter().rev());
            }
        }
        out
    }

    /// The subtree at `path`, nested.
    pub fn subtree(&self, path: &ActorPath) -> Option<TreeNode> {
        fn build(reg: &Registry, path: &ActorPath, depth: usize) -> Option<TreeNode> {
            let e = reg.actors.get(path)?;
            let children = if depth > 64 {
                Vec::new()
            } else {
                e.children
                    .iter()
                    .filter_map(|c| build(reg, c, depth + 1))
                    .collect()
            };
            Some(TreeNode {
                info: e.info.clone(),
                children,
            })
        }
        build(&self.read(), path, 0)
    }
}

fn remove_subtree(reg: &mut Registry, path: &ActorPath) {
    if let Some(entry) = reg.actors.remove(path) {
        reg.supervisors.remove(path);
        for child in entry.children {
            remove_subtree(reg, &child);
        }
    }
}

/// A shared handle on the tree.
pub type SharedTree = Arc<ActorTree>;
