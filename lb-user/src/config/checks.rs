//! Checks of names and addresses that the TOML types cannot express.

use std::net::IpAddr;

use super::{MAX_IFNAME_LEN, MAX_NAME_LEN};

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
