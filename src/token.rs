//! The admin API's bearer token: read from its file, or created there (mode 0600, 256
//! random bits) when missing; compared in constant time. A file that other users may read,
//! that another uid owns, or that is too short to be a token is refused at start, naming
//! it (someone may have planted it).

use std::io;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// Why the token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading, creating or writing the file failed, or it is not to be trusted (the
    /// message names the file).
    #[error("admin token: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The system's random source failed.
    #[error("cannot generate a token: {0}")]
    Random(String),
}

/// The fewest characters an admin token file may hold (warden writes 64 hex
/// characters: 256 bits).
pub const MIN_TOKEN_LEN: usize = 32;

/// The largest admin token file read.
const MAX_TOKEN_FILE: u64 = 4096;

/// A bearer token.
#[derive(Clone)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// Reads the token at `path`, creating the file (mode 0600, written durably) with a
    /// fresh token if it is missing, or with a warning if it is empty (a power loss while
    /// an earlier warden created it). A file that other users may read, that another uid
    /// owns, that is not a regular file (a symbolic link is not followed), or that holds
    /// fewer than [`MIN_TOKEN_LEN`] characters is refused, naming it.
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        let io_err = |source| TokenError::Io {
            path: path.to_owned(),
            source,
        };
        match warden_actors::state_file::read_secret(path, MAX_TOKEN_FILE) {
            Ok(text) if text.len() >= MIN_TOKEN_LEN => Ok(Self(text)),
            Ok(text) if !text.is_empty() => Err(io_err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: {} characters is too short to be a token (at least {MIN_TOKEN_LEN}): refused; delete it to get a new one",
                    path.display(),
                    text.len()
                ),
            ))),
            Ok(_) => {
                tracing::warn!(path = %path.display(), "the admin token file is empty (a power loss?): writing a new token");
                Self::create(path)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let token = Self::create(path)?;
                tracing::info!(path = %path.display(), "created admin token file");
                Ok(token)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    /// A fresh token, written durably to `path`.
    fn create(path: &Path) -> Result<Self, TokenError> {
        let token = warden_actors::random_hex(32).map_err(TokenError::Random)?;
        warden_actors::write_durably(path, &token).map_err(|source| TokenError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self(token))
    }

    /// Wraps a known token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token's text (for clients).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        let a = self.0.as_bytes();
        let b = presented.as_bytes();
        a.len() == b.len() && bool::from(a.ct_eq(b))
    }
}
