//! Creating the control socket with its mode and group set before anyone
//! can reach it, and its directory.
//!
//! The socket is bound in a private directory of its own (created 0700,
//! which a umask can only narrow), given its mode and group there, and
//! renamed into place: the path appears only once it accepts (`xlb
//! status` right at start is never refused) and only with its final mode
//! (no one connects through a wider one meanwhile). `fchmod` would not
//! do: on a socket it changes the socket's inode, not the file's.

use std::os::unix::fs::{
    DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _,
};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use super::SocketAccess;

/// The socket file, and its directory if this process created it: both
/// removed on drop (the directory only if nothing else is in it).
#[derive(Debug)]
pub struct SocketFile {
    /// Set once the socket is in place.
    path: Option<PathBuf>,
    created_dir: Option<PathBuf>,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
        if let Some(dir) = &self.created_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Binds and listens on `socket` with the mode and group `access` says,
/// creating its directory if it is missing. Refuses if another xlb
/// answers there, or if the path is something other than a socket.
pub fn bind(socket: &Path, access: SocketAccess) -> Result<(UnixListener, SocketFile)> {
    let dir = socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let created_dir = prepare_dir(dir, access)?;
    // From here on an error still removes the directory it made.
    let mut file = SocketFile {
        path: None,
        created_dir,
    };
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(socket).is_ok() {
                bail!(
                    "{} is in use: another xlb is running with this control_socket",
                    socket.display()
                );
            }
            // A stale socket from a crashed run would make the rename
            // replace it anyway; removing it says so in the error if it
            // cannot be.
            std::fs::remove_file(socket)
                .with_context(|| format!("removing stale {}", socket.display()))?;
        }
        Ok(_) => {
            bail!(
                "control_socket {} exists and is not a socket: xlb does not replace it",
                socket.display()
            );
        }
        Err(_) => {}
    }
    let private = dir.join(format!(".xlb-{}", std::process::id()));
    // Left by an earlier process with this pid that crashed here.
    let _ = std::fs::remove_file(private.join("s"));
    let _ = std::fs::remove_dir(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .with_context(|| format!("creating {}", private.display()))?;
    let pending = private.join("s");
    let bound = (|| -> Result<UnixListener> {
        let listener = UnixListener::bind(&pending)
            .with_context(|| format!("binding {}", pending.display()))?;
        set_group_and_mode(&pending, socket, access.group, access.socket_mode())?;
        std::fs::rename(&pending, socket)
            .with_context(|| format!("moving {} to {}", pending.display(), socket.display()))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&pending);
    let _ = std::fs::remove_dir(&private);
    let listener = bound?;
    file.path = Some(socket.to_owned());
    Ok((listener, file))
}

/// Gives `path` (named `shown` in errors) the group `group`, if any, then
/// `mode`.
fn set_group_and_mode(path: &Path, shown: &Path, group: Option<u32>, mode: u32) -> Result<()> {
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).with_context(|| {
            format!(
                "giving {} to gid {gid} (control_socket_group)",
                shown.display()
            )
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", shown.display()))
}

/// Creates `dir` if it is missing (mode and group as `access` says, set
/// explicitly); returns it if it was created. An existing directory is
/// left as it is, since it may hold more than the socket (`/run`, say);
/// see [`judge_dir`].
fn prepare_dir(dir: &Path, access: SocketAccess) -> Result<Option<PathBuf>> {
    match std::fs::metadata(dir) {
        Ok(meta) => {
            if !meta.is_dir() {
                bail!(
                    "{} (control_socket's directory) is not a directory",
                    dir.display()
                );
            }
            match judge_dir(meta.mode(), meta.gid(), access.group) {
                DirVerdict::Fine => {}
                DirVerdict::Warn(why) => {
                    tracing::warn!(dir = %dir.display(), "control socket: {why}")
                }
                DirVerdict::Refuse(why) => {
                    bail!("control socket directory {}: {why}", dir.display())
                }
            }
            Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            set_group_and_mode(dir, dir, access.group, access.dir_mode())?;
            Ok(Some(dir.to_owned()))
        }
        Err(e) => Err(e).with_context(|| format!("control_socket's directory {}", dir.display())),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum DirVerdict {
    Fine,
    /// Served, but the group cannot reach the socket.
    Warn(String),
    Refuse(String),
}

/// What an existing directory of `mode` and group `dir_gid` means for a
/// socket in it that `group` (if any) must reach.
fn judge_dir(mode: u32, dir_gid: u32, group: Option<u32>) -> DirVerdict {
    let perms = mode & 0o7777;
    // Anyone could rename the socket away and put their own in its place,
    // which root's `xlb reload` would then talk to.
    if perms & 0o002 != 0 && perms & 0o1000 == 0 {
        return DirVerdict::Refuse(format!(
            "mode {perms:04o} lets anyone replace the socket: put control_socket in a \
             directory only root may write (the default /run/xlb is made 0700)"
        ));
    }
    match group {
        Some(gid) if perms & 0o001 == 0 && !(dir_gid == gid && perms & 0o010 != 0) => {
            DirVerdict::Warn(format!(
                "its mode {perms:04o} and group {dir_gid} keep gid {gid} \
                 (control_socket_group) out, so only root can reach the socket: \
                 chgrp {gid} DIR && chmod 750 DIR (xlb leaves a directory it did not \
                 create as it is)"
            ))
        }
        _ => DirVerdict::Fine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_directory_is_judged_by_who_could_replace_or_reach_the_socket() {
        let no = None;
        let g = Some(4711);
        for (mode, dir_gid, group, want) in [
            (0o40700, 0, no, "fine"),
            (0o40755, 0, no, "fine"),
            (0o41777, 0, no, "fine"), // /tmp: the sticky bit keeps the socket ours
            (0o40777, 0, no, "refuse"),
            (0o40773, 0, g, "refuse"),
            (0o40750, 4711, g, "fine"),
            (0o40710, 4711, g, "fine"),
            (0o40755, 0, g, "fine"), // /run
            (0o40700, 4711, g, "warn"),
            (0o40750, 0, g, "warn"), // someone else's group
        ] {
            let got = match judge_dir(mode, dir_gid, group) {
                DirVerdict::Fine => "fine",
                DirVerdict::Warn(_) => "warn",
                DirVerdict::Refuse(_) => "refuse",
            };
            assert_eq!(got, want, "mode {mode:o} gid {dir_gid} group {group:?}");
        }
    }

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xlb-bind-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn the_socket_and_the_directory_it_makes_get_their_modes_whatever_the_umask() {
        let top = temp("modes");
        std::fs::create_dir(&top).unwrap();
        let socket = top.join("run").join("xlb.sock");
        // The group of this process: chown to it needs no privilege.
        let gid = nix::unistd::getegid().as_raw();
        for (access, sock_mode, dir_mode) in [
            (SocketAccess { group: None }, 0o600, 0o700),
            (SocketAccess { group: Some(gid) }, 0o660, 0o750),
        ] {
            let (listener, file) = bind(&socket, access).unwrap();
            let s = std::fs::symlink_metadata(&socket).unwrap();
            assert!(s.file_type().is_socket());
            assert_eq!(s.mode() & 0o7777, sock_mode);
            let d = std::fs::metadata(top.join("run")).unwrap();
            assert_eq!(d.mode() & 0o7777, dir_mode);
            if access.group.is_some() {
                assert_eq!((s.gid(), d.gid()), (gid, gid));
            }
            // Nothing else is left in the directory.
            let names: Vec<_> = std::fs::read_dir(top.join("run"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["xlb.sock"]);
            // A second one is refused while the first listens.
            let err = format!("{:#}", bind(&socket, access).unwrap_err());
            assert!(err.contains("is in use"), "{err}");
            assert!(socket.exists(), "the refusal left the live socket alone");
            drop(listener);
            drop(file);
            assert!(
                !socket.exists() && !top.join("run").exists(),
                "removed on drop"
            );
        }
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn a_stale_socket_is_replaced_and_anything_else_is_refused() {
        let top = temp("stale");
        std::fs::create_dir(&top).unwrap();
        let socket = top.join("xlb.sock");
        let stale = UnixListener::bind(&socket).unwrap();
        drop(stale); // the file stays, nobody answers
        let (_l, file) = bind(&socket, SocketAccess { group: None }).unwrap();
        assert_eq!(std::fs::metadata(&socket).unwrap().mode() & 0o777, 0o600);
        drop(file);
        assert!(top.exists(), "a directory xlb did not create stays");
        std::fs::write(&socket, "not a socket").unwrap();
        let err = format!(
            "{:#}",
            bind(&socket, SocketAccess { group: None }).unwrap_err()
        );
        assert!(err.contains("is not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&socket).unwrap(), "not a socket");
        std::fs::remove_dir_all(&top).unwrap();
    }
}
