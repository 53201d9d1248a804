//! The file as written: serde structs that refuse unknown keys, and the translation of
//! TOML and serde errors into a span, a key and a message naming the entry.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::keyed_message;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub state_dir: Option<Spanned<String>>,
    pub admin: Option<RawAdmin>,
    pub runtime: Option<RawRuntime>,
    pub logs: Option<RawLogs>,
    pub root: Option<RawRoot>,
    pub cluster: Option<RawCluster>,
    pub hub: Option<super::hub::RawHub>,
    pub spoke: Option<Spanned<super::hub::RawSpoke>>,
    pub webhooks: Option<Spanned<super::deploy::RawWebhooks>>,
    #[serde(rename = "self")]
    pub warden: Option<super::deploy::RawSelf>,
    pub restart: Option<Spanned<RawRestart>>,
    #[serde(default)]
    pub supervisor: Vec<Spanned<RawSupervisor>>,
    #[serde(default)]
    pub service: Vec<Spanned<RawService>>,
    #[serde(default)]
    pub outboard: Vec<Spanned<RawOutboard>>,
    #[serde(default)]
    pub pool: Vec<Spanned<RawPool>>,
    #[serde(default)]
    pub notifier: Vec<Spanned<super::notifier::RawNotifier>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub listen: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
    pub read_token_file: Option<Spanned<String>>,
    pub tls: Option<Spanned<RawTls>>,
    pub insecure: Option<Spanned<bool>>,
}

/// `[admin] tls = { cert = "cert.pem", key = "key.pem" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRuntime {
    pub on_exit: Option<Spanned<String>>,
    pub cgroup: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogs {
    pub max_bytes: Option<Spanned<u64>>,
    pub keep: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoot {
    pub strategy: Option<Spanned<String>>,
    pub intensity: Option<Spanned<RawIntensity>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub redis_url: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRestart {
    pub policy: Option<Spanned<String>>,
    pub backoff: Option<Spanned<RawBackoff>>,
    pub reset_after: Option<Spanned<Dur>>,
    pub intensity: Option<Spanned<RawIntensity>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackoff {
    pub initial: Option<Spanned<Dur>>,
    pub max: Option<Spanned<Dur>>,
    pub multiplier: Option<Spanned<f64>>,
    pub jitter: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIntensity {
    pub max: Option<Spanned<u32>>,
    pub within: Option<Spanned<Dur>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSupervisor {
    pub name: Spanned<String>,
    pub parent: Option<Spanned<String>>,
    pub strategy: Option<Spanned<String>>,
    pub intensity: Option<Spanned<RawIntensity>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub name: Spanned<String>,
    pub supervisor: Option<Spanned<String>>,
    /// Required for the process backend; refused with any other.
    pub command: Option<Spanned<Vec<String>>>,
    pub cwd: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub env: Option<Spanned<BTreeMap<String, String>>>,
    pub stop: Option<Spanned<RawStop>>,
    pub restart: Option<Spanned<RawRestart>>,
    pub ready: Option<Spanned<RawReady>>,
    /// `process` (default), `systemd` or `launchd`.
    pub backend: Option<Spanned<String>>,
    /// The systemd unit (`backend = "systemd"`).
    pub unit: Option<Spanned<String>>,
    /// The launchd job's label (`backend = "launchd"`).
    pub label: Option<Spanned<String>>,
    /// The user's manager (systemd: the session bus; launchd: `gui/UID`).
    pub user_mode: Option<Spanned<bool>>,
    /// How it is deployed (`[[service]]` only).
    pub deploy: Option<Spanned<super::deploy::RawDeploy>>,
}

/// An `[[outboard]]` entry: every key of a `[[service]]`, then the IPC keys.
///
/// The service keys are repeated rather than flattened in: serde cannot refuse unknown
/// keys of a struct with a flattened part, nor keep their spans. [`RawOutboard::split`]
/// names every field, so the two lists cannot drift apart without a compile error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutboard {
    pub name: Spanned<String>,
    pub supervisor: Option<Spanned<String>>,
    pub command: Spanned<Vec<String>>,
    pub cwd: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub env: Option<Spanned<BTreeMap<String, String>>>,
    pub stop: Option<Spanned<RawStop>>,
    pub restart: Option<Spanned<RawRestart>>,
    pub ready: Option<Spanned<RawReady>>,
    pub heartbeat: Option<Spanned<Dur>>,
    pub missed: Option<Spanned<u32>>,
    pub version: Option<Spanned<u32>>,
}

/// The keys only an `[[outboard]]` entry has.
pub(super) struct RawIpc {
    pub heartbeat: Option<Spanned<Dur>>,
    pub missed: Option<Spanned<u32>>,
    pub version: Option<Spanned<u32>>,
}

impl RawOutboard {
    /// The service keys, as a `[[service]]` entry holds them, and the IPC keys.
    pub(super) fn split(self) -> (RawService, RawIpc) {
        let RawOutboard {
            name,
            supervisor,
            command,
            cwd,
            user,
            group,
            env,
            stop,
            restart,
            ready,
            heartbeat,
            missed,
            version,
        } = self;
        let service = RawService {
            name,
            supervisor,
            command: Some(command),
            cwd,
            user,
            group,
            env,
            stop,
            restart,
            ready,
            backend: None,
            unit: None,
            label: None,
            user_mode: None,
            deploy: None,
        };
        let ipc = RawIpc {
            heartbeat,
            missed,
            version,
        };
        (service, ipc)
    }
}

/// A `[[pool]]` entry: the keys of a `[[service]]`, then the pool keys; repeated rather
/// than flattened for the same reasons as in [`RawOutboard`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub name: Spanned<String>,
    pub supervisor: Option<Spanned<String>>,
    pub command: Spanned<Vec<String>>,
    pub cwd: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub env: Option<Spanned<BTreeMap<String, String>>>,
    pub stop: Option<Spanned<RawStop>>,
    pub restart: Option<Spanned<RawRestart>>,
    pub ready: Option<Spanned<RawReady>>,
    pub ports: Spanned<PortsSpec>,
    pub min: Option<Spanned<u32>>,
    pub max: Option<Spanned<u32>>,
    pub sessions_per_worker: Option<Spanned<u32>>,
    pub idle_timeout: Option<Spanned<Dur>>,
    pub token_ttl: Option<Spanned<Dur>>,
    pub rollout: Option<Spanned<String>>,
}

/// The keys only a `[[pool]]` entry has.
pub(super) struct RawPoolKeys {
    pub ports: Spanned<PortsSpec>,
    pub min: Option<Spanned<u32>>,
    pub max: Option<Spanned<u32>>,
    pub sessions_per_worker: Option<Spanned<u32>>,
    pub idle_timeout: Option<Spanned<Dur>>,
    pub token_ttl: Option<Spanned<Dur>>,
    pub rollout: Option<Spanned<String>>,
}

impl RawPool {
    /// The service keys, as a `[[service]]` entry holds them, and the pool keys.
    pub(super) fn split(self) -> (RawService, RawPoolKeys) {
        let RawPool {
            name,
            supervisor,
            command,
            cwd,
            user,
            group,
            env,
            stop,
            restart,
            ready,
            ports,
            min,
            max,
            sessions_per_worker,
            idle_timeout,
            token_ttl,
            rollout,
        } = self;
        let service = RawService {
            name,
            supervisor,
            command: Some(command),
            cwd,
            user,
            group,
            env,
            stop,
            restart,
            ready,
            backend: None,
            unit: None,
            label: None,
            user_mode: None,
            deploy: None,
        };
        let pool = RawPoolKeys {
            ports,
            min,
            max,
            sessions_per_worker,
            idle_timeout,
            token_ttl,
            rollout,
        };
        (service, pool)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStop {
    pub signal: Option<Spanned<SignalSpec>>,
    pub timeout: Option<Spanned<Dur>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReady {
    pub tcp: Option<Spanned<String>>,
    pub delay: Option<Spanned<Dur>>,
    pub notify: Option<Spanned<bool>>,
    pub ipc: Option<Spanned<bool>>,
    pub timeout: Option<Spanned<Dur>>,
}

/// A duration written as a string: "250ms", "5s", "2m"; at most [`MAX_DURATION`].
pub(super) struct Dur(pub Duration);

/// The longest duration a config may say (ten years): every duration is added to a
/// clock somewhere (a restart time, a deadline, an expiry), and a longer one could
/// overflow it.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurVisitor;
        impl Visitor<'_> for DurVisitor {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"250ms\", \"5s\" or \"2m\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Dur, E> {
                let duration = humantime::parse_duration(text)
                    .map_err(|e| E::custom(format!("invalid duration {text:?}: {e}")))?;
                if duration > MAX_DURATION {
                    return Err(E::custom(format!(
                        "invalid duration {text:?}: longer than the maximum of {}",
                        humantime::format_duration(MAX_DURATION)
                    )));
                }
                Ok(Dur(duration))
            }
        }
        deserializer.deserialize_str(DurVisitor)
    }
}

/// A signal as written: a name (`"TERM"`, `"SIGTERM"`) or a number (`15`).
pub(super) enum SignalSpec {
    Name(String),
    Number(i64),
}

impl<'de> Deserialize<'de> for SignalSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SignalVisitor;
        impl Visitor<'_> for SignalVisitor {
            type Value = SignalSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a signal name such as \"TERM\" or a signal number")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<SignalSpec, E> {
                Ok(SignalSpec::Name(text.to_string()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<SignalSpec, E> {
                Ok(SignalSpec::Number(n))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<SignalSpec, E> {
                Ok(SignalSpec::Number(i64::try_from(n).unwrap_or(i64::MAX)))
            }
        }
        deserializer.deserialize_any(SignalVisitor)
    }
}

/// The ports of a pool as written: a range or one port as a string (`"20000-20999"`,
/// `"20000"`), or one port as a number (`20000`). Checked in the build pass.
pub(super) enum PortsSpec {
    Text(String),
    Number(i64),
}

impl<'de> Deserialize<'de> for PortsSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortsVisitor;
        impl Visitor<'_> for PortsVisitor {
            type Value = PortsSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port range such as \"20000-20999\", or one port")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<PortsSpec, E> {
                Ok(PortsSpec::Text(text.to_string()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<PortsSpec, E> {
                Ok(PortsSpec::Number(n))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<PortsSpec, E> {
                Ok(PortsSpec::Number(i64::try_from(n).unwrap_or(i64::MAX)))
            }
        }
        deserializer.deserialize_any(PortsVisitor)
    }
}

/// A refusal from the TOML layer: where, which key, and what.
pub(super) struct RawError {
    pub span: Option<Range<usize>>,
    pub key: Option<String>,
    pub message: String,
}

/// Parses `text` into the raw structs. The parsed document is handed to serde whole (a
/// copy kept for errors cost ~2 ms for 1,000 services at every start); a file serde
/// refuses is parsed again to name the entry and key.
pub(super) fn read(text: &str) -> Result<RawFile, RawError> {
    let doc = parse_document(text)?;
    RawFile::deserialize(toml::de::Deserializer::from(doc)).map_err(|e| {
        match parse_document(text) {
            Ok(doc) => describe(doc.get_ref(), &e),
            Err(refused) => refused,
        }
    })
}

/// The TOML document of `text`, or its syntax error.
fn parse_document(text: &str) -> Result<Spanned<DeTable<'_>>, RawError> {
    DeTable::parse(text).map_err(|e| {
        let mut message = format!("invalid TOML: {}", e.message());
        let span = e.span();
        let snippet = span.clone().and_then(|s| text.get(s)).unwrap_or("");
        if message.ends_with("duplicate key") && !snippet.is_empty() {
            message.push_str(&format!(" `{snippet}`"));
        }
        RawError {
            span,
            key: None,
            message,
        }
    })
}

/// One step of a key path: a key in a table or an index in an array.
#[derive(Clone)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Names the entry and key an error from serde points at.
fn describe(doc: &DeTable, error: &toml::de::Error) -> RawError {
    let message = error.message();
    let Some(span) = error.span() else {
        return RawError {
            span: None,
            key: None,
            message: message.to_string(),
        };
    };
    let mut best = Vec::new();
    locate(doc, span.start, &mut Vec::new(), &mut best);
    // serde names the key it refuses between the first pair of backticks
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let unknown = message.starts_with("unknown field `");
    if let (true, Some(field)) = (unknown, quoted.first()) {
        // the refused key ends the path, even where a table header spans it too
        if let Some(end) = best
            .iter()
            .rposition(|s| matches!(s, Step::Key(k) if k == field))
        {
            best.truncate(end + 1);
        }
    }
    let (label, rest) = entry_label(doc, &best);
    let mut keys: Vec<&str> = rest
        .iter()
        .filter_map(|step| match step {
            Step::Key(k) => Some(*k),
            Step::Index(_) => None,
        })
        .collect();
    let message = if unknown {
        if let Some(field) = quoted.first() {
            if keys.last() != Some(field) {
                keys.push(field);
            }
        }
        let place = if label.is_empty() {
            "at the top level".to_string()
        } else {
            format!("in {label}")
        };
        let expected = quoted.get(1..).unwrap_or_default().join(", ");
        let mut message = format!("unknown key `{}` {place}", keys.join("."));
        if !expected.is_empty() {
            message.push_str(&format!(" (expected one of: {expected})"));
        }
        message
    } else if message.starts_with("missing field `") {
        keys.extend(quoted.first());
        keyed_message(&label, &keys.join("."), "is required")
    } else {
        keyed_message(&label, &keys.join("."), plain_types(message))
    };
    RawError {
        span: Some(span),
        key: (!keys.is_empty()).then(|| keys.join(".")),
        message,
    }
}

/// Says serde's type names in TOML words: "expected an array", not "a sequence".
fn plain_types(message: &str) -> String {
    let Some(at) = message.find("expected ") else {
        return message.to_string();
    };
    let (head, expected) = message.split_at(at + "expected ".len());
    let plain = match expected {
        e if e.starts_with("struct ") || e == "a map" => "a table",
        "a sequence" => "an array",
        "u32" | "u64" | "usize" => "a whole number, 0 or more",
        "f64" => "a number",
        "a boolean" => "true or false",
        e => e,
    };
    format!("{head}{plain}")
}

/// Finds the deepest key or array element whose key or value covers `offset`.
///
/// Every node is visited: the body of a `[[service]]` entry lies outside the span
/// that toml gives the entry (its header).
fn locate<'a>(
    table: &'a DeTable,
    offset: usize,
    path: &mut Vec<Step<'a>>,
    best: &mut Vec<Step<'a>>,
) {
    for (key, value) in table.iter() {
        path.push(Step::Key(key.get_ref().as_ref()));
        let here = covers(key.span(), offset) || covers(value.span(), offset);
        if here && path.len() > best.len() {
            best.clone_from(path);
        }
        locate_value(value.get_ref(), offset, path, best);
        path.pop();
    }
}

fn locate_value<'a>(
    value: &'a DeValue,
    offset: usize,
    path: &mut Vec<Step<'a>>,
    best: &mut Vec<Step<'a>>,
) {
    match value {
        DeValue::Table(table) => locate(table, offset, path, best),
        DeValue::Array(array) => {
            for (index, item) in array.iter().enumerate() {
                path.push(Step::Index(index));
                if covers(item.span(), offset) && path.len() > best.len() {
                    best.clone_from(path);
                }
                locate_value(item.get_ref(), offset, path, best);
                path.pop();
            }
        }
        _ => {}
    }
}

fn covers(span: Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

/// Splits a key path into the entry it lies in (`[[service]] "api"`, `[admin]`, or
/// `""` at the top level) and the steps inside that entry.
fn entry_label<'p, 'a>(doc: &DeTable, path: &'p [Step<'a>]) -> (String, &'p [Step<'a>]) {
    match path {
        [Step::Key(kind), Step::Index(index), rest @ ..] => {
            let name = doc
                .iter()
                .find(|(k, _)| k.get_ref() == kind)
                .and_then(|(_, v)| match v.get_ref() {
                    DeValue::Array(items) => items.get(*index),
                    _ => None,
                })
                .and_then(|item| match item.get_ref() {
                    DeValue::Table(t) => t.iter().find(|(k, _)| k.get_ref() == "name"),
                    _ => None,
                })
                .and_then(|(_, v)| match v.get_ref() {
                    DeValue::String(name) => Some(name.as_ref()),
                    _ => None,
                });
            let label = match name {
                Some(name) => format!("[[{kind}]] {name:?}"),
                None => format!("[[{kind}]] #{}", index + 1),
            };
            (label, rest)
        }
        [Step::Key(kind), rest @ ..] if !rest.is_empty() => (format!("[{kind}]"), rest),
        _ => (String::new(), path),
    }
}
