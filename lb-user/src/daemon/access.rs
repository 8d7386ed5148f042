//! Who may ask what on the control socket. The socket's mode decides who
//! may connect at all (`ctl::bind`); this decides, for every request, from
//! the sender's credentials (`ctl::Peer`), whether it is carried out.
//!
//! - Reading (`xlb status`): root, the daemon's own user, the admin group
//!   and the read group.
//! - Everything else changes what the node does, or shows its traffic:
//!   reload, drain / undrain / weight, backend add / remove, down, and
//!   trace (it turns on per-packet records in the data plane and shows
//!   clients' addresses and ports as they arrive): root, the daemon's own
//!   user and the admin group only.

use anyhow::{Result, anyhow};

use crate::api::{BackendAction, Request};
use crate::config::{Config, GroupRef};
use crate::ctl::{Peer, SocketAccess};

/// A configured group, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub gid: u32,
    /// How refusals name it: `group xlb-admin`, or `gid 4711` when it has
    /// no name.
    pub label: String,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Read,
    Admin,
}

/// The rules of one running daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The daemon's effective uid: it owns the socket, and may do
    /// everything (as root may).
    pub owner: u32,
    /// `control_socket_group`: may connect and read.
    pub read: Option<Group>,
    /// `control_socket_admin_group`: may do everything.
    pub admin: Option<Group>,
}

impl Policy {
    /// The policy `config` asks for, its group names looked up now.
    pub fn of(config: &Config) -> Result<Policy> {
        Ok(Policy {
            owner: nix::unistd::geteuid().as_raw(),
            read: resolve(config.control_socket_group.as_ref(), "control_socket_group")?,
            admin: resolve(
                config.control_socket_admin_group.as_ref(),
                "control_socket_admin_group",
            )?,
        })
    }

    /// The socket file's group: who may connect. The read group when there
    /// is one (the admins must be in it too to connect: a file has one
    /// group), else the admin group.
    pub fn socket_group(&self) -> Option<&Group> {
        self.read.as_ref().or(self.admin.as_ref())
    }

    /// The socket file's group and modes (see [`Policy::socket_group`]).
    pub fn socket_access(&self) -> SocketAccess {
        SocketAccess {
            group: self.socket_group().map(|g| g.gid),
        }
    }

    /// `Ok` if `peer` may have `request` carried out; else the refusal to
    /// send back.
    pub fn check(&self, request: &Request, peer: Option<&Peer>) -> Result<(), String> {
        let what = command(request);
        let needs = level(request);
        let Some(peer) = peer else {
            return Err(format!(
                "permission denied: {what} needs {}, and the sender's credentials are unknown",
                self.who(needs)
            ));
        };
        let member = |g: &Option<Group>| g.as_ref().is_some_and(|g| peer.in_group(g.gid));
        let allowed = peer.uid == 0
            || peer.uid == self.owner
            || member(&self.admin)
            || (needs == Level::Read && member(&self.read));
        if allowed {
            return Ok(());
        }
        let groups = match &peer.groups {
            Ok(g) if g.is_empty() => String::new(),
            Ok(g) => format!(
                ", groups {}",
                g.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
            ),
            Err(why) => format!("; its other groups are unknown: {why}"),
        };
        Err(format!(
            "permission denied: {what} needs {}; this request came from uid {} (gid {}{groups})",
            self.who(needs),
            peer.uid,
            peer.gid
        ))
    }

    /// Who may do what needs `level`, as a refusal says it.
    fn who(&self, level: Level) -> String {
        let mut who = vec![if self.owner == 0 {
            "root".to_owned()
        } else {
            format!("root or uid {} (xlb's own)", self.owner)
        }];
        who.extend(self.admin.iter().map(|g| g.label.clone()));
        if level == Level::Read {
            who.extend(
                self.read
                    .iter()
                    .filter(|r| Some(r.gid) != self.admin.as_ref().map(|a| a.gid))
                    .map(|g| g.label.clone()),
            );
        }
        match who.len() {
            1 => who.remove(0),
            _ => {
                let last = who.pop().expect("two or more");
                format!("{} or {last}", who.join(", "))
            }
        }
    }
}

fn resolve(group: Option<&GroupRef>, field: &str) -> Result<Option<Group>> {
    use nix::unistd::{Gid, Group as NssGroup};
    let Some(group) = group else { return Ok(None) };
    Ok(Some(match group {
        GroupRef::Name(name) => {
            let found = NssGroup::from_name(name)
                .map_err(|e| anyhow!("{field}: looking up group {name:?}: {e}"))?
                .ok_or_else(|| {
                    anyhow!("{field}: no group {name:?} (not in /etc/group or NSS); create it (groupadd {name}) or give a numeric gid")
                })?;
            Group {
                gid: found.gid.as_raw(),
                label: format!("group {name}"),
            }
        }
        GroupRef::Id(gid) => Group {
            gid: *gid,
            label: match NssGroup::from_gid(Gid::from_raw(*gid)) {
                Ok(Some(g)) => format!("group {} (gid {gid})", g.name),
                _ => format!("gid {gid}"),
            },
        },
    }))
}

/// What `request` needs.
pub fn level(request: &Request) -> Level {
    match request {
        Request::Status => Level::Read,
        Request::Reload
        | Request::Backend { .. }
        | Request::BackendAdd { .. }
        | Request::BackendRemove { .. }
        | Request::Down
        | Request::Trace(_)
        | Request::TraceStop { .. } => Level::Admin,
    }
}

/// The command line that sends `request`, as refusals name it.
pub fn command(request: &Request) -> &'static str {
    match request {
        Request::Status => "xlb status",
        Request::Reload => "xlb reload",
        Request::Backend { action, .. } => match action {
            BackendAction::Drain => "xlb backend drain",
            BackendAction::Undrain => "xlb backend undrain",
            BackendAction::Weight(_) => "xlb backend weight",
        },
        Request::BackendAdd { .. } => "xlb backend add",
        Request::BackendRemove { .. } => "xlb backend remove",
        Request::Down => "xlb down",
        Request::Trace(_) => "xlb trace",
        Request::TraceStop { .. } => "xlb trace (stopping it)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackendSpec, TraceSpec};

    const ADMIN: u32 = 4711;
    const READ: u32 = 4712;

    fn policy(read: bool, admin: bool) -> Policy {
        Policy {
            owner: 0,
            read: read.then(|| Group {
                gid: READ,
                label: "group xlb-read".into(),
            }),
            admin: admin.then(|| Group {
                gid: ADMIN,
                label: "group xlb-admin".into(),
            }),
        }
    }

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid,
            pid: Some(1234),
            groups: Ok(groups.to_vec()),
        }
    }

    fn every_request() -> Vec<Request> {
        let b = |action| Request::Backend {
            vip: "web".into(),
            backend: "b1".into(),
            action,
        };
        vec![
            Request::Status,
            Request::Reload,
            b(BackendAction::Drain),
            b(BackendAction::Undrain),
            b(BackendAction::Weight(3)),
            Request::BackendAdd {
                vip: "web".into(),
                backend: BackendSpec {
                    address: "198.18.0.7".parse().unwrap(),
                    port: None,
                    weight: None,
                    tier: None,
                },
            },
            Request::BackendRemove {
                vip: "web".into(),
                backend: "b1".into(),
            },
            Request::Down,
            Request::Trace(TraceSpec {
                vip: None,
                client: None,
                port: None,
                drops_only: false,
                seconds: 5,
            }),
            Request::TraceStop { id: 1 },
        ]
    }

    /// Every request against every kind of sender, with both groups set:
    /// `R` = only status, `A` = everything, `-` = nothing.
    #[test]
    fn each_request_is_allowed_exactly_to_whom_it_should_be() {
        let p = policy(true, true);
        for (who, sender, may) in [
            ("root", peer(0, 0, &[]), 'A'),
            ("root with other groups", peer(0, 1000, &[1000]), 'A'),
            (
                "admin (supplementary)",
                peer(1000, 1000, &[1000, ADMIN]),
                'A',
            ),
            ("admin (effective gid)", peer(1000, ADMIN, &[]), 'A'),
            ("admin and reader", peer(1000, 1000, &[READ, ADMIN]), 'A'),
            ("reader (supplementary)", peer(1001, 1001, &[READ]), 'R'),
            ("reader (effective gid)", peer(1001, READ, &[]), 'R'),
            ("neither", peer(1002, 1002, &[27, 1002]), '-'),
            ("nobody", peer(65534, 65534, &[]), '-'),
        ] {
            for req in every_request() {
                let want = match may {
                    'A' => true,
                    'R' => req == Request::Status,
                    _ => false,
                };
                let got = p.check(&req, Some(&sender));
                assert_eq!(got.is_ok(), want, "{who}: {}: {got:?}", command(&req));
            }
        }
    }

    #[test]
    fn the_daemons_own_user_may_do_everything_and_unknown_senders_nothing() {
        let p = Policy {
            owner: 990,
            ..policy(false, false)
        };
        for req in every_request() {
            assert!(p.check(&req, Some(&peer(990, 990, &[]))).is_ok());
            let err = p.check(&req, None).unwrap_err();
            assert!(err.contains("credentials are unknown"), "{err}");
        }
        assert_eq!(
            p.check(&Request::Reload, Some(&peer(1000, 1000, &[]))),
            Err(
                "permission denied: xlb reload needs root or uid 990 (xlb's own); this request \
                 came from uid 1000 (gid 1000)"
                    .into()
            )
        );
    }

    #[test]
    fn a_refusal_says_what_was_needed_and_who_asked() {
        let cases = [
            (
                policy(true, true),
                Request::Reload,
                peer(1000, 1000, &[1000, READ]),
                "permission denied: xlb reload needs root or group xlb-admin; this request came \
                 from uid 1000 (gid 1000, groups 1000,4712)",
            ),
            (
                policy(true, true),
                Request::Status,
                peer(1002, 1002, &[]),
                "permission denied: xlb status needs root, group xlb-admin or group xlb-read; \
                 this request came from uid 1002 (gid 1002)",
            ),
            (
                policy(false, false),
                Request::Backend {
                    vip: "web".into(),
                    backend: "b1".into(),
                    action: BackendAction::Drain,
                },
                peer(65534, 65534, &[]),
                "permission denied: xlb backend drain needs root; this request came from uid \
                 65534 (gid 65534)",
            ),
            (
                policy(true, false),
                Request::Down,
                Peer {
                    groups: Err("process 1234 exited before its groups could be read".into()),
                    ..peer(1000, 1000, &[])
                },
                "permission denied: xlb down needs root; this request came from uid 1000 (gid \
                 1000; its other groups are unknown: process 1234 exited before its groups \
                 could be read)",
            ),
        ];
        for (p, req, sender, want) in cases {
            assert_eq!(p.check(&req, Some(&sender)), Err(want.to_owned()));
        }
    }

    #[test]
    fn unknown_groups_count_only_the_effective_gid() {
        let p = policy(true, true);
        let unknown = |gid| Peer {
            groups: Err("SO_PEERPIDFD: ENOPROTOOPT".into()),
            ..peer(1000, gid, &[])
        };
        assert!(p.check(&Request::Reload, Some(&unknown(ADMIN))).is_ok());
        assert!(p.check(&Request::Status, Some(&unknown(READ))).is_ok());
        assert!(p.check(&Request::Status, Some(&unknown(1000))).is_err());
    }

    #[test]
    fn the_socket_belongs_to_the_read_group_else_the_admin_group() {
        assert_eq!(policy(false, false).socket_access().group, None);
        assert_eq!(policy(false, true).socket_access().group, Some(ADMIN));
        assert_eq!(policy(true, false).socket_access().group, Some(READ));
        assert_eq!(policy(true, true).socket_access().group, Some(READ));
    }

    #[test]
    fn numeric_gids_resolve_without_a_group_database_entry() {
        // 4294967294 is in no group database: (gid_t)-2, never allocated.
        let g = resolve(Some(&GroupRef::Id(4_294_967_294)), "control_socket_group")
            .unwrap()
            .unwrap();
        assert_eq!(
            g,
            Group {
                gid: 4_294_967_294,
                label: "gid 4294967294".into()
            }
        );
        let err = resolve(
            Some(&GroupRef::Name("xlb-no-such-group-here".into())),
            "control_socket_admin_group",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("control_socket_admin_group: no group \"xlb-no-such-group-here\""),
            "{err}"
        );
    }
}
