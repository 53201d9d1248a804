//! Restart policy: strategies, restart types, exponential backoff and restart intensity.
//!
//! The `backoff` crate is used only here, behind [`Backoff`], so it can be swapped.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use backoff::backoff::Backoff as _;
use backoff::ExponentialBackoff;
use serde::{Deserialize, Serialize};

/// Which siblings a supervisor restarts when one child fails (OTP strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Only the failed child.
    #[default]
    OneForOne,
    /// Every child: the others are stopped in reverse order, then all start in order.
    OneForAll,
    /// The failed child and every child after it.
    RestForOne,
}

/// When a child is restarted (OTP restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartType {
    /// After every exit.
    #[default]
    Permanent,
    /// Only after an abnormal exit (non-zero code, a signal, an error).
    Transient,
    /// Never.
    Temporary,
}

impl RestartType {
    /// Whether an exit of this kind calls for a restart.
    pub fn restarts_after(self, abnormal: bool) -> bool {
        match self {
            RestartType::Permanent => true,
            RestartType::Transient => abnormal,
            RestartType::Temporary => false,
        }
    }
}

/// At most `max` restarts within `within`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed in the window.
    pub max: u32,
    /// The window.
    pub within: Duration,
}

impl Intensity {
    /// Ten restarts within a minute: the built-in default for children.
    pub const DEFAULT: Intensity = Intensity {
        max: 10,
        within: Duration::from_secs(60),
    };
}

/// The shape of the exponential backoff between restarts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    /// The first delay (zero restarts at once).
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
    /// Growth factor per attempt (>= 1).
    pub multiplier: f64,
    /// Random spread, a fraction of the delay (0..=1).
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.1,
        }
    }
}

/// Delays between successive restarts of one child: `initial`, then times `multiplier`
/// up to `max`, each spread by `jitter`. Never runs out (unlike the crate's default, which
/// stops after 15 minutes).
#[derive(Debug)]
pub struct Backoff {
    config: BackoffConfig,
    inner: ExponentialBackoff,
    attempt: u32,
    last_delay: Duration,
}

/// The backoff state shown in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackoffInfo {
    /// Restarts since the backoff was last reset.
    pub attempt: u32,
    /// The delay before the latest (or pending) restart, in milliseconds.
    pub delay_ms: u64,
}

impl Backoff {
    /// A fresh backoff at `initial`.
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            inner: Self::fresh(&config),
            config,
            attempt: 0,
            last_delay: Duration::ZERO,
        }
    }

    fn fresh(config: &BackoffConfig) -> ExponentialBackoff {
        ExponentialBackoff {
            current_interval: config.initial,
            initial_interval: config.initial,
            randomization_factor: config.jitter,
            multiplier: config.multiplier,
            max_interval: config.max,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        }
    }

    /// The delay before the next restart.
    pub fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        let delay = if self.config.initial.is_zero() {
            Duration::ZERO
        } else {
            self.inner
                .next_backoff()
                .unwrap_or(self.config.max)
                .min(self.config.max)
        };
        self.last_delay = delay;
        delay
    }

    /// Back to `initial`.
    pub fn reset(&mut self) {
        self.inner = Self::fresh(&self.config);
        self.attempt = 0;
        self.last_delay = Duration::ZERO;
    }

    /// What the API shows.
    pub fn info(&self) -> BackoffInfo {
        BackoffInfo {
            attempt: self.attempt,
            delay_ms: u64::try_from(self.last_delay.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// The restarts recorded within a sliding window, to enforce an [`Intensity`].
#[derive(Debug, Default)]
pub struct IntensityWindow {
    restarts: VecDeque<Instant>,
}

impl IntensityWindow {
    /// Records one more restart at `now` if `limit` allows it; `false` means the limit
    /// is exceeded (nothing recorded).
    pub fn try_record(&mut self, now: Instant, limit: Intensity) -> bool {
        while let Some(&first) = self.restarts.front() {
            if now.duration_since(first) >= limit.within {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        if self.restarts.len() >= limit.max as usize {
            return false;
        }
        self.restarts.push_back(now);
        true
    }

    /// Forgets every recorded restart.
    pub fn clear(&mut self) {
        self.restarts.clear();
    }
}

/// Says in words why `limit` was exceeded.
pub(crate) fn intensity_reason(limit: Intensity) -> String {
    format!(
        "restart intensity exceeded: more than {} restarts within {}",
        limit.max,
        humantime::format_duration(limit.within)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
            multiplier: 2.0,
            jitter: 0.0,
        });
        let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 400, 400]);
        assert_eq!(b.info().attempt, 5);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    /// SEMANTICS #8 "no hidden 15-minute cut-off": the `backoff` crate stops yielding
    /// delays once `max_elapsed_time` (15 min by default) has passed since the backoff
    /// started. Pretend it started 16 minutes ago: the delays must still double from
    /// `initial` (not `None`, and not the `max` fallback of `next_delay`).
    #[test]
    fn backoff_never_runs_out() {
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.0,
        });
        let sixteen_minutes = Duration::from_secs(16 * 60);
        let started = Instant::now()
            .checked_sub(sixteen_minutes)
            .expect("the monotonic clock is older than 16 minutes");
        b.inner.start_time = started;
        let got: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800]);
        // The same after a reset that happens 16 minutes into a run.
        b.reset();
        b.inner.start_time = started;
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    /// The default jitter (0.1) spreads each delay within +-10 % of the unjittered one,
    /// and a jittered delay never exceeds `max`.
    #[test]
    fn jittered_delays_stay_within_their_bounds() {
        let config = BackoffConfig::default();
        assert!(
            (config.jitter - 0.1).abs() < f64::EPSILON,
            "default jitter is 0.1"
        );
        let config = BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(700),
            multiplier: 2.0,
            jitter: 0.1,
        };
        let mut seen_spread = false;
        for _ in 0..200 {
            let mut b = Backoff::new(config);
            for unjittered in [100.0, 200.0, 400.0, 700.0, 700.0] {
                let ms = b.next_delay().as_secs_f64() * 1000.0;
                let (low, high) = (
                    unjittered * 0.9 - 1.0,
                    (unjittered * 1.1 + 1.0_f64).min(700.0),
                );
                assert!(
                    ms >= low && ms <= high,
                    "delay {ms:.1} ms outside [{low:.1}, {high:.1}] (unjittered {unjittered})"
                );
                seen_spread |= (ms - unjittered).abs() > 1.0;
            }
        }
        assert!(
            seen_spread,
            "jitter 0.1 never moved a delay: no spread at all"
        );
    }

    #[test]
    fn intensity_window_refuses_past_max_and_slides() {
        let limit = Intensity {
            max: 2,
            within: Duration::from_secs(10),
        };
        let mut w = IntensityWindow::default();
        let t0 = Instant::now();
        assert!(w.try_record(t0, limit));
        assert!(w.try_record(t0 + Duration::from_secs(1), limit));
        assert!(!w.try_record(t0 + Duration::from_secs(2), limit));
        assert!(w.try_record(t0 + Duration::from_secs(10), limit));
    }
}
