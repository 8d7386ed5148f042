//! The running sync: reads the data plane's flow reports from the
//! `FLOW_EVENTS` ring buffer and sends them to the peers in batches,
//! sends the flows still alive again every `refresh_s`, answers a
//! starting peer's hello with the whole table, and installs what the
//! peers send after checking it (framing, tag, replay, then each entry
//! against this node's VIPs and backends). Everything dropped is counted
//! by reason; nothing here can hold up the data plane, which only ever
//! loses a report when the ring is full (`events_lost`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError, PerCpuArray, RingBuf};
use lb_common::{FlowEvent, FlowKey, FlowState, VipKey, flow_event, map_names as names, sync_stat};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::auth::Key;
use super::receive::{self, Policy};
use super::replay::Replay;
use super::table::{self, Directory, FlowTable, Installed, NotSent};
use super::wire::{self, Entry, Event, Header, Kind, MAX_ENTRIES};
use crate::api::{SyncPeerStatus, SyncStatus};
use crate::clock::{monotonic_ns, unix_ms};
use crate::config::{SyncConfig, SyncPeers};

/// Lag samples kept for the median and p99.
const LAG_SAMPLES: usize = 4096;
/// How often the report ring is read: the most a report waits.
const RING_POLL: Duration = Duration::from_millis(1);
/// Ring-buffer reports sent per batch of reads, and batches per poll.
const EVENTS_PER_TURN: usize = 4096;
const TURNS_PER_POLL: usize = 8;
/// Full tables and sweeps go out at most this many messages per
/// millisecond (20 flows each): a peer's socket buffer is not flooded.
const PACE_MESSAGES_PER_MS: usize = 8;
/// A peer gets the whole table at most this often per epoch.
const FULL_TABLE_EVERY: Duration = Duration::from_secs(2);
/// The directory is asked again at most this often on a miss, and in any
/// case this often.
const DIRECTORY_MISS_EVERY: Duration = Duration::from_millis(100);
const DIRECTORY_EVERY: Duration = Duration::from_secs(1);
const SOCKET_BUFFER: usize = 8 << 20;
/// A next hop the data plane asks for is probed at most this often.
const NEIGHBOUR_PROBE_EVERY: Duration = Duration::from_secs(1);

/// Asks the controller for its VIPs and backends (it owns the ids).
pub type DirectorySource = Arc<dyn Fn() -> Directory + Send + Sync>;

#[derive(Debug, Default, Clone, Copy)]
struct PeerStats {
    last_heard: Option<Instant>,
    messages: u64,
    flows: u64,
}

/// What `xlb status` shows, kept by the engine.
struct Stats {
    counters: BTreeMap<&'static str, u64>,
    peers: HashMap<IpAddr, PeerStats>,
    lags_us: VecDeque<u64>,
}

impl Stats {
    fn bump(&mut self, name: &'static str, n: u64) {
        *self.counters.entry(name).or_default() += n;
    }
}

/// The engine's state that status reads.
pub struct Shared {
    mode: &'static str,
    port: u16,
    epoch: u64,
    stats: Mutex<Stats>,
    sync_stats: Mutex<PerCpuArray<MapData, u64>>,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self, name: &'static str, n: u64) {
        self.stats().bump(name, n);
    }

    pub fn status(&self) -> SyncStatus {
        let mut counters: BTreeMap<String, u64> = self
            .stats()
            .counters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        {
            let map = self.sync_stats.lock().unwrap_or_else(|e| e.into_inner());
            for (i, name) in sync_stat::NAMES.iter().enumerate() {
                let total = map
                    .get(&(i as u32), 0)
                    .map_or(0, |v| v.iter().copied().sum());
                counters.insert((*name).to_owned(), total);
            }
        }
        let stats = self.stats();
        let mut lags: Vec<u64> = stats.lags_us.iter().copied().collect();
        lags.sort_unstable();
        let pick = |q: f64| {
            (!lags.is_empty()).then(|| lags[((lags.len() - 1) as f64 * q).round() as usize])
        };
        let mut peers: Vec<SyncPeerStatus> = stats
            .peers
            .iter()
            .map(|(a, p)| SyncPeerStatus {
                address: a.to_string(),
                last_heard_ms_ago: p.last_heard.map(|t| t.elapsed().as_millis() as u64),
                messages: p.messages,
                flows: p.flows,
            })
            .collect();
        peers.sort_by(|a, b| a.address.cmp(&b.address));
        SyncStatus {
            mode: self.mode.to_owned(),
            port: self.port,
            epoch: self.epoch,
            peers,
            counters,
            lag_us_median: pick(0.5),
            lag_us_p99: pick(0.99),
        }
    }
}

/// `FLOWS` and `NAT_REVERSE`, opened from their pins.
struct KernelTable {
    flows: BpfHashMap<MapData, FlowKey, FlowState>,
    reverse: BpfHashMap<MapData, FlowKey, VipKey>,
}

fn open_lru<K: aya::Pod, V: aya::Pod>(pin: &Path) -> Result<BpfHashMap<MapData, K, V>> {
    let data = MapData::from_pin(pin).with_context(|| format!("opening {}", pin.display()))?;
    BpfHashMap::try_from(Map::LruHashMap(data))
        .with_context(|| format!("{} has an unexpected layout", pin.display()))
}

impl KernelTable {
    fn open(state_dir: &Path) -> Result<Self> {
        Ok(Self {
            flows: open_lru(&state_dir.join(names::FLOWS))?,
            reverse: open_lru(&state_dir.join(names::NAT_REVERSE))?,
        })
    }
}

impl FlowTable for KernelTable {
    fn flow(&self, key: &FlowKey) -> Result<Option<FlowState>> {
        match self.flows.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).context("reading FLOWS"),
        }
    }
    fn set_flow(&mut self, key: &FlowKey, state: &FlowState) -> Result<()> {
        self.flows.insert(key, state, 0).context("writing FLOWS")
    }
    fn set_reverse(&mut self, reply: &FlowKey, vip: &VipKey) -> Result<()> {
        self.reverse
            .insert(reply, vip, 0)
            .context("writing NAT_REVERSE")
    }
}

/// Every connection-table entry last seen after `since_ns` (all: 0). The
/// data plane's stamps lag the clock by up to `COARSE_CLOCK_LAG_NS`, so
/// an entry touched just after `since_ns` may carry a stamp just before.
fn read_flows(state_dir: &Path, since_ns: u64) -> Result<Vec<(FlowKey, FlowState)>> {
    let since_ns = since_ns.saturating_sub(lb_common::COARSE_CLOCK_LAG_NS);
    let flows: BpfHashMap<MapData, FlowKey, FlowState> = open_lru(&state_dir.join(names::FLOWS))?;
    // Entries evicted while we walk are simply gone.
    Ok(flows
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, s)| s.last_seen > since_ns)
        .collect())
}

/// Seals and sends messages: one sequence for every message of this
/// node's epoch.
struct Sender {
    socket: Arc<UdpSocket>,
    key: Key,
    epoch: u64,
    seq: AtomicU64,
    shared: Arc<Shared>,
}

impl Sender {
    async fn send(&self, kind: Kind, entries: &[Entry], to: &[SocketAddr]) {
        for dest in to {
            let header = Header {
                kind,
                epoch: self.epoch,
                seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
                sent_unix_ms: unix_ms(),
            };
            let datagram = self.key.seal(wire::encode(&header, entries));
            match self.socket.send_to(&datagram, dest).await {
                Ok(_) => {
                    let mut s = self.shared.stats();
                    s.bump("messages_sent", 1);
                    s.bump("flows_sent", entries.len() as u64);
                }
                Err(e) => {
                    self.shared.bump("send_errors", 1);
                    tracing::debug!(error = %e, %dest, "sync: sending failed");
                }
            }
        }
    }

    /// Sends `entries` in full messages, paced.
    async fn send_all(&self, entries: &[Entry], to: &[SocketAddr]) {
        for (i, chunk) in entries.chunks(MAX_ENTRIES).enumerate() {
            self.send(Kind::Flows, chunk, to).await;
            if (i + 1) % PACE_MESSAGES_PER_MS == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// The directory, asked again when stale.
struct Dir {
    source: DirectorySource,
    current: Directory,
    asked: Instant,
}

impl Dir {
    fn new(source: DirectorySource) -> Self {
        let current = source();
        Self {
            source,
            current,
            asked: Instant::now(),
        }
    }

    /// Asks again if the last answer is older than `every`.
    fn refresh(&mut self, every: Duration) -> bool {
        if self.asked.elapsed() < every {
            return false;
        }
        self.current = (self.source)();
        self.asked = Instant::now();
        true
    }
}

fn sockaddr(ip: IpAddr, port: u16, dual_stack: bool) -> SocketAddr {
    match ip {
        IpAddr::V4(v4) if dual_stack => {
            SocketAddr::V6(SocketAddrV6::new(v4.to_ipv6_mapped(), port, 0, 0))
        }
        _ => SocketAddr::new(ip, port),
    }
}

/// The socket and where messages go.
fn open_socket(cfg: &SyncConfig, ifname: &str, ifindex: u32) -> Result<(Socket, Vec<SocketAddr>)> {
    let (socket, dests) = match &cfg.peers {
        SyncPeers::Unicast(peers) => {
            // One dual-stack socket for IPv4 and IPv6 peers alike.
            let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
            s.set_only_v6(false)?;
            s.bind(&SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), cfg.port).into())
                .with_context(|| format!("binding UDP port {}", cfg.port))?;
            let dests = peers.iter().map(|p| sockaddr(*p, cfg.port, true)).collect();
            (s, dests)
        }
        SyncPeers::Multicast(IpAddr::V4(group)) => {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.set_reuse_address(true)?;
            s.bind(&SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), cfg.port).into())
                .with_context(|| format!("binding UDP port {}", cfg.port))?;
            s.join_multicast_v4_n(group, &socket2::InterfaceIndexOrAddress::Index(ifindex))
                .with_context(|| format!("joining {group} on {ifname}"))?;
            s.set_multicast_loop_v4(false)?;
            s.set_multicast_ttl_v4(1)?;
            s.bind_device(Some(ifname.as_bytes()))?;
            (s, vec![SocketAddr::new((*group).into(), cfg.port)])
        }
        SyncPeers::Multicast(IpAddr::V6(group)) => {
            let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
            s.set_only_v6(true)?;
            s.set_reuse_address(true)?;
            s.bind(&SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), cfg.port).into())
                .with_context(|| format!("binding UDP port {}", cfg.port))?;
            s.join_multicast_v6(group, ifindex)
                .with_context(|| format!("joining {group} on {ifname}"))?;
            s.set_multicast_if_v6(ifindex)?;
            s.set_multicast_loop_v6(false)?;
            s.set_multicast_hops_v6(1)?;
            (s, vec![SocketAddr::new((*group).into(), cfg.port)])
        }
    };
    socket.set_nonblocking(true)?;
    // Root may go past rmem_max: a burst of full tables must not be lost
    // in the socket buffer.
    let fd = socket.as_fd();
    if nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::RcvBufForce, &SOCKET_BUFFER)
        .is_err()
    {
        socket.set_recv_buffer_size(SOCKET_BUFFER)?;
    }
    let _ =
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::SndBufForce, &SOCKET_BUFFER);
    Ok((socket, dests))
}

/// What the daemon needs to start the sync.
pub struct Start<'a> {
    pub config: &'a SyncConfig,
    pub key: Key,
    /// The pinned maps' directory.
    pub state_dir: PathBuf,
    /// The NIC multicast uses.
    pub ifname: &'a str,
    pub ifindex: u32,
    pub directory: DirectorySource,
}

/// A running sync.
pub struct Running {
    pub shared: Arc<Shared>,
    pub task: tokio::task::JoinHandle<()>,
    pub config: SyncConfig,
    /// The key it seals and checks with.
    pub key: Key,
    /// Its socket, held by the engine's task and by the tables it is
    /// sending: gone once all of them are.
    socket: std::sync::Weak<UdpSocket>,
}

/// How long [`Running::stop`] waits for the socket to close.
const STOP_WAIT: Duration = Duration::from_secs(2);

impl Running {
    /// Stops the sync and returns once its socket is closed, so that a new
    /// sync can bind the port. Aborting a task only asks the runtime to
    /// drop it, a moment later; a table being sent keeps the socket until
    /// its send ends. Blocks the calling thread (at most [`STOP_WAIT`]): not
    /// for a runtime worker.
    pub fn stop(self) {
        let socket = self.socket.clone();
        drop(self);
        let deadline = Instant::now() + STOP_WAIT;
        while socket.strong_count() > 0 {
            if Instant::now() >= deadline {
                tracing::warn!(
                    "sync: the old socket is still open {} s after the stop",
                    STOP_WAIT.as_secs()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens the ring buffer, the maps and the socket, says hello to the
/// peers and runs until dropped.
pub fn start(s: Start<'_>) -> Result<Running> {
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let ring_pin = s.state_dir.join(names::FLOW_EVENTS);
    let ring_data =
        MapData::from_pin(&ring_pin).with_context(|| format!("opening {}", ring_pin.display()))?;
    let ring = RingBuf::try_from(Map::RingBuf(ring_data))
        .with_context(|| format!("{} is not a ring buffer", ring_pin.display()))?;
    let stats_pin = s.state_dir.join(names::SYNC_STATS);
    let stats_data = MapData::from_pin(&stats_pin)
        .with_context(|| format!("opening {}", stats_pin.display()))?;
    let sync_stats = PerCpuArray::try_from(Map::PerCpuArray(stats_data))
        .with_context(|| format!("{} has an unexpected layout", stats_pin.display()))?;
    let table = KernelTable::open(&s.state_dir)?;
    let (socket, dests) = open_socket(s.config, s.ifname, s.ifindex)?;
    let socket = Arc::new(UdpSocket::from_std(socket.into()).context("sync socket")?);
    let weak_socket = Arc::downgrade(&socket);
    let (mode, peers) = match &s.config.peers {
        SyncPeers::Unicast(p) => ("unicast", p.clone()),
        SyncPeers::Multicast(_) => ("multicast", Vec::new()),
    };
    let shared = Arc::new(Shared {
        mode,
        port: s.config.port,
        epoch,
        stats: Mutex::new(Stats {
            counters: BTreeMap::new(),
            peers: peers.iter().map(|p| (*p, PeerStats::default())).collect(),
            lags_us: VecDeque::with_capacity(LAG_SAMPLES),
        }),
        sync_stats: Mutex::new(sync_stats),
    });
    let sender = Arc::new(Sender {
        socket: socket.clone(),
        key: s.key.clone(),
        epoch,
        seq: AtomicU64::new(0),
        shared: shared.clone(),
    });
    let running_key = s.key.clone();
    let engine = Engine {
        cfg: s.config.clone(),
        unicast: matches!(s.config.peers, SyncPeers::Unicast(_)),
        peers,
        dests,
        key: s.key,
        socket,
        sender,
        shared: shared.clone(),
        table,
        dir: Dir::new(s.directory),
        replay: Replay::default(),
        full_sent: HashMap::new(),
        probed: HashMap::new(),
        state_dir: s.state_dir,
    };
    tracing::info!(mode, port = s.config.port, epoch, "sync started");
    let task = tokio::spawn(engine.run(ring));
    Ok(Running {
        shared,
        task,
        config: s.config.clone(),
        key: running_key,
        socket: weak_socket,
    })
}

struct Engine {
    cfg: SyncConfig,
    unicast: bool,
    peers: Vec<IpAddr>,
    dests: Vec<SocketAddr>,
    key: Key,
    socket: Arc<UdpSocket>,
    sender: Arc<Sender>,
    shared: Arc<Shared>,
    table: KernelTable,
    dir: Dir,
    replay: Replay,
    /// Next hops (interface, address) probed, and when.
    probed: HashMap<(u32, IpAddr), Instant>,
    /// When each peer (and which epoch of it) last got the whole table.
    full_sent: HashMap<IpAddr, (u64, Instant)>,
    state_dir: PathBuf,
}

impl Engine {
    async fn run(mut self, mut ring: RingBuf<MapData>) {
        self.sender.send(Kind::Hello, &[], &self.dests).await;
        let mut buf = vec![0u8; wire::MAX_LEN + 1];
        let refresh = Duration::from_secs(u64::from(self.cfg.refresh_s));
        let mut next_sweep = tokio::time::Instant::now() + refresh;
        let mut swept_to_ns = monotonic_ns();
        let mut directory_tick = tokio::time::interval(DIRECTORY_EVERY);
        let mut ring_tick = tokio::time::interval(RING_POLL);
        ring_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                // The data plane submits without waking us (a wake-up costs
                // it an interrupt per report): the ring is polled.
                _ = ring_tick.tick() => {
                    // Bounded, so that a flood cannot starve the socket: what
                    // is left waits for the next tick.
                    for _ in 0..TURNS_PER_POLL {
                        let (events, emptied) = drain(&mut ring);
                        self.report(&events).await;
                        if emptied {
                            break;
                        }
                    }
                }
                got = self.socket.recv_from(&mut buf) => match got {
                    Ok((n, from)) => self.receive(&buf[..n], from).await,
                    Err(e) => {
                        self.shared.bump("receive_errors", 1);
                        tracing::debug!(error = %e, "sync: receive failed");
                    }
                },
                _ = tokio::time::sleep_until(next_sweep) => {
                    next_sweep = tokio::time::Instant::now() + refresh;
                    let since = swept_to_ns;
                    swept_to_ns = monotonic_ns();
                    self.spawn_table(since, self.dests.clone(), "sweeps");
                }
                _ = directory_tick.tick() => {
                    self.dir.refresh(Duration::ZERO);
                }
            }
        }
    }

    /// Sends the data plane's reports.
    async fn report(&mut self, events: &[FlowEvent]) {
        if events.is_empty() {
            return;
        }
        self.shared.bump("events_read", events.len() as u64);
        let now = monotonic_ns();
        let mut entries = Vec::with_capacity(events.len());
        let mut lags = Vec::with_capacity(events.len());
        for ev in events {
            let event = match ev.kind {
                flow_event::CLOSING => Event::Closing,
                flow_event::NEIGH => {
                    self.resolve(ev);
                    continue;
                }
                _ => Event::New,
            };
            let state = FlowState {
                backend: ev.backend,
                generation: ev.generation,
                flags: ev.flags,
                last_seen: ev.at,
            };
            let mut made = table::entry_of(&self.dir.current, &ev.key, &state, event, now);
            if made.is_err() && self.dir.refresh(DIRECTORY_MISS_EVERY) {
                made = table::entry_of(&self.dir.current, &ev.key, &state, event, now);
            }
            match made {
                Ok(e) => {
                    entries.push(e);
                    lags.push(now.saturating_sub(ev.at) / 1000);
                }
                Err(NotSent::NotOurs) => self.shared.bump("not_sent_not_ours", 1),
                Err(NotSent::StaleBackend) => self.shared.bump("not_sent_stale_backend", 1),
            }
        }
        for chunk in entries.chunks(MAX_ENTRIES) {
            self.sender.send(Kind::Flows, chunk, &self.dests).await;
        }
        let mut s = self.shared.stats();
        for lag in lags {
            if s.lags_us.len() == LAG_SAMPLES {
                s.lags_us.pop_front();
            }
            s.lags_us.push_back(lag);
        }
    }

    /// The data plane found no neighbour for a NAT packet's next hop (a
    /// node that took NAT flows over): ask the kernel to resolve it, once
    /// a second per hop at most.
    fn resolve(&mut self, ev: &FlowEvent) {
        self.shared.bump("neighbour_requests", 1);
        let bytes = lb_common::words_to_bytes(&ev.key.dst);
        let hop: IpAddr = if ev.family == lb_common::FAMILY_V4 {
            IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
        } else {
            IpAddr::from(bytes)
        };
        let key = (ev.backend, hop);
        if self
            .probed
            .get(&key)
            .is_some_and(|t| t.elapsed() < NEIGHBOUR_PROBE_EVERY)
        {
            return;
        }
        self.probed.insert(key, Instant::now());
        match crate::netlink::probe_neighbour(ev.backend, hop) {
            Ok(()) => self.shared.bump("neighbour_probes", 1),
            Err(e) => {
                self.shared.bump("neighbour_probe_errors", 1);
                tracing::debug!(error = %e, %hop, ifindex = ev.backend, "sync: probing a next hop failed");
            }
        }
        if self.probed.len() > 4096 {
            self.probed
                .retain(|_, t| t.elapsed() < NEIGHBOUR_PROBE_EVERY);
        }
    }

    /// Sends, from a task of its own, the flows seen since `since_ns`
    /// (the whole table: 0) to `to`.
    fn spawn_table(&self, since_ns: u64, to: Vec<SocketAddr>, counter: &'static str) {
        let sender = self.sender.clone();
        let state_dir = self.state_dir.clone();
        let directory = self.dir.source.clone();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let read = tokio::task::spawn_blocking(move || {
                let flows = read_flows(&state_dir, since_ns)?;
                let dir = directory();
                let now = monotonic_ns();
                Ok::<_, anyhow::Error>(
                    flows
                        .iter()
                        .filter_map(|(k, s)| table::entry_of(&dir, k, s, Event::Refresh, now).ok())
                        .collect::<Vec<_>>(),
                )
            })
            .await
            .map_err(|e| anyhow!(e))
            .and_then(|r| r);
            match read {
                Ok(entries) => {
                    shared.bump(counter, 1);
                    if entries.is_empty() && since_ns == 0 {
                        // An empty table still answers: the peer hears us.
                        sender.send(Kind::Flows, &[], &to).await;
                    }
                    sender.send_all(&entries, &to).await;
                }
                Err(e) => {
                    shared.bump("table_read_errors", 1);
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "sync: reading the connection table failed"
                    );
                }
            }
        });
    }

    fn reject(&self, reason: &'static str) {
        self.shared.bump(reason, 1);
    }

    async fn receive(&mut self, datagram: &[u8], from: SocketAddr) {
        let ip = from.ip().to_canonical();
        self.shared.bump("messages_received", 1);
        let policy = Policy {
            key: &self.key,
            peers: self.unicast.then_some(self.peers.as_slice()),
            max_skew_ms: u64::from(self.cfg.max_skew_s) * 1000,
        };
        let (header, entries) =
            match receive::accept(&policy, &mut self.replay, datagram, ip, unix_ms()) {
                Ok(m) => m,
                Err(counter) => return self.reject(counter),
            };
        {
            let mut s = self.shared.stats();
            s.bump("messages_accepted", 1);
            let p = s.peers.entry(ip).or_default();
            p.last_heard = Some(Instant::now());
            p.messages += 1;
            p.flows += entries.len() as u64;
        }
        match header.kind {
            Kind::Hello => {
                self.shared.bump("hellos_received", 1);
                // A peer that restarted (a new epoch) gets its table at
                // once; repeats of one epoch's hello wait their turn.
                let due = self.full_sent.get(&ip).is_none_or(|(epoch, t)| {
                    *epoch != header.epoch || t.elapsed() >= FULL_TABLE_EVERY
                });
                if due {
                    self.full_sent.insert(ip, (header.epoch, Instant::now()));
                    let to = sockaddr(ip, self.cfg.port, from.is_ipv6());
                    self.spawn_table(0, vec![to], "full_tables_sent");
                }
            }
            Kind::Flows => self.install(&entries),
        }
    }

    fn install(&mut self, entries: &[Entry]) {
        let now = monotonic_ns();
        let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
        for e in entries {
            let mut done = table::install(&self.dir.current, &mut self.table, e, now);
            if matches!(
                done,
                Ok(Installed::UnknownBackend | Installed::UnknownVip | Installed::ModeMismatch)
            ) && self.dir.refresh(DIRECTORY_MISS_EVERY)
            {
                done = table::install(&self.dir.current, &mut self.table, e, now);
            }
            let name = match done {
                Ok(Installed::Done) => "flows_installed",
                Ok(Installed::Older) => "flows_kept_newer_local",
                Ok(Installed::UnknownVip) => "flows_unknown_vip",
                Ok(Installed::UnknownBackend) => "flows_unknown_backend",
                Ok(Installed::ModeMismatch) => "flows_mode_mismatch",
                Err(e) => {
                    tracing::debug!(error = format!("{e:#}"), "sync: installing a flow failed");
                    "flows_install_errors"
                }
            };
            *counts.entry(name).or_default() += 1;
        }
        let mut s = self.shared.stats();
        s.bump("flows_received", entries.len() as u64);
        for (name, n) in counts {
            s.bump(name, n);
        }
    }
}

/// Takes up to `EVENTS_PER_TURN` reports off the ring; says whether it
/// is empty now.
fn drain(ring: &mut RingBuf<MapData>) -> (Vec<FlowEvent>, bool) {
    let mut out = Vec::new();
    while out.len() < EVENTS_PER_TURN {
        let Some(item) = ring.next() else {
            return (out, true);
        };
        if let Some(ev) = FlowEvent::from_bytes(&item) {
            out.push(ev);
        }
    }
    (out, false)
}
