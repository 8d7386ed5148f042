//! Descriptors on tokio's reactor: the one place a `socket2::Socket` (the
//! VRRP and ICMP health-check sockets) or a BPF ring buffer (the sync's
//! flow reports) is handed to [`AsyncFd`].

use std::io;

use socket2::Socket;
use tokio::io::unix::AsyncFd;

/// Registers a non-blocking `socket` with the current runtime's reactor.
///
/// tokio 1.53.3 deprecated the safe `AsyncFd::new` in favour of `unsafe fn
/// AsyncFd::register`, whose contract is that the descriptor stays open and
/// the same for as long as the `AsyncFd` lives: `new` cannot promise that
/// for an arbitrary `AsRawFd` type. A `socket2::Socket` owns its descriptor
/// and never replaces it, and an `AsyncFd` only lends it out as `&Socket`,
/// so the contract holds here. The safe spelling keeps lb-user free of
/// `unsafe` (the house rule: `unsafe` only at the BPF boundary).
#[allow(deprecated)]
pub fn register(socket: Socket) -> io::Result<AsyncFd<Socket>> {
    AsyncFd::new(socket)
}

/// Registers the flow-report ring buffer. As for sockets: a `RingBuf`
/// owns its map's descriptor for its whole life and never swaps it.
#[allow(deprecated)]
pub fn register_ring(
    ring: aya::maps::RingBuf<aya::maps::MapData>,
) -> io::Result<AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>> {
    AsyncFd::new(ring)
}
