//! Who is on the other end of a control-socket connection: the kernel's
//! record of the process that connected.
//!
//! `SO_PEERCRED` gives its user, group and process id as they were at
//! `connect(2)`. The supplementary groups are not in it; they are read
//! from `/proc/<pid>/status`, which alone would race: the process may
//! have exited and its pid been given to another before the read. So the
//! read is pinned to the process with `SO_PEERPIDFD` (Linux 6.5), a pidfd
//! the kernel took at `connect(2)`: after reading the status, the pidfd's
//! `Pid:` in `/proc/self/fdinfo` must still be that pid. A pidfd of an
//! exited process says -1, and a pid is not reused while its process
//! lives, so a status read between the two belonged to the process that
//! connected. (`SO_PEERGROUPS` would give the groups at connect time
//! directly, but no crate xlb uses wraps it, and xlb keeps `unsafe` to the
//! BPF boundary.) The groups are then the process's current ones, which
//! it can only have grown with privilege (`CAP_SETGID`).

use std::os::fd::{AsFd, AsRawFd as _};

/// The credentials of a connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    /// Its effective group id at `connect(2)`.
    pub gid: u32,
    pub pid: Option<i32>,
    /// Its supplementary groups, or why they could not be read safely
    /// (then only `uid` and `gid` count).
    pub groups: Result<Vec<u32>, String>,
}

impl Peer {
    /// The credentials of the process that connected `stream`; `None` if
    /// the kernel gave none.
    pub fn of(stream: &tokio::net::UnixStream) -> Option<Peer> {
        let cred = stream.peer_cred().ok()?;
        // 0: the peer is in a PID namespace this process cannot see.
        let pid = cred.pid().filter(|&p| p > 0);
        let groups = match pid {
            Some(pid) => groups_of(stream, pid),
            None => Err("the kernel gave no process id for it".to_owned()),
        };
        Some(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid,
            groups,
        })
    }

    /// Whether the peer is in group `gid`, as its effective or a
    /// supplementary group.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.as_ref().is_ok_and(|g| g.contains(&gid))
    }
}

fn groups_of(socket: &impl AsFd, pid: i32) -> Result<Vec<u32>, String> {
    use nix::sys::socket::{getsockopt, sockopt::PeerPidfd};
    let pidfd = getsockopt(socket, PeerPidfd)
        .map_err(|e| format!("SO_PEERPIDFD: {e} (it needs Linux 6.5 or later)"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))
        .map_err(|e| format!("reading the pidfd's fdinfo: {e}"))?;
    if fdinfo_pid(&info) != Some(pid) {
        return Err(format!(
            "process {pid} exited before its groups could be read"
        ));
    }
    status_groups(&status)
}

/// The `Pid:` of a pidfd's fdinfo (-1 once the process has exited).
fn fdinfo_pid(info: &str) -> Option<i32> {
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The `Groups:` of `/proc/<pid>/status` (empty for a process with
/// none).
fn status_groups(status: &str) -> Result<Vec<u32>, String> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .ok_or("no Groups: line in its /proc status")?;
    line.split_whitespace()
        .map(|g| {
            g.parse()
                .map_err(|_| format!("Groups: {g:?} in its /proc status is not a gid"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_pid_come_from_the_kernels_text() {
        let status = "Name:\tcat\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n\
                      FDSize:\t64\nGroups:\t4 24 27 1000 \nNStgid:\t9\n";
        assert_eq!(status_groups(status), Ok(vec![4, 24, 27, 1000]));
        assert_eq!(status_groups("Name:\tx\nGroups:\t\n"), Ok(vec![]));
        assert!(status_groups("Name:\tx\n").is_err());
        assert!(status_groups("Groups:\t4 x\n").is_err());
        assert_eq!(
            fdinfo_pid(
                "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1\nPid:\t4242\nNSpid:\t4242\n"
            ),
            Some(4242)
        );
        assert_eq!(fdinfo_pid("Pid:\t-1\nNSpid:\t-1\n"), Some(-1));
        assert_eq!(fdinfo_pid("pos:\t0\n"), None);
    }

    /// Both ends in this process: the peer is this process, with this
    /// process's own groups.
    #[tokio::test]
    async fn a_peer_is_the_process_that_connected_with_its_groups() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let peer = Peer::of(&a).expect("credentials of a socketpair");
        assert_eq!(peer.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(peer.gid, nix::unistd::getegid().as_raw());
        assert_eq!(peer.pid, Some(std::process::id() as i32));
        let mut want: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        let mut got = peer.groups.clone().unwrap();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want);
        assert!(peer.in_group(peer.gid));
    }
}
