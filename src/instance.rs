//! The id of one warden installation: 128 random bits kept in `state_dir/instance`, made
//! once and reused by every later warden on that state_dir. Children carry it as
//! `WARDEN_INSTANCE`, the marker that finds orphans of an earlier warden (never the
//! state_dir path, which another warden — in a container, say — may share by text), and
//! it names what else belongs to this installation (e.g. the `warden-<instance>` cgroup).

use std::fmt;
use std::io;
use std::path::Path;

/// The environment variable that marks a child (and its descendants) as belonging to
/// the warden of one instance.
pub const INSTANCE_ENV: &str = "WARDEN_INSTANCE";

/// The file in `state_dir` that holds the id.
pub const INSTANCE_FILE: &str = "instance";

/// Where an id returned by [`InstanceId::load_or_create`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdOrigin {
    /// Read from `state_dir/instance`: processes of an earlier warden may carry it.
    Kept,
    /// Made just now (no file, or a broken one): no process can carry it yet.
    New,
}

/// An instance id: exactly 32 lower-case hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceId(String);

impl InstanceId {
    /// Reads `state_dir/instance`, or creates it (written durably, mode 0600) when it is
    /// missing; an empty or malformed file (a power loss while it was created) is replaced
    /// with a warning, since nothing can be marked with an id that was never written whole.
    pub fn load_or_create(state_dir: &Path) -> io::Result<(Self, IdOrigin)> {
        let path = state_dir.join(INSTANCE_FILE);
        match warden_actors::state_file::read_bounded(&path, 4096) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                if let Some(id) = Self::parse(text.trim_end_matches('\n')) {
                    return Ok((id, IdOrigin::Kept));
                }
                tracing::warn!(path = %path.display(), "the instance id file is empty or malformed (a power loss?): making a new id; processes marked with the old one are not swept");
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let id = warden_actors::random_hex(16).map_err(io::Error::other)?;
        warden_actors::write_durably(&path, &id)?;
        Ok((Self(id), IdOrigin::New))
    }

    /// `text` if it is an id (32 lower-case hex characters).
    pub fn parse(text: &str) -> Option<Self> {
        let valid = text.len() == 32
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| Self(text.to_owned()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_made_once_reused_and_a_broken_file_is_replaced() {
        let dir = std::env::temp_dir().join(format!("warden-instance-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (first, origin) = InstanceId::load_or_create(&dir).unwrap();
        assert_eq!(origin, IdOrigin::New);
        assert_eq!(first.as_str().len(), 32);
        let text = std::fs::read_to_string(dir.join(INSTANCE_FILE)).unwrap();
        assert_eq!(text, format!("{first}\n"));
        assert_eq!(
            InstanceId::load_or_create(&dir).unwrap(),
            (first.clone(), IdOrigin::Kept)
        );
        warden_actors::write_durably(&dir.join(INSTANCE_FILE), "").unwrap();
        let (second, origin) = InstanceId::load_or_create(&dir).unwrap();
        assert_ne!(second, first);
        assert_eq!(
            origin,
            IdOrigin::New,
            "a broken file's id is replaced, so new"
        );
        assert!(InstanceId::parse("ABCDEF0123456789abcdef0123456789").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
