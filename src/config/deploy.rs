//! `[webhooks]`, a `[[service]]`'s `deploy = {...}` and `[self] deploy = {...}` (see
//! docs/config.md).
//!
//! `deploy` takes `repo` (required, `owner/name`), `branch` (default `main`), `cwd`
//! (default: the service's own folder; warden's: the config file's), `timeout` (default
//! 10m, longer than 0: each step's deadline, and the restart's), `steps` (required: an
//! array of at least one command, each an array whose first element is a program) and
//! `confirm` (a duration longer than 0: a request waits that long for an operator).
//! `[webhooks] github_secret_file` names the key of `X-Hub-Signature-256`; it is read
//! here, so a missing, empty or loose file (group or other may read it) is refused at
//! `check`, naming it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use warden_actors::DeploySpec;

use super::raw::Dur;
use super::{anchor_program, check_command, ConfigError, Source};

/// `[webhooks]`: where warden's webhook keys are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhooksConfig {
    /// The file that holds the key of GitHub's `X-Hub-Signature-256` (absolute).
    pub github_secret_file: PathBuf,
}

/// A service's `deploy`, with the service it deploys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployTarget {
    /// The service's path.
    pub path: String,
    /// Line of the service's table header.
    pub line: usize,
    /// What its deploy does (its steps get the service's `env`).
    pub spec: DeploySpec,
}

/// The most bytes a webhook secret file may hold.
const MAX_SECRET_FILE: u64 = 4096;

/// Default `branch`.
const DEFAULT_BRANCH: &str = "main";
/// Default `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhooks {
    github_secret_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSelf {
    pub deploy: Option<Spanned<RawDeploy>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeploy {
    repo: Option<Spanned<String>>,
    branch: Option<Spanned<String>>,
    cwd: Option<Spanned<String>>,
    timeout: Option<Spanned<Dur>>,
    steps: Option<Spanned<Vec<Vec<String>>>>,
    confirm: Option<Spanned<Dur>>,
}

type Result<T> = std::result::Result<T, ConfigError>;

/// Reads a webhook secret as `warden up` does: refused when missing, empty or loose.
pub fn read_secret(path: &Path) -> std::result::Result<String, String> {
    let secret = warden_actors::state_file::read_secret(path, MAX_SECRET_FILE)
        .map_err(|e| format!("cannot use the webhook secret: {e}"))?;
    if secret.is_empty() {
        return Err(format!(
            "the webhook secret file {} is empty",
            path.display()
        ));
    }
    Ok(secret)
}

/// The `[webhooks]` table.
pub(super) fn webhooks(
    src: &Source,
    raw: Option<&Spanned<RawWebhooks>>,
    base_dir: &Path,
) -> Result<Option<WebhooksConfig>> {
    const LABEL: &str = "[webhooks]";
    let Some(raw) = raw else { return Ok(None) };
    let file = raw.get_ref().github_secret_file.as_ref().ok_or_else(|| {
        src.error(
            raw.span(),
            LABEL,
            "github_secret_file",
            "is required (the file that holds the webhook's secret)",
        )
    })?;
    if file.get_ref().is_empty() {
        return Err(src.error(
            file.span(),
            LABEL,
            "github_secret_file",
            "must not be empty",
        ));
    }
    let path: PathBuf = base_dir.join(file.get_ref()).components().collect();
    read_secret(&path).map_err(|e| src.error(file.span(), LABEL, "github_secret_file", e))?;
    Ok(Some(WebhooksConfig {
        github_secret_file: path,
    }))
}

/// A `deploy` table of the entry `label`; `cwd` defaults to `default_cwd`; the steps get
/// `env`.
pub(super) fn deploy(
    src: &Source,
    label: &str,
    raw: &Spanned<RawDeploy>,
    base_dir: &Path,
    default_cwd: &Path,
    env: Vec<(String, String)>,
    run_as: Option<warden_actors::RunAs>,
) -> Result<DeploySpec> {
    let table = raw.get_ref();
    let err = |span: std::ops::Range<usize>, key: &str, detail: String| {
        src.error(span, label, &format!("deploy.{key}"), detail)
    };
    let repo = table.repo.as_ref().ok_or_else(|| {
        err(
            raw.span(),
            "repo",
            "is required (the repository whose pushes deploy it, \"owner/name\")".into(),
        )
    })?;
    if !warden_actors::deploy::valid_repo(repo.get_ref()) {
        return Err(err(
            repo.span(),
            "repo",
            format!(
                "{:?} is not \"owner/name\" (letters, digits, '-', '_' and '.' on each side of one '/')",
                repo.get_ref()
            ),
        ));
    }
    let branch = match &table.branch {
        Some(b) if b.get_ref().is_empty() || b.get_ref().chars().any(char::is_whitespace) => {
            return Err(err(
                b.span(),
                "branch",
                "must be a branch name (not empty, no spaces)".into(),
            ))
        }
        Some(b) => b
            .get_ref()
            .strip_prefix("refs/heads/")
            .unwrap_or(b.get_ref())
            .to_owned(),
        None => DEFAULT_BRANCH.to_owned(),
    };
    let cwd = match &table.cwd {
        Some(c) if c.get_ref().is_empty() => {
            return Err(err(c.span(), "cwd", "must not be empty".into()))
        }
        Some(c) => base_dir.join(c.get_ref()).components().collect(),
        None => default_cwd.to_path_buf(),
    };
    let timeout = match &table.timeout {
        Some(t) if t.get_ref().0.is_zero() => {
            return Err(err(t.span(), "timeout", "must be longer than 0".into()))
        }
        Some(t) => t.get_ref().0,
        None => DEFAULT_TIMEOUT,
    };
    let confirm = match &table.confirm {
        Some(c) if c.get_ref().0.is_zero() => {
            return Err(err(c.span(), "confirm", "must be longer than 0".into()))
        }
        Some(c) => Some(c.get_ref().0),
        None => None,
    };
    let steps = table.steps.as_ref().ok_or_else(|| {
        err(
            raw.span(),
            "steps",
            "is required (an array of commands, e.g. [[\"git\", \"pull\", \"--ff-only\"]])".into(),
        )
    })?;
    if steps.get_ref().is_empty() {
        return Err(err(
            steps.span(),
            "steps",
            "must hold at least one command".into(),
        ));
    }
    for (k, step) in steps.get_ref().iter().enumerate() {
        check_command(step, false)
            .map_err(|detail| err(steps.span(), "steps", format!("step {}: {detail}", k + 1)))?;
    }
    Ok(DeploySpec {
        repo: repo.get_ref().clone(),
        branch,
        cwd,
        timeout,
        steps: steps
            .get_ref()
            .iter()
            .map(|step| anchor_program(step, base_dir))
            .collect(),
        confirm,
        env,
        run_as,
    })
}
