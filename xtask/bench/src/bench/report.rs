//! Everything one run measured, and its rendering as docs/benchmarks.md.

use std::fmt::Write as _;
use std::time::Duration;

use lb_common::DEFAULT_RING_SIZE;

use super::machine::Machine;
use super::median;
use super::{
    backends, code, controlplane, dataplane, e2e, failover, health, http, metrics, nat_cost,
    node_loss, restart, scale, sync,
};

pub struct Report {
    pub machine: Machine,
    pub quick: bool,
    pub elapsed: Duration,
    pub dataplane: Vec<dataplane::Row>,
    /// The data-plane program as the kernel loaded it.
    pub code: Option<code::Code>,
    pub nat: Vec<nat_cost::Row>,
    pub maglev: Vec<controlplane::Row>,
    /// Time to install an empty ring (see `controlplane::Results`).
    pub empty_ring_ms: f64,
    /// `xlb backend add|remove`: time to the ring, slots and flows moved.
    pub backends: Option<backends::Results>,
    pub health: Option<health::Results>,
    /// The health checker and the data plane with and without scraping.
    pub metrics: Option<metrics::Results>,
    /// Removal and VRRP failover times.
    pub failover: Vec<failover::Row>,
    /// Connections through restarts, crashes and upgrades.
    pub restart: Vec<restart::Row>,
    /// Connection sync in a VRRP pair: lag and throughput.
    pub sync: Option<sync::Results>,
    pub pps: Vec<e2e::Row>,
    /// Packets per second through xlb NAT and nftables DNAT, two-armed.
    pub nat_pps: Vec<e2e::Row>,
    pub http: Vec<http::Row>,
    /// wrk through xlb NAT and its alternatives, two-armed.
    pub nat_http: Vec<http::Row>,
    /// 10,000 VIPs and 1,000 health-checked backends through `xlb run`.
    pub scale: Option<scale::Results>,
}

/// 1234567.8 → "1,234,568".
pub fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "lo–hi" of a rounds' range.
fn range((lo, hi): (f64, f64)) -> String {
    format!("{}–{}", thousands(lo), thousands(hi))
}

impl Report {
    pub fn new(machine: Machine, quick: bool) -> Report {
        Report {
            machine,
            quick,
            elapsed: Duration::ZERO,
            dataplane: Vec::new(),
            code: None,
            nat: Vec::new(),
            maglev: Vec::new(),
            empty_ring_ms: 0.0,
            backends: None,
            health: None,
            metrics: None,
            failover: Vec::new(),
            restart: Vec::new(),
            sync: None,
            pps: Vec::new(),
            nat_pps: Vec::new(),
            http: Vec::new(),
            nat_http: Vec::new(),
            scale: None,
        }
    }

    /// The markdown page; `plots` are (file name under benchmarks/, caption).
    pub fn markdown(&self, plots: &[(String, String)]) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(s, "# xlb benchmarks\n");
        let _ = writeln!(
            s,
            "Written by `cargo xtask bench{}` (as root); run it again to measure your own \
             machine. Ratios matter more than absolute figures: every comparison below was \
             measured side by side in the same run, while absolute numbers drift with \
             whatever else the machine is doing.\n",
            if self.quick { " --quick" } else { "" }
        );
        let _ = writeln!(s, "| | |\n|---|---|");
        let _ = writeln!(s, "| Date | {} |", m.date);
        let _ = writeln!(s, "| Kernel | {} |", m.kernel);
        let _ = writeln!(s, "| CPU | {} |", m.cpu);
        let _ = writeln!(s, "| Cores | {} |", m.cores);
        let _ = writeln!(s, "| Memory | {} GiB |", m.memory_gib);
        let _ = writeln!(
            s,
            "| Mode | {} (took {:.0} s) |\n",
            if self.quick { "quick" } else { "full" },
            self.elapsed.as_secs_f64()
        );
        s.push_str(&self.sections());
        if !plots.is_empty() {
            let _ = writeln!(s, "## Plots\n");
            for (file, caption) in plots {
                let _ = writeln!(s, "**{caption}**\n\n![{caption}](benchmarks/{file})\n");
            }
        }
        s
    }

    /// How the end-to-end figures were aggregated.
    fn rounds_note(&self) -> String {
        match super::rounds(self.quick) {
            1 => "One round of each setup (quick mode).".to_owned(),
            n => format!(
                "Each figure is the median of {n} rounds; every round runs all setups \
                 in turn, so drift on a shared machine hits them alike. A difference \
                 smaller than the rounds' range is noise, not a result."
            ),
        }
    }

    /// Every section that has results (a partial run, `--only`, prints
    /// just these).
    pub fn sections(&self) -> String {
        let mut s = String::new();
        self.dataplane_section(&mut s);
        self.nat_section(&mut s);
        self.maglev_section(&mut s);
        self.backends_section(&mut s);
        self.health_section(&mut s);
        self.metrics_section(&mut s);
        self.scale_section(&mut s);
        self.failover_section(&mut s);
        self.restart_section(&mut s);
        self.sync_section(&mut s);
        self.pps_section(&mut s);
        self.http_section(&mut s);
        self.nat_http_section(&mut s);
        s
    }

    fn scale_section(&self, s: &mut String) {
        let Some(r) = &self.scale else {
            return;
        };
        let v = &r.vips;
        let _ = writeln!(
            s,
            "## Control plane at scale\n\n\
             The real `xlb run` in a private namespace (generic XDP on a veth), started on \
             an empty state directory with {} DSR VIPs (one address each) × {} backends \
             (static neighbour entries), each VIP with the default {}-slot ring. A VIP \
             serves once the program is attached and the VIP is in the pinned `VIPS` map \
             (the controller writes it only after the VIP's ring is in; afterwards every \
             VIP's ring is read back from the pinned `RINGS` and checked: the default size, \
             slots naming only the VIP's backends). Times run from the spawn. `xlb status` \
             is asked one request after another, 10 ms apart, from the spawn until every \
             VIP serves. Idle CPU is the daemon's utime + stime over {:.0} s once every VIP \
             serves; memory is the daemon's RSS and the `memlock` the kernel charges per map. \
             The reload changes one backend of one VIP and is timed from the request to the \
             reply, which comes once the change is applied (the new ring is checked in \
             the pinned map).\n",
            thousands(v.vips as f64),
            scale::BACKENDS_PER_VIP,
            thousands(f64::from(DEFAULT_RING_SIZE)),
            v.idle_s
        );
        let _ = writeln!(s, "| | |\n|---|--:|");
        let _ = writeln!(s, "| First VIP serving | {:.2} s |", v.first_serving_s);
        let _ = writeln!(s, "| Every VIP serving | {:.2} s |", v.all_serving_s);
        let _ = writeln!(s, "| First status answer | {:.2} s |", v.first_answer_s);
        let _ = writeln!(
            s,
            "| Status until every VIP serves: answers, p50 / p99 / max | {} answers ({} failed), \
             {:.1} / {:.1} / {:.1} ms |",
            v.answers, v.failures, v.status_p50_ms, v.status_p99_ms, v.status_max_ms
        );
        let _ = writeln!(
            s,
            "| Status at rest (every VIP serving, nothing applied): p50 of 20, reply size | \
             {:.1} ms, {:.1} MiB of JSON |",
            v.status_rest_p50_ms, v.status_mib
        );
        let _ = writeln!(s, "| Idle CPU | {:.2} % of a core |", v.idle_cpu_percent);
        let _ = writeln!(
            s,
            "| RSS | {:.0} MiB ({:.1} KiB per VIP) |",
            v.rss_mib,
            v.rss_mib * 1024.0 / v.vips as f64
        );
        let _ = writeln!(
            s,
            "| BPF memory: one ring of {} slots | {:.0} KiB |",
            thousands(f64::from(DEFAULT_RING_SIZE)),
            v.ring_kib
        );
        let _ = writeln!(
            s,
            "| BPF memory: every other map (fixed) | {:.0} MiB |",
            v.pinned_mib
        );
        let _ = writeln!(
            s,
            "| Reload changing one backend of one VIP: request to reply (of which, by \
             xlb's log, reading the file / applying it) | {:.0} ms ({:.0} / {:.1} ms) |\n",
            v.reload_ms, v.reload_read_ms, v.reload_apply_ms
        );
        let w = &r.small_rings;
        let _ = writeln!(
            s,
            "The same {} VIPs with `ring_size = {}` ({} slots per backend; a quick \
             run, idle CPU over {:.0} s): first VIP serving {:.2} s, every VIP {:.2} s; \
             status until then p50 / p99 {:.1} / {:.1} ms ({} answers, {} failed), at rest \
             {:.1} ms; one ring {:.0} KiB; idle CPU {:.2} % of a core; RSS {:.0} MiB; \
             one-backend reload {:.0} ms (read {:.0} / apply {:.1} ms).\n",
            thousands(w.vips as f64),
            thousands(f64::from(w.ring_size)),
            w.ring_size as usize / scale::BACKENDS_PER_VIP,
            w.idle_s,
            w.first_serving_s,
            w.all_serving_s,
            w.status_p50_ms,
            w.status_p99_ms,
            w.answers,
            w.failures,
            w.status_rest_p50_ms,
            w.ring_kib,
            w.idle_cpu_percent,
            w.rss_mib,
            w.reload_ms,
            w.reload_read_ms,
            w.reload_apply_ms
        );
        if !r.flows.is_empty() {
            let _ = writeln!(
                s,
                "Connection tables of other sizes (`[conntrack] size`): the program loaded \
                 against a fresh state directory with each size, and the `memlock` the \
                 kernel charges for its two tables (LRU hashes, preallocated: the memory is \
                 taken at load whatever the number of flows). A conntrack hit in a table of \
                 each size filled to the last entry is in the data-plane table above \
                 (\"full (… flows)\" rows).\n\n\
                 | Entries | Load | `FLOWS` | `NAT_REVERSE` |\n|--:|--:|--:|--:|"
            );
            for f in &r.flows {
                let _ = writeln!(
                    s,
                    "| {} | {:.2} s | {:.0} MiB | {:.0} MiB |",
                    thousands(f64::from(f.entries)),
                    f.load_s,
                    f.flows_mib,
                    f.nat_reverse_mib
                );
            }
            let _ = writeln!(s);
        }
        let h = &r.health;
        let _ = writeln!(
            s,
            "One NAT VIP over {} backends checked over TCP every {} ms (local addresses of \
             the namespace's loopback, one listener), from the spawn until `xlb status` shows \
             every backend in the ring: **{:.2} s** ({:.1} intervals), {} rings installed \
             meanwhile (health results that queue up while a ring is built go into the next \
             ring together).\n",
            thousands(h.backends as f64),
            h.interval_ms,
            h.all_in_ring_s,
            h.all_in_ring_s * 1e3 / h.interval_ms as f64,
            h.ring_installs
        );
    }

    fn dataplane_section(&self, s: &mut String) {
        if self.dataplane.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "## Data plane: cost per packet\n\n\
             BPF_PROG_TEST_RUN, {} runs per call, median of {} calls; the kernel \
             reports whole nanoseconds per run. The floor is `xdp-floor`: swap the MAC \
             addresses, `XDP_TX`. Maps are filled as the control plane fills them; the VIP \
             under test has a {}-slot Maglev ring over all backends, the other VIPs are \
             only in the VIP maps (`VIPS`, `VIP_SLOTS`, `VIP_FILTER`, `VIP_ADDRS`): the \
             program reads only the ring of the VIP a packet hits, and 10,000 rings of \
             this size take about 2.5 GiB of kernel memory (see the scale section). The \
             same frame is sent every run, so caches are warm: this is the program's cost, \
             not the cost of a cache miss. A conntrack hit is every run after the first; \
             for a miss every run, the backends are flagged `on_down = \"reschedule\"` so \
             that the entry the previous run made is rejected and Maglev chooses and \
             inserts again; the stale entry's backend names the VIP, where a first \
             packet, which has no entry, looks its VIP up in `VIPS` instead (one call \
             more: `VIPS lookup`). \
             The connection-table counters are checked to prove each case hit or missed. \
             With connection sync on, every insert is reported through the ring buffer: \
             either a thread reads it as fast as it can (reports are submitted without \
             waking a reader, `BPF_RB_NO_WAKEUP`, and the sync polls the ring every \
             millisecond; the share of reports that found room is shown), or nobody does and every report is lost (counted); the \
             report counters prove which. A hit reports nothing. With a trace on \
             (`xlb trace`), its filter either takes another client's packets only (the \
             flag, the hand-over to the recorder and the filter's test), or takes the \
             packet, which is then recorded every run while a thread reads the ring (the \
             share of runs whose record found room is shown); the trace counters prove \
             which. Every other row runs with tracing off. *Above floor* is the row's \
             ns/packet minus the floor's. *Calls* counts the calls on the row's path: \
             helpers, hash-map operations (the verifier turns each into a call of the \
             map's own function) and lookups in a Maglev ring (an inner map, which it \
             does not inline), a tail call as one; array lookups, which the verifier \
             inlines, are not calls. They are read off the code path the row's counters \
             prove, and listed below the table with the call sites the kernel's \
             translation of the loaded program holds.\n",
            thousands(f64::from(dataplane::REPEAT)),
            dataplane::trials(self.quick),
            thousands(f64::from(DEFAULT_RING_SIZE))
        );
        let _ = writeln!(
            s,
            "| Case | VIPs | Backends | Connection table | Verdict | ns/packet | × floor | \
             Above floor (ns) | Calls |\n\
             |---|--:|--:|---|---|--:|--:|--:|--:|"
        );
        let floor_ns = self.dataplane.first().map_or(0.0, |r| r.ns);
        let mut paths: Vec<(String, Vec<&str>)> = Vec::new();
        for r in &self.dataplane {
            let c = &r.case;
            let scale = |n: u32| {
                if c.program == dataplane::Program::Floor {
                    "–".to_owned()
                } else {
                    thousands(f64::from(n))
                }
            };
            let mut table = match (c.conntrack, c.table_full) {
                (dataplane::Conntrack::None, _) => "–".to_owned(),
                (_, None) => "this flow only".to_owned(),
                (_, Some(n)) => format!("full ({} flows)", thousands(f64::from(n))),
            };
            match (c.sync, c.conntrack) {
                (dataplane::Sync::Off, _) => {}
                (dataplane::Sync::Drained, _) => {
                    let share = r.reported.unwrap_or(0.0) * 100.0;
                    table.push_str(&format!("; sync on, reports read ({share:.1}% reported)"))
                }
                (dataplane::Sync::Full, dataplane::Conntrack::Miss) => {
                    table.push_str("; sync on, report ring full")
                }
                (dataplane::Sync::Full, _) => table.push_str("; sync on"),
            }
            match c.trace {
                dataplane::Trace::Off => {}
                dataplane::Trace::Filtered => table.push_str("; trace on, filtered out"),
                dataplane::Trace::Recorded => {
                    let share = r.reported.unwrap_or(0.0) * 100.0;
                    table.push_str(&format!("; trace on, recorded ({share:.1}% recorded)"))
                }
            }
            let calls = dataplane::calls(c);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.0} | {} |",
                c.name,
                scale(c.vips),
                scale(c.backends),
                table,
                dataplane::verdict_name(c.verdict),
                r.ns,
                r.ratio,
                r.ns - floor_ns,
                calls.len()
            );
            if !paths.iter().any(|(_, p)| *p == calls) {
                let label = match (c.sync, c.trace) {
                    (dataplane::Sync::Drained, _) => format!("{}, sync on, reported", c.name),
                    (dataplane::Sync::Full, _) => format!("{}, sync on, ring full", c.name),
                    (_, dataplane::Trace::Filtered) => format!("{}, trace filtered out", c.name),
                    (_, dataplane::Trace::Recorded) => format!("{}, trace recorded", c.name),
                    _ => c.name.to_owned(),
                };
                paths.push((label, calls));
            }
        }
        let _ = writeln!(
            s,
            "\nA malformed header is dropped before any map lookup, which can cost less \
             than the floor's rewrite and transmit.\n\nCalls per path:\n"
        );
        for (label, calls) in &paths {
            let list = if calls.is_empty() {
                "none".to_owned()
            } else {
                calls.join(", ")
            };
            let _ = writeln!(s, "- {label}: {list}");
        }
        if let Some(code) = &self.code {
            let sites: Vec<String> = code
                .calls
                .iter()
                .map(|(name, n)| format!("`{name}` ×{n}"))
                .collect();
            let _ = writeln!(
                s,
                "\nThe program as loaded (`xlb`, without its trace recorder): the verifier \
                 processed {} instructions over all its paths; the kernel's translation has \
                 {} instructions, with these call sites (by the kernel function each calls, \
                 from /proc/kallsyms; `__htab_map_lookup_elem` is every hash lookup, VIPS, \
                 FLOWS and NAT_REVERSE alike): {}. Every path inlines its parsing, \
                 checksum updates and counter updates (per-CPU array lookups the \
                 verifier inlines), so a path's cost above the floor is mostly its calls.",
                thousands(f64::from(code.verified)),
                thousands(code.xlated as f64),
                sites.join(", ")
            );
        }
        let _ = writeln!(s);
    }

    fn nat_section(&self, s: &mut String) {
        if self.nat.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "## Data plane: NAT, one packet per call\n\n\
             NAT rewrites the frame, and the kernel does not reset it between the runs of \
             one BPF_PROG_TEST_RUN call, so these rows are not repeated runs of one frame: \
             every call carries one fresh packet, and each figure is the median of the \
             kernel's time for that one run over {} calls. The floor is measured the same \
             way here (the per-call timer overhead is in both), so compare these ratios \
             with each other, not with the table above. The program runs in a private \
             network namespace with routes and neighbours, so `bpf_fib_lookup` succeeds \
             and every packet is redirected to the other NIC (two-armed). The \
             connection-table counters are checked: every call took the path its row \
             names. For the miss row the backend is flagged `reschedule`, as in the DSR \
             miss rows, so every call finds its entry stale, asks Maglev and writes the \
             flow and its reverse entry again.\n",
            thousands(nat_cost::calls(self.quick) as f64)
        );
        let _ = writeln!(
            s,
            "| Case | ns/packet | × floor | Above floor (ns) | Calls |\n|---|--:|--:|--:|--:|"
        );
        let floor_ns = self.nat.first().map_or(0.0, |r| r.ns);
        for r in &self.nat {
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.2} | {:.0} | {} |",
                r.name,
                r.ns,
                r.ratio,
                r.ns - floor_ns,
                r.calls.len()
            );
        }
        let _ = writeln!(s, "\nCalls per path (counted as in the table above):\n");
        for r in self.nat.iter().skip(1) {
            let _ = writeln!(s, "- {}: {}", r.name, r.calls.join(", "));
        }
        let _ = writeln!(s);
    }

    fn maglev_section(&self, s: &mut String) {
        if self.maglev.is_empty() {
            return;
        }
        let flows = self.maglev.first().map_or(0, |r| r.flows);
        let _ = writeln!(
            s,
            "## Control plane: Maglev\n\n\
             A table of M slots over N equal-weight backends: median time to build it \
             (`maglev::build_table`, release build) and to install it into the kernel as a \
             fresh ring (`Maps::install_ring`: create, fill through a memory mapping, publish; the \
             publishing update of the map-in-map makes the kernel wait for an RCU grace \
             period: installing an empty ring took {:.1} ms). Then the middle backend \
             leaves and {} synthetic client 5-tuples are hashed with \
             `lb_common::flow_hash` through the table before and after: the share whose \
             backend changed, against the ideal 1/N (only the leaving backend's flows). \
             The excess shrinks as each backend owns more slots (M/N); the last row is \
             the larger table [config.md](config.md#ring_size-trade-offs) recommends for \
             thousands of backends.\n",
            self.empty_ring_ms,
            thousands(flows as f64)
        );
        let _ = writeln!(
            s,
            "| Backends N | Slots M | Build (ms) | Install (ms) | Flows moved | Ideal 1/N | Moved / ideal |\n\
             |--:|--:|--:|--:|--:|--:|--:|"
        );
        for r in &self.maglev {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1} | {:.3} % | {:.3} % | {:.2} |",
                thousands(f64::from(r.backends)),
                thousands(f64::from(r.slots)),
                r.build_ms,
                r.install_ms,
                r.moved * 100.0,
                r.ideal * 100.0,
                r.moved / r.ideal
            );
        }
        s.push('\n');
    }

    fn backends_section(&self, s: &mut String) {
        let Some(b) = &self.backends else { return };
        let mut adds = b.add_ms.clone();
        let mut daemon = b.daemon_ms.clone();
        let flows = b.moved.first().map_or(0, |m| m.flows);
        let _ = writeln!(
            s,
            "## Control plane: backends at runtime\n\n\
             `xlb backend add` with the real `xlb run` (DSR topology, VIP with three backends \
             from the file, a fourth added with the CLI: a process talking to the control \
             socket, as an orchestrator would). Timed from spawning the command until the \
             pinned ring in the kernel (`RINGS`, read back in a tight loop) names the new \
             backend; between adds it is removed (`xlb backend remove`) and the ring read \
             until it is gone. The first add is apart: the kernel had never resolved that \
             backend's MAC, and a DSR backend joins the ring only with it (xlb asks the \
             kernel to resolve it and waits up to 1 s). The daemon's own time (request to \
             ring published, from its reply) shows what the command-line process adds.\n"
        );
        let _ = writeln!(
            s,
            "| Add | Command to ring (ms) | The daemon's part (ms) |\n|---|--:|--:|"
        );
        let _ = writeln!(s, "| first, MAC unresolved | {:.1} | – |", b.cold_ms);
        if !adds.is_empty() {
            let n = adds.len();
            let (median_add, median_daemon) = (median(&mut adds), median(&mut daemon));
            let (max_add, max_daemon) = (
                adds.last().copied().unwrap_or(f64::NAN),
                daemon.last().copied().unwrap_or(f64::NAN),
            );
            let _ = writeln!(
                s,
                "| {n} more, MAC known: median | {median_add:.1} | {median_daemon:.1} |\n\
                 | {n} more, MAC known: max | {max_add:.1} | {max_daemon:.1} |"
            );
        }
        let _ = writeln!(
            s,
            "\nWhat an add or a remove moves, on the tables `xlb` builds (N equal-weight \
             backends, the default ring): the share of ring slots whose backend changes, \
             and of {} synthetic client 5-tuples hashed with `lb_common::flow_hash`, \
             against the ideal: 1/(N+1) for an add (only the newcomer's share moves), 1/N \
             for a remove (only the leaver's flows).\n",
            thousands(flows as f64)
        );
        let _ = writeln!(
            s,
            "| Backends N | Slots M | Add: slots moved | flows moved | ideal 1/(N+1) | Remove: slots moved | flows moved | ideal 1/N |\n\
             |--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        for m in &b.moved {
            let _ = writeln!(
                s,
                "| {} | {} | {:.3} % | {:.3} % | {:.3} % | {:.3} % | {:.3} % | {:.3} % |",
                thousands(f64::from(m.backends)),
                thousands(f64::from(m.slots)),
                m.add_slots * 100.0,
                m.add_flows * 100.0,
                100.0 / f64::from(m.backends + 1),
                m.remove_slots * 100.0,
                m.remove_flows * 100.0,
                100.0 / f64::from(m.backends)
            );
        }
        s.push('\n');
    }

    fn health_section(&self, s: &mut String) {
        let Some(h) = &self.health else { return };
        let _ = writeln!(
            s,
            "## Control plane: health checker\n\n\
             {} backends checked over HTTP every {} ms by the scheduler `xlb run` uses, on \
             one thread, against a small HTTP server on the loopback of a private \
             namespace. The period error is how far the time between two checks of one \
             backend strayed from the interval.\n",
            thousands(health::BACKENDS as f64),
            health::INTERVAL_MS
        );
        let _ = writeln!(
            s,
            "| Run | Checks | Passed | Checks/s | Checker CPU (% of a core) | Period error p50 | p99 | max |\n\
             |--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        let _ = writeln!(
            s,
            "| {:.1} s | {} | {} | {} | {:.1} % | {:.1} ms | {:.1} ms | {:.1} ms |\n",
            h.run.as_secs_f64(),
            thousands(h.checks as f64),
            thousands(h.ok as f64),
            thousands(h.checks as f64 / h.run.as_secs_f64()),
            h.cpu_percent,
            h.drift_ms.0,
            h.drift_ms.1,
            h.drift_ms.2
        );
    }

    fn metrics_section(&self, s: &mut String) {
        let Some(m) = &self.metrics else { return };
        let _ = writeln!(
            s,
            "## Control plane: scraping metrics\n\n\
             The real `xlb run` in a private namespace, one NAT VIP over {} backends checked \
             over HTTP every {} ms (a small HTTP server in the benchmark answers them and notes \
             when each arrives). One run alternates phases without scraping and with one \
             `GET /metrics` a second; each row sums the phases of its kind. The period error \
             is how far the time between two checks of one backend strayed from the interval; \
             xlb's CPU is every thread of the process (the checks, the control plane and the \
             scrapes). A scrape's time is the benchmark's `GET`, from connect to the last \
             byte.\n",
            thousands(metrics::BACKENDS as f64),
            metrics::INTERVAL_MS
        );
        let _ = writeln!(
            s,
            "| Scraping | Run | Checks/s | xlb CPU (% of a core) | Period error p50 | p99 | max | Scrape p50 | Scrape max | Page |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        for r in &m.health {
            let (p50, max, page) = match r.scrape_ms {
                Some((p50, max)) => (
                    format!("{p50:.1} ms"),
                    format!("{max:.1} ms"),
                    format!("{} KiB", thousands(r.page_bytes as f64 / 1024.0)),
                ),
                None => ("–".into(), "–".into(), "–".into()),
            };
            let _ = writeln!(
                s,
                "| {} | {:.1} s | {} | {:.1} % | {:.1} ms | {:.1} ms | {:.1} ms | {p50} | {max} | {page} |",
                if r.scraping { "1 scrape/s" } else { "none" },
                r.run.as_secs_f64(),
                thousands(r.checks as f64 / r.run.as_secs_f64()),
                r.cpu_percent,
                r.drift_ms.0,
                r.drift_ms.1,
                r.drift_ms.2,
            );
        }
        let _ = writeln!(
            s,
            "\nThe data plane: reading per-CPU maps from user space is a map lookup that \
             does not run on the XDP program's path. The conntrack-hit case of the \
             data-plane section (IPv4 TCP, {} backends; BPF_PROG_TEST_RUN, median of the \
             calls' averages) while another thread reads every counter a scrape reads (the \
             VIP's, each backend's, the global ones, the drops, the connection table's):\n",
            thousands(f64::from(m.dataplane_backends))
        );
        let _ = writeln!(
            s,
            "| Counters read by | Reads/s | ns/packet |\n|---|--:|--:|"
        );
        for r in &m.dataplane {
            let _ = writeln!(s, "| {} | {:.1} | {:.1} |", r.reading, r.reads_per_s, r.ns);
        }
        s.push('\n');
    }

    /// The removal and failover table.
    fn failover_section(&self, s: &mut String) {
        if self.failover.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "## Control plane: removal and failover times\n\n\
             The real `xlb run` in namespaces, {} rounds each, while a client opens a new \
             connection to the VIP every {} ms (so a time read off the client is good to \
             about that, more where only a third of the connections go to the backend in \
             question). Removal: the DSR topology with 3 nginx backends and an HTTP health \
             check (interval {} ms, timeout {} ms, fall {}); each round stops one backend's \
             nginx and times, from the stop, xlb's DOWN log line (its own time stamp) and the \
             last new connection that was still sent to the dead backend (and refused); \
             the latter can come out earlier than the former, as only every third probe \
             goes to that backend. The timeout cannot reach the bound's share here (a \
             stopped nginx refuses at once) and may not exceed the interval. VRRP: two xlb nodes with {} ms adverts (priorities 150 and 100, preemption); \
             each round SIGKILLs the master's xlb and times the first new connection that \
             succeeds after the last failed one; the killed node then restarts and takes \
             over again (its data plane is pinned and forwards on meanwhile, so nothing \
             fails). Node loss ({} rounds each): an active node's link is cut (it says nothing to anyone) \
             while {} long-lived connections send every {} ms besides the new ones; the VRRP \
             pair's backup takes over after its master-down interval, while with three ECMP \
             nodes behind a router running BIRD (eBGP, BFD every 100 ms, multiplier 3) the \
             router drops the cut node from the set; the link then comes back before the \
             next round. The bound is what the configuration promises.\n",
            failover::rounds(self.quick),
            failover::PROBE_GAP.as_millis(),
            failover::HC_INTERVAL_MS,
            failover::HC_TIMEOUT_MS,
            failover::HC_FALL,
            failover::VRRP_INTERVAL_CS * 10,
            node_loss::rounds(self.quick),
            node_loss::LONG_LIVED,
            node_loss::PERIOD.as_millis()
        );
        let _ = writeln!(
            s,
            "| From → to | Median | Rounds' range | Bound | Median / bound | Failed new connections per round (median) | Long-lived connections survived | Every round (ms) |\n\
             |---|--:|--:|---|--:|--:|--:|---|"
        );
        for r in &self.failover {
            let every: Vec<String> = r.samples.iter().map(|v| format!("{v:.0}")).collect();
            let survived = r
                .survived
                .map_or_else(|| "—".to_owned(), |(n, of)| format!("{n} of {of}"));
            let _ = writeln!(
                s,
                "| {} | {:.0} ms | {:.0}–{:.0} ms | {} ms ({}) | {:.2} | {:.0} | {survived} | {} |",
                r.event,
                r.median_ms,
                r.range_ms.0,
                r.range_ms.1,
                thousands(r.bound_ms),
                r.bound_formula,
                r.median_ms / r.bound_ms,
                r.failed,
                every.join(", ")
            );
        }
        s.push('\n');
    }

    /// Packets per second, DSR and NAT.
    fn pps_section(&self, s: &mut String) {
        if !self.pps.is_empty() {
            let _ = writeln!(
                s,
                "## End to end: packets per second through veth\n\n\
                 Client → bridge → load-balancer node → bridge → 3 backends, all network \
                 namespaces on this machine. The generator is an XDP program run with \
                 BPF_PROG_TEST_RUN in live-frames mode on the client's veth (60-byte UDP \
                 frames to VIP:9 from 1,024 source ports); the sinks are the backends' NICs. \
                 xlb runs as `xlb run` in native XDP mode; nftables DNAT picks a backend with \
                 `jhash ip saddr . udp sport` and forwards through the node's stack. Every \
                 stage shares the machine's cores, and the generator can only send as fast \
                 as the path drains, so offered and delivered rates stay close: the figure \
                 is what the whole path sustains. The path is shared by both setups (two \
                 bridge crossings, the backends' stacks), so the ratio understates the \
                 difference between the two load balancers themselves: the second table \
                 takes the path's cost out. xlb's VIP counter is checked against the sinks, \
                 to prove the frames went through it; xlb leaves with `xlb down` (SIGTERM \
                 would leave its program attached and forwarding), and before nftables runs \
                 the node's NICs must carry no XDP program. The floor path's row is the load-balancer node \
                 running `xdp-fwd` instead (every frame to backend 1: its MAC written in, \
                 `XDP_TX`); only backend 1's NIC may count frames then, which proves the \
                 node rewrote them. {}\n",
                self.rounds_note()
            );
            pps_table(s, &self.pps);
            cpu_table(s, &self.pps, "xlb DSR");
        }
        if !self.nat_pps.is_empty() {
            let _ = writeln!(
                s,
                "## End to end: packets per second through NAT\n\n\
                 The same generator and frames in the two-armed NAT topology: the client \
                 and the 3 backends on separate segments, the load-balancer node routing \
                 between them, so a frame reaches a sink only if the node translated and \
                 forwarded it. xlb runs NAT in native XDP mode on both NICs (VIP:9 to \
                 backend:9; `bpf_fib_lookup`, then `XDP_REDIRECT` to the server-side NIC); \
                 nftables DNAT does the same translation with a jhash map, through \
                 conntrack and the node's forwarding path. Ratios are against xlb NAT. The \
                 floor path's `xdp-fwd` writes backend 1's MAC and IPv4 address (and fixes \
                 the header checksum) and redirects out of the server-side NIC, so that \
                 backend 1's stack sees what a NAT hands it. {}\n",
                self.rounds_note()
            );
            pps_table(s, &self.nat_pps);
            cpu_table(s, &self.nat_pps, "xlb NAT");
        }
    }

    fn restart_section(&self, s: &mut String) {
        if self.restart.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "## Restart, crash and upgrade under load\n\n\
             The DSR topology with the real `xlb run`: {} keep-alive connections, each \
             sending a request every {} ms, and a new connection every {} ms, from the \
             client namespace through each event; the next `xlb` starts at once. A \
             long-lived connection is lost at its first failed request (a reset or a 3 s \
             timeout); the pause is the longest time between two answers on one \
             connection. The data plane (program, maps, links) is pinned, so through the \
             first three events it keeps forwarding while no `xlb` runs, and the next \
             `xlb` adopts what it finds; the cold restart removes it first (`xlb down`), \
             as every restart did before the data plane outlived the process. {}\n",
            restart::LONG_LIVED,
            restart::PERIOD.as_millis(),
            restart::NEW_EVERY.as_millis(),
            match super::rounds(self.quick) {
                1 => "One round of each (quick mode).".to_owned(),
                n => format!("{n} rounds of each; pauses: the median round and the worst."),
            }
        );
        let _ = writeln!(
            s,
            "| Event | Long-lived connections lost | New connections failed | \
             Longest pause (median round) | Worst round |\n|---|--:|--:|--:|--:|"
        );
        let ms = |v: f64| {
            if v.is_nan() {
                "— (none survived)".to_owned()
            } else {
                format!("{v:.0} ms")
            }
        };
        for r in &self.restart {
            let _ = writeln!(
                s,
                "| {} | {} of {} | {} of {} | {} | {} |",
                r.event,
                r.lost,
                r.connections,
                r.failed_new,
                r.new,
                ms(r.pause_ms),
                ms(r.worst_pause_ms)
            );
        }
        s.push('\n');
    }

    fn sync_section(&self, s: &mut String) {
        let Some(r) = &self.sync else { return };
        let (lag, f) = (&r.lag, &r.flood);
        let _ = writeln!(
            s,
            "## Control plane: connection sync\n\n\
             The real `xlb run` on the two nodes of a VRRP pair in the DSR topology ({} \
             backends): node 1 master, node 2 backup, `[sync]` unicast between their own \
             addresses, `refresh_s = {}` (every {} s each node sends again the flows seen \
             since its last sweep: how the reports its ring buffer lost still reach the \
             peer), `new_flows_per_cpu = 0` (every new flow gets an entry, so every one is \
             reported), VRRP adverts every {} ms. Each node's sync is one task of its own \
             `xlb run` process, so it runs on one core at a time; this machine has {} cores \
             (as probed), which both nodes, the generator, the veths and this benchmark's \
             polling share. **Lag**: {} single new flows, one SYN each written onto the \
             client's segment (AF_PACKET) from an address off the segment with a source \
             port of its own, one every {} ms; each is timed from just before its frame is \
             sent to the first read of node 2's pinned `FLOWS` (busy-polled for its key) \
             that finds it: client → bridge → node 1's XDP program → ring buffer → node \
             1's sync → UDP → node 2's sync → node 2's table. Node 1's own figure (its \
             status's `lag_us`: first packet to entry sent) is over the same flows. \
             **Throughput**: {} SYNs from as many source (address, port) pairs off the \
             segment, started right after one of node 1's sweeps; node 1's `flows_sent` \
             and `sweeps` and node 2's `flows_installed` are read over the control sockets \
             every {} ms until node 2's table holds every flood flow node 1's holds (looked \
             up key by key, once node 2's install counter says it can) or {} s pass. Until \
             node 1's next sweep the counters move with the ring buffer's reports alone; \
             from it on, with the sweep. A rate is a counter's change between the first \
             and the last sample that saw it move, over the time between them; the data \
             plane's rate is node 1's new entries over the time the generator took.\n",
            failover::BACKENDS,
            sync::REFRESH_S,
            sync::REFRESH_S,
            u32::from(sync::ADVERT_CS) * 10,
            self.machine.cores,
            thousands(lag.flows as f64),
            sync::LAG_GAP.as_millis(),
            thousands(f.asked as f64),
            sync::SAMPLE_EVERY.as_millis(),
            sync::CONVERGE_TIMEOUT.as_secs()
        );
        let us = |v: f64| format!("{} µs", thousands(v));
        let opt_us = |v: Option<u64>| v.map_or_else(|| "–".to_owned(), |v| us(v as f64));
        let _ = writeln!(
            s,
            "| Lag | Flows | Median | p99 | Max |\n|---|--:|--:|--:|--:|\n\
             | first packet (sent by the client) → entry in node 2's table | {} of {} | {} | {} | {} |\n\
             | first packet on node 1 → entry sent (node 1's status, over {} reports) | – | {} | {} | – |\n",
            lag.seen,
            lag.flows,
            us(lag.median_us),
            us(lag.p99_us),
            us(lag.max_us),
            thousands(lag.sender_reports as f64),
            opt_us(lag.sender_median_us),
            opt_us(lag.sender_p99_us)
        );
        let _ = writeln!(
            s,
            "| Throughput | Flows | Over | Flows/s |\n|---|--:|--:|--:|"
        );
        let ms = |d: std::time::Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
        let _ = writeln!(
            s,
            "| generator: SYNs written | {} of {} | {} | {} |",
            thousands(f.sent as f64),
            thousands(f.asked as f64),
            ms(f.took),
            thousands(f.sent as f64 / f.took.as_secs_f64())
        );
        let _ = writeln!(
            s,
            "| node 1's data plane: new entries (conntrack `insert`) | {} | {} | {} |",
            thousands(f.inserted as f64),
            ms(f.took),
            thousands(f.inserted as f64 / f.took.as_secs_f64())
        );
        for (what, rate) in [
            (
                "node 1's sync: flows sent, ring-buffer reports",
                f.live_sent,
            ),
            (
                "node 2's sync: flows installed, from those",
                f.live_installed,
            ),
            ("node 1's sync: flows sent again by the sweep", f.sweep_sent),
            (
                "node 2's sync: flows received from the sweep (installed, or already held)",
                f.sweep_received,
            ),
        ] {
            let Some(r) = rate else {
                // The sweep's rows are there only if it came before the
                // end.
                if what.contains("sweep") {
                    continue;
                }
                let _ = writeln!(s, "| {what} | 0 | – | – |");
                continue;
            };
            let _ = writeln!(
                s,
                "| {what} | {} | {} | {} |",
                thousands(r.total as f64),
                ms(r.over),
                thousands(r.per_s)
            );
        }
        let converged = match f.converged {
            Some((t, by_counter)) => format!(
                "Node 2 held all {} flood flows of node 1's table {:.2} s after the flood \
                 began ({}; {} sweep{} of node 1 meanwhile).",
                thousands(f.want as f64),
                t.as_secs_f64(),
                if by_counter {
                    "the first sample of its install counter that counted them all, \
                     before any sweep, confirmed key by key"
                } else {
                    "when the key-by-key look into its table found the last of them"
                },
                f.sweeps,
                if f.sweeps == 1 { "" } else { "s" }
            ),
            None => format!(
                "Node 2 held {} of the {} flood flows of node 1's table after {} s.",
                thousands(f.have as f64),
                thousands(f.want as f64),
                sync::CONVERGE_TIMEOUT.as_secs()
            ),
        };
        let limit = if f.lost > 0 {
            "The ring buffer overflowed: node 1's sync read the reports more slowly than \
             its data plane made them, so the lost ones waited for the sweep."
        } else {
            "No report was lost: node 1's sync kept up with its data plane, so the \
             generator and the path to node 1 set the pace of the live rows."
        };
        let _ = writeln!(
            s,
            "\nNode 1's data plane queued {} reports on the ring buffer and lost {} (ring \
             full); its sync read {}. {limit} {converged}\n",
            thousands(f.reported as f64),
            thousands(f.lost as f64),
            thousands(f.read as f64)
        );
        if !r.notes.is_empty() {
            let _ = writeln!(s, "Seen during the run:\n");
            for n in &r.notes {
                let _ = writeln!(s, "* {n}");
            }
            s.push('\n');
        }
    }

    fn http_section(&self, s: &mut String) {
        if self.http.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "## End to end: HTTP with wrk\n\n\
             wrk ({} connections, one thread) from the client namespace to VIP:80, through \
             each setup in turn, the same three nginx backends (one worker each) behind all \
             of them. Keep-alive measures requests/s; `Connection: close` makes every \
             request a new TCP connection, so its requests/s are connections/s. HAProxy \
             runs in TCP mode on the load-balancer node; nftables DNAT uses jhash over the \
             client address and port and masquerades, so replies return through the node. \
             xlb is DSR: replies go from the backend straight to the client. Each setup's \
             client, and HAProxy's own connections, draw source ports from ranges of their \
             own, so that no setup's new connections meet another's TIME_WAIT entries on \
             the backends (a SYN on such a 4-tuple from another peer waits out a 1 s \
             retransmission about half the time). Where the setups come out alike, the \
             limit is the backends or wrk, which share the machine's cores with the load \
             balancer, not the load balancer. The floor path runs `xdp-fwd` on the node \
             (every frame to backend 1: its MAC written in, `XDP_TX`; ARP goes to the \
             stack), and backend 1 answers the client directly; backends 2 and 3 must \
             receive nothing meanwhile. xlb leaves with `xlb down`, and before HAProxy and \
             nftables run the node's NIC must carry no XDP program. CPU time per request \
             is the scheduler's run time of the path's tasks over each wrk run (wrk, \
             nginx, HAProxy, and the softirqs they run; see the packets-per-second \
             sections; xlb's own process is left out) divided by the requests done: per \
             request rather than per packet, since a request is what the client pays for \
             and HAProxy's two connections make more packets per request. wrk runs \
             closed-loop, so each setup runs at its own rate. \"Over the floor\" is a \
             setup's CPU time per request minus the floor path's in the same round and \
             mode. {}\n",
            http::CONNECTIONS,
            self.rounds_note()
        );
        http_table(s, &self.http);
    }

    /// wrk through two-armed NAT.
    fn nat_http_section(&self, s: &mut String) {
        if self.nat_http.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "## End to end: HTTP with wrk through NAT\n\n\
             As above, in the two-armed NAT topology: the client and the three nginx \
             backends (port 8080, behind VIP:80) on separate segments, the load-balancer \
             node routing between them, so every reply comes back through it. xlb runs \
             NAT in native XDP mode on both NICs; HAProxy (TCP mode) opens its own \
             connections to the backends; nftables DNAT (jhash over the client address \
             and port, no masquerade) leaves the replies to conntrack. CPU time per \
             request as above; there is no floor path here, since a backend answers a \
             VIP connection only after a translation both ways. {}\n",
            self.rounds_note()
        );
        http_table(s, &self.nat_http);
    }
}

/// The packets-per-second table: one row per setup, ratios against the
/// first setup.
fn pps_table(s: &mut String, rows: &[e2e::Row]) {
    let _ = writeln!(
        s,
        "| Setup | Offered (pps) | Delivered (pps) | Rounds' range | Delivered / offered | vs xlb |\n\
         |---|--:|--:|--:|--:|--:|"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} % | {:.2} |",
            r.setup,
            thousands(r.offered),
            thousands(r.delivered),
            range(r.range),
            100.0 * r.delivered / r.offered,
            r.ratio
        );
    }
    s.push('\n');
}

/// How the CPU time per packet is measured (the text before every CPU
/// table of the packets-per-second sections).
const CPU_METHOD: &str = "CPU time per packet: every round then runs each setup again at one \
     offered rate, half the round's lowest delivered rate above, so that no setup drops and \
     all do the same work per second (\"Paced\" is the rate the generator reached; on a \
     loaded machine it can fall short of the target). The CPU time is the scheduler's run time, in ns, of \
     every task the path runs in, over the measurement: this process (the generator, whose \
     BPF_PROG_TEST_RUN calls carry the whole chain of softirqs the frames set off), every \
     process in the run's namespaces (nginx; xlb's own process, a cost per second and not per \
     packet, is counted apart and given below the table) and the `ksoftirqd` threads \
     (softirq work the kernel deferred), divided by the packets the sinks received; without IRQ time \
     accounting the kernel charges softirq time to the task it ran in. Other work on the \
     machine stays out of it, except what it defers to `ksoftirqd`. \"Over the floor\" is a \
     setup's CPU time per packet minus the floor path's in the same round (median over \
     rounds, with their range): what the load balancer itself adds to the path. The \
     issue's target is xlb's at most 1/3 of nftables DNAT's.";

/// CPU time per packet at the paced rate, against the floor path (the first
/// row); `xlb` names the row whose cost is compared with nftables DNAT's.
fn cpu_table(s: &mut String, rows: &[e2e::Row], xlb: &str) {
    let _ = writeln!(
        s,
        "{CPU_METHOD}\n\n\
         | Setup | Paced (pps) | Delivered / offered | CPU ns per packet | Rounds' range | \
         Over the floor (ns per packet) | Rounds' range | vs nftables DNAT |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|"
    );
    let nft = rows
        .iter()
        .find(|r| r.setup.starts_with("nftables"))
        .and_then(|r| r.marginal_ns)
        .map(|m| m.0);
    for r in rows {
        let (over, over_range, vs) = match (r.marginal_ns, nft) {
            (None, _) => ("—".to_owned(), "—".to_owned(), "—".to_owned()),
            (Some((m, rg)), n) => (
                format!("{m:.0}"),
                format!("{:.0}–{:.0}", rg.0, rg.1),
                n.map_or("—".to_owned(), |n| format!("{:.2}", m / n)),
            ),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} % | {:.0} | {:.0}–{:.0} | {over} | {over_range} | {vs} |",
            r.setup,
            thousands(r.paced),
            100.0 * r.paced_delivered,
            r.cpu_ns,
            r.cpu_range.0,
            r.cpu_range.1,
        );
    }
    s.push('\n');
    let x = rows
        .iter()
        .find(|r| r.setup.starts_with(xlb))
        .and_then(|r| r.marginal_ns)
        .map(|m| m.0);
    if let (Some(x), Some(n)) = (x, nft) {
        let ratio = x / n;
        let control = rows
            .iter()
            .find(|r| r.setup.starts_with(xlb))
            .map_or(0.0, |r| r.control_share);
        let _ = writeln!(
            s,
            "{xlb} adds {x:.0} ns per packet to the path, nftables DNAT {n:.0} ns: a ratio of \
             {ratio:.2}, {} the target of at most 0.33. (xlb's own process, counted apart: \
             {:.2} % of a core meanwhile.)\n",
            if ratio <= 1.0 / 3.0 {
                "within"
            } else {
                "above"
            },
            100.0 * control
        );
    }
}

/// The wrk table: one row per setup and mode, ratios against xlb, CPU time
/// per request against the floor path where the section has one.
fn http_table(s: &mut String, rows: &[http::Row]) {
    let _ = writeln!(
        s,
        "| Setup | Mode | Requests/s | Rounds' range | Requests (all rounds) | Errors | vs xlb | \
         CPU µs per request | Rounds' range | Over the floor (µs per request) | Rounds' range | \
         vs nftables DNAT |\n\
         |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    for r in rows {
        let nft = rows
            .iter()
            .find(|n| n.setup.starts_with("nftables") && n.mode == r.mode)
            .and_then(|n| n.marginal_us)
            .map(|m| m.0);
        let (over, over_range, vs) = match r.marginal_us {
            None => ("—".to_owned(), "—".to_owned(), "—".to_owned()),
            Some((m, rg)) => (
                format!("{m:.1}"),
                format!("{:.1}–{:.1}", rg.0, rg.1),
                nft.map_or("—".to_owned(), |n| format!("{:.2}", m / n)),
            ),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {:.2} | {:.1} | {:.1}–{:.1} | {over} | {over_range} | \
             {vs} |",
            r.setup,
            r.mode,
            thousands(r.requests_per_s),
            range(r.range),
            thousands(r.requests as f64),
            r.errors,
            r.ratio,
            r.cpu_us,
            r.cpu_range.0,
            r.cpu_range.1,
        );
    }
    s.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_000.0), "1,000");
        assert_eq!(thousands(65_537.0), "65,537");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
    }
}
