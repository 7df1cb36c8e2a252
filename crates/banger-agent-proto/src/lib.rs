//! The guest agent's protocol, and the `/proc` parsers both the agent and the host's ssh
//! fallback use (so the two paths report the same numbers).
//!
//! Transport: one vsock stream per request on [`AGENT_PORT`]. The host reaches it through
//! the VMM's hybrid-vsock unix socket (`CONNECT <port>\n` → `OK <port>\n`, as Firecracker
//! and vhost-device-vsock do). The client sends one JSON [`Request`] line; the agent
//! answers one JSON [`Response`] line and closes, except for [`Request::Exec`], after which
//! both ends speak the binary frames of [`exec`] until the command has exited.

pub mod exec;
pub mod mux;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// The vsock port the agent listens on.
pub const AGENT_PORT: u32 = 1024;

/// Longest request or response line accepted.
pub const MAX_LINE: usize = 1 << 20;

/// The protocol this agent speaks, reported by [`Response::Health`]. 1: health, ports,
/// stats, poweroff. 2: adds [`Request::Exec`]. 3: adds [`Request::Reidentify`].
pub const AGENT_PROTOCOL: u32 = 3;

/// A file the agent writes (whole, atomically: a temporary file renamed over it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestFile {
    /// Absolute path in the guest.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Contents.
    pub content: String,
}

/// A new identity for a guest restored from a snapshot: applied before anything else runs
/// in it, so no two VMs share an address, name, host key, machine id or RNG state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Hostname.
    pub hostname: String,
    /// The interface to readdress (`eth0`).
    pub iface: String,
    /// MAC address of that interface.
    pub mac: String,
    /// Address with prefix, e.g. `172.16.0.5/24`.
    pub address: String,
    /// Default gateway.
    pub gateway: String,
    /// The host's clock: seconds since the epoch.
    pub unix_secs: u64,
    /// ... and nanoseconds.
    pub unix_nanos: u32,
    /// Fresh randomness (hex) mixed into the kernel's pool, which is then reseeded.
    pub entropy: String,
    /// Files to write first (hostname, hosts, network config, ssh host key, machine-id).
    pub files: Vec<GuestFile>,
}

/// The protocol an agent that does not report one speaks.
pub const fn protocol_one() -> u32 {
    1
}

/// A command to run in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// Program and arguments (the program is looked up in `PATH`).
    pub argv: Vec<String>,
    /// Extra environment, on top of the agent's (`HOME`, `PATH`, `USER`, `TERM`...).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Run on a new pseudo-terminal of this size (stdout and stderr then arrive together).
    #[serde(default)]
    pub tty: Option<WinSize>,
}

/// A terminal's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// What the host asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Is the agent up, and does sshd listen?
    Health,
    /// Listening sockets.
    Ports,
    /// Load, memory, disk, uptime.
    Stats,
    /// Power the guest off (answers first).
    Poweroff,
    /// Run a command; the stream then carries [`exec`] frames (protocol 2).
    Exec(ExecSpec),
    /// Take a new identity (protocol 3); answered with [`Response::Ok`] once applied.
    Reidentify(Identity),
}

/// What the agent answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Health`].
    Health {
        /// The agent's version.
        version: String,
        /// The agent's protocol ([`AGENT_PROTOCOL`] of its build).
        #[serde(default = "protocol_one")]
        protocol: u32,
        /// Whether something listens on TCP port 22.
        ssh: bool,
    },
    /// Answer to [`Request::Ports`].
    Ports {
        /// Listening sockets, sorted.
        listeners: Vec<Listener>,
    },
    /// Answer to [`Request::Stats`].
    Stats(Stats),
    /// Done.
    Ok,
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// Transport protocol of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A listening socket in a guest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Listener {
    /// TCP or UDP.
    pub proto: Proto,
    /// Bound address.
    pub addr: IpAddr,
    /// Port.
    pub port: u16,
}

/// Guest-side numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Load averages over 1, 5 and 15 minutes.
    pub load: [f64; 3],
    /// `MemTotal`, KiB.
    pub mem_total_kib: u64,
    /// `MemAvailable`, KiB.
    pub mem_available_kib: u64,
    /// Root filesystem size, KiB.
    pub disk_total_kib: u64,
    /// Root filesystem used, KiB.
    pub disk_used_kib: u64,
    /// Seconds since boot.
    pub uptime_s: u64,
}

/// The files `/proc/net` listener tables come from, in order.
pub const PROC_NET_FILES: [&str; 4] = ["tcp", "tcp6", "udp", "udp6"];

/// Parses one `/proc/net/{tcp,udp}[6]` table: TCP sockets in LISTEN (0A) and unconnected
/// UDP sockets (07), deduplicated and sorted.
pub fn parse_proc_net(proto: Proto, v6: bool, text: &str) -> Vec<Listener> {
    let want_state = if proto == Proto::Tcp { "0A" } else { "07" };
    let mut out: Vec<Listener> = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let local = cols.nth(1)?;
            let remote = cols.next()?;
            let state = cols.next()?;
            if state != want_state {
                return None;
            }
            if proto == Proto::Udp && !remote.ends_with(":0000") {
                return None;
            }
            let (addr_hex, port_hex) = local.split_once(':')?;
            let port = u16::from_str_radix(port_hex, 16).ok()?;
            let addr = parse_hex_addr(addr_hex, v6)?;
            Some(Listener { proto, addr, port })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The kernel prints addresses as 32-bit words in host (little-endian) order.
fn parse_hex_addr(hex: &str, v6: bool) -> Option<IpAddr> {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    match (v6, words.as_slice()) {
        (false, [w]) => Some(Ipv4Addr::from(w.swap_bytes()).into()),
        (true, [a, b, c, d]) => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            Some(v6.to_ipv4_mapped().map_or(v6.into(), Into::into))
        }
        _ => None,
    }
}

/// All listeners from the four tables' texts (`tcp`, `tcp6`, `udp`, `udp6`), sorted.
pub fn listeners_from_tables<'a>(
    tables: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<Listener> {
    let mut all: Vec<Listener> = tables
        .into_iter()
        .flat_map(|(file, text)| {
            let proto = if file.starts_with("tcp") {
                Proto::Tcp
            } else {
                Proto::Udp
            };
            parse_proc_net(proto, file.ends_with('6'), text)
        })
        .collect();
    all.sort();
    all.dedup();
    all
}

/// `/proc/loadavg` → the three averages.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(str::parse::<f64>);
    Some([it.next()?.ok()?, it.next()?.ok()?, it.next()?.ok()?])
}

/// `/proc/meminfo` → (`MemTotal`, `MemAvailable`) in KiB.
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("MemTotal"), field("MemAvailable"))
}

/// `/proc/uptime` → whole seconds.
pub fn parse_uptime(text: &str) -> Option<u64> {
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(secs as u64)
}

/// Marker between sections of the ssh fallback's output.
pub const MARKER: &str = "--banger-section--";

/// The fixed guest shell script whose output [`parse_fallback`] reads: the four listener
/// tables, loadavg, meminfo, uptime and `stat -f /` (block size, blocks, free blocks).
pub fn fallback_script() -> String {
    let net = PROC_NET_FILES.iter().map(|f| format!("net/{f}"));
    let proc_files = net.chain(["loadavg", "meminfo", "uptime"].map(str::to_owned));
    let s: String = proc_files
        .map(|f| format!("echo {MARKER}; cat /proc/{f} 2>/dev/null; "))
        .collect();
    s + "echo " + MARKER + "; stat -f -c '%S %b %f' /"
}

/// Reads [`fallback_script`]'s output: (listeners, stats).
pub fn parse_fallback(output: &str) -> (Vec<Listener>, Option<Stats>) {
    let sections: Vec<&str> = output
        .split(MARKER)
        .skip(1)
        .map(|s| s.trim_start_matches('\n'))
        .collect();
    let listeners =
        listeners_from_tables(PROC_NET_FILES.iter().copied().zip(sections.iter().copied()));
    let stats = (|| {
        let load = parse_loadavg(sections.get(4)?)?;
        let (mem_total_kib, mem_available_kib) = parse_meminfo(sections.get(5)?);
        let uptime_s = parse_uptime(sections.get(6)?)?;
        let (total, used) = parse_statfs(sections.get(7)?)?;
        Some(Stats {
            load,
            mem_total_kib,
            mem_available_kib,
            disk_total_kib: total,
            disk_used_kib: used,
            uptime_s,
        })
    })();
    (listeners, stats)
}

/// `stat -f -c '%S %b %f'` → (total KiB, used KiB).
pub fn parse_statfs(text: &str) -> Option<(u64, u64)> {
    let mut it = text.split_whitespace().map(str::parse::<u64>);
    let (bsize, blocks, free) = (it.next()?.ok()?, it.next()?.ok()?, it.next()?.ok()?);
    Some(disk_kib(bsize, blocks, free))
}

/// (total KiB, used KiB) from a block size and block counts.
pub fn disk_kib(bsize: u64, blocks: u64, free: u64) -> (u64, u64) {
    let kib = |b: u64| b.saturating_mul(bsize) / 1024;
    (kib(blocks), kib(blocks.saturating_sub(free)))
}

/// Encodes one message as a line.
pub fn encode(msg: &impl Serialize) -> Vec<u8> {
    // Serializing these plain structs cannot fail (no maps with non-string keys).
    let mut line = serde_json::to_vec(msg).unwrap_or_default();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_tables_reads_all_four() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0200A8C0:0016 0100A8C0:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
";
        let tcp6 =
            "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 0 0 0
   1: 0000000000000000FFFF00000100007F:1388 00000000000000000000000000000000:0000 0A 0 0 0
";
        let udp = "  sl  local_address rem_address   st
   0: 00000000:0044 00000000:0000 07 0 0 0
   1: 0200A8C0:0035 0100A8C0:0035 01 0 0 0
";
        let out = format!(
            "{MARKER}\n{tcp}{MARKER}\n{tcp6}{MARKER}\n{udp}{MARKER}\n{MARKER}\n0.50 0.25 0.10 1/100 42\n\
             {MARKER}\nMemTotal:        1000 kB\nMemFree: 10 kB\nMemAvailable:     600 kB\n\
             {MARKER}\n123.45 200.00\n{MARKER}\n4096 1000 250\n"
        );
        let (listeners, stats) = parse_fallback(&out);
        let got: Vec<String> = listeners
            .iter()
            .map(|l| format!("{} {} {}", l.proto.as_str(), l.addr, l.port))
            .collect();
        assert_eq!(
            got,
            [
                "tcp 0.0.0.0 22",
                "tcp 127.0.0.1 5000",
                "tcp 127.0.0.1 8080",
                "tcp :: 3000",
                "udp 0.0.0.0 68",
            ]
        );
        let s = stats.unwrap();
        assert_eq!(s.load.map(|l| (l * 100.0).round() as i64), [50, 25, 10]);
        assert_eq!((s.mem_total_kib, s.mem_available_kib), (1000, 600));
        assert_eq!(s.uptime_s, 123);
        assert_eq!((s.disk_total_kib, s.disk_used_kib), (4000, 3000));
    }

    #[test]
    fn test_protocol_round_trips() {
        for r in [
            Request::Health,
            Request::Ports,
            Request::Stats,
            Request::Poweroff,
        ] {
            let line = encode(&r);
            assert_eq!(serde_json::from_slice::<Request>(&line).unwrap(), r);
        }
        let resp = Response::Ports {
            listeners: vec![Listener {
                proto: Proto::Udp,
                addr: Ipv4Addr::LOCALHOST.into(),
                port: 53,
            }],
        };
        assert_eq!(
            serde_json::from_slice::<Response>(&encode(&resp)).unwrap(),
            resp
        );
        assert_eq!(
            String::from_utf8(encode(&Request::Health)).unwrap(),
            "{\"op\":\"health\"}\n"
        );
    }

    proptest::proptest! {
        #[test]
        fn prop_parsers_never_panic(text in "\\PC{0,400}") {
            let _ = parse_fallback(&text);
            let _ = parse_proc_net(Proto::Tcp, true, &text);
            let _ = parse_meminfo(&text);
            let _ = parse_loadavg(&text);
        }
    }
}
