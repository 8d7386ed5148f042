//! `icmp_echo`: the ICMP / ICMPv6 echo reply parser and the requests it
//! answers (`lb_user::health::icmp`).

use lb_user::{
    checksum,
    health::icmp::{echo_reply, echo_request},
};

use crate::input::Input;

/// An IPv4 header of `ihl` words (options are NOPs) in front of `icmp`.
fn ipv4(ihl: u8, icmp: &[u8]) -> Vec<u8> {
    let len = usize::from(ihl) * 4;
    let mut p = vec![1u8; len];
    p[..20].copy_from_slice(&[
        0x40 | ihl,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        64,
        1,
        0,
        0,
        198,
        18,
        0,
        11,
        198,
        18,
        0,
        1,
    ]);
    p.extend_from_slice(icmp);
    let total = (p.len() as u16).to_be_bytes();
    p[2..4].copy_from_slice(&total);
    p
}

/// Input: a family bit, an identifier, a sequence number, an IHL, then a
/// packet as the raw socket delivers it.
pub fn icmp_echo(data: &[u8]) {
    let mut input = Input::new(data);
    let v4 = input.byte() & 1 == 0;
    let (ident, seq) = (input.u16(), input.u16());
    let ihl = 5 + input.byte() % 11;
    let packet = input.rest();

    let got = echo_reply(v4, packet);
    assert_eq!(got, echo_reply(v4, packet), "the same packet twice");
    let icmp = if v4 {
        // What an IPv4 packet must be for its ICMP message to be read.
        let first = packet.first().copied().unwrap_or(0);
        let hlen = usize::from(first & 0x0f) * 4;
        (first >> 4 == 4 && hlen >= 20)
            .then(|| packet.get(hlen..))
            .flatten()
    } else {
        Some(packet)
    };
    let want = icmp
        .filter(|m| m.len() >= 8 && m[0] == if v4 { 0 } else { 129 } && m[1] == 0)
        .map(|m| {
            (
                u16::from_be_bytes([m[4], m[5]]),
                u16::from_be_bytes([m[6], m[7]]),
            )
        });
    assert_eq!(got, want, "echo_reply({v4}, {packet:02x?})");

    // What echo_request builds, answered as a host answers it, parses
    // back to its identifier and sequence; the request itself does not.
    let request = echo_request(v4, ident, seq);
    assert_eq!(request[0], if v4 { 8 } else { 128 });
    if v4 {
        assert_eq!(checksum::checksum(&request), 0, "request checksum");
    }
    let mut answer = request.clone();
    answer[0] = if v4 { 0 } else { 129 };
    if v4 {
        answer[2..4].fill(0);
        let c = checksum::checksum(&answer);
        answer[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(echo_reply(true, &ipv4(ihl, &answer)), Some((ident, seq)));
        assert_eq!(echo_reply(true, &ipv4(ihl, &request)), None);
    } else {
        assert_eq!(echo_reply(false, &answer), Some((ident, seq)));
        assert_eq!(echo_reply(false, &request), None);
    }
}
