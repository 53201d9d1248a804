//! Keeps `docs/cli.md` true to the command line clap knows.
//!
//! The commands, flags and arguments are not a list kept by hand: the test walks the
//! built binary's own help (`warden --help`, then `warden <command> --help` for every
//! command it lists, down to the leaves) and reads its `Commands:`, `Options:` and
//! `Arguments:` sections. Every command must have a heading in docs/cli.md whose text is
//! the whole command in backticks (``### `warden ctl logs` ``), and the text under it (up
//! to the next such heading) must name each of its long flags (`--tail`) and arguments
//! (`<PATH>`). The flags of `warden` itself (`--log-format`, `--help`, `--version`) are
//! checked in the `warden` section only. A heading for a command clap does not know
//! fails too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

/// What `warden <path> --help` lists.
#[derive(Debug, Default)]
struct Help {
    commands: Vec<String>,
    flags: BTreeSet<String>,
    arguments: BTreeSet<String>,
}

fn help(path: &[String]) -> Help {
    let output = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(path)
        .arg("--help")
        .output()
        .expect("run warden --help");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "warden {} --help failed: {}",
        path.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    parse_help(&text)
}

fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let mut section = "";
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = match line {
                "Commands:" => "commands",
                "Options:" => "options",
                "Arguments:" => "arguments",
                _ => "",
            };
            continue;
        }
        if line.starts_with(' ') && !line.starts_with("  ") {
            continue;
        }
        // items are indented 2 (or 6 for a long-only flag); their text 10 or more
        let indent = line.len() - line.trim_start().len();
        let item = line.trim_start();
        if item.is_empty() || indent > 6 {
            continue;
        }
        match section {
            "commands" => {
                let name = item.split_whitespace().next().unwrap_or_default();
                if name != "help" {
                    help.commands.push(name.to_owned());
                }
            }
            "options" => {
                for word in item.split([',', ' ']) {
                    if word.starts_with("--") {
                        help.flags.insert(word.to_owned());
                    }
                }
            }
            "arguments" => {
                let name = item.split_whitespace().next().unwrap_or_default();
                let name = name.trim_end_matches("...");
                if name.starts_with('<') {
                    help.arguments.insert(name.to_owned());
                }
            }
            _ => {}
        }
    }
    help
}

/// Every command path clap knows (the root is the empty path) and its help.
fn commands() -> BTreeMap<Vec<String>, Help> {
    let mut out = BTreeMap::new();
    let mut queue = vec![Vec::<String>::new()];
    while let Some(path) = queue.pop() {
        let help = help(&path);
        for command in &help.commands {
            let mut below = path.clone();
            below.push(command.clone());
            queue.push(below);
        }
        out.insert(path, help);
    }
    out
}

/// docs/cli.md's sections: command path ("warden ctl logs") -> the text under its heading.
fn sections(doc: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_code = false;
    for line in doc.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if !in_code && line.starts_with('#') {
            let title = line.trim_start_matches('#').trim();
            if let Some(command) = title
                .strip_prefix('`')
                .and_then(|t| t.strip_suffix('`'))
                .filter(|t| *t == "warden" || t.starts_with("warden "))
            {
                current = Some(command.to_owned());
                out.entry(command.to_owned()).or_default();
                continue;
            }
            if line.starts_with("## ") {
                current = None;
            }
        }
        if let Some(command) = &current {
            let text = out.entry(command.clone()).or_default();
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

/// Whether `text` names `flag` as a whole word (`--raw` is not in `--rawest`).
fn names(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let next = text[at + word.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// Every command, flag and argument `warden --help` lists (walked down every command)
/// is in docs/cli.md under the command's heading; every command heading names a command.
#[test]
fn every_command_and_flag_is_documented() {
    let commands = commands();
    assert!(
        commands.len() >= 15,
        "found only {} commands: the help parser no longer reads clap's output: {:?}",
        commands.len(),
        commands.keys().collect::<Vec<_>>()
    );
    let doc_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md");
    let doc = std::fs::read_to_string(&doc_path).expect("read docs/cli.md");
    let sections = sections(&doc);
    let root_flags = commands
        .get(&Vec::new())
        .map(|h| h.flags.clone())
        .unwrap_or_default();
    let mut problems = Vec::new();
    for (path, help) in &commands {
        let name = std::iter::once("warden")
            .chain(path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        let Some(text) = sections.get(&name) else {
            problems.push(format!(
                "no heading \"### `{name}`\" (it takes {})",
                describe(
                    help,
                    if path.is_empty() {
                        None
                    } else {
                        Some(&root_flags)
                    }
                )
            ));
            continue;
        };
        for flag in &help.flags {
            if !path.is_empty() && root_flags.contains(flag) {
                continue;
            }
            if !names(text, flag) {
                problems.push(format!(
                    "`{name}`: flag `{flag}` is not named in its section"
                ));
            }
        }
        for argument in &help.arguments {
            if !names(text, argument) {
                problems.push(format!(
                    "`{name}`: argument `{argument}` is not named in its section"
                ));
            }
        }
    }
    for name in sections.keys() {
        let path: Vec<String> = name.split_whitespace().skip(1).map(str::to_owned).collect();
        if !commands.contains_key(&path) {
            problems.push(format!(
                "heading `{name}` names a command warden does not have (a typo, or a feature \
                 not built yet)"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/cli.md is out of step with `warden --help`:\n  {}",
        problems.join("\n  ")
    );
}

/// What a command takes, for a message; without the flags of `warden` itself (`root`).
fn describe(help: &Help, root: Option<&BTreeSet<String>>) -> String {
    let mut parts: Vec<String> = help
        .flags
        .iter()
        .filter(|f| !root.is_some_and(|r| r.contains(*f)))
        .cloned()
        .collect();
    parts.extend(help.arguments.iter().cloned());
    parts.extend(help.commands.iter().map(|c| format!("command {c}")));
    if parts.is_empty() {
        "no flags".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The help parser reads clap's layout: commands, long flags (with and without a short
/// one) and arguments, and skips the text under them.
#[test]
fn the_help_parser_reads_clap() {
    let text = "\
Wait until every given actor is running

Usage: warden ctl wait [OPTIONS] <PATHS>...

Commands:
  token   Join tokens
  help    Print this message

Arguments:
  <PATHS>...
          Actor paths

Options:
  -c, --config <CONFIG>
          The config file --not-a-flag
      --timeout <TIMEOUT>
          Give up after this long
  -h, --help
          Print help
";
    let help = parse_help(text);
    assert_eq!(help.commands, ["token"]);
    assert_eq!(
        help.flags.iter().map(String::as_str).collect::<Vec<_>>(),
        ["--config", "--help", "--timeout"]
    );
    assert_eq!(
        help.arguments
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["<PATHS>"]
    );
    assert!(names("use `--raw` here", "--raw"));
    assert!(!names("use `--rawest` here", "--raw"));
}
