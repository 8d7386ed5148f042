//! `xlb down` when no `xlb run` is there to ask: the data plane a crashed
//! or stopped process left behind is removed directly.

use anyhow::{Context as _, Result};

use crate::{config::Config, netlink, state::StateDir, vrrp};

/// Removes the data plane `config` describes: unpins its links (the
/// program detaches) and maps, removes the state directory, and with VRRP
/// takes the VIP addresses off the NIC and the server addresses off
/// `server_interface` (a master that died leaves them),
/// and with `[announce]` withdraws the announcements.
/// Says what it did.
pub fn down_offline(config: &Config) -> Result<String> {
    let dir = config.state_dir.display().to_string();
    let mut done = Vec::new();
    if let Some(a) = &config.announce {
        let iface = netlink::interface_by_name(&a.interface)
            .with_context(|| format!("[announce] interface {}", a.interface))?;
        let vips: Vec<_> = config.vips.iter().map(|v| v.address).collect();
        let mut n = 0;
        for addr in netlink::held_addresses(iface.index)? {
            if vips.contains(&addr) {
                netlink::del_host_address(iface.index, addr)?;
                n += 1;
            }
        }
        done.push(format!("{n} announcements withdrawn from {}", a.interface));
        if n > 0 && config.state_dir.exists() {
            // The data plane forwards on while the routers converge.
            std::thread::sleep(std::time::Duration::from_millis(u64::from(
                a.withdraw_wait_ms,
            )));
        }
    }
    if config.state_dir.exists() {
        let state = StateDir::open(&config.state_dir)?;
        let pins = state.pins()?;
        let running = state.running();
        state.remove()?;
        done.push(if running {
            format!("program detached, {} pins removed from {dir}", pins.len())
        } else {
            format!("{} pins removed from {dir}", pins.len())
        });
    } else {
        done.push(format!("nothing pinned in {dir}"));
    }
    if let Some(v) = &config.vrrp {
        let iface = netlink::interface_by_name(&config.interface)
            .with_context(|| format!("interface {}", config.interface))?;
        let addrs: Vec<_> = v.groups.iter().flat_map(|g| g.addresses.clone()).collect();
        vrrp::withdraw_addresses(iface.index, &addrs)?;
        done.push(format!(
            "{} VRRP addresses withdrawn from {}",
            addrs.len(),
            config.interface
        ));
        let server: Vec<_> = v
            .groups
            .iter()
            .flat_map(|g| g.server_addresses.clone())
            .collect();
        if let Some(name) = &config.server_interface
            && !server.is_empty()
        {
            let iface = netlink::interface_by_name(name)
                .with_context(|| format!("server_interface {name}"))?;
            vrrp::withdraw_addresses(iface.index, &server)?;
            done.push(format!(
                "{} VRRP server addresses withdrawn from {name}",
                server.len()
            ));
        }
    }
    Ok(format!("down: {}", done.join("; ")))
}
