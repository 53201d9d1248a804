//! A supervisor's answers to a reload ([`UpdateChildren`]) and to operator verbs
//! ([`Control`](super::Control)): they change targets and slots, then reconcile.

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{ChildChanges, ChildUpdate, ControlError, ControlOp, UpdateChildren};
use super::{Down, Phase, Slot, Supervisor, Target, Until, Waiter};
use crate::child::ChildSpec;
use crate::path::ActorName;
use crate::path::ActorPath;
use crate::policy::Backoff;
use crate::state::{ActorKind, ActorState};

impl Supervisor {
    pub(super) fn update_children(
        &mut self,
        update: UpdateChildren,
        ctx: &mut Context<Self>,
    ) -> Result<ChildChanges, ControlError> {
        if self.phase != Phase::Running {
            return Err(ControlError::ShuttingDown(self.path.to_string()));
        }
        self.strategy = update.strategy;
        self.intensity = update.intensity;
        let added_batch = self.new_batch();
        let mut old = std::mem::take(&mut self.slots);
        let mut changes = ChildChanges::default();
        let mut to_restart = Vec::new();
        let mut revived = Vec::new();
        for ChildUpdate { spec, changed } in update.children {
            let existing = old
                .iter()
                .position(|s| s.spec.name == spec.name && s.target != Target::Down(Down::Removed));
            // A removed child whose run is still stopping: the same slot comes back (up
            // again once that run has ended), so one path never has two live runs.
            let stopping_removed = || {
                old.iter().position(|s| {
                    s.spec.name == spec.name && s.target == Target::Down(Down::Removed)
                })
            };
            if let (None, Some(pos)) = (existing, stopping_removed()) {
                let mut slot = old.remove(pos);
                changes.added.push(slot.info.path.clone());
                slot.spec = spec;
                slot.info.kind = slot.spec.factory.kind();
                slot.info.restarts = 0;
                slot.window.clear();
                slot.backoff = Backoff::new(slot.spec.backoff);
                slot.has_run = false;
                // Whoever waited on the removed child hears that it went away, as when a
                // removed slot leaves.
                slot.waiters.clear();
                revived.push(slot.id);
                self.slots.push(slot);
                continue;
            }
            match existing {
                Some(pos) => {
                    let mut slot = old.remove(pos);
                    slot.spec = spec;
                    if changed {
                        changes.changed.push(slot.info.path.clone());
                        slot.info.kind = slot.spec.factory.kind();
                        slot.window.clear();
                        slot.backoff = Backoff::new(slot.spec.backoff);
                        to_restart.push(slot.id);
                    }
                    self.slots.push(slot);
                }
                None => {
                    let id = self.next_slot_id;
                    self.next_slot_id += 1;
                    let slot = Slot::new(id, &self.path, spec, added_batch);
                    changes.added.push(slot.info.path.clone());
                    self.slots.push(slot);
                }
            }
        }
        // What is left was removed: it stops after everything else has its place, last
        // in the list, so it is the first to be stopped.
        // A deploy added at run time is no entry of any config: it stays, last.
        let (kept, old): (Vec<Slot>, Vec<Slot>) = old.into_iter().partition(|s| {
            s.info.kind == ActorKind::Deploy && s.target != Target::Down(Down::Removed)
        });
        self.slots.extend(kept);
        let first_removed = self.slots.len();
        for slot in old {
            if slot.target != Target::Down(Down::Removed) {
                changes.removed.push(slot.info.path.clone());
            }
            self.slots.push(slot);
        }
        for i in first_removed..self.slots.len() {
            self.set_target(i, Target::Down(Down::Removed), ctx);
        }
        for id in revived {
            if let Some(i) = self.slot_index(id) {
                let target = Target::Down(Down::Restart {
                    batch: added_batch,
                    at: None,
                    counts: false,
                    in_place: false,
                });
                self.set_target(i, target, ctx);
            }
        }
        for id in to_restart {
            let Some(i) = self.slot_index(id) else {
                continue;
            };
            let batch = self.new_batch();
            if self.slots[i].is_live() {
                let target = Target::Down(Down::Restart {
                    batch,
                    at: None,
                    counts: true,
                    in_place: false,
                });
                self.set_target(i, target, ctx);
            } else if self.slots[i].target != Target::Down(Down::Stopped) {
                let target = Target::Up {
                    batch,
                    at: None,
                    restart: false,
                };
                self.set_target(i, target, ctx);
            }
        }
        tracing::info!(
            path = %self.path,
            added = changes.added.len(),
            removed = changes.removed.len(),
            changed = changes.changed.len(),
            "children updated"
        );
        self.declare();
        for i in 0..self.slots.len() {
            self.publish(i);
        }
        self.reconcile(ctx);
        Ok(changes)
    }

    /// See [`AddChild`](super::AddChild).
    pub(super) fn add_child(
        &mut self,
        spec: ChildSpec,
        ctx: &mut Context<Self>,
    ) -> Result<ActorPath, ControlError> {
        if self.phase != Phase::Running {
            return Err(ControlError::ShuttingDown(self.path.to_string()));
        }
        if let Some(slot) = self.slots.iter().find(|s| s.spec.name == spec.name) {
            return Err(ControlError::Conflict {
                path: slot.info.path.to_string(),
                op: "add",
                state: slot.info.state,
            });
        }
        let batch = self.new_batch();
        let id = self.next_slot_id;
        self.next_slot_id += 1;
        let slot = Slot::new(id, &self.path, spec, batch);
        let path = slot.info.path.clone();
        tracing::info!(path = %path, "child added");
        self.slots.push(slot);
        self.declare();
        let i = self.slots.len() - 1;
        self.publish(i);
        self.reconcile(ctx);
        Ok(path)
    }

    /// See [`RemoveChild`](super::RemoveChild).
    pub(super) fn remove_child(
        &mut self,
        name: &str,
        ctx: &mut Context<Self>,
    ) -> Result<oneshot::Receiver<()>, ControlError> {
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.spec.name.as_str() == name && s.target != Target::Down(Down::Removed))
        else {
            return Err(ControlError::NotFound(format!("{}/{name}", self.path)));
        };
        let (tx, rx) = oneshot::channel();
        self.slots[i].waiters.push(Waiter {
            until: Until::Down,
            tx,
        });
        self.set_target(i, Target::Down(Down::Removed), ctx);
        self.publish(i);
        self.reconcile(ctx);
        Ok(rx)
    }

    pub(super) fn control(
        &mut self,
        name: &str,
        op: ControlOp,
        ctx: &mut Context<Self>,
    ) -> Result<oneshot::Receiver<()>, ControlError> {
        let Some(i) = self.slots.iter().position(|s| s.spec.name.as_str() == name) else {
            let path = ActorName::new(name)
                .map(|n| self.path.child(&n).to_string())
                .unwrap_or_else(|_| format!("{}/{name}", self.path));
            return Err(ControlError::NotFound(path));
        };
        if self.phase != Phase::Running {
            return Err(ControlError::ShuttingDown(self.path.to_string()));
        }
        let state = self.slots[i].info.state;
        let conflict = match op {
            ControlOp::Start => matches!(
                state,
                ActorState::Starting
                    | ActorState::Running
                    | ActorState::Backoff
                    | ActorState::Stopping
            ),
            ControlOp::Stop => matches!(state, ActorState::Stopped | ActorState::Stopping),
            ControlOp::Restart => state == ActorState::Stopping,
        };
        if conflict {
            return Err(ControlError::Conflict {
                path: self.slots[i].info.path.to_string(),
                op: op.as_str(),
                state,
            });
        }
        tracing::info!(path = %self.slots[i].info.path, op = op.as_str(), "operator request");
        let (tx, rx) = oneshot::channel();
        let after_generation = self.slots[i].generation;
        let batch = self.new_batch();
        let until = match op {
            ControlOp::Stop => {
                self.set_target(i, Target::Down(Down::Stopped), ctx);
                Until::Down
            }
            ControlOp::Start | ControlOp::Restart => {
                let slot = &mut self.slots[i];
                if op == ControlOp::Start || state == ActorState::Failed {
                    slot.window.clear();
                    slot.backoff.reset();
                }
                let restart = op == ControlOp::Restart;
                let target = if slot.is_live() {
                    Target::Down(Down::Restart {
                        batch,
                        at: None,
                        counts: true,
                        in_place: restart,
                    })
                } else {
                    Target::Up {
                        batch,
                        at: None,
                        restart,
                    }
                };
                self.set_target(i, target, ctx);
                Until::Settled { after_generation }
            }
        };
        self.slots[i].waiters.push(Waiter { until, tx });
        self.publish(i);
        self.reconcile(ctx);
        Ok(rx)
    }
}
