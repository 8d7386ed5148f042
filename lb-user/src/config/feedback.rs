//! `[vip.feedback]`: weights from the backends' own load, reported by an
//! agent on the backend, or from the health checks' response times. Part of
//! the configuration module (same validator, same error format).

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Validator;

/// Defaults, also documented in docs/config.md.
pub const DEFAULT_AGENT_INTERVAL_MS: u64 = 2000;
pub const DEFAULT_AGENT_TIMEOUT_MS: u64 = 1000;
pub const DEFAULT_MIN_WEIGHT_PERCENT: u8 = 10;
pub const DEFAULT_HYSTERESIS_PERCENT: u8 = 10;
pub const DEFAULT_PERIOD_MS: u64 = 10_000;
const INTERVAL_MS: RangeInclusive<i64> = 100..=3_600_000;
const TIMEOUT_MS: RangeInclusive<i64> = 10..=3_600_000;
const TARGET_MS: RangeInclusive<i64> = 1..=60_000;
const PERIOD_MS: RangeInclusive<i64> = 100..=86_400_000;

/// Where a VIP's backends' feedback comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedbackSource {
    /// An agent on each backend reports a weight or load percentage.
    Agent(AgentConfig),
    /// Each passed health check's duration, smoothed; at or below
    /// `target` a backend gets 100 %.
    ResponseTime { target: Duration },
}

/// How the agent of a backend is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The agent's TCP port on the backend's address.
    pub port: u16,
    /// `Some`: an HTTP GET of this path, the body is the reply. `None`:
    /// plain TCP, the reply is what the agent writes up to a newline or
    /// the close.
    pub path: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
}

/// A VIP's `[vip.feedback]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackConfig {
    pub source: FeedbackSource,
    /// The floor of the effective weight, in percent of the weight (1–100).
    pub min_weight_percent: u8,
    /// The effective percent moves only when the signal differs from it by
    /// more than this many points (or reaches 100 % or the floor).
    pub hysteresis_percent: u8,
    /// At most one change of a backend's effective weight per period.
    pub period: Duration,
}

impl FeedbackConfig {
    pub fn source_name(&self) -> &'static str {
        match self.source {
            FeedbackSource::Agent(_) => "agent",
            FeedbackSource::ResponseTime { .. } => "response_time",
        }
    }
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum RawSource {
    Agent,
    ResponseTime,
}

/// `[vip.feedback]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFeedback {
    #[serde(default)]
    source: Option<Spanned<RawSource>>,
    #[serde(default)]
    port: Option<Spanned<i64>>,
    #[serde(default)]
    path: Option<Spanned<String>>,
    #[serde(default)]
    interval_ms: Option<Spanned<i64>>,
    #[serde(default)]
    timeout_ms: Option<Spanned<i64>>,
    #[serde(default)]
    target_ms: Option<Spanned<i64>>,
    #[serde(default)]
    min_weight_percent: Option<Spanned<i64>>,
    #[serde(default)]
    hysteresis_percent: Option<Spanned<i64>>,
    #[serde(default)]
    period_ms: Option<Spanned<i64>>,
}

impl Validator<'_> {
    /// Validates `[vip.feedback]` of VIP `p` (`vip[0]`); `has_health`: the
    /// VIP has `[vip.health]`, which `source = "response_time"` needs.
    pub(super) fn feedback(
        &mut self,
        raw: &Spanned<RawFeedback>,
        p: &str,
        has_health: bool,
    ) -> Option<FeedbackConfig> {
        let span = raw.span();
        let r = raw.get_ref();
        let p = format!("{p}.feedback");
        let min_weight_percent = self.int_in(
            &r.min_weight_percent,
            &format!("{p}.min_weight_percent"),
            1..=100,
            DEFAULT_MIN_WEIGHT_PERCENT,
        );
        let hysteresis_percent = self.int_in(
            &r.hysteresis_percent,
            &format!("{p}.hysteresis_percent"),
            0..=99,
            DEFAULT_HYSTERESIS_PERCENT,
        );
        let period_ms = self.int_in(
            &r.period_ms,
            &format!("{p}.period_ms"),
            PERIOD_MS,
            DEFAULT_PERIOD_MS,
        );
        let Some(source) = &r.source else {
            self.error(span, format!("{p}.source"), "required field is missing");
            return None;
        };
        // Fields of the other source are errors where they are written.
        let unused = |v: &mut Self, name: &str, at: Option<std::ops::Range<usize>>, what: &str| {
            if let Some(at) = at {
                v.error(at, format!("{p}.{name}"), format!("not used by {what}"));
            }
        };
        let source = match source.get_ref() {
            RawSource::Agent => {
                unused(
                    self,
                    "target_ms",
                    r.target_ms.as_ref().map(Spanned::span),
                    "source = \"agent\"",
                );
                let port = match &r.port {
                    None => {
                        self.error(
                            span.clone(),
                            format!("{p}.port"),
                            "required for source = \"agent\" (the agent's TCP port)",
                        );
                        0
                    }
                    Some(_) => self.int_in(&r.port, &format!("{p}.port"), 1..=65_535, 0u16),
                };
                let path = self.http_path(r.path.as_ref(), format!("{p}.path"));
                let interval_ms = self.int_in(
                    &r.interval_ms,
                    &format!("{p}.interval_ms"),
                    INTERVAL_MS,
                    DEFAULT_AGENT_INTERVAL_MS,
                );
                let timeout_ms = self.int_in(
                    &r.timeout_ms,
                    &format!("{p}.timeout_ms"),
                    TIMEOUT_MS,
                    DEFAULT_AGENT_TIMEOUT_MS,
                );
                if timeout_ms >= interval_ms {
                    let at = r
                        .timeout_ms
                        .as_ref()
                        .or(r.interval_ms.as_ref())
                        .map_or(span.clone(), Spanned::span);
                    self.error(
                        at,
                        format!("{p}.timeout_ms"),
                        format!(
                            "timeout_ms ({timeout_ms}) must be shorter than interval_ms \
                             ({interval_ms}): a question must end before the next one"
                        ),
                    );
                }
                if period_ms < interval_ms {
                    let at = r.period_ms.as_ref().map_or(span.clone(), Spanned::span);
                    self.error(
                        at,
                        format!("{p}.period_ms"),
                        format!(
                            "period_ms ({period_ms}) is shorter than interval_ms \
                             ({interval_ms}): the weight could change on every reply"
                        ),
                    );
                }
                FeedbackSource::Agent(AgentConfig {
                    port,
                    path,
                    interval: Duration::from_millis(interval_ms),
                    timeout: Duration::from_millis(timeout_ms),
                })
            }
            RawSource::ResponseTime => {
                let what = "source = \"response_time\" (it times the health checks)";
                unused(self, "port", r.port.as_ref().map(Spanned::span), what);
                unused(self, "path", r.path.as_ref().map(Spanned::span), what);
                unused(
                    self,
                    "interval_ms",
                    r.interval_ms.as_ref().map(Spanned::span),
                    what,
                );
                unused(
                    self,
                    "timeout_ms",
                    r.timeout_ms.as_ref().map(Spanned::span),
                    what,
                );
                if !has_health {
                    self.error(
                        source.span(),
                        format!("{p}.source"),
                        "response_time needs the VIP's [vip.health]: its checks are what is timed",
                    );
                }
                let target_ms = match &r.target_ms {
                    None => {
                        self.error(
                            span.clone(),
                            format!("{p}.target_ms"),
                            "required for source = \"response_time\"",
                        );
                        1
                    }
                    Some(_) => self.int_in(&r.target_ms, &format!("{p}.target_ms"), TARGET_MS, 1),
                };
                FeedbackSource::ResponseTime {
                    target: Duration::from_millis(target_ms),
                }
            }
        };
        Some(FeedbackConfig {
            source,
            min_weight_percent,
            hysteresis_percent,
            period: Duration::from_millis(period_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};
    use super::*;

    /// A VIP on port 80 with `extra` after its keys (`[vip.feedback]` and
    /// perhaps `[vip.health]`), then one backend.
    fn text(extra: &str) -> String {
        format!(
            "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.100\"\nport = 80\n\
             {extra}\n[[vip.backend]]\naddress = \"198.18.0.11\"\n"
        )
    }

    fn parsed(extra: &str) -> FeedbackConfig {
        Config::parse(&text(extra), "x.toml")
            .unwrap_or_else(|e| panic!("{e}"))
            .vips[0]
            .feedback
            .clone()
            .expect("a [vip.feedback]")
    }

    fn errors(extra: &str) -> Vec<String> {
        match Config::parse(&text(extra), "x.toml") {
            Ok(c) => panic!("expected errors, got {c:?}"),
            Err(e) => {
                e.0.iter()
                    .map(|e: &ConfigError| format!("{}: {}", e.field, e.message))
                    .collect()
            }
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let block = super::super::tests::doc_blocks("toml")
            .into_iter()
            .find(|b| b.contains("[vip.feedback]"))
            .expect("a [vip.feedback] example in docs/config.md");
        let c = Config::parse(&block, "config.md").unwrap_or_else(|e| panic!("{e}"));
        let f = c.vips[0].feedback.as_ref().unwrap();
        assert!(
            matches!(&f.source, FeedbackSource::Agent(a) if a.port == 9100 && a.path.is_none())
        );
        assert_eq!(f.period, Duration::from_secs(10));
    }

    #[test]
    fn an_agent_gets_the_documented_defaults() {
        let f = parsed("[vip.feedback]\nsource = \"agent\"\nport = 9100");
        assert_eq!(
            f,
            FeedbackConfig {
                source: FeedbackSource::Agent(AgentConfig {
                    port: 9100,
                    path: None,
                    interval: Duration::from_millis(2000),
                    timeout: Duration::from_millis(1000),
                }),
                min_weight_percent: 10,
                hysteresis_percent: 10,
                period: Duration::from_millis(10_000),
            }
        );
        assert_eq!(f.source_name(), "agent");
        let f = parsed(
            "[vip.feedback]\nsource = \"agent\"\nport = 9100\npath = \"/load\"\n\
             interval_ms = 500\ntimeout_ms = 200\nmin_weight_percent = 5\n\
             hysteresis_percent = 0\nperiod_ms = 500",
        );
        assert!(
            matches!(&f.source, FeedbackSource::Agent(a) if a.path.as_deref() == Some("/load"))
        );
        assert_eq!((f.min_weight_percent, f.hysteresis_percent), (5, 0));
    }

    #[test]
    fn response_time_needs_health_checks_and_a_target() {
        let f = parsed(
            "[vip.health]\ntype = \"tcp\"\n[vip.feedback]\nsource = \"response_time\"\ntarget_ms = 20",
        );
        assert_eq!(
            f.source,
            FeedbackSource::ResponseTime {
                target: Duration::from_millis(20)
            }
        );
        assert_eq!(
            errors("[vip.feedback]\nsource = \"response_time\"\ntarget_ms = 20"),
            [
                "vip[0].feedback.source: response_time needs the VIP's [vip.health]: \
              its checks are what is timed"
            ]
        );
        assert_eq!(
            errors("[vip.health]\ntype = \"tcp\"\n[vip.feedback]\nsource = \"response_time\""),
            ["vip[0].feedback.target_ms: required for source = \"response_time\""]
        );
    }

    #[test]
    fn wrong_values_are_each_reported_where_they_are() {
        assert_eq!(
            errors("[vip.feedback]\nport = 9100"),
            ["vip[0].feedback.source: required field is missing"]
        );
        assert_eq!(
            errors("[vip.feedback]\nsource = \"agent\""),
            ["vip[0].feedback.port: required for source = \"agent\" (the agent's TCP port)"]
        );
        assert_eq!(
            errors(
                "[vip.feedback]\nsource = \"agent\"\nport = 9100\ntarget_ms = 5\n\
                 min_weight_percent = 0\nhysteresis_percent = 100\npath = \"load\""
            ),
            [
                "vip[0].feedback.target_ms: not used by source = \"agent\"",
                "vip[0].feedback.min_weight_percent: 0 is out of range 1..=100",
                "vip[0].feedback.hysteresis_percent: 100 is out of range 0..=99",
                "vip[0].feedback.path: \"load\" must start with '/'",
            ]
        );
        assert_eq!(
            errors(
                "[vip.feedback]\nsource = \"agent\"\nport = 9100\ninterval_ms = 1000\ntimeout_ms = 1000"
            ),
            [
                "vip[0].feedback.timeout_ms: timeout_ms (1000) must be shorter than interval_ms \
              (1000): a question must end before the next one"
            ]
        );
        assert_eq!(
            errors("[vip.feedback]\nsource = \"agent\"\nport = 9100\nperiod_ms = 1000"),
            [
                "vip[0].feedback.period_ms: period_ms (1000) is shorter than interval_ms (2000): \
              the weight could change on every reply"
            ]
        );
        assert_eq!(
            errors("[vip.feedback]\nsource = \"agent\"\nport = 9100\ncolour = 1").len(),
            1,
            "unknown keys are refused"
        );
    }
}
