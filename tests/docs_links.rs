//! The repository stands alone: every relative link of README.md, SECURITY.md,
//! SEMANTICS.md and docs/*.md (and of benches/peers/README.md) names a file that exists,
//! every `#anchor` into a Markdown file names one of its headings, and no page sends the
//! reader outside the repository's own files (`../shared`, the workshop's design.md).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pages() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = [
        "README.md",
        "SECURITY.md",
        "SEMANTICS.md",
        "benches/peers/README.md",
    ]
    .iter()
    .map(|p| root().join(p))
    .collect();
    for entry in std::fs::read_dir(root().join("docs")).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "md") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, punctuation but `-` and `_`
/// dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(page: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(page).unwrap_or_default();
    let mut in_code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if !in_code && line.starts_with('#') {
            out.push(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

/// The targets of `[text](target)` links outside code blocks and code spans.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_resolves_and_nothing_points_outside_the_repository() {
    let mut problems = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("read page");
        let name = page
            .strip_prefix(root())
            .unwrap_or(&page)
            .display()
            .to_string();
        for outside in ["../shared", "/work/shared", "design.md"] {
            if text.contains(outside) {
                problems.push(format!(
                    "{name}: mentions `{outside}`, which is not in the repository"
                ));
            }
        }
        for link in links(&text) {
            if link.starts_with("http://")
                || link.starts_with("https://")
                || link.starts_with("mailto:")
            {
                continue;
            }
            let (file, fragment) = match link.split_once('#') {
                Some((file, fragment)) => (file, Some(fragment)),
                None => (link.as_str(), None),
            };
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap_or(&root()).join(file)
            };
            if !target.exists() {
                problems.push(format!(
                    "{name}: link `{link}`: no file {}",
                    target.display()
                ));
                continue;
            }
            if let Some(fragment) = fragment {
                if target.extension().is_some_and(|x| x == "md")
                    && !anchors(&target).iter().any(|a| a == fragment)
                {
                    problems.push(format!(
                        "{name}: link `{link}`: no heading with anchor #{fragment}"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken links:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_anchor_rule_is_githubs() {
    assert_eq!(
        anchor(" Backing up and restoring state_dir"),
        "backing-up-and-restoring-state_dir"
    );
    assert_eq!(
        anchor("Units of the host's service manager"),
        "units-of-the-hosts-service-manager"
    );
    assert_eq!(anchor("`[logs]`"), "logs");
}
