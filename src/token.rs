//! The admin API's bearer token: read from its file, or created there (mode 0600, 256
//! random bits) when missing; compared in constant time.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// Why the token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading, creating or writing the file failed.
    #[error("token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The file exists but holds no token.
    #[error("token file {0} is empty")]
    Empty(PathBuf),
    /// The system's random source failed.
    #[error("cannot generate a token: {0}")]
    Random(String),
}

/// A bearer token.
#[derive(Clone)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// Reads the token at `path`, creating the file with a fresh token if it is missing.
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        let io_err = |source| TokenError::Io {
            path: path.to_owned(),
            source,
        };
        match fs::read_to_string(path) {
            Ok(text) => {
                let token = text.trim();
                if token.is_empty() {
                    return Err(TokenError::Empty(path.to_owned()));
                }
                Ok(Self(token.to_owned()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(io_err)?;
                }
                let token = warden_actors::random_hex(32).map_err(TokenError::Random)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io_err)?;
                file.set_permissions(fs::Permissions::from_mode(0o600))
                    .map_err(io_err)?;
                writeln!(file, "{token}").map_err(io_err)?;
                tracing::info!(path = %path.display(), "created admin token file");
                Ok(Self(token))
            }
            Err(e) => Err(io_err(e)),
        }
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
