//! The hub's durable store: outstanding join tokens and enrolled spokes, in
//! `state_dir/hub.json` (0600, written whole and durably). Only SHA-256 hashes of
//! secrets are kept (tokens and credentials are 256-bit random, so a plain hash is
//! enough and a reconnect storm stays cheap); hashes are compared in constant time.
//! Every change is made in memory under one lock (so a token is taken exactly once) and
//! then written by the caller off the HTTP worker with [`HubStore::persist`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use warden_supervisors::Timestamp;

/// A join token waiting to be used.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    name: String,
    secret_sha256: String,
    expires_at: Timestamp,
}

/// An enrolled spoke.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SpokeRecord {
    credential_sha256: String,
    enrolled_at: Timestamp,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Records {
    #[serde(default)]
    tokens: BTreeMap<String, TokenRecord>,
    #[serde(default)]
    spokes: BTreeMap<String, SpokeRecord>,
}

/// A token as listed (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// The token's id (the part before the dot).
    pub id: String,
    /// The spoke it enrolls.
    pub name: String,
    /// When it stops working.
    pub expires_at: Timestamp,
}

/// A freshly created token: the only time its secret exists on the hub.
#[derive(Debug, Clone, Serialize)]
pub struct NewToken {
    /// The id.
    pub id: String,
    /// `<id>.<secret>`, shown once.
    pub token: String,
    /// The spoke it enrolls.
    pub name: String,
    /// When it stops working.
    pub expires_at: Timestamp,
}

/// Why an enrollment or a reconnect is refused (terminal for the spoke).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No such token (never issued, used, revoked) or a wrong secret.
    #[error("unknown, used or revoked join token")]
    UnknownToken,
    /// The token expired.
    #[error("the join token expired")]
    Expired,
    /// The token was issued for another name.
    #[error("the join token was issued for another spoke name")]
    OtherName,
    /// The name is enrolled already (by someone else, or this spoke lost its credential).
    #[error("the name {0:?} is already enrolled: revoke it on the hub first")]
    NameTaken(String),
    /// No enrollment for that name, or a wrong credential.
    #[error("unknown or revoked credential")]
    BadCredential,
}

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("hub store {path}: {message}")]
pub struct StoreError {
    path: PathBuf,
    message: String,
}

/// The hub's tokens and enrollments.
#[derive(Debug)]
pub struct HubStore {
    file: PathBuf,
    records: Mutex<Records>,
    /// Counts the changes made in memory (bumped under the `records` lock).
    changes: AtomicU64,
    /// Serializes writes and holds the change count the file is known to contain: a
    /// caller whose change an earlier write already carried does not write again (a
    /// group commit, so an enrollment storm costs far fewer fsyncs than enrollments).
    writing: Mutex<u64>,
}

fn sha256_hex(secret: &str) -> String {
    warden_actors::hex(&Sha256::digest(secret.as_bytes()))
}

fn same_hash(stored: &str, secret: &str) -> bool {
    let presented = sha256_hex(secret);
    stored.len() == presented.len() && bool::from(stored.as_bytes().ct_eq(presented.as_bytes()))
}

fn now() -> Timestamp {
    Timestamp::now()
}

impl HubStore {
    /// Opens (or starts) the store at `file`.
    pub fn open(file: &Path) -> Result<Self, StoreError> {
        let error = |message: String| StoreError {
            path: file.to_owned(),
            message,
        };
        let records = match std::fs::read_to_string(file) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| error(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Records::default(),
            Err(e) => return Err(error(e.to_string())),
        };
        Ok(Self {
            file: file.to_owned(),
            records: Mutex::new(records),
            changes: AtomicU64::new(0),
            writing: Mutex::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The records, to change: the change is counted for [`HubStore::persist`].
    fn change(&self) -> std::sync::MutexGuard<'_, Records> {
        let records = self.lock();
        self.changes.fetch_add(1, Ordering::SeqCst);
        records
    }

    /// Writes the current state durably (blocking: call it off async threads).
    pub fn persist(&self) -> Result<(), StoreError> {
        let mine = self.changes.load(Ordering::SeqCst);
        let mut written = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *written >= mine {
            return Ok(());
        }
        let (text, snapshot) = {
            let records = self.lock();
            (
                serde_json::to_string(&*records),
                self.changes.load(Ordering::SeqCst),
            )
        };
        let text = text.map_err(|e| StoreError {
            path: self.file.clone(),
            message: e.to_string(),
        })?;
        warden_actors::write_durably(&self.file, &text).map_err(|e| StoreError {
            path: self.file.clone(),
            message: e.to_string(),
        })?;
        *written = snapshot;
        Ok(())
    }

    /// A new join token for `name`, valid for `ttl`.
    pub fn create_token(&self, name: &str, ttl: Duration) -> Result<NewToken, String> {
        let id = warden_actors::random_hex(8)?;
        let secret = warden_actors::random_hex(32)?;
        let expires_at = Timestamp(
            SystemTime::now()
                .checked_add(ttl)
                .ok_or_else(|| format!("ttl {ttl:?} is too long"))?,
        );
        self.change().tokens.insert(
            id.clone(),
            TokenRecord {
                name: name.to_owned(),
                secret_sha256: sha256_hex(&secret),
                expires_at,
            },
        );
        Ok(NewToken {
            token: format!("{id}.{secret}"),
            id,
            name: name.to_owned(),
            expires_at,
        })
    }

    /// The outstanding tokens (expired ones are dropped on the way).
    pub fn tokens(&self) -> Vec<TokenInfo> {
        let now = now();
        let mut records = self.lock();
        let before = records.tokens.len();
        records.tokens.retain(|_, t| t.expires_at > now);
        if records.tokens.len() != before {
            self.changes.fetch_add(1, Ordering::SeqCst);
        }
        records
            .tokens
            .iter()
            .map(|(id, t)| TokenInfo {
                id: id.clone(),
                name: t.name.clone(),
                expires_at: t.expires_at,
            })
            .collect()
    }

    /// Revokes a token; false if there was none.
    pub fn revoke_token(&self, id: &str) -> bool {
        self.change().tokens.remove(id).is_some()
    }

    /// Enrolls `name` with `token`: takes the token (at most one caller ever succeeds)
    /// and records a fresh credential, returned to be handed to the spoke.
    pub fn enroll(&self, name: &str, token: &str) -> Result<String, Refusal> {
        let (id, secret) = token.split_once('.').ok_or(Refusal::UnknownToken)?;
        let credential = warden_actors::random_hex(32).map_err(|_| Refusal::UnknownToken)?;
        let mut records = self.change();
        let record = records.tokens.get(id).ok_or(Refusal::UnknownToken)?;
        if !same_hash(&record.secret_sha256, secret) {
            return Err(Refusal::UnknownToken);
        }
        if record.expires_at <= now() {
            records.tokens.remove(id);
            return Err(Refusal::Expired);
        }
        if record.name != name {
            return Err(Refusal::OtherName);
        }
        if records.spokes.contains_key(name) {
            return Err(Refusal::NameTaken(name.to_owned()));
        }
        records.tokens.remove(id);
        records.spokes.insert(
            name.to_owned(),
            SpokeRecord {
                credential_sha256: sha256_hex(&credential),
                enrolled_at: now(),
            },
        );
        Ok(credential)
    }

    /// Checks a reconnecting spoke's credential.
    pub fn authenticate(&self, name: &str, credential: &str) -> Result<(), Refusal> {
        let records = self.lock();
        // Hash compared even for an unknown name, so both take the same time.
        let stored = records
            .spokes
            .get(name)
            .map_or("", |s| s.credential_sha256.as_str());
        if same_hash(stored, credential) && !stored.is_empty() {
            Ok(())
        } else {
            Err(Refusal::BadCredential)
        }
    }

    /// Deletes an enrollment; false if there was none.
    pub fn revoke_spoke(&self, name: &str) -> bool {
        self.change().spokes.remove(name).is_some()
    }

    /// Every enrolled spoke and when it enrolled.
    pub fn spokes(&self) -> Vec<(String, Timestamp)> {
        self.lock()
            .spokes
            .iter()
            .map(|(name, s)| (name.clone(), s.enrolled_at))
            .collect()
    }

    /// Whether `name` is enrolled.
    pub fn is_enrolled(&self, name: &str) -> bool {
        self.lock().spokes.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, HubStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = HubStore::open(&dir.path().join("hub.json")).unwrap();
        (dir, store)
    }

    #[test]
    fn a_token_enrolls_once_and_only_its_name() {
        let (_dir, store) = store();
        let t = store.create_token("edge", Duration::from_secs(60)).unwrap();
        assert_eq!(store.enroll("other", &t.token), Err(Refusal::OtherName));
        let credential = store.enroll("edge", &t.token).unwrap();
        assert_eq!(store.enroll("edge", &t.token), Err(Refusal::UnknownToken));
        assert!(store.authenticate("edge", &credential).is_ok());
        assert_eq!(store.authenticate("edge", "x"), Err(Refusal::BadCredential));
        assert_eq!(
            store.authenticate("nope", &credential),
            Err(Refusal::BadCredential)
        );
    }

    #[test]
    fn a_wrong_secret_does_not_burn_the_token() {
        let (_dir, store) = store();
        let t = store.create_token("edge", Duration::from_secs(60)).unwrap();
        let forged = format!("{}.{}", t.id, "00".repeat(32));
        assert_eq!(store.enroll("edge", &forged), Err(Refusal::UnknownToken));
        assert!(store.enroll("edge", &t.token).is_ok());
    }

    #[test]
    fn the_file_holds_hashes_only_and_survives_reopening() {
        let (dir, store) = store();
        let t = store.create_token("edge", Duration::from_secs(60)).unwrap();
        let t2 = store.create_token("b", Duration::from_secs(60)).unwrap();
        let credential = store.enroll("edge", &t.token).unwrap();
        store.persist().unwrap();
        let text = std::fs::read_to_string(dir.path().join("hub.json")).unwrap();
        let secret2 = t2.token.split_once('.').unwrap().1;
        assert!(!text.contains(secret2) && !text.contains(&credential));
        let again = HubStore::open(&dir.path().join("hub.json")).unwrap();
        assert!(again.authenticate("edge", &credential).is_ok());
        assert_eq!(again.tokens().len(), 1);
    }
}
