//! The VRRP state machine of one virtual router (RFC 5798 section 6.4),
//! pure: it is fed events and the current time and answers with actions.
//! Time is a `Duration` since an epoch the caller picks, so tests drive it
//! with a fake clock.
//!
//! FAULT is not in the RFC; it is keepalived's state for "tracking says this
//! node must not serve": no adverts, never master, until tracking recovers.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::packet::PRIORITY_RESIGN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Init,
    Backup,
    Master,
    Fault,
}

impl State {
    pub const ALL: [State; 4] = [State::Init, State::Backup, State::Master, State::Fault];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Init => "init",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
        }
    }
}

/// Why the machine changed state; logged and shown in `xlb status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Startup,
    /// The control plane restarted while this node was master and its
    /// lease on the VIPs had not run out: it carries on as master.
    Resumed,
    Shutdown,
    /// Master_Down_Timer expired: no (better) master heard.
    MasterDown,
    /// A master resigned (priority 0) and the skew time passed.
    MasterResigned,
    /// An advert with higher priority (or equal priority from a higher
    /// address) arrived while master.
    Preempted {
        by: IpAddr,
        priority: u8,
    },
    TrackingFailed,
    TrackingRecovered,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Startup => f.write_str("startup"),
            Reason::Resumed => f.write_str("resumed as master after a control-plane restart"),
            Reason::Shutdown => f.write_str("shutdown"),
            Reason::MasterDown => f.write_str("master down timer expired"),
            Reason::MasterResigned => f.write_str("master resigned (priority 0)"),
            Reason::Preempted { by, priority } => {
                write!(f, "advert from {by} with priority {priority}")
            }
            Reason::TrackingFailed => f.write_str("tracking failed"),
            Reason::TrackingRecovered => f.write_str("tracking recovered"),
        }
    }
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send an advert with this priority (0 = resigning).
    SendAdvert { priority: u8 },
    /// The state changed. Entering MASTER: take the VIPs, announce them and
    /// forward; leaving it: stop forwarding and withdraw them.
    Transition {
        from: State,
        to: State,
        reason: Reason,
    },
}

/// Configuration of one virtual router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// 1..=254 (255, the address owner, is not something xlb can be).
    pub priority: u8,
    pub preempt: bool,
    /// Advertisement_Interval, centiseconds.
    pub interval_cs: u16,
    /// This node's primary address on the NIC, for the equal-priority tie-break.
    pub primary: IpAddr,
}

/// Inputs besides the passing of time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Startup,
    /// Startup of a control plane that finds this node master of the group
    /// (its predecessor's lease still running): master at once, advert
    /// now, so that no backup's master-down timer runs out.
    Resume,
    Shutdown,
    /// A valid advert for this VRID from another node.
    Advert {
        from: IpAddr,
        priority: u8,
        interval_cs: u16,
    },
    /// Tracking result: `fault` forces FAULT; `penalty` lowers the priority.
    Tracking {
        fault: bool,
        penalty: u8,
    },
}

pub fn centis(cs: u32) -> Duration {
    Duration::from_millis(u64::from(cs) * 10)
}

/// Skew_Time = ((256 - priority) × Master_Adver_Interval) / 256, centiseconds.
pub fn skew_cs(priority: u8, master_interval_cs: u16) -> u32 {
    (256 - u32::from(priority)) * u32::from(master_interval_cs) / 256
}

/// Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time, centiseconds.
pub fn master_down_cs(priority: u8, master_interval_cs: u16) -> u32 {
    3 * u32::from(master_interval_cs) + skew_cs(priority, master_interval_cs)
}

/// Orders addresses as unsigned integers (RFC 5798 6.4.3: "the primary IPvX
/// address of the sender is greater than the local primary IPvX address").
fn addr_key(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

#[derive(Debug, Clone)]
pub struct Machine {
    params: Params,
    state: State,
    fault: bool,
    penalty: u8,
    master_interval_cs: u16,
    adver_timer: Option<Duration>,
    master_down_timer: Option<Duration>,
    /// The master as far as we know: us, or the sender of the last accepted advert.
    master: Option<IpAddr>,
    /// The master-down timer was cut to the skew time by a resignation.
    resigned: bool,
    last: Option<(Duration, State, State, Reason)>,
}

impl Machine {
    pub fn new(params: Params) -> Self {
        let master_interval_cs = params.interval_cs;
        Self {
            params,
            state: State::Init,
            fault: false,
            penalty: 0,
            master_interval_cs,
            adver_timer: None,
            master_down_timer: None,
            master: None,
            resigned: false,
            last: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The priority this node advertises and compares with: the configured
    /// one minus the tracking penalty, never below 1 (0 means resigning).
    pub fn priority(&self) -> u8 {
        self.params.priority.saturating_sub(self.penalty).max(1)
    }

    /// The current master's address, if known.
    pub fn master(&self) -> Option<IpAddr> {
        self.master
    }

    /// Time, from, to, reason of the last transition.
    pub fn last_transition(&self) -> Option<(Duration, State, State, Reason)> {
        self.last
    }

    /// Master_Adver_Interval: the master's advertised interval, or ours.
    pub fn master_interval_cs(&self) -> u16 {
        self.master_interval_cs
    }

    fn master_down(&self) -> Duration {
        centis(master_down_cs(self.priority(), self.master_interval_cs))
    }

    fn skew(&self) -> Duration {
        centis(skew_cs(self.priority(), self.master_interval_cs))
    }

    /// When [`Machine::poll`] next has something to do.
    pub fn next_deadline(&self) -> Option<Duration> {
        match (self.adver_timer, self.master_down_timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn go(&mut self, now: Duration, to: State, reason: Reason, out: &mut Vec<Action>) {
        let from = self.state;
        self.state = to;
        self.last = Some((now, from, to, reason));
        out.push(Action::Transition { from, to, reason });
    }

    fn become_master(&mut self, now: Duration, reason: Reason, out: &mut Vec<Action>) {
        out.push(Action::SendAdvert {
            priority: self.priority(),
        });
        self.master_down_timer = None;
        self.adver_timer = Some(now + centis(self.params.interval_cs.into()));
        self.master = Some(self.params.primary);
        self.go(now, State::Master, reason, out);
    }

    fn become_backup(&mut self, now: Duration, reason: Reason, out: &mut Vec<Action>) {
        self.adver_timer = None;
        self.master_down_timer = Some(now + self.master_down());
        if self.master == Some(self.params.primary) {
            self.master = None;
        }
        self.go(now, State::Backup, reason, out);
    }

    fn become_fault(&mut self, now: Duration, out: &mut Vec<Action>) {
        if self.state == State::Master {
            // Resign so that a backup takes over after its skew time rather
            // than after a whole master-down interval.
            out.push(Action::SendAdvert {
                priority: PRIORITY_RESIGN,
            });
            self.master = None;
        }
        self.adver_timer = None;
        self.master_down_timer = None;
        self.go(now, State::Fault, Reason::TrackingFailed, out);
    }

    /// Fires expired timers.
    pub fn poll(&mut self, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            State::Backup if self.master_down_timer.is_some_and(|t| now >= t) => {
                let reason = if self.resigned {
                    Reason::MasterResigned
                } else {
                    Reason::MasterDown
                };
                self.resigned = false;
                self.become_master(now, reason, &mut out);
            }
            State::Master if self.adver_timer.is_some_and(|t| now >= t) => {
                out.push(Action::SendAdvert {
                    priority: self.priority(),
                });
                self.adver_timer = Some(now + centis(self.params.interval_cs.into()));
            }
            _ => {}
        }
        out
    }

    pub fn handle(&mut self, now: Duration, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Startup if self.state == State::Init => {
                self.master_interval_cs = self.params.interval_cs;
                if self.fault {
                    self.become_fault(now, &mut out);
                } else {
                    self.become_backup(now, Reason::Startup, &mut out);
                }
            }
            Event::Startup => {}
            Event::Resume if self.state == State::Init => {
                self.master_interval_cs = self.params.interval_cs;
                if self.fault {
                    self.become_fault(now, &mut out);
                } else {
                    self.become_master(now, Reason::Resumed, &mut out);
                }
            }
            Event::Resume => {}
            Event::Shutdown => {
                if self.state == State::Master {
                    out.push(Action::SendAdvert {
                        priority: PRIORITY_RESIGN,
                    });
                }
                self.adver_timer = None;
                self.master_down_timer = None;
                self.master = None;
                if self.state != State::Init {
                    self.go(now, State::Init, Reason::Shutdown, &mut out);
                }
            }
            Event::Tracking { fault, penalty } => {
                self.penalty = penalty;
                self.fault = fault;
                match self.state {
                    State::Backup | State::Master if fault => self.become_fault(now, &mut out),
                    State::Fault if !fault => {
                        self.master_interval_cs = self.params.interval_cs;
                        self.become_backup(now, Reason::TrackingRecovered, &mut out);
                    }
                    _ => {}
                }
            }
            Event::Advert {
                from,
                priority,
                interval_cs,
            } => self.advert(now, from, priority, interval_cs, &mut out),
        }
        out
    }

    fn advert(
        &mut self,
        now: Duration,
        from: IpAddr,
        priority: u8,
        interval_cs: u16,
        out: &mut Vec<Action>,
    ) {
        let ours = self.priority();
        match self.state {
            State::Backup => {
                if priority == PRIORITY_RESIGN {
                    // 6.4.2: Master_Down_Timer = Skew_Time.
                    self.master_down_timer = Some(now + self.skew());
                    self.master = None;
                    self.resigned = true;
                } else if !self.params.preempt || priority >= ours {
                    self.master_interval_cs = interval_cs;
                    self.master_down_timer = Some(now + self.master_down());
                    self.master = Some(from);
                    self.resigned = false;
                }
                // Else: preempting a lower-priority master; let our timer
                // run out and take over.
            }
            State::Master => {
                if priority == PRIORITY_RESIGN {
                    // Another master resigned: make sure everyone hears us.
                    out.push(Action::SendAdvert { priority: ours });
                    self.adver_timer = Some(now + centis(self.params.interval_cs.into()));
                } else if priority > ours
                    || (priority == ours && addr_key(from) > addr_key(self.params.primary))
                {
                    self.master_interval_cs = interval_cs;
                    self.master = Some(from);
                    self.resigned = false;
                    self.become_backup(now, Reason::Preempted { by: from, priority }, out);
                }
            }
            State::Init | State::Fault => {
                // Not participating, but remember who serves.
                if priority != PRIORITY_RESIGN {
                    self.master = Some(from);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
