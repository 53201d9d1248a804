//! The `[hub]` and `[spoke]` tables (docs/config.md, `[hub]` and `[spoke]`).
//!
//! `[hub]`: `enabled` (default false), `token_ttl` (default 1h). `[spoke]`: `hub`
//! (required; `ws://` or `wss://`, and `ws://` to a host other than loopback only with
//! `insecure = true`), `name` (required, `[A-Za-z0-9_.-]`, at most 64), `join_token_file`,
//! `credential_file` (default `state_dir/spoke.credential`), `allow` (verb names;
//! default all), `paths` (subtrees; default the whole tree), `insecure`, `ca_file` (PEM
//! certificates the spoke trusts for `wss://` instead of the Mozilla roots compiled in).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use toml::Spanned;
use warden_actors::link::protocol::{valid_name, VERB_NAMES};

use super::raw::Dur;
use super::{ConfigError, Source};

/// `[hub]`: this warden accepts spokes on its admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Default lifetime of a join token.
    pub token_ttl: Duration,
}

/// `[spoke]`: this warden joins a hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpokeConfig {
    /// The hub's connect URL.
    pub hub: String,
    /// This spoke's name.
    pub name: String,
    /// The join token, read at the first enrollment only.
    pub join_token_file: Option<PathBuf>,
    /// Where the credential is kept.
    pub credential_file: PathBuf,
    /// Verbs the hub may use (`None`: all).
    pub allow: Option<Vec<String>>,
    /// Subtrees the hub may act on (`None`: the whole tree).
    pub paths: Option<Vec<String>>,
    /// The CAs trusted for `wss://`, read from `ca_file` (`None`: the Mozilla roots).
    pub ca_roots: Option<Vec<CertificateDer<'static>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHub {
    enabled: Option<Spanned<bool>>,
    token_ttl: Option<Spanned<Dur>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpoke {
    hub: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    join_token_file: Option<Spanned<String>>,
    credential_file: Option<Spanned<String>>,
    allow: Option<Spanned<Vec<String>>>,
    paths: Option<Spanned<Vec<String>>>,
    insecure: Option<Spanned<bool>>,
    ca_file: Option<Spanned<String>>,
}

type Result<T> = std::result::Result<T, ConfigError>;

const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The `[hub]` table, if the hub is enabled.
pub(super) fn hub(src: &Source, raw: Option<&RawHub>) -> Result<Option<HubConfig>> {
    let Some(raw) = raw else { return Ok(None) };
    let token_ttl = match &raw.token_ttl {
        Some(ttl) if ttl.get_ref().0.is_zero() => {
            return Err(src.error(ttl.span(), "[hub]", "token_ttl", "must be longer than 0"))
        }
        Some(ttl) => ttl.get_ref().0,
        None => DEFAULT_TOKEN_TTL,
    };
    let enabled = raw.enabled.as_ref().is_some_and(|e| *e.get_ref());
    Ok(enabled.then_some(HubConfig { token_ttl }))
}

/// The host of a `ws://HOST[:PORT]/...` URL's authority.
fn host_of(authority: &str) -> &str {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.split(':').next().unwrap_or(authority)
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The `[spoke]` table.
pub(super) fn spoke(
    src: &Source,
    spanned: Option<&Spanned<RawSpoke>>,
    base_dir: &Path,
    state_dir: &Path,
) -> Result<Option<SpokeConfig>> {
    const LABEL: &str = "[spoke]";
    let Some(spanned) = spanned else {
        return Ok(None);
    };
    let raw = spanned.get_ref();
    let url = raw.hub.as_ref().ok_or_else(|| {
        src.error(
            spanned.span(),
            LABEL,
            "hub",
            "is required (the hub's ws://HOST:PORT/api/v1/hub/connect)",
        )
    })?;
    let text = url.get_ref();
    let (secure, rest) = match (text.strip_prefix("wss://"), text.strip_prefix("ws://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        _ => {
            return Err(src.error(
                url.span(),
                LABEL,
                "hub",
                format!(
                "invalid hub URL {text:?}: expected ws://HOST:PORT/api/v1/hub/connect or wss://..."
            ),
            ))
        }
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = host_of(authority);
    if host.is_empty() || text.contains(char::is_whitespace) {
        return Err(src.error(
            url.span(),
            LABEL,
            "hub",
            format!("invalid hub URL {text:?}: no host"),
        ));
    }
    let insecure = raw.insecure.as_ref().is_some_and(|i| *i.get_ref());
    if !secure && !is_loopback(host) && !insecure {
        return Err(src.error(
            url.span(),
            LABEL,
            "hub",
            format!("ws:// to {host} (not loopback) sends the credential in clear: use wss://, or set insecure = true on purpose"),
        ));
    }
    let name = raw
        .name
        .as_ref()
        .ok_or_else(|| src.error(spanned.span(), LABEL, "name", "is required"))?;
    if !valid_name(name.get_ref()) {
        return Err(src.error(
            name.span(),
            LABEL,
            "name",
            format!(
                "invalid spoke name {:?}: expected 1-64 of [A-Za-z0-9_.-]",
                name.get_ref()
            ),
        ));
    }
    let file = |value: &Spanned<String>, key: &str| -> Result<PathBuf> {
        if value.get_ref().is_empty() {
            return Err(src.error(value.span(), LABEL, key, "must not be empty"));
        }
        Ok(base_dir.join(value.get_ref()).components().collect())
    };
    let join_token_file = raw
        .join_token_file
        .as_ref()
        .map(|v| file(v, "join_token_file"))
        .transpose()?;
    let credential_file = match &raw.credential_file {
        Some(v) => file(v, "credential_file")?,
        None => state_dir.join("spoke.credential"),
    };
    if let Some(allow) = &raw.allow {
        if let Some(bad) = allow
            .get_ref()
            .iter()
            .find(|v| !VERB_NAMES.contains(&v.as_str()))
        {
            return Err(src.error(
                allow.span(),
                LABEL,
                "allow",
                format!(
                    "unknown verb {bad:?}: expected some of {}",
                    VERB_NAMES.join(", ")
                ),
            ));
        }
    }
    if let Some(paths) = &raw.paths {
        if let Some(bad) = paths.get_ref().iter().find(|p| {
            p.trim_matches('/')
                .split('/')
                .any(|s| s == "." || s == "..")
        }) {
            return Err(src.error(
                paths.span(),
                LABEL,
                "paths",
                format!("invalid path {bad:?}"),
            ));
        }
    }
    let ca_roots = match &raw.ca_file {
        Some(v) => {
            let path = file(v, "ca_file")?;
            let roots = ca_roots(&path).map_err(|why| {
                src.error(
                    v.span(),
                    LABEL,
                    "ca_file",
                    format!("{}: {why}", path.display()),
                )
            })?;
            Some(roots)
        }
        None => None,
    };
    Ok(Some(SpokeConfig {
        hub: text.clone(),
        name: name.get_ref().clone(),
        join_token_file,
        credential_file,
        allow: raw.allow.as_ref().map(|a| a.get_ref().clone()),
        paths: raw.paths.as_ref().map(|p| p.get_ref().clone()),
        ca_roots,
    }))
}

/// The certificates of a PEM file, each usable as a trust anchor (at least one).
pub(crate) fn ca_roots(path: &Path) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::Error;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect)
        .map_err(|e| match e {
            Error::Io(e) => format!("cannot read: {e}"),
            other => format!("not a PEM certificate: {other}"),
        })?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    let mut store = rustls::RootCertStore::empty();
    for cert in &certs {
        store
            .add(cert.clone())
            .map_err(|e| format!("a certificate that cannot be a trust anchor: {e}"))?;
    }
    Ok(certs)
}
