//! The pinned state: the data plane's maps and its XDP links, pinned on
//! bpffs under one directory per instance (`state_dir`), so that they
//! outlive the `xlb` process. A new `xlb` checks what it finds there
//! against the program it is about to load and adopts it, migrates it
//! (the connection tables, when `[conntrack] size` changed), or refuses
//! to start, saying why, without touching what runs.
//!
//! What is checked, per map: type, key size, value size, flags, number of
//! entries; for the whole: `XLB_STATE` names this xlb's layout version
//! (`lb_common::LAYOUT_VERSION`) and the network namespace and interfaces
//! the state serves.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use aya::maps::{Array, MapData, MapInfo};
use lb_common::{LAYOUT_VERSION, STATE_MAGIC, StateMeta, map_names as names};
use nix::fcntl::{Flock, FlockArg};

/// The mount point bpffs has on every distribution xlb knows.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Which XDP attachment a link pin is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRole {
    /// The NIC clients reach the VIPs on (`interface`).
    Client,
    /// The NIC towards the backends of a two-armed layout (`server_interface`).
    Server,
}

impl LinkRole {
    fn file(self) -> &'static str {
        match self {
            LinkRole::Client => "link",
            LinkRole::Server => "link-server",
        }
    }
}

/// A state directory, locked for this process: two `xlb` processes never
/// drive one data plane.
pub struct StateDir {
    path: PathBuf,
    _lock: Flock<File>,
}

/// Maps whose pinned size differs from what this start wants, and can be
/// copied: the connection tables.
pub const MIGRATABLE: [&str; 2] = [names::FLOWS, names::NAT_REVERSE];

/// Suffix of a map being migrated, pinned beside the old one until the
/// new program runs on it (bpffs refuses dots in names).
const NEXT: &str = "-next";

/// What [`StateDir::inspect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing pinned: a fresh start.
    Empty,
    /// State of this layout, serving here: adopt it, migrating these maps
    /// (connection tables pinned with another size).
    Compatible {
        meta: StateMeta,
        migrate: Vec<&'static str>,
        /// A data plane is attached (a link is pinned).
        running: bool,
    },
}

/// The map specification a program expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSpec {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl MapSpec {
    fn of(info: &MapInfo) -> MapSpec {
        MapSpec {
            map_type: info_type(info),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        }
    }

    /// What differs between a pinned map (`self`) and the expected one,
    /// ignoring what the kernel may adjust on its own.
    fn differences(&self, want: &MapSpec) -> Vec<String> {
        let mut out = Vec::new();
        let devmap = [
            aya::maps::MapType::DevMap as u32,
            aya::maps::MapType::DevMapHash as u32,
        ];
        if self.map_type != want.map_type {
            out.push(format!("type {} (want {})", self.map_type, want.map_type));
        }
        if self.key_size != want.key_size {
            out.push(format!(
                "key {} bytes (want {})",
                self.key_size, want.key_size
            ));
        }
        // A devmap's value grows by the program id on kernels that have it.
        let value_ok = self.value_size == want.value_size
            || (devmap.contains(&want.map_type) && matches!(self.value_size, 4 | 8));
        if !value_ok {
            out.push(format!(
                "value {} bytes (want {})",
                self.value_size, want.value_size
            ));
        }
        if self.max_entries != want.max_entries {
            out.push(format!(
                "{} entries (want {})",
                self.max_entries, want.max_entries
            ));
        }
        // The kernel adds access flags of its own (a devmap is read-only to
        // programs): only the object's flags must be there.
        if self.flags & !KERNEL_FLAGS != want.flags & !KERNEL_FLAGS {
            out.push(format!("flags {:#x} (want {:#x})", self.flags, want.flags));
        }
        out
    }
}

/// `BPF_F_RDONLY_PROG` and `BPF_F_WRONLY_PROG`, which the kernel sets on
/// some map types itself.
const KERNEL_FLAGS: u32 = 0x80 | 0x100;

fn info_type(info: &MapInfo) -> u32 {
    info.map_type().map_or(u32::MAX, |t| t as u32)
}

/// The maps of an XDP object and their specifications, with the
/// connection tables at `flows` entries (as the loader will create them).
pub fn object_specs(object: &[u8], flows: u32) -> Result<BTreeMap<String, MapSpec>> {
    let obj = aya_obj::Object::parse(object).context("parsing the XDP object")?;
    Ok(obj
        .maps
        .iter()
        // Data sections (.bss, .rodata) belong to the program, not the state.
        .filter(|(name, _)| !name.starts_with('.'))
        .map(|(name, m)| {
            let max_entries = if MIGRATABLE.contains(&name.as_str()) {
                flows
            } else {
                m.max_entries()
            };
            let spec = MapSpec {
                map_type: m.map_type(),
                key_size: m.key_size(),
                value_size: m.value_size(),
                max_entries,
                flags: m.map_flags(),
            };
            (name.clone(), spec)
        })
        .collect())
}

/// Where this process runs, as `XLB_STATE` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub netns_inode: u64,
    pub ifindex: u32,
    pub server_ifindex: u32,
}

impl Place {
    /// The calling thread's network namespace and these interfaces.
    pub fn here(ifindex: u32, server_ifindex: u32) -> Result<Place> {
        let ns = std::fs::metadata("/proc/thread-self/ns/net")
            .context("reading this process's network namespace")?;
        Ok(Place {
            netns_inode: ns.ino(),
            ifindex,
            server_ifindex,
        })
    }
}

impl StateDir {
    /// Creates (mode 0700) and locks the directory, first mounting bpffs on
    /// [`BPFFS`] if the directory is under it and nothing is mounted there.
    /// Fails if another process holds the lock, or if the directory or
    /// anything in it belongs to another user (see [`judge_state_dir`]);
    /// one that others could only read is made 0700.
    pub fn open(path: &Path) -> Result<StateDir> {
        ensure_bpffs(path)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .with_context(|| format!("creating state_dir {}", path.display()))?;
        let dir = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let euid = nix::unistd::geteuid().as_raw();
        let meta = dir
            .metadata()
            .with_context(|| format!("state_dir {}", path.display()))?;
        if !meta.is_dir() {
            bail!("state_dir {} is not a directory", path.display());
        }
        let mut owners = Vec::new();
        for e in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
            let e = e?;
            let m = e.metadata()?;
            owners.push((e.file_name().to_string_lossy().into_owned(), m.uid()));
        }
        if judge_state_dir(path, meta.mode(), meta.uid(), &owners, euid)? {
            let mode = meta.mode() & 0o7777;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("making state_dir {} private", path.display()))?;
            tracing::warn!(state_dir = %path.display(), was = format!("{mode:04o}"),
                "state_dir was open to group or others: made 0700");
        }
        let lock = Flock::lock(dir, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            anyhow::anyhow!(
                "state_dir {} is in use by another xlb (flock: {e}); one data plane has one \
                 control plane",
                path.display()
            )
        })?;
        Ok(StateDir {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where map `name` is pinned.
    pub fn map_pin(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Where the map being migrated to is pinned until it takes over.
    pub fn next_pin(&self, name: &str) -> PathBuf {
        self.path.join(format!("{name}{NEXT}"))
    }

    pub fn link_pin(&self, role: LinkRole) -> PathBuf {
        self.path.join(role.file())
    }

    /// Names pinned in the directory.
    pub fn pins(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?
        {
            out.push(e?.file_name().to_string_lossy().into_owned());
        }
        out.sort();
        Ok(out)
    }

    /// Whether a data plane is attached from this state.
    pub fn running(&self) -> bool {
        self.link_pin(LinkRole::Client).exists()
    }

    /// Checks the pinned state against `specs` (the program about to be
    /// loaded) and `place`. Changes nothing.
    pub fn inspect(&self, specs: &BTreeMap<String, MapSpec>, place: &Place) -> Result<Found> {
        let pins = self.pins()?;
        let running = self.running();
        if pins.is_empty() {
            return Ok(Found::Empty);
        }
        let how = "the data plane keeps running as it is; `xlb down` removes it (dropping every \
                   connection), `xlb run --reset-state` replaces it, or run the xlb that made it";
        let meta = match read_meta(&self.map_pin(names::XLB_STATE)) {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) if !running => {
                // Pins without a record and without a program: a start that
                // failed before attaching. Nothing serves from them.
                tracing::warn!(dir = %self.path.display(), ?pins,
                    "pinned maps without a data plane: starting afresh");
                self.reset()?;
                return Ok(Found::Empty);
            }
            Ok(None) => bail!(
                "{} holds an attached data plane but no xlb state record: not xlb's, or \
                 from a version without one; {how}",
                self.path.display()
            ),
            Err(e) => return Err(e.context(format!("{}; {how}", self.path.display()))),
        };
        if meta.magic != STATE_MAGIC {
            bail!(
                "{} holds state that is not xlb's (magic {:#x}); {how}",
                self.path.display(),
                meta.magic
            );
        }
        if meta.layout != LAYOUT_VERSION {
            bail!(
                "{} holds data-plane state of layout version {}; this xlb uses version {}: \
                 it cannot read it; {how}",
                self.path.display(),
                meta.layout,
                LAYOUT_VERSION
            );
        }
        if running && (meta.netns_inode != place.netns_inode || meta.ifindex != place.ifindex) {
            bail!(
                "{} serves interface index {} in network namespace {} (this xlb: index {} in \
                 {}): another instance's? Give each instance its own state_dir",
                self.path.display(),
                meta.ifindex,
                meta.netns_inode,
                place.ifindex,
                place.netns_inode
            );
        }
        if running && meta.server_ifindex != place.server_ifindex {
            bail!(
                "{} was started with server-side interface index {}, this config has {}: \
                 server_interface changes only with `xlb down` first",
                self.path.display(),
                meta.server_ifindex,
                place.server_ifindex
            );
        }
        let mut problems = Vec::new();
        let mut migrate = Vec::new();
        for (name, want) in specs {
            let pin = self.map_pin(name);
            if !pin.exists() {
                // The program brings a map the state lacks: it is created.
                continue;
            }
            let info = MapInfo::from_pin(&pin)
                .with_context(|| format!("reading pinned map {}", pin.display()))?;
            let have = MapSpec::of(&info);
            let diff = have.differences(want);
            let only_size = diff.len() == 1 && have.max_entries != want.max_entries;
            if diff.is_empty() {
                continue;
            }
            match MIGRATABLE.iter().find(|m| **m == name.as_str()) {
                Some(m) if only_size => migrate.push(*m),
                _ => problems.push(format!("{name}: {}", diff.join(", "))),
            }
        }
        if !problems.is_empty() {
            bail!(
                "the pinned data plane in {} does not fit this program: {}; {how}",
                self.path.display(),
                problems.join("; ")
            );
        }
        Ok(Found::Compatible {
            meta,
            migrate,
            running,
        })
    }

    /// Unpins everything: the links (the program detaches once no process
    /// holds it) and the maps (freed once nothing uses them).
    pub fn reset(&self) -> Result<()> {
        for name in self.pins()? {
            let p = self.path.join(&name);
            std::fs::remove_file(&p).with_context(|| format!("unpinning {}", p.display()))?;
        }
        Ok(())
    }

    /// [`StateDir::reset`], then the directory itself.
    pub fn remove(self) -> Result<()> {
        self.reset()?;
        std::fs::remove_dir(&self.path).with_context(|| format!("removing {}", self.path.display()))
    }
}

/// Whether the state directory at `path` (of `mode` and `owner`, holding
/// `entries` by name and owner) may be used by a daemon running as
/// `euid`: `Ok(true)` if it must first be made 0700. Whoever may write in
/// a state directory may pin maps there that xlb would adopt (and keep a
/// handle to change them), so one that belongs to another user, or holds
/// a pin of another user's, is refused. One that others could only list
/// is only made private: nothing of theirs can be in it.
pub fn judge_state_dir(
    path: &Path,
    mode: u32,
    owner: u32,
    entries: &[(String, u32)],
    euid: u32,
) -> Result<bool> {
    let how = "remove it (`xlb down --config FILE` if it is xlb's, else rm -r) and start again";
    if owner != euid {
        bail!(
            "state_dir {} belongs to uid {owner}, not to xlb's uid {euid}: maps pinned there \
             may not be xlb's; {how}",
            path.display()
        );
    }
    if let Some((name, uid)) = entries.iter().find(|(_, uid)| *uid != euid) {
        bail!(
            "state_dir {}: {name} belongs to uid {uid}, not to xlb's uid {euid}: it is not \
             xlb's; {how}",
            path.display()
        );
    }
    Ok(mode & 0o077 != 0)
}

/// The `XLB_STATE` record pinned at `pin`, if there is one.
pub fn read_meta(pin: &Path) -> Result<Option<StateMeta>> {
    if !pin.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(pin).with_context(|| format!("opening {}", pin.display()))?;
    let map: Array<MapData, StateMeta> = Array::try_from(aya::maps::Map::Array(data))
        .with_context(|| format!("{} is not an xlb state record", pin.display()))?;
    Ok(Some(map.get(&0, 0).context("reading the state record")?))
}

/// Mounts bpffs on [`BPFFS`] if `path` is under it and it is not mounted;
/// fails if `path` is elsewhere and not on bpffs.
pub fn ensure_bpffs(path: &Path) -> Result<()> {
    use nix::sys::statfs::{BPF_FS_MAGIC, statfs};
    // The nearest existing ancestor tells which filesystem `path` will be on.
    let mut probe = path;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    let on_bpffs = |p: &Path| statfs(p).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC);
    if on_bpffs(probe) {
        return Ok(());
    }
    if !path.starts_with(BPFFS) {
        bail!(
            "state_dir {} is not on a bpffs mount (mount one: mount -t bpf bpf DIR)",
            path.display()
        );
    }
    std::fs::create_dir_all(BPFFS).with_context(|| format!("creating {BPFFS}"))?;
    nix::mount::mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        Some("mode=0700"),
    )
    .with_context(|| format!("mounting bpffs on {BPFFS}"))?;
    tracing::warn!(
        "mounted bpffs on {BPFFS}: pinned state lives as long as this mount. In a private \
         mount namespace (`ip netns exec` makes one) it dies with the namespace: run xlb with \
         only the network namespace entered (`nsenter --net=...`)"
    );
    Ok(())
}

/// Copies every entry of the pinned map `from` that `to` lacks (a newer
/// entry in `to` wins). Both are hash maps of the same key and value.
pub fn copy_missing<K: aya::Pod, V: aya::Pod>(
    from: &Path,
    to: &mut aya::maps::HashMap<MapData, K, V>,
) -> Result<usize> {
    let data = MapData::from_pin(from).with_context(|| format!("opening {}", from.display()))?;
    let old: aya::maps::HashMap<MapData, K, V> =
        aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data))
            .with_context(|| format!("{} is not the connection table", from.display()))?;
    let mut copied = 0;
    for entry in old.iter() {
        // Entries the old program evicts while we walk are simply gone.
        let Ok((k, v)) = entry else { continue };
        if to.get(&k, 0).is_err() && to.insert(k, v, 0).is_ok() {
            copied += 1;
        }
    }
    Ok(copied)
}

/// The state record of a start here, created now.
pub fn new_meta(place: &Place, xdp_flags: u32) -> StateMeta {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    StateMeta {
        magic: STATE_MAGIC,
        layout: LAYOUT_VERSION,
        created_unix_s: created,
        netns_inode: place.netns_inode,
        ifindex: place.ifindex,
        server_ifindex: place.server_ifindex,
        xdp_flags,
        _pad: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every map of the program has a name both sides share, so it is
    /// pinned and checked; no name is left without a map.
    #[test]
    fn the_program_declares_exactly_the_maps_lb_common_names() {
        let specs = object_specs(crate::EBPF_OBJECT, 1024).unwrap();
        let mut in_object: Vec<&str> = specs.keys().map(String::as_str).collect();
        let mut named: Vec<&str> = names::ALL.to_vec();
        in_object.sort();
        named.sort();
        assert_eq!(in_object, named);
        assert_eq!(specs[names::FLOWS].max_entries, 1024);
    }

    #[test]
    fn a_state_dir_is_refused_unless_it_and_its_pins_are_xlbs_and_made_private_if_open() {
        let p = Path::new("/sys/fs/bpf/xlb/eth0");
        let pins = |owner: u32| vec![("FLOWS".to_owned(), 0), ("link".to_owned(), owner)];
        for (mode, owner, entries, fix) in [
            (0o40700, 0, pins(0), Some(false)),
            (0o40755, 0, pins(0), Some(true)),
            (0o40750, 0, vec![], Some(true)),
            (0o41777, 0, pins(0), Some(true)),
            (0o40700, 1000, vec![], None),
            (0o40777, 0, pins(1000), None),
        ] {
            let got = judge_state_dir(p, mode, owner, &entries, 0).ok();
            assert_eq!(got, fix, "mode {mode:o} owner {owner} {entries:?}");
        }
        let err = judge_state_dir(p, 0o40777, 0, &pins(1000), 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "state_dir /sys/fs/bpf/xlb/eth0: link belongs to uid 1000, not to xlb's uid 0"
            ),
            "{err}"
        );
        let err = judge_state_dir(p, 0o40700, 1000, &[], 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("belongs to uid 1000") && err.contains("xlb down"),
            "{err}"
        );
    }

    #[test]
    fn only_a_size_difference_is_a_migration_and_devmap_values_may_grow() {
        let want = MapSpec {
            map_type: aya::maps::MapType::LruHash as u32,
            key_size: 40,
            value_size: 16,
            max_entries: 1024,
            flags: 0,
        };
        assert!(want.differences(&want).is_empty());
        let bigger = MapSpec {
            max_entries: 2048,
            ..want
        };
        assert_eq!(bigger.differences(&want), ["2048 entries (want 1024)"]);
        let other_key = MapSpec {
            key_size: 44,
            ..want
        };
        assert_eq!(other_key.differences(&want), ["key 44 bytes (want 40)"]);
        let devmap = MapSpec {
            map_type: aya::maps::MapType::DevMapHash as u32,
            key_size: 4,
            value_size: 4,
            max_entries: 64,
            flags: 0,
        };
        let grown = MapSpec {
            value_size: 8,
            flags: 0x80,
            ..devmap
        };
        assert!(grown.differences(&devmap).is_empty(), "the kernel's own");
    }
}
