//! The binary of one of this package's examples (e.g. `outboard_echo`), built once per
//! test binary with the same cargo and target dir as the tests.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock, PoisonError};

/// Builds `cargo build --example NAME` (debug) the first time it is asked for in this test
/// binary and returns its path; panics naming the build error.
pub fn example_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(bin) = built.get(name) {
        return bin.clone();
    }
    let bin = build(name);
    built.insert(name.to_owned(), bin.clone());
    bin
}

fn build(name: &str) -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| {
            if d.is_absolute() {
                d
            } else {
                manifest_dir.join(d)
            }
        })
        .unwrap_or_else(|| manifest_dir.join("target"));
    let out = Command::new(env!("CARGO"))
        .args(["build", "--example", name, "--target-dir"])
        .arg(&target_dir)
        .current_dir(&manifest_dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo: {e}"));
    assert!(
        out.status.success(),
        "cargo build --example {name} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = target_dir.join("debug/examples").join(name);
    assert!(bin.is_file(), "{} was not built", bin.display());
    bin
}
