//! `[vip.feedback]`: backends' weights from their own load. A backend's
//! effective weight is its weight scaled by an effective percent that
//! follows a signal, damped ([`damper`]):
//!
//! - `agent` ([`agent`]): a small TCP or HTTP endpoint on the backend
//!   answers with a weight or load percentage ([`reply`]);
//! - `response_time`: each passed health check's duration, smoothed
//!   (EWMA, factor [`RTT_EWMA`]); at or below `target_ms` the backend gets
//!   100 %, above it `100 × target / smoothed`.
//!
//! An agent that does not answer, or answers something that is not a
//! percentage, leaves the weight as it is (counted): health checks decide
//! whether a backend is up, feedback only weights it. [`BackendFeedback`]
//! is one backend's state, pure: the controller owns one per backend of a
//! VIP with feedback, and feeds it the signal with the clock.

pub mod agent;
pub mod damper;
pub mod reply;

use std::time::Duration;

pub use agent::{AgentResult, Agents, Answer};
pub use damper::{Damper, Settings};

use crate::{
    api::FeedbackStatus,
    config::{AgentConfig, FeedbackConfig, FeedbackSource},
};

/// The weight of the newest response time in the smoothed one.
pub const RTT_EWMA: f64 = 0.25;

/// One backend's feedback: the damped percent and what the signal said.
#[derive(Debug, Clone)]
pub struct BackendFeedback {
    config: FeedbackConfig,
    damper: Damper,
    /// The last reply as the agent sent it (trimmed, cut at 64
    /// characters), or what went wrong.
    last: Option<String>,
    /// The percent the signal asked for last.
    wanted: Option<u8>,
    smoothed_rtt_us: Option<f64>,
    bad_replies: u64,
    unanswered: u64,
}

impl BackendFeedback {
    pub fn new(config: &FeedbackConfig) -> Self {
        Self {
            config: config.clone(),
            damper: Damper::new(Settings::from(config)),
            last: None,
            wanted: None,
            smoothed_rtt_us: None,
            bad_replies: 0,
            unanswered: 0,
        }
    }

    /// The agent to ask, with `source = "agent"`.
    pub fn agent(&self) -> Option<&AgentConfig> {
        match &self.config.source {
            FeedbackSource::Agent(a) => Some(a),
            FeedbackSource::ResponseTime { .. } => None,
        }
    }

    /// A reload with `config`: same source, the state goes on with the
    /// new thresholds; another source starts afresh (at the percent it
    /// had, so that changing the source alone does not move the ring).
    pub fn reconfigure(&mut self, config: &FeedbackConfig) {
        if self.config == *config {
            return;
        }
        let same_source =
            std::mem::discriminant(&self.config.source) == std::mem::discriminant(&config.source);
        if !same_source {
            self.smoothed_rtt_us = None;
            self.last = None;
            self.wanted = None;
        }
        self.damper.reconfigure(Settings::from(config));
        self.config = config.clone();
    }

    /// The effective percent the backend's weight is scaled by.
    pub fn percent(&self) -> u8 {
        self.damper.percent()
    }

    /// An agent's answer at `now_ns`; `Some((from, to))` if the effective
    /// percent changed. Ignored unless the source is `agent`.
    pub fn agent_answer(&mut self, now_ns: u64, answer: &Answer) -> Option<(u8, u8)> {
        if !matches!(self.config.source, FeedbackSource::Agent(_)) {
            return None;
        }
        match answer {
            Answer::Reply { text, parsed } => {
                self.last = Some(shorten(text));
                match parsed {
                    Ok(r) => {
                        self.wanted = Some(r.percent);
                        self.damper.offer(now_ns, r.percent)
                    }
                    Err(e) => {
                        self.bad_replies += 1;
                        self.last = Some(format!("bad reply: {e}"));
                        None
                    }
                }
            }
            Answer::NoAnswer(why) => {
                self.unanswered += 1;
                self.last = Some(format!("no answer: {why}"));
                None
            }
        }
    }

    /// A passed health check that took `latency`, at `now_ns`; `Some((from,
    /// to))` if the effective percent changed. Ignored unless the source is
    /// `response_time`.
    pub fn response_time(&mut self, now_ns: u64, latency: Duration) -> Option<(u8, u8)> {
        let FeedbackSource::ResponseTime { target } = self.config.source else {
            return None;
        };
        let sample = latency.as_secs_f64() * 1e6;
        let smoothed = match self.smoothed_rtt_us {
            None => sample,
            Some(s) => s + RTT_EWMA * (sample - s),
        };
        self.smoothed_rtt_us = Some(smoothed);
        let target_us = target.as_secs_f64() * 1e6;
        let wanted = if smoothed <= target_us {
            100
        } else {
            // Above the target: 100 × target / smoothed, below 100.
            (100.0 * target_us / smoothed).round().clamp(0.0, 100.0) as u8
        };
        self.wanted = Some(wanted);
        self.last = Some(format!("{:.0} us", sample));
        self.damper.offer(now_ns, wanted)
    }

    /// What `xlb status` shows of it at `now_ns`.
    pub fn status(&self, now_ns: u64) -> FeedbackStatus {
        FeedbackStatus {
            source: self.config.source_name().to_owned(),
            percent: self.percent(),
            wanted_percent: self.wanted,
            last: self.last.clone(),
            smoothed_rtt_us: self.smoothed_rtt_us.map(|s| s.round() as u64),
            changes: self.damper.changes(),
            changed_ago_s: self
                .damper
                .changed_at_ns()
                .map(|at| now_ns.saturating_sub(at) / 1_000_000_000),
            bad_replies: self.bad_replies,
            unanswered: self.unanswered,
        }
    }
}

/// `text` trimmed and cut at 64 characters, for status.
fn shorten(text: &str) -> String {
    text.trim().chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;

    fn config(source: FeedbackSource) -> FeedbackConfig {
        FeedbackConfig {
            source,
            min_weight_percent: 10,
            hysteresis_percent: 10,
            period: Duration::from_secs(10),
        }
    }

    fn agent() -> FeedbackConfig {
        config(FeedbackSource::Agent(AgentConfig {
            port: 9000,
            path: None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
        }))
    }

    fn reply(text: &str) -> Answer {
        Answer::Reply {
            text: text.to_owned(),
            parsed: reply::parse(text.as_bytes()),
        }
    }

    #[test]
    fn bad_replies_and_silence_keep_the_weight_and_are_counted() {
        let mut f = BackendFeedback::new(&agent());
        assert_eq!(f.agent_answer(0, &reply("40%\n")), Some((100, 40)));
        let later = 60_000_000_000; // past the period
        assert_eq!(f.agent_answer(later, &reply("garbage")), None);
        assert_eq!(f.agent_answer(later, &reply("150%")), None);
        assert_eq!(
            f.agent_answer(later, &Answer::NoAnswer("connection refused".into())),
            None
        );
        assert_eq!(f.percent(), 40);
        let s = f.status(later);
        assert_eq!((s.bad_replies, s.unanswered, s.changes), (2, 1, 1));
        assert_eq!(s.last.as_deref(), Some("no answer: connection refused"));
        assert_eq!(s.wanted_percent, Some(40));
        assert_eq!(s.changed_ago_s, Some(60));
        // The next good reply is taken again.
        assert_eq!(f.agent_answer(later, &reply("100%")), Some((40, 100)));
    }

    #[test]
    fn response_times_are_smoothed_against_the_target() {
        let mut f = BackendFeedback::new(&config(FeedbackSource::ResponseTime {
            target: Duration::from_millis(10),
        }));
        assert_eq!(f.response_time(0, Duration::from_millis(5)), None);
        assert_eq!(f.percent(), 100);
        // One slow check moves the average a quarter of the way: 5 + 0.25 ×
        // (45 − 5) = 15 ms, so 100 × 10 / 15 = 67 %.
        assert_eq!(
            f.response_time(1, Duration::from_millis(45)),
            Some((100, 67))
        );
        assert_eq!(f.status(1).smoothed_rtt_us, Some(15_000));
        // An agent's answer means nothing to this source.
        assert_eq!(f.agent_answer(2, &reply("100%")), None);
    }

    #[test]
    fn a_reload_keeps_the_percent_and_a_new_source_forgets_the_signal() {
        let mut f = BackendFeedback::new(&agent());
        f.agent_answer(0, &reply("30%"));
        let mut c = agent();
        c.min_weight_percent = 50;
        f.reconfigure(&c);
        assert_eq!(f.percent(), 50, "raised to the new floor");
        f.reconfigure(&config(FeedbackSource::ResponseTime {
            target: Duration::from_millis(5),
        }));
        assert_eq!(f.percent(), 50);
        assert_eq!(f.status(0).last, None);
    }
}
