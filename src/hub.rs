//! Hub and spokes: one warden (the hub) drives the trees of many (the spokes). Each
//! spoke dials the hub's admin listener over a WebSocket (`/api/v1/hub/connect`),
//! enrolls once with a join token and reconnects with its credential; the hub relays a
//! fixed allowlist of verbs down that connection.
//!
//! - [`store`]: join tokens and enrollments, hashes only, in `state_dir/hub.json`;
//! - [`registry`]: the connected spokes, newest connection wins, verbs by request id;
//! - [`connect`]: the WebSocket endpoint;
//! - [`routes`]: the HTTP routes (`/api/v1/hub/...`, `/api/v1/spokes/...`);
//! - [`spoke`]: the spoke side's answers to verbs, from its own controller;
//! - [`cli`]: `warden hub ...`.

pub mod cli;
mod connect;
mod frame_guard;
pub mod registry;
pub mod routes;
pub mod spoke;
pub mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use self::registry::Registry;
use self::store::{HubStore, StoreError};

/// The hub: its store and its connected spokes.
#[derive(Debug)]
pub struct Hub {
    /// Tokens and enrollments.
    pub store: Arc<HubStore>,
    /// Connected spokes.
    pub registry: Registry,
    /// Lifetime of a join token unless its request says otherwise.
    pub token_ttl: Duration,
}

impl Hub {
    /// Opens the hub's store in `state_dir`.
    pub fn open(state_dir: &Path, token_ttl: Duration) -> Result<Self, StoreError> {
        Ok(Self {
            store: Arc::new(HubStore::open(&state_dir.join("hub.json"))?),
            registry: Registry::default(),
            token_ttl,
        })
    }
}
