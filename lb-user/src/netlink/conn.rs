//! One request/response exchange over a `NETLINK_ROUTE` socket: sequence
//! numbers, multi-part dumps (retried when the kernel flags them
//! inconsistent), ACKs, and the kernel's error codes with their
//! extended-ack text.

use std::io;
use std::num::NonZeroI32;

use netlink_packet_core::{
    NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

use super::NetlinkError;

const DUMP_ATTEMPTS: usize = 5;
/// Dump replies come in datagrams of at most 32 KiB; larger single replies
/// are handled by peeking at their size first.
const RECV_BUF_LEN: usize = 32 * 1024;
pub(super) const NLMSGERR_ATTR_MSG: u16 = 1;
pub(super) const NLMSG_HDRLEN: usize = 16;

/// The kernel's extended-ack text from the TLVs that trail an error or done
/// message, if `flags` says there are any.
pub(super) fn extack_message(flags: u16, tlvs: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    NlasIterator::new(tlvs)
        .map_while(Result::ok)
        .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
        .map(|nla| {
            let text = nla.value();
            let text = text.split(|&b| b == 0).next().unwrap_or(text);
            String::from_utf8_lossy(text).into_owned()
        })
}

/// The TLVs of an NLMSG_ERROR payload sit after the echoed request: just its
/// header when the kernel capped it, the whole request otherwise.
pub(super) fn error_tlvs(flags: u16, echoed: &[u8]) -> &[u8] {
    let echoed_len = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        echoed
            .get(..4)
            .and_then(|len| <[u8; 4]>::try_from(len).ok())
            .map_or(echoed.len(), |len| align4(u32::from_ne_bytes(len) as usize))
    };
    echoed.get(echoed_len..).unwrap_or_default()
}

fn align4(len: usize) -> usize {
    len.saturating_add(3) & !3
}

pub(super) fn kernel_error(op: &str, code: NonZeroI32, flags: u16, tlvs: &[u8]) -> NetlinkError {
    let errno = i32::try_from(code.get().unsigned_abs()).unwrap_or(i32::MAX);
    NetlinkError::Kernel {
        op: op.to_owned(),
        source: io::Error::from_raw_os_error(errno),
        detail: extack_message(flags, tlvs),
    }
}

/// One request/response socket; replies are matched by sequence number so
/// leftovers of an abandoned exchange are skipped.
pub(super) struct Connection {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

enum Outcome {
    Complete(Vec<RouteNetlinkMessage>),
    /// The kernel flagged the dump as inconsistent (NLM_F_DUMP_INTR).
    Interrupted,
}

impl Connection {
    pub(super) fn open(op: &str) -> Result<Self, NetlinkError> {
        let socket_error = |source: io::Error| NetlinkError::Socket {
            op: op.to_owned(),
            source,
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(socket_error)?;
        socket.bind_auto().map_err(socket_error)?;
        // A connected netlink socket refuses unicasts from anyone but the
        // kernel, so no other process can forge replies.
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(socket_error)?;
        // Both only improve error reports, so a kernel lacking them is fine.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(Self {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF_LEN),
        })
    }

    /// Sends `message` and collects the replies: up to NLMSG_DONE for a dump
    /// (`flags` containing NLM_F_DUMP), up to the ACK otherwise (callers of
    /// non-dumps pass NLM_F_ACK, or this would wait forever).
    pub(super) fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        op: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        for _ in 0..DUMP_ATTEMPTS {
            match self.exchange(message.clone(), flags, op)? {
                Outcome::Complete(replies) => return Ok(replies),
                Outcome::Interrupted => continue,
            }
        }
        Err(NetlinkError::Protocol {
            op: op.to_owned(),
            detail: format!("dump interrupted by concurrent changes {DUMP_ATTEMPTS} times"),
        })
    }

    fn exchange(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        op: &str,
    ) -> Result<Outcome, NetlinkError> {
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.send(&bytes, op)?;

        let protocol = |detail: String| NetlinkError::Protocol {
            op: op.to_owned(),
            detail,
        };
        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            self.recv(op)?;
            let mut offset = 0;
            while offset < self.buf.len() {
                let chunk = &self.buf[offset..];
                let frame =
                    NetlinkBuffer::new_checked(chunk).map_err(|e| protocol(e.to_string()))?;
                let len = frame.length() as usize;
                offset += align4(len);
                if frame.sequence_number() != seq {
                    continue;
                }
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&chunk[..len])
                    .map_err(|e| protocol(e.to_string()))?;
                let msg_flags = msg.header.flags;
                interrupted |= msg_flags & NLM_F_DUMP_INTR != 0;
                match msg.payload {
                    NetlinkPayload::InnerMessage(reply) => replies.push(reply),
                    NetlinkPayload::Error(err) => match err.code {
                        Some(code) => {
                            let tlvs = error_tlvs(msg_flags, &err.header);
                            return Err(kernel_error(op, code, msg_flags, tlvs));
                        }
                        None if !dump => return Ok(Outcome::Complete(replies)),
                        None => {}
                    },
                    NetlinkPayload::Done(done) => {
                        if let Some(code) = NonZeroI32::new(done.code).filter(|c| c.get() < 0) {
                            return Err(kernel_error(op, code, msg_flags, &done.extended_ack));
                        }
                        return Ok(if interrupted {
                            Outcome::Interrupted
                        } else {
                            Outcome::Complete(replies)
                        });
                    }
                    NetlinkPayload::Overrun(_) => {
                        return Err(protocol("receive buffer overrun".into()));
                    }
                    _ => {}
                }
            }
        }
    }

    fn send(&self, bytes: &[u8], op: &str) -> Result<(), NetlinkError> {
        loop {
            match self.socket.send(bytes, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(NetlinkError::Socket {
                        op: op.to_owned(),
                        source,
                    });
                }
            }
        }
    }

    /// Reads one whole datagram into `self.buf`, growing it if the datagram
    /// is larger than the buffer (a single link with many VFs can be).
    fn recv(&mut self, op: &str) -> Result<(), NetlinkError> {
        let socket_error = |source: io::Error| NetlinkError::Socket {
            op: op.to_owned(),
            source,
        };
        loop {
            self.buf.clear();
            let size = match self
                .socket
                .recv(&mut self.buf, libc::MSG_PEEK | libc::MSG_TRUNC)
            {
                Ok(size) => size,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(socket_error(e)),
            };
            self.buf.clear();
            self.buf.reserve(size);
            match self.socket.recv(&mut self.buf, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(socket_error(e)),
            }
        }
    }
}
