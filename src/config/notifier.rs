//! The `[[notifier]]` entries (docs/config.md, `[[notifier]]`).
//!
//! Keys: `name` (required; `[A-Za-z0-9_.-]`, unique among notifiers), `kind` (required:
//! `slack`, `mattermost`, `discord` or `webhook`), `url_file` (required; relative to the
//! config file's folder: a file holding the URL, a secret, so it is read as the admin
//! token is: a regular file, not a symbolic link, owned by warden's user, mode 0600 or
//! tighter, at most 4 KiB; its URL must be `http://` or `https://`), `events` (default
//! `["deploy", "failed"]`; at least one) and `timeout` (the deadline of each post; default
//! 10s; from 1ms to 5m). The file is read at `check`, so a missing or loose file is an
//! error there, naming it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use warden_actors::notifier::{check_url, EventKinds, NotifierSpec, Platform, DEFAULT_TIMEOUT};

use super::raw::Dur;
use super::{ConfigError, Source};

/// The largest URL file read.
const MAX_URL_FILE: u64 = 4096;
/// The longest `timeout` accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// A `[[notifier]]` entry, checked, with its URL read from `url_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifierConfig {
    /// What the notifier sends, where (its URL hidden in `Debug`).
    pub spec: NotifierSpec,
    /// Absolute path of the file the URL was read from.
    pub url_file: PathBuf,
    /// Line of its table header in the file.
    pub line: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotifier {
    name: Spanned<String>,
    kind: Spanned<String>,
    url_file: Spanned<String>,
    events: Option<Spanned<Vec<String>>>,
    timeout: Option<Spanned<Dur>>,
}

type Result<T> = std::result::Result<T, ConfigError>;

/// Every `[[notifier]]` entry, in file order.
pub(super) fn notifiers(
    src: &Source,
    raw: &[Spanned<RawNotifier>],
    base_dir: &Path,
) -> Result<Vec<NotifierConfig>> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (index, entry) in raw.iter().enumerate() {
        let notifier = notifier(src, index, entry, base_dir)?;
        let name = &notifier.spec.name;
        if let Some(first) = seen.get(name) {
            let value = &entry.get_ref().name;
            let detail = format!("duplicate notifier name {name:?} (first used on line {first})");
            return Err(src.error(
                value.span(),
                &format!("[[notifier]] {name:?}"),
                "name",
                detail,
            ));
        }
        seen.insert(name.clone(), notifier.line);
        out.push(notifier);
    }
    Ok(out)
}

fn notifier(
    src: &Source,
    index: usize,
    entry: &Spanned<RawNotifier>,
    base_dir: &Path,
) -> Result<NotifierConfig> {
    let raw = entry.get_ref();
    let name = raw.name.get_ref();
    if warden_supervisors::ActorName::new(name).is_err() {
        let detail = format!(
            "invalid name {name:?}: use letters, digits, `_`, `.` and `-` (not `.` or `..` alone)"
        );
        let label = format!("[[notifier]] #{}", index + 1);
        return Err(src.error(raw.name.span(), &label, "name", detail));
    }
    let label = format!("[[notifier]] {name:?}");
    let platform = match Platform::ALL
        .iter()
        .find(|(word, _)| word == raw.kind.get_ref())
    {
        Some((_, platform)) => *platform,
        None => {
            let words: Vec<&str> = Platform::ALL.iter().map(|(word, _)| *word).collect();
            let detail = format!(
                "unknown notifier kind {:?} (expected one of: {})",
                raw.kind.get_ref(),
                words.join(", ")
            );
            return Err(src.error(raw.kind.span(), &label, "kind", detail));
        }
    };
    let events = match &raw.events {
        Some(value) => events(src, &label, value)?,
        None => EventKinds::ALL,
    };
    let timeout = match &raw.timeout {
        Some(value) => {
            let timeout = value.get_ref().0;
            if timeout.is_zero() || timeout > MAX_TIMEOUT {
                return Err(src.error(
                    value.span(),
                    &label,
                    "timeout",
                    "must be longer than 0 and at most 5m",
                ));
            }
            timeout
        }
        None => DEFAULT_TIMEOUT,
    };
    let file = raw.url_file.get_ref();
    if file.is_empty() {
        return Err(src.error(raw.url_file.span(), &label, "url_file", "must not be empty"));
    }
    let url_file: PathBuf = base_dir.join(file).components().collect();
    let url = warden_actors::state_file::read_secret(&url_file, MAX_URL_FILE).map_err(|e| {
        let detail = if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{}: no such file (it must hold the notifier's URL)",
                url_file.display()
            )
        } else {
            e.to_string()
        };
        src.error(raw.url_file.span(), &label, "url_file", detail)
    })?;
    if url.is_empty() {
        let detail = format!("{}: holds no URL", url_file.display());
        return Err(src.error(raw.url_file.span(), &label, "url_file", detail));
    }
    if let Err(problem) = check_url(&url) {
        let detail = format!("the URL in {} is refused: {problem}", url_file.display());
        return Err(src.error(raw.url_file.span(), &label, "url_file", detail));
    }
    Ok(NotifierConfig {
        spec: NotifierSpec {
            name: name.clone(),
            platform,
            url,
            events,
            timeout,
        },
        url_file,
        line: src.line(entry.span().start),
    })
}

fn events(src: &Source, label: &str, value: &Spanned<Vec<String>>) -> Result<EventKinds> {
    let mut kinds = EventKinds {
        deploy: false,
        failed: false,
    };
    for word in value.get_ref() {
        match word.as_str() {
            "deploy" => kinds.deploy = true,
            "failed" => kinds.failed = true,
            other => {
                let detail = format!(
                    "unknown event {other:?} (expected some of: {})",
                    EventKinds::NAMES.join(", ")
                );
                return Err(src.error(value.span(), label, "events", detail));
            }
        }
    }
    if !kinds.deploy && !kinds.failed {
        let detail = format!(
            "names no event: a notifier needs at least one of {}",
            EventKinds::NAMES.join(", ")
        );
        return Err(src.error(value.span(), label, "events", detail));
    }
    Ok(kinds)
}
