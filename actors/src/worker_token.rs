//! Worker tokens: short-lived signed statements "this is run N of worker W until T", so
//! that a worker can prove who it is to others (who ask warden to verify). Each is
//! `v2|<worker path>|<run nonce>|<expiry, unix seconds>|<hex HMAC-SHA256>` under a key
//! kept in `state_dir` (created 0600 when missing), so a restarted warden verifies tokens
//! it signed before. The signature and expiry are checked here; the pool checks that the
//! worker still exists with the same run nonce (see the pool's `verify_token`).

use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use warden_supervisors::ActorPath;

type HmacSha256 = Hmac<Sha256>;

/// Why a token is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the token's form.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match: forged, or signed with another key.
    #[error("bad signature")]
    BadSignature,
    /// It has expired.
    #[error("expired {0} s ago")]
    Expired(u64),
    /// It claims to be valid longer than the pool's `token_ttl` allows from now: warden
    /// never signs such a token.
    #[error("expires {0} s past the pool's token_ttl from now")]
    BeyondTtl(u64),
}

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The worker it names.
    pub worker: ActorPath,
    /// The run of that worker it names (the pool checks it is the current one).
    pub nonce: String,
    /// When it expires.
    pub expires_at: SystemTime,
}

/// Signs and verifies worker tokens.
pub struct TokenSigner {
    key: [u8; 32],
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner(..)")
    }
}

use crate::secret::{hex, unhex};

impl TokenSigner {
    /// Reads the key at `path`, creating it (0600, 256 random bits, written durably) when
    /// missing. A file that is empty or holds a cut-off key (a power loss while an older
    /// warden wrote it) is replaced with a fresh key and a warning (tokens signed before
    /// then no longer verify); any other content, a key other users may read, or one
    /// owned by another uid is an error naming the file (see [`crate::state_file`]).
    pub fn load_or_create(path: &Path) -> io::Result<Self> {
        match crate::state_file::read_secret(path, 4096) {
            Ok(text) => {
                let text = text.as_str();
                if let Some(bytes) = unhex(text).filter(|b| b.len() == 32) {
                    let mut key = [0u8; 32];
                    key.copy_from_slice(&bytes);
                    return Ok(Self { key });
                }
                let cut_off = text.len() < 64 && text.bytes().all(|b| b.is_ascii_hexdigit());
                if !cut_off {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: not a 256-bit hex key", path.display()),
                    ));
                }
                tracing::warn!(path = %path.display(), "the worker token key is empty or cut off (a power loss?): creating a new one; tokens signed before no longer verify");
                Self::create(path)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Self::create(path),
            Err(e) => Err(e),
        }
    }

    /// A fresh key, written durably to `path`.
    fn create(path: &Path) -> io::Result<Self> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| io::Error::other(e.to_string()))?;
        crate::secret::write_durably(path, &hex(&key))?;
        Ok(Self { key })
    }

    fn mac(&self, body: &str) -> HmacSha256 {
        // HMAC takes keys of any length: a 32-byte key never fails.
        let mut mac =
            <HmacSha256 as KeyInit>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(body.as_bytes());
        mac
    }

    /// A token for the run `nonce` of `worker`, valid until `expires_at`. The nonce is
    /// warden's own (hex), never input.
    pub fn sign(&self, worker: &ActorPath, nonce: &str, expires_at: SystemTime) -> String {
        let secs = expires_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let body = format!("v2|{worker}|{nonce}|{secs}");
        let tag = self.mac(&body).finalize().into_bytes();
        format!("{body}|{}", hex(&tag))
    }

    /// Checks `token` at time `now` (the signature in constant time): signed with this
    /// key, not expired, and expiring no later than `ttl` from now.
    pub fn verify(
        &self,
        token: &str,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<VerifiedToken, TokenError> {
        let token = token.trim();
        let (body, tag) = token.rsplit_once('|').ok_or(TokenError::Malformed)?;
        let mut parts = body.split('|');
        let (Some("v2"), Some(worker), Some(nonce), Some(secs), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Malformed);
        };
        let tag = unhex(tag).ok_or(TokenError::Malformed)?;
        self.mac(body)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        let worker = ActorPath::parse(worker).map_err(|_| TokenError::Malformed)?;
        let secs: u64 = secs.parse().map_err(|_| TokenError::Malformed)?;
        let expires_at = UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .ok_or(TokenError::Malformed)?;
        if let Ok(late) = now.duration_since(expires_at) {
            return Err(TokenError::Expired(late.as_secs()));
        }
        // Signed with whole seconds: a token signed now may end up to a second later.
        let latest = now
            .checked_add(ttl.saturating_add(Duration::from_secs(1)))
            .unwrap_or(now);
        if let Ok(beyond) = expires_at.duration_since(latest) {
            return Err(TokenError::BeyondTtl(beyond.as_secs().max(1)));
        }
        Ok(VerifiedToken {
            worker,
            nonce: nonce.to_owned(),
            expires_at,
        })
    }
}

/// Writes `token` to `path` atomically (temp file + rename): mode 0600, or 0400 owned by
/// `owner` (the worker's own user) so that only that worker reads it.
pub(crate) fn write_token(
    path: &Path,
    token: &str,
    owner: Option<crate::state_file::FileOwner>,
) -> io::Result<()> {
    crate::state_file::replace(path, format!("{token}\n").as_bytes(), owner, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_they_expire_and_forgeries_fail() {
        let dir = std::env::temp_dir().join(format!("warden-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let signer = TokenSigner::load_or_create(&dir.join("key")).unwrap();
        let worker = ActorPath::parse("/app/w1").unwrap();
        let now = SystemTime::now();
        let ttl = Duration::from_secs(60);
        let token = signer.sign(&worker, "abcd", now + ttl);
        let verified = signer.verify(&token, now, ttl).unwrap();
        assert_eq!((verified.worker, verified.nonce.as_str()), (worker, "abcd"));
        // The same key read again verifies it: a restarted warden.
        let again = TokenSigner::load_or_create(&dir.join("key")).unwrap();
        assert!(again.verify(&token, now, ttl).is_ok());
        assert!(matches!(
            signer.verify(&token, now + Duration::from_secs(120), ttl),
            Err(TokenError::Expired(_))
        ));
        // Longer-lived than the pool's token_ttl allows: never signed by this pool.
        let far = signer.sign(
            &ActorPath::parse("/app/w1").unwrap(),
            "abcd",
            now + 10 * ttl,
        );
        assert!(matches!(
            signer.verify(&far, now, ttl),
            Err(TokenError::BeyondTtl(_))
        ));
        let forged = token.replace("/app/w1", "/app/w2");
        assert_eq!(
            signer.verify(&forged, now, ttl),
            Err(TokenError::BadSignature)
        );
        let other_run = token.replace("|abcd|", "|abce|");
        assert_eq!(
            signer.verify(&other_run, now, ttl),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            signer.verify("garbage", now, ttl),
            Err(TokenError::Malformed)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_empty_or_cut_off_key_is_replaced_and_garbage_is_an_error() {
        let dir = std::env::temp_dir().join(format!("warden-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("pool.key");
        for broken in ["", "\n", "0123abcd"] {
            crate::state_file::create_fresh(&key, broken.as_bytes()).unwrap();
            TokenSigner::load_or_create(&key).unwrap();
            assert_eq!(std::fs::read_to_string(&key).unwrap().trim().len(), 64);
        }
        crate::state_file::create_fresh(&key, b"not a key at all").unwrap();
        assert!(TokenSigner::load_or_create(&key).is_err());
        // A good key that other users may read is refused, naming the file.
        TokenSigner::load_or_create(&dir.join("good.key")).unwrap();
        std::fs::set_permissions(
            dir.join("good.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        let e = TokenSigner::load_or_create(&dir.join("good.key"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("good.key") && e.contains("0644"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
