//! Keeps the stated requirements honest.
//!
//! - Each workspace crate's `rust-version` is the real minimum its dependencies allow: the
//!   highest `rust-version` over the crate's dependency tree as Cargo resolved it
//!   (`cargo metadata --locked` for x86_64 Linux: normal and build dependencies all the
//!   way down, the crate's own dev-dependencies too, since its tests must build; features
//!   as the workspace resolves them, as CI builds it). A dependency's own `rust-version`
//!   counts even where its code would build on less: Cargo refuses to build it below. The
//!   code itself is held to that floor by clippy's `incompatible_msrv` lint (on by
//!   default), which names any std API stabilized later.
//! - README.md states warden's `rust-version` and `cargo install --path .`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `1.89` -> (1, 89, 0).
fn version(text: &str) -> (u64, u64, u64) {
    let mut parts = text.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

fn metadata() -> Value {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            "x86_64-unknown-linux-gnu",
        ])
        .current_dir(root())
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata JSON")
}

/// For each workspace crate: its declared rust-version and the highest one of its tree,
/// with the crates that ask for it.
fn floors() -> BTreeMap<String, (String, String, Vec<String>)> {
    let meta = metadata();
    let packages: BTreeMap<&str, &Value> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("id"), p))
        .collect();
    let nodes: BTreeMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve nodes")
        .iter()
        .map(|n| (n["id"].as_str().expect("id"), n))
        .collect();
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .expect("workspace members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let rust_version = |id: &str| {
        packages[id]["rust_version"]
            .as_str()
            .unwrap_or("0")
            .to_owned()
    };
    let mut out = BTreeMap::new();
    for member in &members {
        let mut seen = BTreeSet::new();
        let mut stack = vec![*member];
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            for dep in nodes[id]["deps"].as_array().into_iter().flatten() {
                let only_dev = dep["dep_kinds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|k| k["kind"].as_str() == Some("dev"));
                // dev-dependencies count for the crate itself, not for its dependencies
                if only_dev && id != *member {
                    continue;
                }
                stack.push(dep["pkg"].as_str().expect("dep id"));
            }
        }
        seen.remove(member);
        let highest = seen
            .iter()
            .map(|id| rust_version(id))
            .max_by_key(|v| version(v))
            .unwrap_or_else(|| "0".to_owned());
        let askers = seen
            .iter()
            .filter(|id| version(&rust_version(id)) == version(&highest))
            .map(|id| format!("{} {}", packages[id]["name"], packages[id]["version"]))
            .collect();
        let name = packages[member]["name"].as_str().expect("name").to_owned();
        out.insert(name, (rust_version(member), highest, askers));
    }
    out
}

/// Each workspace crate's `rust-version` is the highest `rust-version` of its
/// dependency tree: not lower (it would not build), not higher (it would turn away
/// toolchains that work).
#[test]
fn rust_version_is_the_floor_of_the_dependency_tree() {
    let floors = floors();
    assert!(floors.contains_key("warden"), "{floors:?}");
    let wrong: Vec<String> = floors
        .iter()
        .filter(|(_, (declared, highest, _))| version(declared) != version(highest))
        .map(|(name, (declared, highest, askers))| {
            format!(
                "{name}: rust-version = \"{declared}\", but its dependency tree needs {highest} \
                 ({})",
                askers.join(", ")
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "set rust-version in the crate's Cargo.toml to the tree's floor (and README.md):\n  {}",
        wrong.join("\n  ")
    );
}

/// README.md names the Rust version warden needs and how to install it.
#[test]
fn readme_states_the_rust_version_and_the_install_command() {
    let floors = floors();
    let (declared, _, _) = &floors["warden"];
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    assert!(
        readme.contains(&format!("Rust {declared}")),
        "README.md must say \"Rust {declared}\" (Cargo.toml's rust-version)"
    );
    assert!(
        readme.contains("cargo install --path ."),
        "README.md must show `cargo install --path .`"
    );
}

/// README.md's test command is the one `.ci/run` runs, and every program `.ci/run`
/// checks for or installs for the tests is named beside it (a newcomer's machine has only
/// what the README says).
#[test]
fn readme_test_command_is_what_ci_runs_with_what_it_needs() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let ci = std::fs::read_to_string(root().join(".ci/run")).expect(".ci/run");
    let section = readme
        .split("Run all tests")
        .nth(1)
        .expect("README.md has a \"Run all tests\" paragraph");
    let command = section
        .split("```sh")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .map(str::trim)
        .expect("the paragraph is followed by a ```sh block");
    assert!(
        ci.lines().any(|line| line.trim() == command),
        ".ci/run must run README's test command `{command}` as a line of its own"
    );
    let needs = section.split("```").nth(2).unwrap_or_default();
    // `command -v TOOL` in .ci/run: every program the tests need.
    let tools: BTreeSet<&str> = ci
        .split("command -v ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|tool| !tool.starts_with('"') && *tool != "systemctl")
        .chain(
            ci.lines()
                .filter(|line| line.trim_start().starts_with("for tool in"))
                .flat_map(|line| {
                    line.trim_start()
                        .trim_start_matches("for tool in")
                        .split(';')
                        .next()
                        .unwrap_or_default()
                        .split_whitespace()
                }),
        )
        .filter(|tool| !matches!(*tool, "sh" | "sleep"))
        .collect();
    assert!(tools.len() >= 5, "read {tools:?} from .ci/run");
    let missing: Vec<&&str> = tools
        .iter()
        .filter(|tool| !needs.contains(&format!("`{tool}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md must name what the tests need beside the test command: {missing:?}"
    );
}
