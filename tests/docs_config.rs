//! Keeps `docs/config.md` true to the loader.
//!
//! - Every ```` ```toml ```` block of the doc is loaded with warden's own loader
//!   (`warden::config::load`) from a fresh folder (which holds a self-signed `cert.pem`
//!   and `key.pem` for the `[admin] tls` examples) and must be accepted. A block whose
//!   info string is `toml error` must be refused, with exactly the message of the
//!   ```` ```text ```` block that follows it (the folder shown as nothing, so
//!   `warden.toml:3: ...`).
//! - Every key the loader knows must have a row in the doc. The keys are not a list kept
//!   by hand: they are read from the loader itself. The config structs refuse unknown
//!   keys, and serde's refusal names every field the struct has (`expected one of: ...`),
//!   so the test offers each table a key `zzz_probe` and reads the field list back, then
//!   offers each field a table (`f = { zzz_probe = 1 }`, `f = [{ zzz_probe = 1 }]`) to
//!   find the nested tables, down to the leaves.
//!
//! The doc's shape, which the test reads: a heading per table, such as
//! ``## `[admin]` `` or ``## `[[service]]` `` (``## Top level`` for the keys outside any
//! table), and in its section one Markdown table row per key, starting with the key in
//! backticks, dotted inside its table (``| `backoff.initial` | ...``). A row whose text
//! says ``same keys as `[restart]` `` (or ``same keys as `[[service]] stop` ``) stands
//! for all the keys below it, provided the loader really gives both the same keys.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The key probed for: no config struct has a field of this name.
const PROBE: &str = "zzz_probe";

fn doc_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config.md")
}

fn doc_text() -> String {
    std::fs::read_to_string(doc_path()).expect("read docs/config.md")
}

/// A table the loader reads, with its keys; `None` for a key that holds no table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Table {
    /// Written `[[name]]` (an array of tables) rather than `[name]`.
    array: bool,
    keys: BTreeMap<String, Option<Table>>,
}

/// Loads `text` as a whole config file and gives the loader's message, if it refuses.
fn refusal(text: &str) -> Option<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warden.toml");
    warden::config::parse(text, &path).err().map(|e| e.message)
}

/// The fields serde lists when it refuses [`PROBE`]: `None` if the value at that place
/// is no table of named keys.
fn fields_from(message: &str) -> Option<Vec<String>> {
    if !message.starts_with("unknown key `") || !message.contains(PROBE) {
        return None;
    }
    let start = message.find("(expected one of: ")? + "(expected one of: ".len();
    let end = message.rfind(')')?;
    Some(
        message[start..end]
            .split(", ")
            .map(|f| f.trim().to_owned())
            .filter(|f| !f.is_empty())
            .collect(),
    )
}

/// Reads the keys of the table at `path` (empty: the top level) from the loader; the
/// last step of `path` is offered as one table, or (`array`) as an array of tables.
fn probe(path: &[(String, bool)], array: bool) -> Option<Table> {
    let mut here = path.to_vec();
    if let Some(last) = here.last_mut() {
        last.1 = array;
    }
    let text = if here.is_empty() {
        format!("{PROBE} = 1\n")
    } else {
        inline(&here, &format!("{{ {PROBE} = 1 }}"))
    };
    let fields = fields_from(&refusal(&text)?)?;
    let mut keys = BTreeMap::new();
    for field in fields {
        let mut below = here.clone();
        below.push((field.clone(), false));
        let nested = probe(&below, false).or_else(|| probe(&below, true));
        keys.insert(field, nested);
    }
    Some(Table { array, keys })
}

/// `value` at `steps` as inline TOML: `a = [{ b = { c = VALUE } }]`.
fn inline(steps: &[(String, bool)], value: &str) -> String {
    let mut inner = value.to_owned();
    for (i, (key, array)) in steps.iter().enumerate().rev() {
        let placed = if *array {
            format!("[{inner}]")
        } else {
            inner.clone()
        };
        inner = if i == 0 {
            format!("{key} = {placed}\n")
        } else {
            format!("{{ {key} = {placed} }}")
        };
    }
    inner
}

/// Every key of the config file, as the loader reads it.
fn loader_keys() -> Table {
    let top = probe(&[], false).unwrap_or_else(|| {
        panic!(
            "the loader did not list its top-level keys when offered `{PROBE} = 1`: got {:?}; \
             the probe of tests/docs_config.rs must follow the loader's unknown-key message",
            refusal(&format!("{PROBE} = 1\n"))
        )
    });
    assert!(
        top.keys.len() >= 5,
        "the probe found too few top-level keys ({:?}): it no longer reads the loader's \
         messages right",
        top.keys.keys().collect::<Vec<_>>()
    );
    top
}

/// The doc's sections: heading (`[admin]`, `[[service]]`, `top level`) -> key -> row text.
fn doc_rows(doc: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_code = false;
    for line in doc.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if let Some(heading) = line.strip_prefix("## ") {
            let heading = heading.trim();
            current = if heading.eq_ignore_ascii_case("top level") {
                Some("top level".to_owned())
            } else {
                heading
                    .strip_prefix('`')
                    .and_then(|h| h.strip_suffix('`'))
                    .filter(|h| h.starts_with('['))
                    .map(str::to_owned)
            };
            continue;
        }
        if line.starts_with("# ") {
            current = None;
            continue;
        }
        let Some(section) = &current else { continue };
        let Some(rest) = line.strip_prefix("| `") else {
            continue;
        };
        let Some(end) = rest.find('`') else { continue };
        let key = &rest[..end];
        if key.is_empty() || key.contains(' ') {
            continue;
        }
        sections
            .entry(section.clone())
            .or_default()
            .insert(key.to_owned(), line.to_owned());
    }
    sections
}

fn heading_of(name: &str, table: &Table) -> String {
    if table.array {
        format!("[[{name}]]")
    } else {
        format!("[{name}]")
    }
}

/// A `same keys as `[x] y.z`` reference in a row: (section heading, dotted key or "").
fn same_keys_as(row: &str) -> Option<(String, String)> {
    let at = row.find("same keys as `")? + "same keys as `".len();
    let end = row[at..].find('`')? + at;
    let target = &row[at..end];
    let close = target.rfind(']')? + 1;
    Some((
        target[..close].to_owned(),
        target[close..].trim().to_owned(),
    ))
}

/// The table at dotted `key` inside `table` ("" for `table` itself).
fn subtable<'t>(table: &'t Table, key: &str) -> Option<&'t Table> {
    if key.is_empty() {
        return Some(table);
    }
    let mut at = table;
    for step in key.split('.') {
        at = at.keys.get(step)?.as_ref()?;
    }
    Some(at)
}

/// Field names only, all the way down (whether a table is `[x]` or `[[x]]` aside).
fn shape(table: &Table) -> BTreeSet<String> {
    fn flat(table: &Table, prefix: &str, out: &mut BTreeSet<String>) {
        for (key, nested) in &table.keys {
            let dotted = format!("{prefix}{key}");
            out.insert(dotted.clone());
            if let Some(nested) = nested {
                flat(nested, &format!("{dotted}."), out);
            }
        }
    }
    let mut out = BTreeSet::new();
    flat(table, "", &mut out);
    out
}

/// Checks the rows of one section against the loader's table; pushes what is wrong.
#[allow(clippy::too_many_arguments)]
fn check_section(
    top: &Table,
    heading: &str,
    table: &Table,
    prefix: &str,
    rows: &BTreeMap<String, String>,
    seen: &mut BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    for (key, nested) in &table.keys {
        let dotted = format!("{prefix}{key}");
        let Some(row) = rows.get(&dotted) else {
            problems.push(format!(
                "docs/config.md: section `{heading}` has no row for key `{dotted}` \
                 (add a row `| `{dotted}` | type | default | meaning |`{})",
                if nested.is_some() {
                    ", and rows for its keys or `same keys as `[...]`"
                } else {
                    ""
                }
            ));
            continue;
        };
        seen.insert(dotted.clone());
        let Some(nested) = nested else { continue };
        if let Some((target_heading, target_key)) = same_keys_as(row) {
            let target = section_table(top, &target_heading).and_then(|t| subtable(t, &target_key));
            match target {
                Some(target) if shape(target) == shape(nested) => {}
                Some(_) => problems.push(format!(
                    "docs/config.md: `{heading}` key `{dotted}` says \"same keys as \
                     `{target_heading} {target_key}`\", but the loader gives them different \
                     keys: document `{dotted}`'s keys in rows of their own"
                )),
                None => problems.push(format!(
                    "docs/config.md: `{heading}` key `{dotted}` refers to \
                     `{target_heading} {target_key}`, which the loader has no table for"
                )),
            }
            continue;
        }
        check_section(
            top,
            heading,
            nested,
            &format!("{dotted}."),
            rows,
            seen,
            problems,
        );
    }
}

/// The loader's table for a doc heading (`[admin]`, `[[service]]`, `top level`).
fn section_table<'t>(top: &'t Table, heading: &str) -> Option<&'t Table> {
    if heading == "top level" {
        return Some(top);
    }
    let name = heading.trim_start_matches('[').trim_end_matches(']');
    let table = top.keys.get(name)?.as_ref()?;
    (heading_of(name, table) == heading).then_some(table)
}

/// Every key of every table the loader reads has a row in docs/config.md, under the
/// heading of its table, and every row names a key the loader reads.
#[test]
fn every_config_key_is_documented() {
    let top = loader_keys();
    let doc = doc_text();
    let sections = doc_rows(&doc);
    let mut problems = Vec::new();
    let empty = BTreeMap::new();

    // the keys outside any table
    let top_leaves = Table {
        array: false,
        keys: top
            .keys
            .iter()
            .filter(|(_, nested)| nested.is_none())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let mut expected_sections = vec![("top level".to_owned(), top_leaves)];
    for (name, nested) in &top.keys {
        if let Some(table) = nested {
            expected_sections.push((heading_of(name, table), table.clone()));
        }
    }
    for (heading, table) in &expected_sections {
        let rows = sections.get(heading).unwrap_or(&empty);
        if !sections.contains_key(heading) {
            problems.push(format!(
                "docs/config.md: no section for `{heading}` (add a heading \"## `{heading}`\" \
                 with a row per key: {})",
                table.keys.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
            continue;
        }
        let mut seen = BTreeSet::new();
        check_section(&top, heading, table, "", rows, &mut seen, &mut problems);
        for key in rows.keys() {
            let real = if heading == "top level" {
                table.keys.contains_key(key)
            } else {
                // a row for a key under a `same keys as` row is allowed, not required
                let mut at = Some(table);
                for step in key.split('.') {
                    at = at
                        .and_then(|t| t.keys.get(step))
                        .and_then(|n| n.as_ref().or(Some(&LEAF)));
                }
                at.is_some()
            };
            if !real {
                problems.push(format!(
                    "docs/config.md: section `{heading}` documents `{key}`, which the loader \
                     does not read (a typo, or a key of a feature not built yet)"
                ));
            }
        }
    }
    for heading in sections.keys() {
        if !expected_sections.iter().any(|(h, _)| h == heading) {
            problems.push(format!(
                "docs/config.md: section `{heading}` names a table the loader does not read"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/config.md is out of step with the config loader:\n  {}",
        problems.join("\n  ")
    );
}

/// A stand-in for a leaf in the walk over dotted row keys.
static LEAF: Table = Table {
    array: false,
    keys: BTreeMap::new(),
};

/// A fenced block of the doc: its info string, first line number and text.
struct Block {
    info: String,
    line: usize,
    text: String,
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in doc.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_owned(),
                    line: i + 1,
                    text: String::new(),
                })
            }
            (Some(_), Some(_)) => out.extend(open.take()),
            (Some(block), None) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(
        open.is_none(),
        "docs/config.md: a ``` block is never closed"
    );
    out
}

/// A folder with the files the doc's examples name.
fn fixture_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).expect("cert.pem");
    std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).expect("key.pem");
    // Secrets must be 0600 files of warden's own user.
    for (name, text) in [
        ("ops.url", "https://hooks.example.com/services/T0/B0/x\n"),
        ("github.secret", "a webhook secret\n"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("secret");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
    }
    dir
}

/// Every ```toml block of docs/config.md loads with warden's loader; every ```toml error
/// block is refused with the message of the ```text block after it.
#[test]
fn every_toml_example_loads_as_documented() {
    let doc = doc_text();
    let all = blocks(&doc);
    let mut problems = Vec::new();
    let mut checked = 0;
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    for (i, block) in all.iter().enumerate() {
        let words: Vec<&str> = block.info.split_whitespace().collect();
        if words.first() != Some(&"toml") {
            continue;
        }
        checked += 1;
        let dir = fixture_dir();
        let path = dir.path().join("warden.toml");
        std::fs::write(&path, &block.text).expect("write");
        let result = warden::config::load(&path);
        let shown = |e: &warden::config::ConfigError| {
            e.to_string()
                .replace(&format!("{}/", dir.path().display()), "")
        };
        // `toml as-root`: an example with `user`/`group`, which only a root warden may
        // take; run by someone else, the loader must refuse it for that reason alone.
        let as_root = words.get(1) == Some(&"as-root");
        let kind = if as_root { None } else { words.get(1).copied() };
        match (kind, result) {
            (None, Err(e)) if as_root && !root => {
                if !shown(&e).contains("root") {
                    problems.push(format!(
                        "docs/config.md:{}: this `toml as-root` example is refused for \
                         another reason than not being root: {}",
                        block.line,
                        shown(&e)
                    ));
                }
            }
            (None, Ok(_)) => {}
            (None, Err(e)) => problems.push(format!(
                "docs/config.md:{}: this example is refused: {}",
                block.line,
                shown(&e)
            )),
            (Some("error"), Ok(_)) => problems.push(format!(
                "docs/config.md:{}: this `toml error` example loads without an error",
                block.line
            )),
            (Some("error"), Err(e)) => {
                let expected = all
                    .get(i + 1)
                    .filter(|b| b.info == "text")
                    .map(|b| b.text.trim().to_owned());
                match expected {
                    Some(expected) if expected == shown(&e) => {}
                    Some(expected) => problems.push(format!(
                        "docs/config.md:{}: the error shown is\n      {expected}\n    but the \
                         loader says\n      {}",
                        block.line,
                        shown(&e)
                    )),
                    None => problems.push(format!(
                        "docs/config.md:{}: a `toml error` block must be followed by a \
                         ```text block with the message (the loader says: {})",
                        block.line,
                        shown(&e)
                    )),
                }
            }
            (Some(other), _) => problems.push(format!(
                "docs/config.md:{}: unknown block kind `toml {other}` (use `toml`, `toml as-root` or `toml error`)",
                block.line
            )),
        }
    }
    assert!(
        checked >= 10,
        "docs/config.md has only {checked} toml blocks"
    );
    assert!(
        problems.is_empty(),
        "docs/config.md examples:\n  {}",
        problems.join("\n  ")
    );
}

/// The probe itself reads the loader right: it finds tables known to exist, nested ones
/// included, and would notice a key missing from a doc.
#[test]
fn the_key_probe_reads_the_loader() {
    let top = loader_keys();
    let service = section_table(&top, "[[service]]").expect("[[service]] is an array table");
    assert!(service.keys.contains_key("command"));
    let backoff = subtable(service, "restart.backoff").expect("restart.backoff is a table");
    assert!(backoff.keys.contains_key("initial"), "{backoff:?}");
    assert!(section_table(&top, "[admin]").is_some_and(|a| a.keys.contains_key("listen")));
    assert!(top.keys.get("state_dir").is_some_and(Option::is_none));
    // a doc without a key fails the check, naming the key
    let mut problems = Vec::new();
    let mut rows = doc_rows(&doc_text())
        .remove("[admin]")
        .expect("docs/config.md has an [admin] section");
    rows.remove("listen");
    let admin = section_table(&top, "[admin]").expect("[admin]");
    check_section(
        &top,
        "[admin]",
        admin,
        "",
        &rows,
        &mut BTreeSet::new(),
        &mut problems,
    );
    assert!(
        problems.iter().any(|p| p.contains("`listen`")),
        "{problems:?}"
    );
}

/// Every sample config under examples/ loads (the guides send readers to them).
#[test]
fn every_example_config_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("read examples/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "toml") {
            checked += 1;
            if let Err(e) = warden::config::load(&path) {
                panic!("{} does not load: {e}", path.display());
            }
        }
    }
    assert!(checked >= 3, "only {checked} example configs found");
}
