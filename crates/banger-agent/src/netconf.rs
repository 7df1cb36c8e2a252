//! An interface's MAC, IPv4 address and default route, set with the kernel's socket ioctls
//! (`SIOCSIFFLAGS`, `SIOCSIFHWADDR`, `SIOCSIFADDR`, `SIOCSIFNETMASK`, `SIOCADDRT`): a
//! restored guest takes its identity without starting a program (`ip` costs ~0.1 s in a
//! guest whose translation cache is still cold).

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

/// What the interface becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    pub iface: String,
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
}

/// `aa:bb:cc:dd:ee:ff`.
pub(crate) fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// `A.B.C.D/N`.
pub(crate) fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = text.split_once('/')?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((addr.parse().ok()?, len))
}

/// The netmask of a prefix length (≤ 32).
pub(crate) fn netmask(prefix_len: u8) -> Ipv4Addr {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    Ipv4Addr::from(bits)
}

/// `struct rtentry` of `<linux/route.h>` (libc declares it for musl only), field names as
/// the kernel's.
#[repr(C)]
#[allow(clippy::struct_field_names)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn sockaddr_in(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and sockaddr is plain
    // old data: every bit pattern is valid.
    #[allow(unsafe_code)]
    unsafe {
        std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin)
    }
}

#[allow(unsafe_code)]
fn ifreq(name: &str) -> Result<libc::ifreq, String> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(format!("bad interface name {name:?}"));
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

/// One ioctl on `sock` with `arg`.
#[allow(unsafe_code)]
fn raw_ioctl<T>(sock: &OwnedFd, request: libc::Ioctl, arg: &mut T) -> std::io::Result<()> {
    // SAFETY: `arg` is the structure `request` takes (ifreq or rtentry), valid and
    // exclusively borrowed for the call; the kernel reads (and for some requests writes)
    // within its size.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), request, std::ptr::from_mut(arg)) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// [`raw_ioctl`], `what` naming it in the error.
fn ioctl<T>(sock: &OwnedFd, request: libc::Ioctl, arg: &mut T, what: &str) -> Result<(), String> {
    raw_ioctl(sock, request, arg).map_err(|e| format!("{what}: {e}"))
}

/// Applies `c`: link down, MAC, address and netmask, link up, default route.
#[allow(unsafe_code)]
pub(crate) fn apply(c: &Config) -> Result<(), String> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = ifreq(&c.iface)?;
    ioctl(&sock, libc::SIOCGIFFLAGS, &mut req, "read the link flags")?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    let up = libc::IFF_UP as libc::c_short;
    req.ifr_ifru.ifru_flags = flags & !up;
    ioctl(&sock, libc::SIOCSIFFLAGS, &mut req, "set the link down")?;
    let mut hw = ifreq(&c.iface)?;
    let mut addr = libc::sockaddr {
        sa_family: libc::ARPHRD_ETHER,
        sa_data: [0; 14],
    };
    for (d, s) in addr.sa_data.iter_mut().zip(c.mac) {
        *d = s as libc::c_char;
    }
    hw.ifr_ifru.ifru_hwaddr = addr;
    ioctl(&sock, libc::SIOCSIFHWADDR, &mut hw, "set the mac address")?;
    let mut a = ifreq(&c.iface)?;
    a.ifr_ifru.ifru_addr = sockaddr_in(c.address);
    ioctl(&sock, libc::SIOCSIFADDR, &mut a, "set the address")?;
    let mut m = ifreq(&c.iface)?;
    m.ifr_ifru.ifru_netmask = sockaddr_in(netmask(c.prefix_len));
    ioctl(&sock, libc::SIOCSIFNETMASK, &mut m, "set the netmask")?;
    req.ifr_ifru.ifru_flags = flags | up;
    ioctl(&sock, libc::SIOCSIFFLAGS, &mut req, "set the link up")?;
    let mut route = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr_in(c.gateway),
        rt_genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_flags: (libc::RTF_UP | libc::RTF_GATEWAY),
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: std::ptr::null_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    match raw_ioctl(&sock, libc::SIOCADDRT, &mut route) {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
            Err(format!("add the default route: {e}"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parsers() {
        assert_eq!(
            parse_mac("02:fc:ac:10:00:03"),
            Some([0x02, 0xfc, 0xac, 0x10, 0x00, 0x03])
        );
        for bad in [
            "02:fc:ac:10:00",
            "02:fc:ac:10:00:03:04",
            "2:fc:ac:10:00:03",
            "zz:fc:ac:10:00:03",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert_eq!(
            parse_cidr("172.16.0.3/24"),
            Some((Ipv4Addr::new(172, 16, 0, 3), 24))
        );
        for bad in ["172.16.0.3", "172.16.0.3/33", "x/24"] {
            assert_eq!(parse_cidr(bad), None, "{bad}");
        }
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
        assert_eq!(netmask(20), Ipv4Addr::new(255, 255, 240, 0));
    }

    #[test]
    fn test_rtentry_has_the_kernel_layout() {
        // x86_64 <linux/route.h>: 120 bytes, rt_flags at 56, rt_dev at 88.
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_flags), 56);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_dev), 88);
    }

    #[test]
    fn test_bad_interface_names_are_refused() {
        assert!(ifreq("").is_err());
        assert!(ifreq("a-name-far-too-long").is_err());
        assert!(ifreq("eth0").is_ok());
    }
}
