//! Secrets in hex and on disk: the one place tokens, keys and ids are drawn from the OS,
//! and the one way a secret (or id) file in `state_dir` is written so that a power loss
//! leaves either the old file, or the whole new one.

use std::io;
use std::path::Path;

/// `bytes` random bytes from the OS, as lower-case hex (twice as many characters).
pub fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| format!("the OS random source failed: {e}"))?;
    Ok(hex(&buf))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of the hex text `text` (either case); `None` when it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Writes `line` and a newline to `path` durably, mode 0600: a temp file beside it,
/// fsynced, renamed over `path`, then the folder fsynced (so the rename itself survives a
/// power loss); see [`crate::state_file::replace`]. Creates the folder (0700) if needed.
/// Slow (two fsyncs): for files written once, never on a restart path.
pub fn write_durably(path: &Path, line: &str) -> io::Result<()> {
    crate::state_file::replace(path, format!("{line}\n").as_bytes(), None, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_durable_write_replaces_the_file_whole_with_mode_0600_and_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("warden-durable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = dir.join("sub/secret");
        write_durably(&file, "one").unwrap();
        write_durably(&file, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "two\n");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.join("sub"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(names.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
