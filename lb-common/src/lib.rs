//! Types shared by the XDP program (`lb-ebpf`) and the control plane (`lb-user`).
//!
//! Every map key and value is `#[repr(C)]` with explicit padding so that both
//! sides agree on the byte layout and hash-map keys never carry stray bytes.
//! Addresses and ports are kept in **network byte order**, exactly as they
//! appear on the wire, so the data plane never swaps bytes on the hot path.
#![no_std]

pub mod hash;

pub use hash::{flow_hash, source_hash};

/// Names of the BPF maps, looked up by the same string on both sides.
pub mod map_names {
    pub const VIPS: &str = "VIPS";
    pub const VIP_ADDRS: &str = "VIP_ADDRS";
    pub const RINGS: &str = "RINGS";
    pub const BACKENDS: &str = "BACKENDS";
    pub const LB_CONFIG: &str = "LB_CONFIG";
    pub const VIP_STATS: &str = "VIP_STATS";
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    pub const DROP_STATS: &str = "DROP_STATS";
    pub const GLOBAL_STATS: &str = "GLOBAL_STATS";
    pub const FLOWS: &str = "FLOWS";
    pub const CT_STATS: &str = "CT_STATS";
    pub const NEW_FLOW_BUDGET: &str = "NEW_FLOW_BUDGET";
    pub const NAT_REVERSE: &str = "NAT_REVERSE";
    pub const TX_PORTS: &str = "TX_PORTS";
    pub const CONTROL_LEASE: &str = "CONTROL_LEASE";
    pub const BACKEND_OWNERS: &str = "BACKEND_OWNERS";
    pub const RING_INPUTS: &str = "RING_INPUTS";
    pub const XLB_STATE: &str = "XLB_STATE";
    pub const FLOW_EVENTS: &str = "FLOW_EVENTS";
    pub const SYNC_STATS: &str = "SYNC_STATS";
    pub const TRACE_FILTER: &str = "TRACE_FILTER";
    pub const TRACE_EVENTS: &str = "TRACE_EVENTS";
    pub const TRACE_STATS: &str = "TRACE_STATS";
    pub const TRACE_NOTE: &str = "TRACE_NOTE";
    pub const TRACE_PROGS: &str = "TRACE_PROGS";
    pub const VIP_SLOTS: &str = "VIP_SLOTS";
    pub const VIP_FILTER: &str = "VIP_FILTER";
    pub const NAT_STATS: &str = "NAT_STATS";
    pub const NAT_SCRATCH: &str = "NAT_SCRATCH";

    /// Every map, in the order the control plane checks and pins them.
    pub const ALL: [&str; 29] = [
        XLB_STATE,
        VIPS,
        VIP_SLOTS,
        VIP_FILTER,
        VIP_ADDRS,
        RINGS,
        BACKENDS,
        LB_CONFIG,
        VIP_STATS,
        BACKEND_STATS,
        DROP_STATS,
        GLOBAL_STATS,
        FLOWS,
        CT_STATS,
        NEW_FLOW_BUDGET,
        NAT_REVERSE,
        NAT_STATS,
        NAT_SCRATCH,
        TX_PORTS,
        CONTROL_LEASE,
        BACKEND_OWNERS,
        RING_INPUTS,
        FLOW_EVENTS,
        SYNC_STATS,
        TRACE_FILTER,
        TRACE_EVENTS,
        TRACE_STATS,
        TRACE_NOTE,
        TRACE_PROGS,
    ];
}

/// The meaning of the pinned maps' contents. Bumped whenever a key or value
/// of a pinned map changes meaning or layout, or a map is removed: a
/// control plane finds the pinned state's version in `XLB_STATE` and
/// adopts only its own. A map the state lacks (one added since) is created
/// when the state is adopted, so adding a map keeps the version.
///
/// 2: `BackendInfo::vip`, and `VIP_SLOTS` and `VIP_FILTER` beside `VIPS`
/// (a state without them would send a VIP's packets to the kernel).
/// 3: rings hold two words per element (`RingElement`).
pub const LAYOUT_VERSION: u32 = 3;

/// `StateMeta::magic`: "xlbS".
pub const STATE_MAGIC: u32 = 0x786c_6253;

/// Value of the single-entry `XLB_STATE` array: what the pinned state is
/// and where it serves. Only userspace reads it. `magic` and `layout` stay
/// the first eight bytes in every version, so any xlb can tell whose state
/// it finds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StateMeta {
    pub magic: u32,
    pub layout: u32,
    /// When the state was created (Unix seconds).
    pub created_unix_s: u64,
    /// Inode of the network namespace the state serves.
    pub netns_inode: u64,
    pub ifindex: u32,
    /// 0 without a server-side interface.
    pub server_ifindex: u32,
    /// `XDP_FLAGS_*` mode bits the links were created with.
    pub xdp_flags: u32,
    pub _pad: u32,
}

/// Value of `BACKEND_OWNERS` (indexed by backend id): the control plane's
/// record of whose an id is, kept with the data plane's state so that a
/// restarted control plane gives every backend its id back. The XDP
/// program never reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendOwner {
    /// The backend's address (as in `BackendInfo`): its identity in its VIP.
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub family: u8,
    /// The backend's tier (`[[vip.backend]] tier`), so that a restarted
    /// controller restores a runtime backend in its tier.
    pub tier: u8,
    /// `VipMeta::index` of the VIP the id belongs to.
    pub vip: u32,
    /// The id's current generation (also when the id is free).
    pub generation: u16,
    /// `OWNER_F_*`.
    pub flags: u16,
    /// The runtime weight (`OWNER_F_WEIGHT`); with `OWNER_F_RUNTIME`, the
    /// weight of the backend added at runtime.
    pub weight_override: u32,
    /// Retired backends: when their grace ends (Unix seconds).
    pub retired_until_unix_s: u64,
}

/// `BackendOwner::flags`: the id is in use.
pub const OWNER_F_IN_USE: u16 = 1 << 0;
/// The backend was removed from the configuration and finishes its flows.
pub const OWNER_F_RETIRED: u16 = 1 << 1;
/// Drained at runtime (`xlb backend drain`).
pub const OWNER_F_DRAINED: u16 = 1 << 2;
/// `weight_override` is set (`xlb backend weight`).
pub const OWNER_F_WEIGHT: u16 = 1 << 3;
/// In its VIP's Maglev ring at the last sync (usable: reachable, weight
/// above 0, healthy).
pub const OWNER_F_IN_RING: u16 = 1 << 4;
/// Its health checks said down at the last sync.
pub const OWNER_F_DOWN: u16 = 1 << 5;
/// Added at runtime (`xlb backend add`), not by the configuration file: a
/// restarted control plane keeps it although the file does not name it,
/// with `weight_override` as its weight. Absent in records of older
/// control planes, which had only file backends.
pub const OWNER_F_RUNTIME: u16 = 1 << 6;

/// Name of the XDP entry point in the object file.
pub const PROGRAM_NAME: &str = "xlb";
/// The trace's recorder, which the entry point tail-calls (through
/// `TRACE_PROGS`) for a packet a trace records.
pub const TRACE_PROGRAM_NAME: &str = "xlb_trace";

/// Most VIPs (address, port, protocol) one instance serves.
pub const MAX_VIPS: u32 = 16_384;
/// Size of the backend table. Id 0 is reserved and means "no backend".
pub const MAX_BACKENDS: u32 = 65_536;
/// Default size of the connection table (`FLOWS`), set at load time.
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 262_144;
/// Reserved backend id: an empty Maglev slot.
pub const NO_BACKEND: u32 = 0;
/// Default Maglev table size (a prime, as the algorithm requires).
pub const DEFAULT_RING_SIZE: u32 = 65_537;
/// Largest Maglev table size accepted (a prime).
pub const MAX_RING_SIZE: u32 = 1_048_573;
/// Word 0 of every ring holds the ring size; slots start at this word.
/// Keeping the size inside the ring map makes the size and the slots one
/// atomically swapped unit.
pub const RING_FIRST_SLOT: u32 = 1;
/// One element of a ring map: two 4-byte words. The kernel keeps every
/// array element 8-byte aligned, so an array of single u32s would spend 8
/// bytes per slot; two words per element halve a ring's memory (and the
/// time the kernel spends zeroing it when it is created).
pub type RingElement = [u32; 2];
/// Words per ring element.
pub const RING_WORDS: u32 = 2;

/// The element of a ring map that holds word `word`, and the word's
/// position in it (word 0 is the size, `RING_FIRST_SLOT + i` is slot `i`).
#[inline(always)]
pub const fn ring_word(word: u32) -> (u32, usize) {
    (word / RING_WORDS, (word % RING_WORDS) as usize)
}

/// Elements of the ring map of a table of `size` slots.
pub const fn ring_elements(size: u32) -> u32 {
    (size + RING_FIRST_SLOT).div_ceil(RING_WORDS)
}
/// `BPF_F_INNER_MAP`: lets inner rings of different sizes share one outer map.
pub const BPF_F_INNER_MAP: u32 = 1 << 12;
/// `BPF_F_MMAPABLE`: an array the control plane fills through a memory
/// mapping, at memory speed, instead of one system call per slot.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Address families, as stored in keys.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// IP protocol numbers the data plane balances.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;

/// Key of the `VIPS` hash map.
///
/// IPv4 addresses occupy the first 4 bytes of `addr`, the rest is zero.
/// `port == 0` is an all-ports VIP, looked up when the exact port misses.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VipKey {
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// Forwarding modes (`VipMeta::mode`).
pub const MODE_DSR: u32 = 0;
/// Destination address and port rewritten to the backend's; replies
/// rewritten back to the VIP on their way out.
pub const MODE_NAT: u32 = 1;
/// Most interfaces the program redirects between (`TX_PORTS`).
pub const MAX_TX_PORTS: u32 = 64;

/// `VipMeta::flags`: hash on the client address only (session affinity).
pub const VIP_F_SOURCE_AFFINITY: u32 = 1 << 0;
/// `VipMeta::flags`: this node is not the VRRP master of the VIP's group:
/// its traffic goes to the kernel, never to a backend.
pub const VIP_F_STANDBY: u32 = 1 << 1;

/// Value of the `VIPS` hash map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipMeta {
    /// Index into `RINGS` and `VIP_STATS`; stable for the life of the VIP.
    pub index: u32,
    pub mode: u32,
    pub flags: u32,
    pub _pad: u32,
}

/// Value of the `VIP_SLOTS` array (indexed by `VipMeta::index`): the VIP
/// that holds the index, as `VIPS` has it; all zero while none does. A
/// connection-table hit finds its VIP here, from its backend's
/// `BackendInfo::vip`, instead of by a hash lookup in `VIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipSlot {
    pub key: VipKey,
    pub meta: VipMeta,
}

/// Slots of `VIP_FILTER`: a power of two, four per VIP at most.
pub const VIP_FILTER_SLOTS: u32 = 65_536;

/// The `VIP_FILTER` slot of a destination address (`FlowKey` words): a
/// packet whose slot counts no VIP is addressed to none, so it needs no
/// hash lookup to tell.
#[inline(always)]
pub fn vip_filter_slot(addr: &[u32; 4]) -> u32 {
    let folded =
        addr[0] ^ addr[1].rotate_left(8) ^ addr[2].rotate_left(16) ^ addr[3].rotate_left(24);
    // Fibonacci hashing: the top bits of the product mix every input bit.
    folded.wrapping_mul(0x9e37_79b1) >> (32 - VIP_FILTER_SLOTS.trailing_zeros())
}

/// `BackendInfo::flags`: the entry is in use.
pub const BACKEND_F_ACTIVE: u8 = 1 << 0;
/// `BackendInfo::flags`: established flows to this backend are not kept;
/// they are sent through Maglev again (`on_down = "reschedule"`).
pub const BACKEND_F_RESCHEDULE: u8 = 1 << 1;

/// Value of the `BACKENDS` array, indexed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendInfo {
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub family: u8,
    pub flags: u8,
    pub mac: [u8; 6],
    /// Bumped each time the id is given to a different backend, so that a
    /// connection-table entry made for the previous owner no longer matches.
    pub generation: u16,
    /// `VipMeta::index` of the VIP the id belongs to (`VIP_SLOTS`).
    pub vip: u32,
}

/// `LbConfig::flags`: the control plane has configured the node, which may
/// forward VIP traffic (whether a VRRP group's VIPs are forwarded here is
/// per VIP: `VIP_F_STANDBY`).
pub const LB_F_FORWARDING: u32 = 1 << 0;
/// `LbConfig::flags`: some VIP is in NAT mode, so non-VIP packets are
/// checked against `NAT_REVERSE` (replies from backends).
pub const LB_F_NAT: u32 = 1 << 1;
/// VIP frames whose destination MAC is not `LbConfig::mac` are not this
/// node's: they go to the kernel (which drops them as another host's)
/// instead of being forwarded. A switch floods frames for a MAC it has
/// lost (a node's port went down) to every port, and each xlb node would
/// otherwise forward a copy. Set on one-NIC nodes; with a server-side NIC,
/// VIP frames may arrive on either NIC, and only one MAC is known here.
pub const LB_F_OWN_MAC: u32 = 1 << 2;
/// Connection sync: report new and closing flows in `FLOW_EVENTS`.
pub const LB_F_SYNC: u32 = 1 << 3;

/// `LbConfig::flags`: a packet trace runs (`xlb trace`): packets that
/// match `TRACE_FILTER` are recorded in `TRACE_EVENTS`. Off, tracing costs
/// the data plane this one flag test per packet.
pub const LB_F_TRACE: u32 = 1 << 4;

/// Bytes of the `FLOW_EVENTS` ring buffer (a power-of-two number of pages):
/// 14,563 events (64 bytes and the kernel's 8-byte header) queued before
/// reports are lost (counted in `SYNC_STATS`).
pub const FLOW_EVENTS_BYTES: u32 = 1 << 20;

/// What a `FlowEvent` reports.
pub mod flow_event {
    /// A flow was inserted into `FLOWS`.
    pub const NEW: u8 = 1;
    /// A tracked TCP flow saw its first FIN or RST.
    pub const CLOSING: u8 = 2;
    /// A NAT packet found no resolved neighbour for its next hop: the
    /// control plane should resolve it. `key.dst` is the next hop's
    /// address, `backend` the interface it is on.
    pub const NEIGH: u8 = 3;
}

/// A record of `FLOW_EVENTS`: the data plane tells the control plane about
/// a flow, so that it can send the flow to its peers (connection sync), or
/// asks it to resolve a next hop (`flow_event::NEIGH`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowEvent {
    pub key: FlowKey,
    /// Backend id and generation, as in the `FlowState`.
    pub backend: u32,
    pub generation: u16,
    /// `FLOW_F_*`, as in the `FlowState`.
    pub flags: u16,
    /// `flow_event::*`.
    pub kind: u8,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    pub _pad: [u8; 6],
    /// `bpf_ktime_get_ns` of the packet (CLOCK_MONOTONIC).
    pub at: u64,
}

#[cfg(feature = "user")]
impl FlowEvent {
    /// Size of a record in `FLOW_EVENTS`.
    pub const SIZE: usize = 64;

    /// Reads a record of `FLOW_EVENTS` (native byte order, as the program
    /// wrote it); `None` if it is not one.
    pub fn from_bytes(b: &[u8]) -> Option<FlowEvent> {
        if b.len() != Self::SIZE {
            return None;
        }
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u16_at = |o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
        let words = |o: usize| [u32_at(o), u32_at(o + 4), u32_at(o + 8), u32_at(o + 12)];
        let mut at = [0u8; 8];
        at.copy_from_slice(&b[56..64]);
        Some(FlowEvent {
            key: FlowKey {
                src: words(0),
                dst: words(16),
                sport: u16_at(32),
                dport: u16_at(34),
                proto: b[36],
                _pad: [0; 3],
            },
            backend: u32_at(40),
            generation: u16_at(44),
            flags: u16_at(46),
            kind: b[48],
            family: b[49],
            _pad: [0; 6],
            at: u64::from_ne_bytes(at),
        })
    }
}

/// Indices of `SYNC_STATS` (per-CPU counts).
pub mod sync_stat {
    /// A `FlowEvent` that did not fit the ring buffer (the control plane
    /// fell behind): that flow reaches the peers only with the next full
    /// table.
    pub const EVENTS_LOST: u32 = 0;
    /// A `FlowEvent` queued for the control plane.
    pub const EVENTS_REPORTED: u32 = 1;
    /// Room to grow without changing the map's size.
    pub const COUNT: u32 = 8;
    pub const NAMES: [&str; 2] = ["events_lost", "events_reported"];
}

/// Indices of `NAT_STATS` (per-CPU counts): NAT's events beyond those in
/// `CT_STATS`, in a map of their own so that a state pinned before them
/// (whose `CT_STATS` has its size) is adopted, gaining the map, rather than
/// refused.
pub mod nat_stat {
    /// A NAT flow's packet hit its `FLOWS` entry but `NAT_REVERSE` had lost
    /// (evicted) the entry its replies are translated by: written again.
    pub const REVERSE_RESTORED: u32 = 0;
    /// Room to grow without changing the map's size.
    pub const COUNT: u32 = 8;
    pub const NAMES: [&str; 1] = ["reverse_restored"];
}

/// Bytes of the `TRACE_EVENTS` ring buffer (a power-of-two number of
/// pages): 1,260 records (200 bytes and the kernel's 8-byte header)
/// queued before records are lost (counted in `TRACE_STATS`).
pub const TRACE_EVENTS_BYTES: u32 = 1 << 18;
/// Bytes of a packet a `TraceRecord` holds: its first `TRACE_CAPTURE`.
pub const TRACE_CAPTURE: usize = 128;

/// What a packet trace records (`TraceRecord`) and how it is filtered
/// (`TraceFilter`).
pub mod trace {
    /// `TraceRecord::kind`: a TCP or UDP packet (to a VIP or not).
    pub const KIND_FLOW: u8 = 0;
    /// An ICMP "fragmentation needed" / "packet too big" about a VIP's
    /// packet: the record's key is the client's flow it quotes.
    pub const KIND_ICMP_ERROR: u8 = 1;
    /// A NAT backend's reply: the record's key is the client's flow it
    /// belongs to (client → VIP), not the reply's own addresses.
    pub const KIND_NAT_REPLY: u8 = 2;
    /// An ARP request or IPv6 neighbour solicitation: the key's `dst` is
    /// the address asked for.
    pub const KIND_NEIGHBOUR: u8 = 3;
    /// An IP header too broken to read addresses from: the key is zero.
    pub const KIND_MALFORMED: u8 = 4;
    pub const KIND_NAMES: [&str; 5] = ["flow", "icmp_error", "nat_reply", "neighbour", "malformed"];

    /// `TraceRecord::conntrack`: the connection table was not consulted.
    pub const CT_NONE: u8 = 0;
    /// The flow was in the table, its backend still valid.
    pub const CT_HIT: u8 = 1;
    /// Not in the table: Maglev chose.
    pub const CT_MISS: u8 = 2;
    /// In the table, idle past its timeout: Maglev chose.
    pub const CT_EXPIRED: u8 = 3;
    /// In the table, its backend removed, replaced or rescheduled: Maglev
    /// chose.
    pub const CT_STALE: u8 = 4;
    pub const CT_NAMES: [&str; 5] = ["-", "hit", "miss", "expired", "stale"];

    /// `TraceRecord::vip` of a packet that matched no VIP.
    pub const NO_VIP: u32 = u32::MAX;
    /// `TraceRecord::reason` of a packet forwarded.
    pub const NO_REASON: u8 = u8::MAX;

    /// Why a packet went to the kernel (`TraceRecord::reason` of an
    /// `XDP_PASS`; a drop's reason is a `drop::*`).
    pub mod pass {
        /// No VIP at this address, port and protocol.
        pub const NOT_VIP: u8 = 0;
        /// The control plane has not switched forwarding on.
        pub const NOT_FORWARDING: u8 = 1;
        /// The VIP's VRRP group is mastered by another node.
        pub const STANDBY: u8 = 2;
        /// The frame is addressed to another host's MAC (`LB_F_OWN_MAC`).
        pub const OTHER_MAC: u8 = 3;
        /// The rewrite did not fit the frame.
        pub const REWRITE_FAILED: u8 = 4;
        /// NAT: the kernel routes it (next hop not resolved yet, or the
        /// route is not one XDP can send on).
        pub const NAT_TO_KERNEL: u8 = 5;
        /// An ICMP error that quotes no flow of a backend.
        pub const NO_FLOW: u8 = 6;
        /// An ARP or neighbour query: the kernel answers.
        pub const NEIGHBOUR: u8 = 7;
        pub const COUNT: u8 = 8;
        pub const NAMES: [&str; COUNT as usize] = [
            "not_vip",
            "not_forwarding",
            "standby",
            "other_mac",
            "rewrite_failed",
            "nat_to_kernel",
            "no_flow",
            "neighbour",
        ];
    }

    /// `TraceFilter::flags`: only dropped packets.
    pub const F_DROPS_ONLY: u8 = 1 << 0;

    /// Indices of `TRACE_STATS` (per-CPU counts).
    pub mod stat {
        /// A record queued for the reader.
        pub const RECORDED: u32 = 0;
        /// A matching packet whose record did not fit the ring buffer.
        pub const LOST: u32 = 1;
        /// Room to grow without changing the map's size.
        pub const COUNT: u32 = 4;
    }

    /// A decision, packed into the one value the data plane's decision
    /// returns to its exit, which hands it on to the recorder: bits 0..8
    /// the verdict, 8..12 the connection-table outcome, 12..16 the kind,
    /// 16..24 the reason, 24..28 the family, and the flags below. The
    /// recorder finds the VIP index and the backend id again from the
    /// packet and the maps: carrying them would cost the decision stack
    /// it does not have.
    pub type Decision = u64;

    /// The packet matched a VIP.
    pub const MATCHED_VIP: Decision = 1 << 28;
    /// A backend was chosen for it.
    pub const CHOSE_BACKEND: Decision = 1 << 29;
    /// NAT rewrote the packet before its verdict: its addresses are no
    /// longer the client's flow.
    pub const TRANSLATED: Decision = 1 << 30;
    /// The decision is for the trace (a trace runs).
    pub const NOTED: Decision = 1 << 31;

    /// What a decision site knows before the verdict.
    #[inline(always)]
    pub const fn what(kind: u8, family: u8, conntrack: u8, reason: u8) -> Decision {
        ((conntrack as u64) & 0xf) << 8
            | ((kind as u64) & 0xf) << 12
            | (reason as u64) << 16
            | ((family as u64) & 0xf) << 24
            | NOTED
    }

    pub const fn verdict(d: Decision) -> u32 {
        (d & 0xff) as u32
    }
    pub const fn conntrack(d: Decision) -> u8 {
        ((d >> 8) & 0xf) as u8
    }
    pub const fn kind(d: Decision) -> u8 {
        ((d >> 12) & 0xf) as u8
    }
    pub const fn reason(d: Decision) -> u8 {
        (d >> 16) as u8
    }
    pub const fn family(d: Decision) -> u8 {
        ((d >> 24) & 0xf) as u8
    }
}

/// Value of the single-entry `TRACE_FILTER` array: which packets a trace
/// records. Read by the data plane only while `LB_F_TRACE` is set. A
/// packet matches when its key (the client's flow: `TraceRecord::key`)
/// passes every test: `src & src_mask == src` (userspace stores `src`
/// masked), the same for `dst`, and each nonzero field below.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TraceFilter {
    /// Client address words (as in `FlowKey`) and mask: a prefix.
    pub src: [u32; 4],
    pub src_mask: [u32; 4],
    /// Destination (VIP) address words and mask.
    pub dst: [u32; 4],
    pub dst_mask: [u32; 4],
    /// Records stop at this `bpf_ktime_get_ns`, whatever the flag says:
    /// a trace whose control plane is gone still ends.
    pub until: u64,
    /// Either port (network byte order); 0: any.
    pub port: u16,
    /// The destination port (network byte order); 0: any.
    pub dst_port: u16,
    /// IP protocol; 0: any.
    pub proto: u8,
    /// `FAMILY_V4` or `FAMILY_V6`; 0: any.
    pub family: u8,
    /// `trace::F_*`.
    pub flags: u8,
    pub _pad: u8,
}

/// A record of `TRACE_EVENTS`: one packet and what the data plane decided
/// for it. Written in place in the ring (the program has no stack for a
/// copy); read by `xlb trace`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRecord {
    /// `bpf_ktime_get_ns` of the packet (CLOCK_MONOTONIC).
    pub at: u64,
    /// The client's flow (see `trace::KIND_*` for what it holds when the
    /// packet is not a plain flow packet).
    pub key: FlowKey,
    /// `VipMeta::index`, or `trace::NO_VIP`.
    pub vip: u32,
    /// Backend id chosen; 0: none.
    pub backend: u32,
    /// The interface the packet arrived on.
    pub ifindex: u32,
    /// The packet's length on arrival.
    pub len: u32,
    /// The XDP action returned (`XDP_DROP` 1, `XDP_PASS` 2, `XDP_TX` 3,
    /// `XDP_REDIRECT` 4).
    pub verdict: u8,
    /// `trace::CT_*`.
    pub conntrack: u8,
    /// A drop's `drop::*`, a pass's `trace::pass::*`, else `NO_REASON`.
    pub reason: u8,
    /// `FAMILY_V4`, `FAMILY_V6`, or 0 (not known).
    pub family: u8,
    /// `trace::KIND_*`.
    pub kind: u8,
    pub _pad: u8,
    /// Bytes of `data` that hold the packet's first bytes (as it
    /// arrived: before any rewrite).
    pub captured: u16,
    pub data: [u8; TRACE_CAPTURE],
}

#[cfg(feature = "user")]
impl TraceRecord {
    /// Size of a record in `TRACE_EVENTS`.
    pub const SIZE: usize = 200;

    /// Reads a record of `TRACE_EVENTS` (native byte order, as the
    /// program wrote it); `None` if it is not one.
    pub fn from_bytes(b: &[u8]) -> Option<TraceRecord> {
        if b.len() != Self::SIZE {
            return None;
        }
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u16_at = |o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
        let words = |o: usize| [u32_at(o), u32_at(o + 4), u32_at(o + 8), u32_at(o + 12)];
        let mut at = [0u8; 8];
        at.copy_from_slice(&b[0..8]);
        let mut data = [0u8; TRACE_CAPTURE];
        data.copy_from_slice(&b[72..72 + TRACE_CAPTURE]);
        Some(TraceRecord {
            at: u64::from_ne_bytes(at),
            key: FlowKey {
                src: words(8),
                dst: words(24),
                sport: u16_at(40),
                dport: u16_at(42),
                proto: b[44],
                _pad: [0; 3],
            },
            vip: u32_at(48),
            backend: u32_at(52),
            ifindex: u32_at(56),
            len: u32_at(60),
            verdict: b[64],
            conntrack: b[65],
            reason: b[66],
            family: b[67],
            kind: b[68],
            _pad: 0,
            // Never more than was reserved, whatever the bytes say.
            captured: u16_at(70).min(TRACE_CAPTURE as u16),
            data,
        })
    }

    /// The packet bytes captured.
    pub fn packet(&self) -> &[u8] {
        &self.data[..usize::from(self.captured)]
    }
}

/// Value of the single-entry `LB_CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LbConfig {
    /// MAC address of the NIC the program is attached to (source of DSR frames).
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    pub flags: u32,
    /// Idle timeouts of connection-table entries, in seconds (0 = never).
    pub tcp_timeout: u32,
    /// After a FIN or RST: long enough for the last ACKs, short enough to
    /// free the entry soon.
    pub tcp_closing_timeout: u32,
    pub udp_timeout: u32,
    /// New entries a CPU may insert per second (0 = no limit). Above it,
    /// flows are still balanced by Maglev but not remembered, so a SYN
    /// flood cannot push established flows out of the LRU table.
    pub new_flows_per_cpu: u32,
    pub _pad2: u32,
}

/// Value of the `FLOWS` LRU hash (key: `FlowKey` of the client's packet).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowState {
    pub backend: u32,
    /// `BackendInfo::generation` when the entry was made.
    pub generation: u16,
    pub flags: u16,
    /// CLOCK_MONOTONIC of the last packet (`bpf_ktime_get_coarse_ns`:
    /// up to `COARSE_CLOCK_LAG_NS` early), refreshed at most every
    /// `FLOW_TOUCH_NS`, to keep writes off the hot path.
    pub last_seen: u64,
}

/// `FlowState::flags`: a FIN or RST was seen.
pub const FLOW_F_CLOSING: u16 = 1 << 0;
/// Minimum interval between `last_seen` refreshes of one entry.
pub const FLOW_TOUCH_NS: u64 = 1_000_000_000;
/// How far `FlowState::last_seen` may lag CLOCK_MONOTONIC: the data plane
/// stamps it with `bpf_ktime_get_coarse_ns`, the time of the last tick
/// (one tick: 10 ms at the lowest `CONFIG_HZ`, 100).
pub const COARSE_CLOCK_LAG_NS: u64 = 10_000_000;

/// Per-CPU token bucket for connection-table inserts.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowBudget {
    pub tokens: u64,
    pub last_refill: u64,
}

/// Indices of `CT_STATS` (per-CPU packet counts).
pub mod ct {
    /// The flow was in the table and its backend still valid.
    pub const HIT: u32 = 0;
    /// Not in the table (or expired, or its backend gone): Maglev chose.
    pub const MISS: u32 = 1;
    pub const INSERT: u32 = 2;
    /// Not inserted: over the per-CPU new-flow rate.
    pub const REFUSED: u32 = 3;
    /// In the table but idle past its timeout.
    pub const EXPIRED: u32 = 4;
    /// In the table but its backend was removed or rescheduled.
    pub const STALE_BACKEND: u32 = 5;
    /// A TCP packet without SYN missed: state lost (LRU eviction, restart).
    pub const MISS_MIDFLOW: u32 = 6;
    /// A reply from a NAT backend, rewritten back to the VIP.
    pub const NAT_REPLY: u32 = 7;
    /// NAT next hop unknown to the kernel yet: passed to it to resolve.
    pub const NAT_NO_NEIGH: u32 = 8;
    /// An ICMP "fragmentation needed" / "packet too big" sent to the
    /// backend of the flow it quotes.
    pub const ICMP_TO_FLOW: u32 = 9;
    pub const COUNT: u32 = 10;
    pub const NAMES: [&str; COUNT as usize] = [
        "hit",
        "miss",
        "insert",
        "refused",
        "expired",
        "stale_backend",
        "miss_midflow",
        "nat_reply",
        "nat_no_neigh",
        "icmp_to_flow",
    ];
}

/// A packet and byte counter pair, kept per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

impl Counters {
    pub fn add(&mut self, other: &Counters) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }
}

/// Indices of `GLOBAL_STATS`.
pub mod global {
    /// Every packet the program saw.
    pub const RX: u32 = 0;
    /// Passed to the kernel (not VIP traffic, or VIP traffic while not forwarding).
    pub const PASS: u32 = 1;
    /// Forwarded to a backend.
    pub const FORWARD: u32 = 2;
    /// Dropped (see `DROP_STATS` for the reason).
    pub const DROP: u32 = 3;
    pub const COUNT: u32 = 4;
    pub const NAMES: [&str; COUNT as usize] = ["rx", "pass", "forward", "drop"];
}

/// Drop reasons, indices of `DROP_STATS`.
pub mod drop {
    /// IPv4 header shorter than 20 bytes or than its IHL says.
    pub const IPV4_TRUNCATED: u32 = 0;
    /// IHL below 5, or version field not 4.
    pub const IPV4_BAD_HEADER: u32 = 1;
    /// IPv6 fixed header cut short.
    pub const IPV6_TRUNCATED: u32 = 2;
    /// TCP or UDP header cut short (TCP: its options included; also a
    /// data offset below 5).
    pub const L4_TRUNCATED: u32 = 3;
    /// IPv4 fragment to a VIP: no ports to hash on.
    pub const FRAGMENT: u32 = 4;
    /// VIP has no ring, or the chosen slot is empty (no healthy backend).
    pub const NO_BACKEND: u32 = 5;
    /// The slot names a backend id that is not active.
    pub const BAD_BACKEND: u32 = 6;
    /// An ARP request or IPv6 neighbour solicitation for a VIP address
    /// while no control plane holds the lease (`CONTROL_LEASE`): left
    /// unanswered, so that the VRRP node that now owns the VIP answers.
    pub const ORPHAN_NEIGH: u32 = 7;
    pub const COUNT: u32 = 8;
    pub const NAMES: [&str; COUNT as usize] = [
        "ipv4_truncated",
        "ipv4_bad_header",
        "ipv6_truncated",
        "l4_truncated",
        "fragment",
        "no_backend",
        "bad_backend",
        "orphan_neigh",
    ];
}

/// Address bytes (as in `VipKey` / `BackendInfo`) from `FlowKey` words:
/// the same wire bytes, so an IPv4 address (word 0, rest zero) gives its 4
/// bytes followed by zeros.
#[inline(always)]
pub fn words_to_bytes(w: &[u32; 4]) -> [u8; 16] {
    // Copies into one zeroed array: an array literal built from four
    // temporaries costs BPF stack the XDP program does not have.
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&w[0].to_ne_bytes());
    b[4..8].copy_from_slice(&w[1].to_ne_bytes());
    b[8..12].copy_from_slice(&w[2].to_ne_bytes());
    b[12..].copy_from_slice(&w[3].to_ne_bytes());
    b
}

/// `FlowKey` address words from address bytes; the inverse of
/// [`words_to_bytes`].
#[inline(always)]
pub fn bytes_to_words(b: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
        u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
    ]
}

/// `addr` as keys and values store it (IPv4 in the first four bytes, the
/// rest zero), and its family.
pub fn addr_bytes(addr: core::net::IpAddr) -> ([u8; 16], u8) {
    match addr {
        core::net::IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (b, FAMILY_V4)
        }
        core::net::IpAddr::V6(a) => (a.octets(), FAMILY_V6),
    }
}

impl VipKey {
    /// The key of the VIP (`addr`, `port` in host order, IP protocol `proto`).
    pub fn new(addr: core::net::IpAddr, port: u16, proto: u8) -> VipKey {
        let (addr, family) = addr_bytes(addr);
        VipKey {
            addr,
            port: port.to_be(),
            proto,
            family,
        }
    }

    /// The key marking this key's address as one that carries VIPs
    /// (`VIP_ADDRS`: port and protocol zero).
    pub fn address_only(&self) -> VipKey {
        VipKey {
            port: 0,
            proto: 0,
            ..*self
        }
    }
}

/// The 5-tuple the flow hash is computed over. Address words are the raw
/// network-order bytes of the packet read as native `u32`s (IPv4: word 0 only).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    /// The key of the flow from `src`:`sport` to `dst`:`dport` (ports in
    /// host order), IP protocol `proto`.
    pub fn new(
        src: core::net::IpAddr,
        dst: core::net::IpAddr,
        sport: u16,
        dport: u16,
        proto: u8,
    ) -> FlowKey {
        FlowKey {
            src: bytes_to_words(&addr_bytes(src).0),
            dst: bytes_to_words(&addr_bytes(dst).0),
            sport: sport.to_be(),
            dport: dport.to_be(),
            proto,
            _pad: [0; 3],
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all these are #[repr(C)], Copy, contain only integers and byte
    // arrays, and have explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for super::VipKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VipMeta {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VipSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BackendInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LbConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowBudget {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StateMeta {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BackendOwner {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TraceFilter {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    /// The record as the program lays it out: `#[repr(C)]` fields in
    /// order, native byte order.
    #[cfg(feature = "user")]
    #[test]
    fn flow_events_read_back_field_by_field() {
        let e = FlowEvent {
            key: FlowKey {
                src: [1, 2, 3, 4],
                dst: [5, 6, 7, 8],
                sport: 0x1234,
                dport: 0x5678,
                proto: IPPROTO_TCP,
                _pad: [0; 3],
            },
            backend: 77,
            generation: 3,
            flags: FLOW_F_CLOSING,
            kind: flow_event::CLOSING,
            family: FAMILY_V6,
            _pad: [0; 6],
            at: 0x0102_0304_0506_0708,
        };
        let mut b = [0u8; FlowEvent::SIZE];
        for (i, w) in e.key.src.iter().chain(&e.key.dst).enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        b[32..34].copy_from_slice(&e.key.sport.to_ne_bytes());
        b[34..36].copy_from_slice(&e.key.dport.to_ne_bytes());
        b[36] = e.key.proto;
        b[40..44].copy_from_slice(&e.backend.to_ne_bytes());
        b[44..46].copy_from_slice(&e.generation.to_ne_bytes());
        b[46..48].copy_from_slice(&e.flags.to_ne_bytes());
        b[48] = e.kind;
        b[49] = e.family;
        b[56..64].copy_from_slice(&e.at.to_ne_bytes());
        assert_eq!(FlowEvent::from_bytes(&b), Some(e));
        assert_eq!(FlowEvent::from_bytes(&b[..63]), None);
        assert_eq!(core::mem::offset_of!(FlowEvent, at), 56);
        assert_eq!(core::mem::offset_of!(FlowEvent, kind), 48);
    }

    /// The record as the program lays it out: `#[repr(C)]` fields in
    /// order, native byte order; a `captured` past the buffer is capped.
    #[cfg(feature = "user")]
    #[test]
    fn trace_records_read_back_field_by_field() {
        let mut b = [0u8; TraceRecord::SIZE];
        b[0..8].copy_from_slice(&0x0102_0304_0506_0708u64.to_ne_bytes());
        for i in 0..8u32 {
            let o = 8 + i as usize * 4;
            b[o..o + 4].copy_from_slice(&(i + 1).to_ne_bytes());
        }
        b[40..42].copy_from_slice(&0x1234u16.to_ne_bytes());
        b[42..44].copy_from_slice(&0x5678u16.to_ne_bytes());
        b[44] = IPPROTO_UDP;
        b[48..52].copy_from_slice(&7u32.to_ne_bytes());
        b[52..56].copy_from_slice(&77u32.to_ne_bytes());
        b[56..60].copy_from_slice(&3u32.to_ne_bytes());
        b[60..64].copy_from_slice(&1500u32.to_ne_bytes());
        b[64..70].copy_from_slice(&[3, trace::CT_STALE, trace::NO_REASON, FAMILY_V6, 2, 0]);
        b[70..72].copy_from_slice(&60u16.to_ne_bytes());
        b[72] = 0xaa;
        b[199] = 0xbb;
        let r = TraceRecord::from_bytes(&b).expect("a record");
        assert_eq!(r.at, 0x0102_0304_0506_0708);
        assert_eq!((r.key.src, r.key.dst), ([1, 2, 3, 4], [5, 6, 7, 8]));
        assert_eq!(
            (r.key.sport, r.key.dport, r.key.proto),
            (0x1234, 0x5678, IPPROTO_UDP)
        );
        assert_eq!((r.vip, r.backend, r.ifindex, r.len), (7, 77, 3, 1500));
        assert_eq!(
            (r.verdict, r.conntrack, r.reason, r.family, r.kind),
            (
                3,
                trace::CT_STALE,
                trace::NO_REASON,
                FAMILY_V6,
                trace::KIND_NAT_REPLY
            )
        );
        assert_eq!(r.packet().len(), 60);
        assert_eq!((r.data[0], r.data[127]), (0xaa, 0xbb));
        b[70..72].copy_from_slice(&1000u16.to_ne_bytes());
        assert_eq!(
            TraceRecord::from_bytes(&b).unwrap().packet().len(),
            TRACE_CAPTURE
        );
        assert_eq!(TraceRecord::from_bytes(&b[..199]), None);
        assert_eq!(core::mem::offset_of!(TraceRecord, key), 8);
        assert_eq!(core::mem::offset_of!(TraceRecord, verdict), 64);
        assert_eq!(core::mem::offset_of!(TraceRecord, captured), 70);
        assert_eq!(core::mem::offset_of!(TraceRecord, data), 72);
    }

    #[test]
    fn trace_decisions_pack_into_one_value_and_back() {
        use trace::*;
        let d = what(KIND_ICMP_ERROR, FAMILY_V6, CT_EXPIRED, 5) | TRANSLATED | 3;
        assert_eq!(verdict(d), 3);
        assert_eq!(conntrack(d), CT_EXPIRED);
        assert_eq!(kind(d), KIND_ICMP_ERROR);
        assert_eq!(reason(d), 5);
        assert_eq!(family(d), FAMILY_V6);
        assert_ne!(d & NOTED, 0);
        assert_eq!(d & (MATCHED_VIP | CHOSE_BACKEND), 0);
        let d = what(KIND_FLOW, FAMILY_V4, CT_HIT, NO_REASON) | MATCHED_VIP | CHOSE_BACKEND;
        assert_eq!(
            (reason(d), family(d), kind(d)),
            (NO_REASON, FAMILY_V4, KIND_FLOW)
        );
        assert_eq!(verdict(d), 0);
        assert_ne!(d & MATCHED_VIP, 0);
    }

    #[test]
    fn address_words_and_bytes_round_trip() {
        let v4 = [198u8, 18, 0, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let w = bytes_to_words(&v4);
        assert_eq!(w[0], u32::from_ne_bytes([198, 18, 0, 100]));
        assert_eq!(&w[1..], &[0, 0, 0]);
        assert_eq!(words_to_bytes(&w), v4);
        let v6: [u8; 16] = core::array::from_fn(|i| i as u8 + 1);
        assert_eq!(words_to_bytes(&bytes_to_words(&v6)), v6);
    }

    #[test]
    fn vip_keys_hold_addresses_as_the_wire_does() {
        let k = VipKey::new("198.18.0.100".parse().unwrap(), 80, IPPROTO_TCP);
        assert_eq!(&k.addr[..4], &[198, 18, 0, 100]);
        assert_eq!(&k.addr[4..], &[0; 12]);
        assert_eq!((k.port, k.family), (80u16.to_be(), FAMILY_V4));
        let a = k.address_only();
        assert_eq!((a.port, a.proto, a.addr), (0, 0, k.addr));
        let k6 = VipKey::new("fd00:18::100".parse().unwrap(), 53, IPPROTO_UDP);
        assert_eq!(k6.family, FAMILY_V6);
        assert_eq!(k6.addr[15], 0);
        assert_eq!(k6.addr[14], 1);
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<VipKey>(), 20);
        assert_eq!(size_of::<VipMeta>(), 16);
        assert_eq!(size_of::<BackendInfo>(), 32);
        assert_eq!(size_of::<VipSlot>(), 36);
        assert_eq!(size_of::<LbConfig>(), 32);
        assert_eq!(size_of::<FlowState>(), 16);
        assert_eq!(size_of::<FlowBudget>(), 16);
        assert_eq!(size_of::<Counters>(), 16);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<StateMeta>(), 40);
        assert_eq!(size_of::<FlowEvent>(), 64);
        assert_eq!(size_of::<BackendOwner>(), 40);
        assert_eq!(size_of::<TraceFilter>(), 80);
        assert_eq!(size_of::<TraceRecord>(), 200);
    }
}
