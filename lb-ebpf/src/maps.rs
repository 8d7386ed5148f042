//! Every map of the data plane, in one place. Names match `lb_common::map_names`.

use aya_ebpf::{
    btf_maps::{
        Array, ArrayOfMaps, DevMapHash, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf,
    },
    macros::btf_map,
};
use lb_common::{
    BPF_F_INNER_MAP, BPF_F_MMAPABLE, BackendInfo, BackendOwner, Counters, DEFAULT_FLOW_TABLE_SIZE,
    DEFAULT_RING_SIZE, FLOW_EVENTS_BYTES, FlowBudget, FlowEvent, FlowKey, FlowState, LbConfig,
    MAX_BACKENDS, MAX_TX_PORTS, MAX_VIPS, RingElement, StateMeta, TRACE_EVENTS_BYTES, TraceFilter,
    TraceRecord, VIP_FILTER_SLOTS, VipKey, VipMeta, VipSlot, ct, drop, global, nat_stat,
    ring_elements, sync_stat, trace,
};

/// One Maglev ring per VIP, two words per element (`ring_word`): word 0
/// holds the ring size, words `1..=size` hold backend ids. The template
/// size is only a default: `BPF_F_INNER_MAP` lets userspace insert rings
/// of any size, and `BPF_F_MMAPABLE` lets it fill a new ring through a
/// memory mapping.
pub type Ring = Array<
    RingElement,
    { ring_elements(DEFAULT_RING_SIZE) as usize },
    { (BPF_F_INNER_MAP | BPF_F_MMAPABLE) as usize },
>;

/// (address, port, protocol) → VIP.
#[btf_map]
pub static VIPS: HashMap<VipKey, VipMeta, { MAX_VIPS as usize }> = HashMap::new();

/// VIP index → the VIP that holds it (`VipSlot`): how a connection-table
/// hit finds its VIP (through its backend's `BackendInfo::vip`) without a
/// hash lookup. Written by userspace together with `VIPS`.
#[btf_map]
pub static VIP_SLOTS: Array<VipSlot, { MAX_VIPS as usize }> = Array::new();

/// `lb_common::vip_filter_slot` of a destination address → how many VIPs
/// have an address in that slot. Zero: the packet is addressed to no VIP,
/// which costs no hash lookup to tell. Raised before a VIP enters `VIPS`,
/// lowered after it leaves.
#[btf_map]
pub static VIP_FILTER: Array<u32, { VIP_FILTER_SLOTS as usize }> = Array::new();

/// Addresses that carry at least one VIP (value unused). Consulted only on
/// exceptional paths (fragments, truncated L4) to tell VIP traffic, which is
/// dropped and counted, from other traffic, which goes to the kernel.
#[btf_map]
pub static VIP_ADDRS: HashMap<VipKey, u32, { MAX_VIPS as usize }> = HashMap::new();

/// VIP index → its current Maglev ring. Userspace swaps a whole ring in one
/// update, so a packet never sees a half-written table.
#[btf_map]
pub static RINGS: ArrayOfMaps<Ring, { MAX_VIPS as usize }> = ArrayOfMaps::new();

/// Backend id → where to send. Id 0 is never active.
#[btf_map]
pub static BACKENDS: Array<BackendInfo, { MAX_BACKENDS as usize }> = Array::new();

/// Node-wide settings: our MAC, the connection-table timeouts and budget,
/// and the node flags (configured, some VIP in NAT mode).
#[btf_map]
pub static LB_CONFIG: Array<LbConfig, 1> = Array::new();

#[btf_map]
pub static VIP_STATS: PerCpuArray<Counters, { MAX_VIPS as usize }> = PerCpuArray::new();

#[btf_map]
pub static BACKEND_STATS: PerCpuArray<Counters, { MAX_BACKENDS as usize }> = PerCpuArray::new();

#[btf_map]
pub static DROP_STATS: PerCpuArray<u64, { drop::COUNT as usize }> = PerCpuArray::new();

#[btf_map]
pub static GLOBAL_STATS: PerCpuArray<Counters, { global::COUNT as usize }> = PerCpuArray::new();

/// The connection table: client 5-tuple → backend. One table shared by all
/// CPUs (not per-CPU): a flow must keep its backend even when its packets
/// move to another CPU (RSS changes, generic XDP, veth). Its size is set by
/// userspace at load time.
#[btf_map]
pub static FLOWS: LruHashMap<FlowKey, FlowState, { DEFAULT_FLOW_TABLE_SIZE as usize }> =
    LruHashMap::new();

#[btf_map]
pub static CT_STATS: PerCpuArray<u64, { ct::COUNT as usize }> = PerCpuArray::new();

/// Per-CPU token bucket limiting connection-table inserts.
#[btf_map]
pub static NEW_FLOW_BUDGET: PerCpuArray<FlowBudget, 1> = PerCpuArray::new();

/// NAT replies: (backend → client) 5-tuple → the VIP to put back as source.
/// Filled together with `FLOWS` for flows of NAT VIPs, and looked up by
/// every packet of theirs that hits `FLOWS`, which writes it again if the
/// LRU evicted it (`nat::keep_reverse`).
#[btf_map]
pub static NAT_REVERSE: LruHashMap<FlowKey, VipKey, { DEFAULT_FLOW_TABLE_SIZE as usize }> =
    LruHashMap::new();

/// NAT's events beyond `CT_STATS` (`lb_common::nat_stat`).
#[btf_map]
pub static NAT_STATS: PerCpuArray<u64, { nat_stat::COUNT as usize }> = PerCpuArray::new();

/// Per CPU: the key of the reply of the NAT packet being processed, built
/// here because the stack has no room for it (`nat::keep_reverse`).
#[btf_map]
pub static NAT_SCRATCH: PerCpuArray<FlowKey, 1> = PerCpuArray::new();

/// Interfaces NAT may redirect to (ifindex → ifindex), filled by userspace
/// with the interfaces xlb is attached to.
#[btf_map]
pub static TX_PORTS: DevMapHash<{ MAX_TX_PORTS as usize }> = DevMapHash::new();

/// Until when (`bpf_ktime_get_ns`) a control plane vouches for this node's
/// VRRP mastership; 0 = no lease (no VRRP). Past it, ARP and neighbour
/// solicitations for VIP addresses are left unanswered: the node's
/// control plane is gone, and a backup owns the VIPs by now.
#[btf_map]
pub static CONTROL_LEASE: Array<u64, 1> = Array::new();

/// New and closing flows, for the control plane to send to its peers
/// (`LB_F_SYNC`). When it is full, reports are dropped and counted: the
/// data plane never waits for the control plane.
#[btf_map]
pub static FLOW_EVENTS: RingBuf<FlowEvent, { FLOW_EVENTS_BYTES as usize }> = RingBuf::new();

#[btf_map]
pub static SYNC_STATS: PerCpuArray<u64, { sync_stat::COUNT as usize }> = PerCpuArray::new();

/// Which packets a trace records; read only while `LB_F_TRACE` is set.
#[btf_map]
pub static TRACE_FILTER: Array<TraceFilter, 1> = Array::new();

/// The packets a trace matched and what was decided for each, for `xlb
/// trace` to read. Full, records are lost and counted: the data plane
/// never waits for the reader.
#[btf_map]
pub static TRACE_EVENTS: RingBuf<TraceRecord, { TRACE_EVENTS_BYTES as usize }> = RingBuf::new();

/// Per CPU: the decision of the packet being traced (`trace::Decision`),
/// from the program's exit to the recorder it tail-calls.
#[btf_map]
pub static TRACE_NOTE: PerCpuArray<u64, 1> = PerCpuArray::new();

/// Slot 0: the recorder (`xlb_trace`), set by the control plane when it
/// loads the program. A tail call gives the recorder a stack of its own.
#[btf_map]
pub static TRACE_PROGS: ProgramArray<1> = ProgramArray::new();

#[btf_map]
pub static TRACE_STATS: PerCpuArray<u64, { trace::stat::COUNT as usize }> = PerCpuArray::new();

// Control-plane bookkeeping, never read by the program: declared here so
// that it is pinned, and checked for compatibility, with the maps it
// describes.

/// Backend id → whose it is (VIP, generation, runtime drain/weight).
#[btf_map]
pub static BACKEND_OWNERS: Array<BackendOwner, { MAX_BACKENDS as usize }> = Array::new();

/// VIP index → digest of the input its installed ring was built from.
#[btf_map]
pub static RING_INPUTS: Array<u64, { MAX_VIPS as usize }> = Array::new();

/// What the pinned state is (layout version) and where it serves.
#[btf_map]
pub static XLB_STATE: Array<StateMeta, 1> = Array::new();
