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

use self::registry::{Registered, Registry};
use self::store::{HubStore, Refusal, StoreError};

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

    /// Registers a connection of `name` that presented (or was just handed) `credential`,
    /// then checks the credential again. A revocation removes the enrollment first and
    /// then closes the registered connection; checking after registering means every
    /// order of the two is safe: a revocation that came before the check refuses here,
    /// one that came after finds the connection registered and closes it.
    pub fn admit(&self, name: &str, credential: &str, version: u32) -> Result<Registered, Refusal> {
        let registered = self.registry.register(name, version);
        if let Err(refusal) = self.store.authenticate(name, credential) {
            self.registry.remove(name, registered.generation);
            registered.pending.fail_all();
            return Err(refusal);
        }
        Ok(registered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> (tempfile::TempDir, Hub) {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::open(dir.path(), Duration::from_secs(60)).unwrap();
        (dir, hub)
    }

    fn enrolled(hub: &Hub, name: &str) -> String {
        let token = hub
            .store
            .create_token(name, Duration::from_secs(60))
            .unwrap();
        hub.store.enroll(name, &token.token).unwrap()
    }

    /// A revocation between the credential check of the hello and the registration
    /// (e.g. while the enrollment is being saved) is not missed: the spoke is refused.
    #[test]
    fn a_spoke_revoked_before_it_is_registered_is_refused() {
        let (_dir, hub) = hub();
        let credential = enrolled(&hub, "edge");
        assert!(hub.store.authenticate("edge", &credential).is_ok());
        // The revocation route: enrollment first, then the live connection.
        assert!(hub.store.revoke_spoke("edge"));
        assert!(!hub.registry.disconnect("edge", "the spoke was revoked"));
        assert_eq!(
            hub.admit("edge", &credential, 1).err(),
            Some(Refusal::BadCredential)
        );
        assert!(
            hub.registry.live("edge").is_none(),
            "nothing left registered"
        );
    }

    /// A revocation after the registration finds the connection and closes it.
    #[test]
    fn a_spoke_revoked_after_it_is_registered_is_told_to_close() {
        let (_dir, hub) = hub();
        let credential = enrolled(&hub, "edge");
        let registered = hub.admit("edge", &credential, 1).unwrap();
        assert!(hub.store.revoke_spoke("edge"));
        assert!(hub.registry.disconnect("edge", "the spoke was revoked"));
        assert_eq!(
            registered.close.borrow().as_deref(),
            Some("the spoke was revoked")
        );
        assert!(hub.registry.live("edge").is_none());
    }

    /// A reconnect with the credential of an enrollment that was revoked and made anew
    /// (same name, new credential) is refused.
    #[test]
    fn the_credential_of_an_earlier_enrollment_is_refused() {
        let (_dir, hub) = hub();
        let old = enrolled(&hub, "edge");
        assert!(hub.store.revoke_spoke("edge"));
        let new = enrolled(&hub, "edge");
        assert_eq!(
            hub.admit("edge", &old, 1).err(),
            Some(Refusal::BadCredential)
        );
        assert!(hub.admit("edge", &new, 1).is_ok());
    }
}
