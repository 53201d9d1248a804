//! Reload: re-read the config file, and change only what changed. Added actors start,
//! removed ones stop, changed ones restart with their new settings, and every other
//! actor keeps running with its pid. A file that does not load is refused whole, with the
//! same message as `warden check`, and the running tree is not touched; so is a file
//! that changes `state_dir` or `[logs]` `[logs]` or `[runtime]` (those need a restart of warden).

use std::path::PathBuf;

use warden_supervisors::{ActorPath, ActorTree, ChildChanges, ChildUpdate, UpdateChildren};

use crate::config::{self, ChildConfig, Config, SupervisorConfig};
use crate::control::protocol::{Failure, FailureKind};
use crate::plan;

/// Holds the config in force and re-reads its file on demand.
#[derive(Debug)]
pub struct Reloader {
    current: Config,
    wiring: plan::Wiring,
}

impl Reloader {
    /// A reloader for the config that is running now.
    pub fn new(current: Config, wiring: plan::Wiring) -> Self {
        Self { current, wiring }
    }

    /// The config as last applied.
    pub fn config(&self) -> &Config {
        &self.current
    }

    /// The file that is re-read.
    pub fn path(&self) -> &PathBuf {
        &self.current.path
    }

    /// Re-reads the file and applies the difference to `tree`.
    pub async fn reload(&mut self, tree: &ActorTree) -> Result<ChildChanges, Failure> {
        let bad = |m: String| Failure::new(FailureKind::BadRequest, m);
        let new = config::load(&self.current.path).map_err(|e| bad(e.to_string()))?;
        plan::root_spec(&new, &self.wiring).map_err(|e| bad(e.to_string()))?;
        // Every child spec is built from the new file, so these would apply piecemeal
        // (restarted and added children in a directory this warden neither locked nor
        // owns, with other log limits or on_exit): refused whole, like a file that does
        // not load.
        for (what, changed) in [
            ("state_dir", new.state_dir != self.current.state_dir),
            ("[logs]", new.logs != self.current.logs),
            ("[runtime]", new.runtime != self.current.runtime),
        ] {
            if changed {
                return Err(bad(format!(
                    "{}: {what} changed: a reload cannot change it, restart warden to apply it (nothing was reloaded)",
                    new.path.display()
                )));
            }
        }
        if new.admin != self.current.admin {
            tracing::warn!("[admin] changed: it takes effect when warden restarts");
        }
        if new.hub != self.current.hub {
            tracing::warn!("[hub] changed: it takes effect when warden restarts");
        }
        if new.notifiers != self.current.notifiers {
            tracing::warn!("[[notifier]] changed: it takes effect when warden restarts");
        }
        // The webhook's key is read again (the loader just checked the file): a rotated
        // secret holds from this reload on; an added `[webhooks]` opens the route, a
        // removed one closes it (404).
        let webhook_key = match &new.webhooks {
            Some(webhooks) => {
                Some(config::read_webhook_secret(&webhooks.github_secret_file).map_err(bad)?)
            }
            None => None,
        };
        let mut changes = ChildChanges::default();
        // `/_hub` is no entry of the file's tree: kept, restarted when `[spoke]` changed,
        // added or removed with `[spoke]`.
        let link = match &new.spoke {
            Some(spoke) => Some(ChildUpdate {
                spec: plan::link_child(spoke, &self.wiring).map_err(|e| bad(e.to_string()))?,
                changed: self.current.spoke.as_ref() != Some(spoke),
            }),
            None => None,
        };
        let result = apply(
            &self.current.root,
            &new.root,
            &ActorPath::root(),
            (&new, &self.wiring),
            tree,
            &mut changes,
            link,
        )
        .await;
        tracing::info!(
            added = ?changes.added,
            removed = ?changes.removed,
            changed = ?changes.changed,
            "reloaded {}",
            new.path.display()
        );
        // Even a partly applied reload is what runs now.
        self.wiring.webhook_secret.replace(webhook_key.as_deref());
        self.current = new;
        result.map(|()| changes)
    }
}

/// Whether a child's entry changed in a way that needs a restart. A supervisor whose own
/// strategy or intensity is the same is kept: its children are compared one by one.
fn needs_restart(old: &ChildConfig, new: &ChildConfig) -> bool {
    match (old, new) {
        (ChildConfig::Service(o), ChildConfig::Service(n)) => {
            let mut o = o.clone();
            o.line = n.line;
            o != *n
        }
        (ChildConfig::Outboard(o), ChildConfig::Outboard(n)) => {
            let mut o = o.clone();
            o.service.line = n.service.line;
            o != *n
        }
        (ChildConfig::Pool(o), ChildConfig::Pool(n)) => {
            let mut o = o.clone();
            o.line = n.line;
            o != *n
        }
        (ChildConfig::Supervisor(o), ChildConfig::Supervisor(n)) => {
            o.strategy != n.strategy || o.intensity != n.intensity
        }
        _ => true,
    }
}

async fn apply(
    old: &SupervisorConfig,
    new: &SupervisorConfig,
    path: &ActorPath,
    (config, wiring): (&Config, &plan::Wiring),
    tree: &ActorTree,
    changes: &mut ChildChanges,
    link: Option<ChildUpdate>,
) -> Result<(), Failure> {
    let internal = |m: String| Failure::new(FailureKind::Internal, m);
    let mut children = Vec::with_capacity(new.children.len() + 1);
    let mut descend = Vec::new();
    for child in &new.children {
        let before = old.children.iter().find(|c| c.name() == child.name());
        let changed = before.is_some_and(|b| needs_restart(b, child));
        if let (Some(ChildConfig::Supervisor(b)), ChildConfig::Supervisor(n), false) =
            (before, child, changed)
        {
            descend.push((b, n));
        }
        let spec =
            plan::child_spec(config, child, path, wiring).map_err(|e| internal(e.to_string()))?;
        children.push(ChildUpdate { spec, changed });
    }
    children.extend(link);
    let supervisor = tree.supervisor(path).ok_or_else(|| {
        Failure::new(
            FailureKind::Unavailable,
            format!("supervisor {path} is not running: its part of the reload was not applied"),
        )
    })?;
    let (strategy, intensity) = plan::supervisor_settings(new);
    let applied = supervisor
        .send(UpdateChildren {
            strategy,
            intensity,
            children,
        })
        .await
        .map_err(|_| {
            Failure::new(
                FailureKind::Unavailable,
                format!("supervisor {path} went away"),
            )
        })??;
    changes.extend(applied);
    for (b, n) in descend {
        let Ok(name) = warden_supervisors::ActorName::new(&n.name) else {
            continue;
        };
        Box::pin(apply(
            b,
            n,
            &path.child(&name),
            (config, wiring),
            tree,
            changes,
            None,
        ))
        .await?;
    }
    Ok(())
}
