//! What a peer can make warden log: text it supplies is cut short and escaped (no forged
//! lines, no terminal escapes), and warnings about a peer are rate-limited, so a hostile
//! child or local client can neither fill warden's log nor burn its CPU through it.

use std::time::{Duration, Instant};

/// The most characters of peer-supplied text that go into one log line.
pub const MAX_LOGGED_CHARS: usize = 256;

/// `text` from a peer, fit for one log line: at most [`MAX_LOGGED_CHARS`] characters,
/// control characters (newlines included) escaped, and how much was cut said.
pub fn untrusted(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    for c in chars.by_ref().take(MAX_LOGGED_CHARS) {
        out.extend(c.escape_debug());
    }
    let rest = chars.count();
    if rest > 0 {
        out.push_str(&format!("... ({rest} more characters)"));
    }
    out
}

/// A budget of log lines per time window for one source of warnings.
#[derive(Debug)]
pub struct LogBudget {
    per_window: u32,
    window: Duration,
    started: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    /// At most `per_window` lines every `window`.
    pub const fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window,
            started: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// `Some(n)` if one more line may be logged now (`n`: lines suppressed since the last
    /// one logged, to say in it), `None` if this one must be dropped.
    pub fn take(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .started
            .is_none_or(|s| now.duration_since(s) >= self.window)
        {
            self.started = Some(now);
            self.used = 0;
        }
        if self.used < self.per_window {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

impl Default for LogBudget {
    /// 10 lines every 10 seconds.
    fn default() -> Self {
        Self::new(10, Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_is_cut_and_escaped() {
        let forged = format!("{}\nFORGED", "x".repeat(300));
        let logged = untrusted(&forged);
        assert!(!logged.contains('\n'));
        assert!(logged.ends_with("(51 more characters)"), "{logged}");
        assert_eq!(untrusted("a\u{1b}[31mb"), "a\\u{1b}[31mb");
    }

    #[test]
    fn a_budget_drops_lines_over_it_and_counts_them() {
        let mut budget = LogBudget::new(2, Duration::from_secs(3600));
        assert_eq!(budget.take(), Some(0));
        assert_eq!(budget.take(), Some(0));
        assert_eq!(budget.take(), None);
        assert_eq!(budget.take(), None);
        let mut quick = LogBudget::new(1, Duration::ZERO);
        assert_eq!(quick.take(), Some(0));
        assert_eq!(quick.take(), Some(0));
    }
}
