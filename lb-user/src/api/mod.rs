//! Everything that crosses the control socket, and nothing else: the
//! requests `xlb status|reload|backend` send, the replies, and the status
//! they show. The daemon, the CLI and the tests speak these types; they
//! depend on no other module of xlb, so nothing imports in circles through
//! them.

pub mod render;
#[cfg(test)]
mod samples;
#[cfg(test)]
mod schema_tests;
pub mod status;
pub mod trace;

use serde::{Deserialize, Serialize};

pub use status::{
    AnnounceStatus, BackendSource, BackendState, BackendStatus, DataplaneStatus, FeedbackStatus,
    Health, HealthStatus, Status, SyncPeerStatus, SyncStatus, VipStatus, VrrpGroupStatus,
    VrrpStatus, VrrpTransition,
};
pub use trace::{
    MAX_TRACE_SECONDS, TraceBackend, TraceInterface, TraceSpec, TraceStarted, TraceVip,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Re-read the config file, as on SIGHUP.
    Reload,
    /// Drain, undrain or reweight one backend at runtime.
    Backend {
        vip: String,
        backend: String,
        action: BackendAction,
    },
    /// Add a backend to a VIP at runtime (`xlb backend add`).
    BackendAdd {
        vip: String,
        #[serde(flatten)]
        backend: BackendSpec,
    },
    /// Remove a backend added at runtime (`xlb backend remove`).
    /// It finishes its established flows, as one removed from the file.
    BackendRemove {
        vip: String,
        /// Its name or address.
        backend: String,
    },
    /// Take the node out: resign VRRP, withdraw its addresses, detach the
    /// program, remove the pinned state, exit.
    Down,
    /// Start a packet trace (`xlb trace`); it ends by itself after
    /// `seconds`.
    Trace(TraceSpec),
    /// End trace `id` before its time.
    TraceStop {
        id: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    Status(Box<Status>),
    /// A trace started: where to read it.
    Trace(Box<TraceStarted>),
    /// The request was carried out; `message` says what happened.
    Ok {
        message: String,
    },
    Error {
        message: String,
    },
}

/// A runtime change to one backend (`xlb backend ...`), kept until undone or
/// until a reload applies the file again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendAction {
    /// No new flows (weight 0), established ones continue.
    Drain,
    /// Ends a drain: back to the runtime or file weight.
    Undrain,
    /// Replaces the file's weight.
    Weight(u32),
}

/// A backend to add at runtime; what is left out is as in the file
/// (`port`: the VIP's, `weight`: 1, `tier`: 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendSpec {
    pub address: std::net::IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Its backup tier (`tier` in the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let cases = [
            (Request::Status, r#"{"cmd":"status"}"#),
            (Request::Reload, r#"{"cmd":"reload"}"#),
            (Request::Down, r#"{"cmd":"down"}"#),
            (
                Request::Trace(TraceSpec {
                    vip: Some("web".into()),
                    client: None,
                    port: Some(80),
                    drops_only: true,
                    seconds: 30,
                }),
                r#"{"cmd":"trace","vip":"web","port":80,"drops_only":true,"seconds":30}"#,
            ),
            (
                Request::TraceStop { id: 7 },
                r#"{"cmd":"trace_stop","id":7}"#,
            ),
            (
                Request::Backend {
                    vip: "web".into(),
                    backend: "b1".into(),
                    action: BackendAction::Drain,
                },
                r#"{"cmd":"backend","vip":"web","backend":"b1","action":"drain"}"#,
            ),
            (
                Request::Backend {
                    vip: "web".into(),
                    backend: "b1".into(),
                    action: BackendAction::Weight(3),
                },
                r#"{"cmd":"backend","vip":"web","backend":"b1","action":{"weight":3}}"#,
            ),
            (
                Request::BackendAdd {
                    vip: "web".into(),
                    backend: BackendSpec {
                        address: "198.18.0.7".parse().unwrap(),
                        port: None,
                        weight: Some(2),
                        tier: None,
                    },
                },
                r#"{"cmd":"backend_add","vip":"web","address":"198.18.0.7","weight":2}"#,
            ),
            (
                Request::BackendRemove {
                    vip: "web".into(),
                    backend: "198.18.0.7".into(),
                },
                r#"{"cmd":"backend_remove","vip":"web","backend":"198.18.0.7"}"#,
            ),
        ];
        for (req, json) in cases {
            assert_eq!(serde_json::to_string(&req).unwrap(), json);
            assert_eq!(serde_json::from_str::<Request>(json).unwrap(), req);
        }
    }
}
