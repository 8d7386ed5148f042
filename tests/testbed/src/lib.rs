//! xlb's testbed: what the tests, the demo and the benchmarks build xlb's
//! surroundings with. Nothing here is part of the `xlb` binary.
//!
//! - [`netns`]: namespaces, child processes and temp dirs that clean up on
//!   drop, on panic and on SIGINT/SIGTERM; [`require_root`].
//! - [`topology`]: the DSR and NAT topologies (client, xlb node(s),
//!   nginx backends), the running `xlb` ([`topology::Xlb`]), the HTTP test
//!   client and packet captures.
//! - [`config`]: a typed builder for xlb config files.
//! - [`frames`]: test frames, built with `etherparse`, and the
//!   BPF_PROG_TEST_RUN driver.
//! - [`lb`]: the real XDP program, loaded, with a controller over its
//!   maps, for BPF_PROG_TEST_RUN suites.
//! - [`nat_lab`]: a namespace with a client-side and a server-side NIC,
//!   routes and neighbours, for BPF_PROG_TEST_RUN suites whose program
//!   asks the kernel's FIB (NAT).
//! - [`traffic`]: long-lived connections that keep sending, and a loop of
//!   new connections, through the event a test makes.
//! - [`xdp`]: the test XDP programs (pass, floor, generator).
//! - [`fakes`]: a neighbour table the test controls.
//! - [`inject`]: bounded SYN floods and spoofed datagrams written onto a
//!   segment from a test namespace.
//! - [`pinned`]: an xlb node's pinned state read (and spoiled) directly.
//! - [`prometheus`]: a real Prometheus scraping xlb, and its query API.
//! - [`counting`]: packets to an address counted by nftables in a
//!   namespace, apart from xlb's own counters.
//! - [`running`]: the short helpers end-to-end tests start from.
//! - [`demo`]: `xlb-demo`, what `cargo xtask run` runs without arguments.

pub mod config;
pub mod counting;
pub mod demo;
pub mod fakes;
pub mod frames;
pub mod inject;
pub mod lb;
pub mod many_vips;
pub mod nat_lab;
pub mod netns;
pub mod pinned;
pub mod prometheus;
pub mod running;
pub mod topology;
pub mod traffic;
pub mod vrrp_pair;
pub mod xdp;

pub use netns::require_root;
