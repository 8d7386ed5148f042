//! The `[sync]` section: connection-table sync between xlb nodes
//! (reference: the `[sync]` section of `docs/config.md`, and
//! `docs/operations.md` on stateful failover).

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::Validator;
use super::checks::{check_ifname, check_unicast};

/// UDP port of the sync messages (IPVS uses 8848; xlb's format differs,
/// so it does not share the port).
pub const DEFAULT_PORT: u16 = 8849;
/// How often the flows seen since the last sweep are sent again, so that
/// the peers' copies of long-lived flows do not time out.
pub const DEFAULT_REFRESH_S: u32 = 10;
/// How far a message's send time may be from the receiver's clock.
pub const DEFAULT_MAX_SKEW_S: u32 = 30;

/// Where the sync messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncPeers {
    /// Unicast to each of these, and accepted only from them.
    Unicast(Vec<IpAddr>),
    /// To this multicast group, joined on `interface`; accepted from any
    /// source that holds the key.
    Multicast(IpAddr),
}

/// Share the connection table with the other nodes, so that a node that
/// takes over (VRRP failover, ECMP rehash) forwards established flows to
/// the backend they started on, NAT replies included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    pub peers: SyncPeers,
    pub port: u16,
    /// The NIC that joins and sends to the multicast group (default: the
    /// config's `interface`).
    pub interface: Option<String>,
    /// The pre-shared key: a file readable by its owner only.
    pub key_file: PathBuf,
    pub refresh_s: u32,
    pub max_skew_s: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSync {
    #[serde(default)]
    peers: Option<Spanned<Vec<Spanned<IpAddr>>>>,
    #[serde(default)]
    group: Option<Spanned<IpAddr>>,
    #[serde(default)]
    port: Option<Spanned<i64>>,
    #[serde(default)]
    interface: Option<Spanned<String>>,
    key_file: Spanned<String>,
    #[serde(default)]
    refresh_s: Option<Spanned<i64>>,
    #[serde(default)]
    max_skew_s: Option<Spanned<i64>>,
}

impl Validator<'_> {
    pub(super) fn sync(&mut self, raw: &Spanned<RawSync>) -> SyncConfig {
        let r = raw.get_ref();
        let peers = match (&r.peers, &r.group) {
            (Some(_), Some(g)) => {
                self.error(
                    g.span(),
                    "sync.group",
                    "give either peers (unicast) or group (multicast), not both",
                );
                SyncPeers::Unicast(Vec::new())
            }
            (None, None) => {
                self.error(
                    raw.span(),
                    "sync",
                    "needs peers = [\"address\", ...] (unicast) or group = \"address\" (multicast)",
                );
                SyncPeers::Unicast(Vec::new())
            }
            (Some(list), None) => {
                if list.get_ref().is_empty() {
                    self.error(list.span(), "sync.peers", "lists no peer");
                }
                let mut peers: Vec<IpAddr> = Vec::new();
                for (i, p) in list.get_ref().iter().enumerate() {
                    let a = *p.get_ref();
                    let field = format!("sync.peers[{i}]");
                    if let Err(why) = check_unicast(a) {
                        self.error(p.span(), field, format!("{a} cannot be a peer: {why}"));
                    } else if a.is_loopback() {
                        self.error(p.span(), field, format!("{a} is a loopback address"));
                    } else if peers.contains(&a) {
                        self.error(p.span(), field, format!("{a} is listed twice"));
                    } else {
                        peers.push(a);
                    }
                }
                SyncPeers::Unicast(peers)
            }
            (None, Some(g)) => {
                let a = *g.get_ref();
                if !a.is_multicast() {
                    self.error(
                        g.span(),
                        "sync.group",
                        format!("{a} is not a multicast address"),
                    );
                }
                SyncPeers::Multicast(a)
            }
        };
        let port = self.int_in(&r.port, "sync.port", 1..=65_535, DEFAULT_PORT);
        let interface = r.interface.as_ref().map(|i| {
            let name = i.get_ref().clone();
            if let Err(why) = check_ifname(&name) {
                self.error(
                    i.span(),
                    "sync.interface",
                    format!("{name:?} is not a valid interface name: {why}"),
                );
            }
            name
        });
        let key_file = PathBuf::from(r.key_file.get_ref());
        if !key_file.is_absolute() {
            self.error(
                r.key_file.span(),
                "sync.key_file",
                format!("{:?} must be an absolute path", r.key_file.get_ref()),
            );
        }
        let refresh_s = self.int_in(&r.refresh_s, "sync.refresh_s", 1..=3600, DEFAULT_REFRESH_S);
        let max_skew_s = self.int_in(
            &r.max_skew_s,
            "sync.max_skew_s",
            1..=3600,
            DEFAULT_MAX_SKEW_S,
        );
        SyncConfig {
            peers,
            port,
            interface,
            key_file,
            refresh_s,
            max_skew_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const BASE: &str = "interface = \"eth0\"\n";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}{extra}"), "xlb.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn unicast_peers_with_defaults() {
        let c = parse(
            "[sync]\npeers = [\"198.18.0.3\", \"fd00:18::3\"]\nkey_file = \"/etc/xlb/sync.key\"\n",
        )
        .unwrap();
        let s = c.sync.unwrap();
        assert_eq!(
            s.peers,
            SyncPeers::Unicast(vec![
                "198.18.0.3".parse().unwrap(),
                "fd00:18::3".parse().unwrap()
            ])
        );
        assert_eq!(s.port, DEFAULT_PORT);
        assert_eq!(s.interface, None);
        assert_eq!(s.key_file, PathBuf::from("/etc/xlb/sync.key"));
        assert_eq!(s.refresh_s, DEFAULT_REFRESH_S);
        assert_eq!(s.max_skew_s, DEFAULT_MAX_SKEW_S);
    }

    #[test]
    fn multicast_group_and_every_field() {
        let c = parse(
            "[sync]\ngroup = \"239.18.0.81\"\nport = 9000\ninterface = \"eth1\"\n\
             key_file = \"/k\"\nrefresh_s = 5\nmax_skew_s = 10\n",
        )
        .unwrap();
        let s = c.sync.unwrap();
        assert_eq!(
            s.peers,
            SyncPeers::Multicast("239.18.0.81".parse().unwrap())
        );
        assert_eq!(
            (s.port, s.interface.as_deref(), s.refresh_s, s.max_skew_s),
            (9000, Some("eth1"), 5, 10)
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let errs = parse(
            "[sync]\npeers = [\"198.18.0.3\", \"198.18.0.3\", \"224.0.0.1\", \"127.0.0.1\"]\n\
             key_file = \"sync.key\"\nport = 0\nrefresh_s = 0\ninterface = \"a/b\"\n",
        )
        .unwrap_err();
        for want in [
            "sync.peers[1]: 198.18.0.3 is listed twice",
            "sync.peers[2]: 224.0.0.1 cannot be a peer: multicast address",
            "sync.peers[3]: 127.0.0.1 is a loopback address",
            "sync.key_file: \"sync.key\" must be an absolute path",
            "sync.port: 0 is out of range 1..=65535",
            "sync.refresh_s: 0 is out of range 1..=3600",
            "sync.interface: \"a/b\" is not a valid interface name",
        ] {
            assert!(errs.contains(want), "{want}: {errs}");
        }
    }

    #[test]
    fn peers_or_group_exactly_one() {
        let both =
            parse("[sync]\npeers = [\"198.18.0.3\"]\ngroup = \"239.1.1.1\"\nkey_file = \"/k\"\n")
                .unwrap_err();
        assert!(both.contains("sync.group: give either peers"), "{both}");
        let none = parse("[sync]\nkey_file = \"/k\"\n").unwrap_err();
        assert!(none.contains("sync: needs peers"), "{none}");
        let unicast_group =
            parse("[sync]\ngroup = \"198.18.0.3\"\nkey_file = \"/k\"\n").unwrap_err();
        assert!(
            unicast_group.contains("sync.group: 198.18.0.3 is not a multicast address"),
            "{unicast_group}"
        );
        let no_key = parse("[sync]\npeers = [\"198.18.0.3\"]\n").unwrap_err();
        assert!(no_key.contains("key_file"), "{no_key}");
    }

    #[test]
    fn the_docs_example_is_valid() {
        let block = super::super::tests::doc_blocks("toml")
            .into_iter()
            .find(|b| b.starts_with("[sync]"))
            .expect("a toml block starting with [sync] in docs/config.md");
        let s = parse(&block).unwrap().sync.unwrap();
        assert_eq!(
            s.peers,
            SyncPeers::Unicast(vec!["198.18.0.3".parse().unwrap()])
        );
        assert_eq!(s.key_file, PathBuf::from("/etc/xlb/sync.key"));
    }
}
