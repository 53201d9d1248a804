//! What a notifier posts: the chat text of Slack, Mattermost and Discord, each cut to its
//! platform's limit, and the JSON event of the generic webhook.

use serde::Serialize;

use super::cut::{cut_keeping_end, units};
use super::{NotifyEvent, Platform, Stamped};

/// Slack truncates a message's `text` past 40,000 characters
/// (<https://api.slack.com/changelog/2018-04-truncating-really-long-messages>).
pub const SLACK_LIMIT: usize = 40_000;
/// Mattermost (5.0 and later) refuses a post longer than 16,383 characters.
pub const MATTERMOST_LIMIT: usize = 16_383;
/// Discord refuses a message `content` longer than 2,000 characters.
pub const DISCORD_LIMIT: usize = 2_000;
/// The generic webhook's `output_tail` is cut to this many characters (the deploy runner
/// keeps the last 64 KiB of output).
pub const WEBHOOK_OUTPUT_LIMIT: usize = 64 * 1024;

/// The version of the generic webhook's JSON event (its `version` field).
pub const WEBHOOK_VERSION: u32 = 1;

/// The body posted for `event` by a notifier named `notifier` of `platform`.
pub(super) fn body(platform: Platform, notifier: &str, event: &Stamped) -> Vec<u8> {
    let value = match platform {
        Platform::Slack => {
            serde_json::json!({ "text": chat_text(event, SLACK_LIMIT, slack_escape) })
        }
        Platform::Mattermost => {
            serde_json::json!({ "text": chat_text(event, MATTERMOST_LIMIT, str::to_owned) })
        }
        // No mention in a deploy's output may ping anyone.
        Platform::Discord => serde_json::json!({
            "content": chat_text(event, DISCORD_LIMIT, str::to_owned),
            "allowed_mentions": { "parse": [] },
        }),
        Platform::Webhook => {
            serde_json::to_value(webhook_event(notifier, event)).unwrap_or(serde_json::Value::Null)
        }
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

/// The one-line summary of an event (without a deploy's output).
pub(super) fn summary(event: &NotifyEvent) -> String {
    let commit = |commit: &Option<String>| match commit {
        Some(commit) => format!(" (commit {commit})"),
        None => String::new(),
    };
    match event {
        NotifyEvent::DeployStarted {
            path,
            id,
            commit: c,
        } => format!("warden: deploy {id} of {path} started{}", commit(c)),
        NotifyEvent::DeploySucceeded {
            path,
            id,
            commit: c,
        } => format!("warden: deploy {id} of {path} succeeded{}", commit(c)),
        NotifyEvent::DeployFailed {
            path,
            id,
            commit: c,
            step,
            reason,
            ..
        } => format!(
            "warden: deploy {id} of {path} failed at step `{step}`{}: {reason}",
            commit(c)
        ),
        NotifyEvent::ActorFailed { path, reason } => {
            format!("warden: {path} failed (gave up): {reason}")
        }
    }
}

/// Slack's text escapes `&`, `<` and `>` (so that no `<!channel>` in an output pings).
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const FENCE_OPEN: &str = "\n```\n";
const FENCE_CLOSE: &str = "\n```";

/// The chat text of `event` within `limit` units: the summary, then a failed deploy's
/// output in a code block. When it is too long, the output is cut keeping its end (the
/// summary stays whole unless it alone takes more than half the limit).
fn chat_text(event: &Stamped, limit: usize, escape: fn(&str) -> String) -> String {
    let head = escape(&summary(&event.event));
    let output = match &event.event {
        NotifyEvent::DeployFailed { output_tail, .. } if !output_tail.trim().is_empty() => {
            // A fence inside the output would end the code block early.
            escape(output_tail.trim_end()).replace("```", "`\u{200b}``")
        }
        _ => return cut_keeping_end(&head, limit).into_owned(),
    };
    let whole = units(&head) + units(FENCE_OPEN) + units(&output) + units(FENCE_CLOSE);
    if whole <= limit {
        return format!("{head}{FENCE_OPEN}{output}{FENCE_CLOSE}");
    }
    let head = cut_keeping_end(&head, limit / 2);
    let budget = limit.saturating_sub(units(&head) + units(FENCE_OPEN) + units(FENCE_CLOSE));
    let output = cut_keeping_end(&output, budget);
    format!("{head}{FENCE_OPEN}{output}{FENCE_CLOSE}")
}

/// The generic webhook's JSON event. Fields a kind of event does not have are `null`.
#[derive(Debug, Serialize)]
pub(super) struct WebhookEvent<'a> {
    version: u32,
    /// `deploy_started` | `deploy_succeeded` | `deploy_failed` | `actor_failed`.
    event: &'static str,
    notifier: &'a str,
    path: String,
    id: Option<&'a str>,
    commit: Option<&'a str>,
    step: Option<&'a str>,
    reason: Option<&'a str>,
    output_tail: Option<String>,
    at: warden_supervisors::Timestamp,
    text: String,
}

fn webhook_event<'a>(notifier: &'a str, stamped: &'a Stamped) -> WebhookEvent<'a> {
    let event = &stamped.event;
    let mut shown = WebhookEvent {
        version: WEBHOOK_VERSION,
        event: event.name(),
        notifier,
        path: event.path().to_string(),
        id: None,
        commit: None,
        step: None,
        reason: None,
        output_tail: None,
        at: stamped.at,
        text: summary(event),
    };
    match event {
        NotifyEvent::DeployStarted { id, commit, .. }
        | NotifyEvent::DeploySucceeded { id, commit, .. } => {
            shown.id = Some(id);
            shown.commit = commit.as_deref();
        }
        NotifyEvent::DeployFailed {
            id,
            commit,
            step,
            reason,
            output_tail,
            ..
        } => {
            shown.id = Some(id);
            shown.commit = commit.as_deref();
            shown.step = Some(step);
            shown.reason = Some(reason);
            shown.output_tail =
                Some(cut_keeping_end(output_tail, WEBHOOK_OUTPUT_LIMIT).into_owned());
        }
        NotifyEvent::ActorFailed { reason, .. } => shown.reason = Some(reason),
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_supervisors::{ActorPath, Timestamp};

    fn failed(output: &str) -> Stamped {
        Stamped {
            event: NotifyEvent::DeployFailed {
                path: ActorPath::parse("/app/api").unwrap(),
                id: "7".into(),
                commit: Some("abc123".into()),
                step: "build".into(),
                reason: "exit code 1".into(),
                output_tail: output.into(),
            },
            at: Timestamp::now(),
        }
    }

    #[test]
    fn a_short_failure_shows_summary_and_whole_output() {
        let text = chat_text(
            &failed("line 1\nerror: boom\n"),
            DISCORD_LIMIT,
            str::to_owned,
        );
        assert_eq!(
            text,
            "warden: deploy 7 of /app/api failed at step `build` (commit abc123): exit code 1\n```\nline 1\nerror: boom\n```"
        );
    }

    #[test]
    fn a_long_output_is_cut_to_the_limit_keeping_the_summary_and_the_end() {
        let output = format!("{}\nerror: the last line", "ä".repeat(5000));
        let text = chat_text(&failed(&output), DISCORD_LIMIT, str::to_owned);
        assert!(units(&text) <= DISCORD_LIMIT, "{}", units(&text));
        assert!(text.starts_with("warden: deploy 7 of /app/api failed"));
        assert!(text.ends_with("error: the last line\n```"));
        assert!(text.contains(" bytes cut]…"));
    }

    #[test]
    fn slack_text_is_escaped() {
        assert_eq!(
            slack_escape("<!channel> & >"),
            "&lt;!channel&gt; &amp; &gt;"
        );
    }
}
