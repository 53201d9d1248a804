//! The one way warden opens folders and files in `state_dir`, so that nothing another
//! user planted there counts:
//!
//! - a folder is used only when it is a real folder (not a symbolic link), owned by
//!   warden's effective uid and not group- or world-writable; one that is missing is
//!   created 0700;
//! - a file is opened with `O_NOFOLLOW` (a planted symbolic link is an error, never
//!   followed), created with `O_EXCL` and mode 0600 when new, and used only when it is a
//!   regular file (a FIFO never blocks the open: `O_NONBLOCK`);
//! - a read is bounded: a file larger than its cap is refused, naming it;
//! - a secret (a token, a key) is refused when another user may read it (mode bits for
//!   group or other) or when it is owned by another uid.
//!
//! Every error names the file or folder and says what is wrong with it.

use std::fs::{DirBuilder, File, Metadata, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How a state_dir file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read an existing file.
    Read,
    /// Append, creating the file (0600) if missing; an existing file looser than 0600 is
    /// tightened to 0600.
    Append,
    /// Create a new file (0600); an existing file or symbolic link at the path is an error.
    CreateNew,
    /// Open for a lock (read-write, created 0600 when missing, never truncated).
    Lock,
}

/// Who a file handed to a child belongs to: that child's uid and gid (mode 0400, so
/// only that user reads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileOwner {
    /// The owner's uid.
    pub uid: u32,
    /// The owner's gid.
    pub gid: u32,
}

/// `e` with `path` named in its message (same kind).
pub fn named(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn refused(path: &Path, problem: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{}: {problem}", path.display()),
    )
}

/// Warden's effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Makes sure `dir` is a folder of warden's alone: created (with any missing parents)
/// mode 0700 when missing; refused, naming it and the problem, when it is a symbolic
/// link, not a folder, owned by another uid, or group- or world-writable.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| named(dir, e))?;
        }
        Err(e) => return Err(named(dir, e)),
    }
    check_private_dir(dir)
}

/// The checks of [`ensure_private_dir`] on an existing folder.
pub fn check_private_dir(dir: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| named(dir, e))?;
    if meta.file_type().is_symlink() {
        return Err(refused(
            dir,
            "is a symbolic link: warden's state folders must be real folders (not followed)",
        ));
    }
    if !meta.is_dir() {
        return Err(refused(dir, "is not a folder"));
    }
    let me = euid();
    if meta.uid() != me {
        return Err(refused(
            dir,
            format!(
                "is owned by uid {}, not by warden's uid {me}: refused (its owner could plant tokens, records or symbolic links in it)",
                meta.uid()
            ),
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refused(
            dir,
            format!(
                "is group- or world-writable (mode {mode:04o}): refused (other users could plant tokens, records or symbolic links in it); `chmod go-w` it"
            ),
        ));
    }
    Ok(())
}

/// The folder of files handed to one child (see `Handoff`), opened: a private folder of
/// warden's ([`ensure_private_dir`]), whose group becomes `gid` (the child's, when it runs
/// as another user) with mode 0710, so that the child can reach a file in it by name
/// through an inherited descriptor, but neither list it nor write in it. Without `gid` it
/// stays 0700.
pub fn handoff_dir(dir: &Path, gid: Option<u32>) -> io::Result<File> {
    ensure_private_dir(dir)?;
    let folder = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| named(dir, e))?;
    let mode = match gid {
        Some(gid) => {
            std::os::unix::fs::fchown(&folder, None, Some(gid)).map_err(|e| named(dir, e))?;
            0o710
        }
        None => 0o700,
    };
    folder
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| named(dir, e))?;
    Ok(folder)
}

/// Opens `path` as `access` says, never following a symbolic link, and only if it is a
/// regular file.
pub fn open(path: &Path, access: Access) -> io::Result<File> {
    let mut options = OpenOptions::new();
    let flags = libc::O_NOFOLLOW | libc::O_CLOEXEC;
    match access {
        Access::Read => options.read(true).custom_flags(flags | libc::O_NONBLOCK),
        Access::Append => options
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(flags | libc::O_NONBLOCK),
        Access::CreateNew => options
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(flags),
        Access::Lock => options
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(flags | libc::O_NONBLOCK),
    };
    let file = options.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            refused(
                path,
                "is a symbolic link: refused (state_dir files are never followed)",
            )
        } else {
            named(path, e)
        }
    })?;
    let meta = file.metadata().map_err(|e| named(path, e))?;
    if !meta.is_file() {
        return Err(refused(path, "is not a regular file: refused"));
    }
    if access == Access::Append && meta.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| named(path, e))?;
    }
    Ok(file)
}

/// The whole of the regular file `path`, refused (naming it) when it is larger than `max`
/// bytes. A missing file is an error of kind `NotFound`.
pub fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    read_with_metadata(path, max).map(|(bytes, _)| bytes)
}

fn read_with_metadata(path: &Path, max: u64) -> io::Result<(Vec<u8>, Metadata)> {
    let file = open(path, Access::Read)?;
    let meta = file.metadata().map_err(|e| named(path, e))?;
    if meta.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: {} bytes, more than the {max} such a file may hold: refused",
                path.display(),
                meta.len()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // `take`: a file that grows after the fstat is still read only up to the cap.
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| named(path, e))?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: grew past {max} bytes while read: refused",
                path.display()
            ),
        ));
    }
    Ok((bytes, meta))
}

/// The text of the secret file `path` (a token or a key), without surrounding
/// whitespace (empty for a file of only whitespace, which holds no secret); refused, naming it, when it is larger than `max` bytes, when group or
/// other may read it, or when another uid owns it. A missing file is an error of kind
/// `NotFound`.
pub fn read_secret(path: &Path, max: u64) -> io::Result<String> {
    read_secret_of(path, max, euid())
}

/// [`read_secret`] of a file that must belong to `uid` (a file handed to a child that runs
/// as another user belongs to that user).
pub fn read_secret_of(path: &Path, max: u64, uid: u32) -> io::Result<String> {
    let (bytes, meta) = read_with_metadata(path, max)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        // Nothing to leak, nothing planted to trust: the caller writes a new one (by
        // rename, so the new file is warden's own, 0600).
        return Ok(String::new());
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(refused(
            path,
            format!(
                "mode {mode:04o} lets other users read this secret: refused; `chmod 600` it if it is yours, or delete it to get a new one"
            ),
        ));
    }
    if meta.uid() != uid {
        return Err(refused(
            path,
            format!(
                "is owned by uid {}, not by uid {uid}: refused (a planted secret)",
                meta.uid()
            ),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not text", path.display()),
        )
    })?;
    Ok(text.trim().to_owned())
}

/// Replaces `path` with `bytes` whole: a new temp file beside it (`O_EXCL`, 0600, or
/// 0400 owned by `owner` for a file handed to a child), then a rename over `path` (a
/// rename never follows a symbolic link: one planted at `path` is replaced, its target
/// untouched). `durable`: the temp file and the folder are fsynced, so a power loss
/// leaves the old file or the whole new one. The folder is made private
/// ([`ensure_private_dir`]) first.
pub fn replace(
    path: &Path,
    bytes: &[u8],
    owner: Option<FileOwner>,
    durable: bool,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    ensure_private_dir(dir)?;
    let tmp = temp_beside(path)?;
    let _ = std::fs::remove_file(&tmp);
    let mut file = open(&tmp, Access::CreateNew)?;
    let written = (|| {
        file.write_all(bytes)?;
        if let Some(owner) = owner {
            std::os::unix::fs::fchown(&file, Some(owner.uid), Some(owner.gid))?;
            file.set_permissions(std::fs::Permissions::from_mode(0o400))?;
        }
        if durable {
            file.sync_all()?;
        }
        Ok(())
    })();
    drop(file);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(named(path, e));
    }
    if durable {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| named(dir, e))?;
    }
    Ok(())
}

/// `<path>.tmp`.
fn temp_beside(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: no file name", path.display()),
        )
    })?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    Ok(path.with_file_name(tmp_name))
}

/// Writes `bytes` to the new file `path` (`O_EXCL`, 0600; a file left at `path` by an
/// earlier run is removed first, a symbolic link included, never followed).
pub fn create_fresh(path: &Path, bytes: &[u8]) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(named(path, e)),
    }
    let mut file = open(path, Access::CreateNew)?;
    file.write_all(bytes).map_err(|e| named(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("warden-sf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        ensure_private_dir(&dir).unwrap();
        dir
    }

    #[test]
    fn folders_are_created_0700_and_loose_or_linked_ones_refused() {
        let dir = tempdir("dirs");
        let sub = dir.join("a/b");
        ensure_private_dir(&sub).unwrap();
        let mode = std::fs::metadata(&sub).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_private_dir(&sub).unwrap_err().to_string();
        assert!(e.contains("a/b") && e.contains("writable"), "{e}");
        std::os::unix::fs::symlink(&sub, dir.join("link")).unwrap();
        let e = ensure_private_dir(&dir.join("link"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn files_are_never_followed_and_reads_are_bounded() {
        let dir = tempdir("files");
        let target = dir.join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for access in [
            Access::Read,
            Access::Append,
            Access::CreateNew,
            Access::Lock,
        ] {
            let e = open(&link, access).unwrap_err().to_string();
            assert!(e.contains("link"), "{access:?}: {e}");
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        let e = read_bounded(&target, 3).unwrap_err().to_string();
        assert!(e.contains("target") && e.contains("more than"), "{e}");
        assert_eq!(read_bounded(&target, 4).unwrap(), b"keep");
        // A FIFO is not a file to read (and does not block).
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = read_bounded(&fifo, 10).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        // A file replaced whole over a planted link: the link's target is untouched.
        replace(&link, b"new", None, false).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "new");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_secret_others_may_read_is_refused() {
        let dir = tempdir("secret");
        let file = dir.join("key");
        replace(&file, b"secret\n", None, true).unwrap();
        assert_eq!(read_secret(&file, 100).unwrap(), "secret");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret(&file, 100).unwrap_err().to_string();
        assert!(e.contains("key") && e.contains("0644"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
