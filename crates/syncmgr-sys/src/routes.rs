//! Whether the machine has a default route, and a socket that says when
//! routes change (Linux: `NETLINK_ROUTE`, the route groups): the network
//! trigger's fallback where NetworkManager does not run.
//!
//! The change notifications are only a wake-up: what counts is read from
//! `/proc/net/route` and `/proc/net/ipv6_route` each time, so no netlink
//! message is parsed by hand.

use std::io;
use std::os::fd::OwnedFd;

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SocketFlags, SocketType, bind, recv, socket_with};

/// `RTMGRP_IPV4_ROUTE` and `RTMGRP_IPV6_ROUTE` (`linux/rtnetlink.h`): the
/// multicast groups of route changes (rustix names the families, not the
/// groups).
const ROUTE_GROUPS: u32 = 0x40 | 0x400;

/// `RTF_UP` and `RTF_REJECT` (`linux/route.h`).
const RTF_UP: u32 = 0x1;
const RTF_REJECT: u32 = 0x200;

/// A socket that receives a message whenever a route changes.
pub fn route_changes() -> io::Result<OwnedFd> {
    let fd = socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        None,
    )?;
    bind(&fd, &SocketAddrNetlink::new(0, ROUTE_GROUPS))?;
    Ok(fd)
}

/// Waits until a route changes (blocking), then takes what else is queued.
pub fn wait_for_change(fd: &OwnedFd) -> io::Result<()> {
    let mut buf = [0u8; 8192];
    loop {
        match recv(fd, &mut buf, RecvFlags::empty()) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    drain(fd).map(|_| ())
}

/// Reads (and forgets) what the socket of [`route_changes`] has queued,
/// without waiting; `Ok(true)` if there was something.
pub fn drain(fd: &OwnedFd) -> io::Result<bool> {
    let mut buf = [0u8; 8192];
    let mut any = false;
    loop {
        match recv(fd, &mut buf, RecvFlags::DONTWAIT) {
            Ok((_, 0)) => return Ok(any),
            Ok(_) => any = true,
            Err(rustix::io::Errno::AGAIN) => return Ok(any),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether the machine has a usable default route now.
pub fn has_default_route() -> bool {
    let v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    default_in_route_v4(&v4) || default_in_route_v6(&v6)
}

/// A default route in the text of `/proc/net/route`: destination and mask
/// 0, up, not rejecting, not on the loopback device.
fn default_in_route_v4(text: &str) -> bool {
    text.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags = fields.get(3).and_then(|f| u32::from_str_radix(f, 16).ok());
        matches!(
            (fields.first(), fields.get(1), flags, fields.get(7)),
            (Some(dev), Some(&"00000000"), Some(flags), Some(&"00000000"))
                if *dev != "lo" && flags & RTF_UP != 0 && flags & RTF_REJECT == 0
        )
    })
}

/// A default route in the text of `/proc/net/ipv6_route`: `::/0`, up, not
/// rejecting, not on the loopback device.
fn default_in_route_v6(text: &str) -> bool {
    text.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags = fields.get(8).and_then(|f| u32::from_str_radix(f, 16).ok());
        let zero = fields
            .first()
            .is_some_and(|d| d.len() == 32 && d.bytes().all(|b| b == b'0'));
        zero && fields.get(1) == Some(&"00")
            && fields.get(9).is_some_and(|dev| *dev != "lo")
            && flags.is_some_and(|f| f & RTF_UP != 0 && f & RTF_REJECT == 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_default_routes() {
        let header =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
        let with = format!(
            "{header}eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\neth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        );
        assert!(default_in_route_v4(&with));
        let without =
            format!("{header}eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n");
        assert!(!default_in_route_v4(&without));
        // Down, or rejecting, or on lo: not a way out.
        for (dev, flags) in [("eth0", "0002"), ("eth0", "0201"), ("lo", "0001")] {
            let text =
                format!("{header}{dev}\t00000000\t00000000\t{flags}\t0\t0\t0\t00000000\t0\t0\t0\n");
            assert!(!default_in_route_v4(&text), "{dev} {flags}");
        }
        assert!(!default_in_route_v4(""));
    }

    #[test]
    fn ipv6_default_routes() {
        let zero = "00000000000000000000000000000000";
        let gw = "fe800000000000000000000000000001";
        let route = |dest: &str, len: &str, flags: &str, dev: &str| {
            format!("{dest} {len} {zero} 00 {gw} 00000400 00000001 00000000 {flags} {dev}\n")
        };
        assert!(default_in_route_v6(&route(zero, "00", "00000003", "eth0")));
        assert!(!default_in_route_v6(&route(zero, "00", "00200200", "lo")));
        assert!(!default_in_route_v6(&route(zero, "00", "00000201", "eth0")));
        assert!(!default_in_route_v6(&route(
            "20010db8000000000000000000000000",
            "20",
            "00000001",
            "eth0"
        )));
    }

    #[test]
    fn the_socket_opens_and_drains() {
        let fd = route_changes().expect("a netlink socket");
        // Nothing changed since it opened (or something did): no error.
        drain(&fd).expect("drain");
    }
}
