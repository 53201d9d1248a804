//! The admin API's bearer tokens: the admin token (`token_file`) and the optional
//! read-only token (`read_token_file`), each read from its file, or created there (mode
//! 0600, 256 random bits, written durably) when missing; compared in constant time.
//!
//! An existing token file is trusted only when it is a regular file (not followed through
//! a symlink), owned by warden's user, readable by no one else, and holds a token of at
//! least [`MIN_TOKEN_LEN`] characters: anything else is refused, naming the file.

use std::io;
use std::path::{Path, PathBuf};

use subtle::{Choice, ConstantTimeEq};

/// The shortest token accepted (warden writes 64 hex characters).
pub const MIN_TOKEN_LEN: usize = 32;
/// The largest token file read.
const MAX_TOKEN_FILE: u64 = 4096;

/// Why a token or its file could not be used.
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
    /// The file exists but cannot be trusted (mode, owner, kind, size or content).
    #[error("token file {path}: {reason}")]
    Untrusted {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A token given in code is shorter than [`MIN_TOKEN_LEN`].
    #[error("a token must have at least {MIN_TOKEN_LEN} characters, not {0}")]
    TooShort(usize),
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
    /// Reads the token at `path`, creating the file (mode 0600, written durably) with a
    /// fresh token if it is missing, or with a warning if it is empty (a power loss while
    /// an earlier warden created it). A file that is a symlink or not a regular file,
    /// owned by another user, readable or writable by group or others, or that holds a
    /// token shorter than [`MIN_TOKEN_LEN`] is refused.
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        match read_private_file(path) {
            Ok(text) if !text.trim().is_empty() => {
                let token = text.trim();
                if token.len() < MIN_TOKEN_LEN {
                    return Err(TokenError::Untrusted {
                        path: path.to_owned(),
                        reason: format!(
                            "holds {} characters, too short to be a token (at least \
                             {MIN_TOKEN_LEN}); remove it and warden writes a new one",
                            token.len()
                        ),
                    });
                }
                Ok(Self(token.to_owned()))
            }
            Ok(_) => {
                tracing::warn!(path = %path.display(), "the token file is empty (a power loss?): writing a new token");
                Self::create(path)
            }
            Err(TokenError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                let token = Self::create(path)?;
                tracing::info!(path = %path.display(), "created token file");
                Ok(token)
            }
            Err(e) => Err(e),
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

    /// Wraps a known token (at least [`MIN_TOKEN_LEN`] characters: an empty or short one
    /// would be guessed).
    pub fn new(token: impl Into<String>) -> Result<Self, TokenError> {
        let token = token.into();
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort(token.len()));
        }
        Ok(Self(token))
    }

    /// The token's text (for clients).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        self.matching(presented).into()
    }

    fn matching(&self, presented: &str) -> Choice {
        let a = self.0.as_bytes();
        let b = presented.as_bytes();
        // Tokens have a fixed length: only a wrong length is told apart early.
        if a.len() == b.len() {
            a.ct_eq(b)
        } else {
            Choice::from(0)
        }
    }
}

/// What a presented bearer token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The admin token: every route.
    Full,
    /// The read-only token: GET only.
    ReadOnly,
}

/// The tokens the admin API accepts.
#[derive(Debug, Clone)]
pub struct ApiTokens {
    admin: AdminToken,
    read_only: Option<AdminToken>,
}

impl ApiTokens {
    /// The admin token, and the read-only one if configured. Refuses a read-only token
    /// equal to the admin token (it would not be read-only).
    pub fn new(admin: AdminToken, read_only: Option<AdminToken>) -> Result<Self, String> {
        if read_only
            .as_ref()
            .is_some_and(|r| admin.matches(r.as_str()))
        {
            return Err(
                "the read-only token is the admin token: give read_token_file a token of its own"
                    .to_owned(),
            );
        }
        Ok(Self { admin, read_only })
    }

    /// What `presented` allows, if anything; both tokens are compared in constant time,
    /// whichever matches.
    pub fn access(&self, presented: &str) -> Option<Access> {
        let full = self.admin.matching(presented);
        let read = self
            .read_only
            .as_ref()
            .map_or(Choice::from(0), |t| t.matching(presented));
        if bool::from(full) {
            Some(Access::Full)
        } else if bool::from(read) {
            Some(Access::ReadOnly)
        } else {
            None
        }
    }
}

/// The content of a secret file that only warden's user may read (see
/// [`warden_actors::state_file::read_secret`]: not followed through a symlink, a regular
/// file of at most [`MAX_TOKEN_FILE`] bytes, owned by this user with no group or other
/// permission bits unless it is empty, which the caller replaces).
fn read_private_file(path: &Path) -> Result<String, TokenError> {
    warden_actors::state_file::read_secret(path, MAX_TOKEN_FILE).map_err(|source| TokenError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn short_tokens_loose_modes_and_symlinks_are_refused() {
        assert!(matches!(AdminToken::new(""), Err(TokenError::TooShort(0))));
        assert!(AdminToken::new("a".repeat(MIN_TOKEN_LEN)).is_ok());
        let dir = std::env::temp_dir().join(format!("warden-admin-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("admin.token");
        let created = AdminToken::load_or_create(&file).unwrap();
        assert_eq!(created.as_str().len(), 64);
        assert!(AdminToken::load_or_create(&file)
            .unwrap()
            .matches(created.as_str()));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let loose = AdminToken::load_or_create(&file).unwrap_err().to_string();
        assert!(loose.contains("mode 0644"), "{loose}");
        std::fs::write(&file, "short\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let short = AdminToken::load_or_create(&file).unwrap_err().to_string();
        assert!(short.contains("too short"), "{short}");
        let link = dir.join("link.token");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let followed = AdminToken::load_or_create(&link).unwrap_err().to_string();
        assert!(followed.contains("symbolic link"), "{followed}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_read_only_token_is_told_apart_and_must_differ_from_the_admin_token() {
        let admin = AdminToken::new("a".repeat(64)).unwrap();
        let read = AdminToken::new("b".repeat(64)).unwrap();
        let tokens = ApiTokens::new(admin.clone(), Some(read)).unwrap();
        assert_eq!(tokens.access(&"a".repeat(64)), Some(Access::Full));
        assert_eq!(tokens.access(&"b".repeat(64)), Some(Access::ReadOnly));
        assert_eq!(tokens.access(""), None);
        assert_eq!(tokens.access(&"c".repeat(64)), None);
        assert!(ApiTokens::new(admin.clone(), Some(admin)).is_err());
    }
}
