//! Raw sockets on tokio's reactor: the one place a `socket2::Socket` is
//! handed to [`AsyncFd`], for the VRRP and ICMP health-check sockets.

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
