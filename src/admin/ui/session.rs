//! The dashboard's sign-in sessions: a random 256-bit id (the cookie), the access of the
//! token that opened it, a CSRF value for the page's `X-Warden-CSRF` header, and an
//! expiry kept on the server. At most [`MAX_SESSIONS`] live at once: a new one past the
//! cap replaces the one closest to its expiry.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use crate::token::Access;

/// How long a session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The most sessions kept at once.
pub const MAX_SESSIONS: usize = 256;
/// The name of the session cookie.
pub const COOKIE: &str = "warden_session";

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// What its token allowed.
    pub access: Access,
    /// The value the page sends in `X-Warden-CSRF`.
    pub csrf: String,
    expires: Instant,
}

impl Session {
    /// Whether `presented` is this session's CSRF value (compared in constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// The live sessions, by id.
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Opens a session with `access`; answers its id and the session.
    pub fn open(&self, access: Access) -> Result<(String, Session), String> {
        let id = warden_actors::random_hex(32)?;
        let session = Session {
            access,
            csrf: warden_actors::random_hex(16)?,
            expires: Instant::now() + SESSION_TTL,
        };
        let mut map = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_SESSIONS {
            let now = Instant::now();
            map.retain(|_, s| s.expires > now);
        }
        if map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The live session `id`, if any (an expired one is removed).
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends the session `id`.
    pub fn close(&self, id: &str) {
        self.by_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// How many sessions are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_capped_and_closed() {
        let sessions = Sessions::default();
        let (first, _) = sessions.open(Access::Full).expect("open");
        for _ in 0..MAX_SESSIONS + 10 {
            sessions.open(Access::ReadOnly).expect("open");
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(
            sessions.get(&first).is_none(),
            "the oldest session made room"
        );
        let (id, s) = sessions.open(Access::Full).expect("open");
        assert_eq!(id.len(), 64, "256 random bits in hex");
        assert!(sessions.get(&id).is_some_and(|g| g.csrf_matches(&s.csrf)));
        assert!(!s.csrf_matches("nope"));
        sessions.close(&id);
        assert!(sessions.get(&id).is_none());
    }
}
