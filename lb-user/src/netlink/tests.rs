use std::net::{Ipv4Addr, Ipv6Addr};
use std::num::NonZeroI32;

use netlink_packet_core::{Emitable, NLM_F_ACK_TLVS, NLM_F_CAPPED, Nla};

use super::*;

#[test]
fn format_mac_is_lowercase_colon_separated() {
    assert_eq!(
        format_mac(&[0xaa, 0xbb, 0x0c, 0x00, 0xee, 0xff]),
        "aa:bb:0c:00:ee:ff"
    );
    assert_eq!(format_mac(&[0; 6]), "00:00:00:00:00:00");
}

#[test]
fn usable_states_are_exactly_the_valid_ones() {
    use NeighbourState::*;
    for state in [Reachable, Stale, Delay, Probe, Permanent, Noarp] {
        assert!(is_usable(state), "{state} should be usable");
    }
    for state in [Incomplete, Failed, None, Other(0x100)] {
        assert!(!is_usable(state), "{state} should not be usable");
    }
    // A combined mask is usable as soon as one valid bit is set.
    assert!(is_usable(Other(NUD_STALE | 0x100)));
}

#[test]
fn only_permanent_and_noarp_are_static() {
    use NeighbourState::*;
    assert!(is_static(Permanent));
    assert!(is_static(Noarp));
    for state in [Incomplete, Reachable, Stale, Delay, Probe, Failed, None] {
        assert!(!is_static(state), "{state} should be probed");
    }
}

fn neighbour(
    ifindex: u32,
    state: NeighbourState,
    dst: IpAddr,
    lladdr: Option<&[u8]>,
) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = address_family(dst);
    msg.header.ifindex = ifindex;
    msg.header.state = state;
    msg.attributes
        .push(NeighbourAttribute::Destination(dst.into()));
    if let Some(lladdr) = lladdr {
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(lladdr.to_vec()));
    }
    msg
}

#[test]
fn usable_neighbour_filters_on_interface_state_and_lladdr() {
    let mac = [2, 0, 0, 0, 0, 1];
    let v4: IpAddr = Ipv4Addr::new(198, 18, 0, 2).into();
    let v6: IpAddr = "fd00::2".parse::<Ipv6Addr>().unwrap().into();

    let reachable = neighbour(3, NeighbourState::Reachable, v4, Some(&mac));
    assert_eq!(usable_neighbour(&reachable, 3), Some((v4, mac)));
    let permanent6 = neighbour(3, NeighbourState::Permanent, v6, Some(&mac));
    assert_eq!(usable_neighbour(&permanent6, 3), Some((v6, mac)));

    assert_eq!(usable_neighbour(&reachable, 4), None, "other interface");
    let incomplete = neighbour(3, NeighbourState::Incomplete, v4, None);
    assert_eq!(usable_neighbour(&incomplete, 3), None);
    let failed = neighbour(3, NeighbourState::Failed, v4, Some(&mac));
    assert_eq!(usable_neighbour(&failed, 3), None);
    let short = neighbour(3, NeighbourState::Stale, v4, Some(&mac[..4]));
    assert_eq!(usable_neighbour(&short, 3), None, "non-Ethernet lladdr");
    let mut proxy = reachable.clone();
    proxy.header.flags = NeighbourFlags::Proxy;
    assert_eq!(usable_neighbour(&proxy, 3), None);
}

#[test]
fn use_request_asks_for_resolution_without_pinning() {
    let addr: IpAddr = Ipv4Addr::new(198, 18, 0, 9).into();
    let msg = use_request(7, addr);
    assert_eq!(msg.header.ifindex, 7);
    assert_eq!(msg.header.family, AddressFamily::Inet);
    assert_eq!(msg.header.state, NeighbourState::None);
    assert_eq!(msg.header.flags, NeighbourFlags::Use);
    assert_eq!(
        msg.attributes,
        vec![NeighbourAttribute::Destination(NeighbourAddress::Inet(
            Ipv4Addr::new(198, 18, 0, 9)
        ))]
    );
}

fn link(index: u32, up: bool, attributes: Vec<LinkAttribute>) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    if up {
        msg.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
    }
    msg.attributes = attributes;
    msg
}

#[test]
fn interface_from_link_takes_kernel_name_index_mac_and_up() {
    let msg = link(
        5,
        true,
        vec![
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::Mtu(1500),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 9]),
        ],
    );
    assert_eq!(
        interface_from_link(msg, "altname0").unwrap(),
        Interface {
            name: "eth0".into(),
            index: 5,
            mac: [2, 0, 0, 0, 0, 9],
            up: true,
        }
    );
    let down = link(6, false, vec![LinkAttribute::Address(vec![0; 6])]);
    let iface = interface_from_link(down, "veth1").unwrap();
    assert_eq!(iface.name, "veth1");
    assert!(!iface.up);
}

#[test]
fn interface_without_ethernet_address_is_an_error() {
    let tun = link(8, true, vec![LinkAttribute::IfName("tun0".into())]);
    let err = interface_from_link(tun, "tun0").unwrap_err();
    assert!(matches!(err, NetlinkError::NotEthernet { len: 0, .. }));
    assert!(err.to_string().contains("tun0"), "{err}");
}

#[test]
fn error_messages_name_what_they_concern() {
    let err = NetlinkError::InterfaceNotFound("nope0".into());
    assert_eq!(err.to_string(), "interface nope0 not found");
    assert_eq!(
        NetlinkError::InterfaceIndexNotFound(42).to_string(),
        "interface with index 42 not found"
    );
    let err = kernel_error(
        "RTM_NEWNEIGH (NTF_USE) for 198.18.0.1 on interface index 3",
        NonZeroI32::new(-libc::EINVAL).unwrap(),
        0,
        &[],
    );
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    let text = err.to_string();
    assert!(
        text.starts_with("RTM_NEWNEIGH (NTF_USE) for 198.18.0.1 on interface index 3 failed: ")
    );
    assert!(text.ends_with("(os error 22)"), "{text}");
}

fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
    let nla = netlink_packet_core::DefaultNla::new(kind, value.to_vec());
    let mut bytes = vec![0; nla.buffer_len()];
    nla.emit(&mut bytes);
    assert_eq!(nla.kind(), kind);
    bytes
}

#[test]
fn extack_message_is_read_after_a_capped_echo() {
    let mut echoed = vec![0u8; NLMSG_HDRLEN];
    echoed[..4].copy_from_slice(&64u32.to_ne_bytes());
    echoed.extend(tlv(3, &4u32.to_ne_bytes())); // NLMSGERR_ATTR_OFFS
    echoed.extend(tlv(NLMSGERR_ATTR_MSG, b"Invalid link address\0"));

    let flags = NLM_F_CAPPED | NLM_F_ACK_TLVS;
    let tlvs = error_tlvs(flags, &echoed);
    assert_eq!(
        extack_message(flags, tlvs).as_deref(),
        Some("Invalid link address")
    );
    // Without NLM_F_ACK_TLVS the trailing bytes are not TLVs.
    assert_eq!(extack_message(NLM_F_CAPPED, tlvs), None);

    let err = kernel_error("op", NonZeroI32::new(-libc::EINVAL).unwrap(), flags, tlvs);
    assert!(err.to_string().ends_with("(Invalid link address)"), "{err}");
}

#[test]
fn extack_message_is_read_after_an_uncapped_echo() {
    // Echo of a 22-byte request, padded to 24.
    let mut echoed = vec![0u8; 24];
    echoed[..4].copy_from_slice(&22u32.to_ne_bytes());
    echoed.extend(tlv(NLMSGERR_ATTR_MSG, b"Unknown device ifindex\0"));
    let tlvs = error_tlvs(NLM_F_ACK_TLVS, &echoed);
    assert_eq!(
        extack_message(NLM_F_ACK_TLVS, tlvs).as_deref(),
        Some("Unknown device ifindex")
    );
    // A truncated echo must not panic.
    assert_eq!(error_tlvs(0, &[1, 0]), &[] as &[u8]);
}

#[test]
fn over_long_or_empty_names_are_not_found_without_asking() {
    for name in ["", "abcdefghijklmnop", "a\0b"] {
        let err = interface_by_name(name).unwrap_err();
        assert!(
            matches!(&err, NetlinkError::InterfaceNotFound(n) if n == name),
            "{err}"
        );
    }
}

#[test]
fn index_zero_is_not_found() {
    // Opening a NETLINK_ROUTE socket needs no privilege.
    let err = neighbours(0).unwrap_err();
    assert!(
        matches!(err, NetlinkError::InterfaceIndexNotFound(0)),
        "{err}"
    );
}
