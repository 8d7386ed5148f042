//! Who may talk to xlb, end to end: the real `xlb run` in a namespace, the
//! CLI run as other users (numeric uids and gids set by `setpriv` before it
//! execs `xlb`; nothing is added to /etc/passwd or /etc/group), and the
//! files xlb refuses to trust. Needs root; each test has its own topology.

use std::{
    net::IpAddr,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use xlb_testbed::config::{Backend, ConnSync, Vip, XlbConfig};
use xlb_testbed::running::{User, require_root, wait_ready, xlb_cli, xlb_exe};
use xlb_testbed::topology::{Topology, VIP_PORT, Xlb, spawn_xlb, status_vip};

/// `control_socket_group` and `control_socket_admin_group`: ids in no
/// group database (near the top of the 32-bit range, below (gid_t)-2).
const READ_GID: u32 = 4_200_000_001;
const ADMIN_GID: u32 = 4_200_000_002;

fn user(uid: u32, groups: &[u32]) -> User {
    User {
        uid,
        gid: uid,
        groups: groups.to_vec(),
    }
}

/// In neither group.
fn outsider() -> User {
    user(4_200_000_010, &[])
}
fn reader() -> User {
    user(4_200_000_011, &[READ_GID])
}
fn admin() -> User {
    user(4_200_000_012, &[READ_GID, ADMIN_GID])
}
/// In the admin group but not the socket's: the socket has one group.
fn admin_only() -> User {
    user(4_200_000_013, &[ADMIN_GID])
}

/// One nginx backend behind VIP web4.
fn config(topo: &Topology) -> XlbConfig {
    topo.lb_config().vip(
        Vip::new("web4", topo.vip4(), VIP_PORT)
            .backends([Backend::new(IpAddr::from(topo.backend_addr4(1))).name("backend-1")]),
    )
}

/// Starts `xlb run` on `config` with its control socket at `socket`.
fn start(topo: &Topology, config: &XlbConfig, socket: &Path) -> Xlb {
    let path = config.write(&topo.config_path()).expect("write config");
    spawn_xlb(
        topo.lb(),
        "xlb",
        &xlb_exe(),
        &path,
        &[],
        socket,
        topo.dir().join("xlb.log"),
    )
    .expect("start xlb")
}

/// Waits (10 s at most) for an `xlb run` that must refuse to start; its
/// log.
fn refused(xlb: Xlb) -> String {
    xlb.wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("it should have refused to start: {e:#}"));
    xlb.log()
}

/// One request as one user: what it proves, who, the CLI's arguments, and
/// the output it must succeed with (`Ok`) or fail with (`Err`).
type Row<'a> = (&'a str, User, Vec<&'a str>, Result<String, String>);

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_socket_lets_in_by_mode_and_carries_out_each_request_by_group() {
    if !require_root("the_socket_lets_in_by_mode_and_carries_out_each_request_by_group") {
        return;
    }
    let topo = Topology::dsr(1).unwrap_or_else(|e| panic!("topology: {e:#}"));
    // The topology's own directory stands for /run: searchable by all,
    // whatever umask this test runs under. xlb makes `run/` itself.
    std::fs::set_permissions(topo.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = topo.dir().join("run").join("xlb.sock");
    let cfg = config(&topo)
        .control_socket(&socket)
        .control_socket_groups(Some(READ_GID), Some(ADMIN_GID));
    let xlb = start(&topo, &cfg, &socket);
    wait_ready(&xlb);

    let s = std::fs::symlink_metadata(&socket).unwrap();
    assert!(s.file_type().is_socket());
    assert_eq!(
        (s.mode() & 0o7777, s.uid(), s.gid()),
        (0o660, 0, READ_GID),
        "the socket: mode, owner, group"
    );
    let d = std::fs::metadata(socket.parent().unwrap()).unwrap();
    assert_eq!(
        (d.mode() & 0o7777, d.uid(), d.gid()),
        (0o750, 0, READ_GID),
        "the directory xlb made"
    );

    let needs_admin = |what: &str, u: &User| {
        format!(
            "permission denied: {what} needs root or gid {ADMIN_GID}; this request came from \
             uid {} (gid {}, groups {READ_GID})",
            u.uid, u.gid
        )
    };
    // The directory (0750, the read group) already keeps them out.
    let cannot_enter = |u: &User| {
        format!(
            "Permission denied (os error 13) (uid {} may not enter {}",
            u.uid,
            socket.parent().unwrap().display()
        )
    };
    let (r, a) = (reader(), admin());
    let rows: Vec<Row> = vec![
        (
            "in neither group: the mode keeps it out",
            outsider(),
            vec!["status"],
            Err(cannot_enter(&outsider())),
        ),
        (
            "admin group only: the socket's group is the read group",
            admin_only(),
            vec!["reload"],
            Err(cannot_enter(&admin_only())),
        ),
        (
            "reader: status",
            r.clone(),
            vec!["status"],
            Ok("web4".into()),
        ),
        (
            "reader: reload",
            r.clone(),
            vec!["reload"],
            Err(needs_admin("xlb reload", &r)),
        ),
        (
            "reader: drain",
            r.clone(),
            vec!["backend", "drain", "web4", "backend-1"],
            Err(needs_admin("xlb backend drain", &r)),
        ),
        (
            "reader: add",
            r.clone(),
            vec!["backend", "add", "web4", "198.18.0.12"],
            Err(needs_admin("xlb backend add", &r)),
        ),
        (
            "reader: trace",
            r.clone(),
            vec!["trace", "--vip", "web4", "--count", "1", "--seconds", "1"],
            Err(needs_admin("xlb trace", &r)),
        ),
        (
            "reader: down",
            r.clone(),
            vec!["down"],
            Err(needs_admin("xlb down", &r)),
        ),
        (
            "admin: reload",
            a.clone(),
            vec!["reload"],
            Ok("reloaded".into()),
        ),
        (
            "admin: drain",
            a.clone(),
            vec!["backend", "drain", "web4", "backend-1"],
            Ok("web4/backend-1: drained".into()),
        ),
        (
            "admin: undrain",
            a.clone(),
            vec!["backend", "undrain", "web4", "backend-1"],
            Ok("web4/backend-1: undrained".into()),
        ),
    ];
    for (what, u, args, want) in rows {
        let out = u.xlb(&socket, &args);
        let printed = text(&out);
        match want {
            Ok(part) => assert!(
                out.status.success() && printed.contains(&part),
                "{what}: `xlb {}` should succeed printing {part:?}: {printed}",
                args.join(" ")
            ),
            Err(part) => assert!(
                !out.status.success() && printed.contains(&part),
                "{what}: `xlb {}` should fail saying {part:?}: {printed}",
                args.join(" ")
            ),
        }
    }
    // Nothing a refused request asked for happened; root may do it all.
    let s = xlb.status().expect("status as root");
    let web4 = status_vip(&s, "web4").unwrap();
    assert_eq!(web4.backends.len(), 1, "no backend was added: {s}");
    for args in [
        vec!["backend", "weight", "web4", "backend-1", "2"],
        vec!["backend", "add", "web4", "198.18.0.12"],
        vec!["backend", "remove", "web4", "198.18.0.12"],
        vec!["reload"],
    ] {
        let out = xlb_cli(&socket, &args);
        assert!(out.status.success(), "root: xlb {args:?}: {}", text(&out));
    }
    assert!(
        xlb.log().contains(&needs_admin("xlb down", &r)),
        "refusals are logged:\n{}",
        xlb.log_tail(30)
    );
    assert!(xlb.stop(Duration::from_secs(5)), "xlb stopped on SIGTERM");
    assert!(
        !socket.exists() && !socket.parent().unwrap().exists(),
        "the socket and the directory xlb made are removed when it stops"
    );
}

/// The socket's own mode keeps others out, in a directory anyone may
/// enter (`/run`, say).
#[test]
fn without_a_group_only_root_may_connect() {
    if !require_root("without_a_group_only_root_may_connect") {
        return;
    }
    let topo = Topology::dsr(1).unwrap_or_else(|e| panic!("topology: {e:#}"));
    std::fs::set_permissions(topo.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = topo.control_socket();
    let xlb = start(&topo, &config(&topo), &socket);
    wait_ready(&xlb);
    let s = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!((s.mode() & 0o7777, s.uid(), s.gid()), (0o600, 0, 0));
    assert_eq!(
        mode_of(topo.dir()),
        0o755,
        "a directory xlb did not make is left alone"
    );
    // Whatever its groups.
    let out = user(4_200_000_014, &[READ_GID, ADMIN_GID, 0]).xlb(&socket, &["status"]);
    assert!(
        !out.status.success()
            && text(&out).contains(
                "Permission denied (os error 13) (the socket is mode 0600: only uid 0 may connect"
            ),
        "{}",
        text(&out)
    );
    let out = xlb_cli(&socket, &["status"]);
    assert!(out.status.success(), "root: {}", text(&out));
    assert!(xlb.stop(Duration::from_secs(5)), "xlb stopped on SIGTERM");
    assert!(topo.dir().exists() && !socket.exists());
}

/// A key file written with mode `mode` from the start (never wider).
fn write_key(path: &Path, mode: u32) {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .expect("create the key");
    std::io::Write::write_all(
        &mut f,
        b"6a0b3c9d8e7f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081920a\n",
    )
    .unwrap();
    // The umask may have narrowed it; the test wants exactly `mode`.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn a_foreign_state_dir_and_an_open_sync_key_are_refused_and_an_open_state_dir_made_private() {
    if !require_root(
        "a_foreign_state_dir_and_an_open_sync_key_are_refused_and_an_open_state_dir_made_private",
    ) {
        return;
    }
    let topo = Topology::dsr(1).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let socket = topo.control_socket();
    let state: PathBuf = topo.state_dir("lb");
    let key = topo.dir().join("sync.key");
    let with_sync = |c: XlbConfig| XlbConfig {
        sync: Some(ConnSync {
            // Nobody answers there; the sync runs all the same.
            peers: Some(vec!["198.18.0.250".parse().unwrap()]),
            key_file: key.clone(),
            ..ConnSync::default()
        }),
        ..c
    };

    // Another user's state directory: refused before anything is pinned.
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(outsider().uid), None).unwrap();
    let log = refused(start(&topo, &config(&topo), &socket));
    assert!(
        log.contains(&format!(
            "state_dir {} belongs to uid {}, not to xlb's uid 0",
            state.display(),
            outsider().uid
        )),
        "{log}"
    );
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        0,
        "nothing pinned"
    );

    // Ours but open to all, and a key others may read: refused at start,
    // before the data plane (or the state directory) is touched.
    std::os::unix::fs::chown(&state, Some(0), None).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    write_key(&key, 0o644);
    let log = refused(start(&topo, &with_sync(config(&topo)), &socket));
    assert!(
        log.contains(&format!(
            "sync key {} has mode 0644: it must not be accessible to group or others (chmod 600 {})",
            key.display(),
            key.display()
        )),
        "{log}"
    );
    assert_eq!(mode_of(&state), 0o755, "not opened yet");
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        0,
        "nothing pinned"
    );

    // A private key: xlb runs, and has made its state directory private.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let xlb = start(&topo, &with_sync(config(&topo)), &socket);
    let s = wait_ready(&xlb);
    assert!(s.sync.is_some(), "sync runs");
    assert_eq!(mode_of(&state), 0o700);
    assert!(
        xlb.log()
            .contains("state_dir was open to group or others: made 0700"),
        "{}",
        xlb.log_tail(30)
    );

    // A key opened up while xlb runs: every reload is refused, saying so,
    // and the running sync goes on.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = xlb_cli(&socket, &["reload"]);
    assert!(
        !out.status.success()
            && text(&out).contains(&format!(
                "reload rejected, the running config stays: sync key {} has mode 0640",
                key.display()
            ))
            && text(&out).contains("chmod 600"),
        "{}",
        text(&out)
    );
    assert!(xlb.status().unwrap().sync.is_some(), "the sync goes on");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = xlb_cli(&socket, &["reload"]);
    assert!(out.status.success(), "{}", text(&out));

    // A configuration file others may write: reloads are refused, saying
    // so, and the running one stays; then xlb will not start on it.
    let conf = topo.config_path();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o666)).unwrap();
    let open = format!(
        "{}: configuration file has mode 0666: others may write it, and so choose what xlb \
         forwards (chmod o-w {})",
        conf.display(),
        conf.display()
    );
    let out = xlb_cli(&socket, &["reload"]);
    assert!(
        !out.status.success() && text(&out).contains(&open),
        "{}",
        text(&out)
    );
    assert!(
        xlb.status().unwrap().sync.is_some(),
        "the running config stays"
    );
    assert!(xlb.stop(Duration::from_secs(10)), "xlb stops on SIGTERM");
    let xlb = spawn_xlb(
        topo.lb(),
        "xlb",
        &xlb_exe(),
        &conf,
        &[],
        &socket,
        topo.dir().join("xlb-open-config.log"),
    )
    .expect("start xlb");
    let log = refused(xlb);
    assert!(log.contains(&open), "{log}");
}
