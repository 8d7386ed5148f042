//! Checks of names and addresses that the TOML types cannot express.

use std::net::IpAddr;

use super::{MAX_IFNAME_LEN, MAX_NAME_LEN, Mode};

/// Linux's `dev_valid_name()`.
pub(super) fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return Err("\".\" and \"..\" are reserved");
    }
    if name.contains('/') {
        return Err("contains '/'");
    }
    if name.contains(':') {
        return Err("contains ':'");
    }
    if name.chars().any(|c| c.is_whitespace() || c == '\0') {
        return Err("contains whitespace or NUL");
    }
    Ok(())
}

pub(super) fn check_vip_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err("only letters, digits, '_', '.' and '-' are allowed");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("longer than 64 characters");
    }
    Ok(())
}

pub(super) fn check_backend_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("longer than 64 bytes");
    }
    if name.chars().any(char::is_control) {
        return Err("contains control characters");
    }
    Ok(())
}

/// Addresses that can never be a VIP or a backend.
pub(super) fn check_unicast(a: IpAddr) -> Result<(), &'static str> {
    if a.is_unspecified() {
        return Err("unspecified address");
    }
    if a.is_multicast() {
        return Err("multicast address");
    }
    if let IpAddr::V4(v4) = a
        && v4.is_broadcast()
    {
        return Err("broadcast address");
    }
    Ok(())
}

/// Whether `backend` can be a backend of a VIP at `vip`: the VIP's address
/// family, and an address that can be sent to. The file's backends and
/// those added at runtime (`xlb backend add`) pass the same check.
pub fn check_backend_address(vip: IpAddr, backend: IpAddr) -> Result<(), String> {
    if backend.is_ipv4() != vip.is_ipv4() {
        return Err(format!(
            "{} backend {backend} under {} VIP {vip}: a backend must have the VIP's \
             address family",
            family(backend),
            family(vip)
        ));
    }
    check_unicast(backend).map_err(|why| format!("{backend} cannot be a backend: {why}"))
}

/// Whether a backend of a `mode` VIP on `vip_port` may serve on its own
/// `port` (1..=65535, set explicitly): only NAT translates ports, and an
/// all-ports VIP keeps the client's.
pub fn check_backend_port(mode: Mode, vip_port: u16, port: u16) -> Result<(), String> {
    if mode == Mode::Dsr && port != vip_port {
        return Err(format!(
            "port {port} differs from the VIP's port {vip_port}: translating ports needs \
             mode = \"nat\""
        ));
    }
    if vip_port == 0 {
        return Err(
            "an all-ports VIP (port 0) keeps the client's destination port; \
                    remove the backend port"
                .to_owned(),
        );
    }
    Ok(())
}

fn family(a: IpAddr) -> &'static str {
    if a.is_ipv4() { "IPv4" } else { "IPv6" }
}
