//! Talking to a guest from the host: readiness (its sshd answers) and a graceful poweroff
//! request. Behind a trait so control-plane tests never send traffic to a guest address.

use std::fmt;
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::runner::{Cmd, CommandRunner};

/// Why a guest did not become ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    /// The VMM process exited first.
    #[error("the vmm exited before ssh answered")]
    VmmExited,
    /// The deadline passed.
    #[error("ssh did not answer within {0}s")]
    Timeout(u64),
    /// The wait was cancelled.
    #[error("cancelled")]
    Cancelled,
}

/// What the waiter asks between probes: is the VMM alive, was the wait cancelled.
pub trait WaitWatch: Sync {
    /// Whether the VMM still runs.
    fn vmm_alive(&self) -> bool;
    /// Whether the caller gave up.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Host-to-guest control.
pub trait GuestControl: Send + Sync + fmt::Debug {
    /// Waits until the guest at `ip` is ready for ssh.
    fn wait_ready(
        &self,
        ip: Ipv4Addr,
        timeout: Duration,
        watch: &dyn WaitWatch,
    ) -> Result<(), GuestError>;
    /// Asks the guest to power off (best effort; the caller waits and kills).
    fn request_poweroff(&self, ip: Ipv4Addr, ssh_options: &[String]);
    /// The guest's listening sockets (its `/proc/net/{tcp,tcp6,udp,udp6}`).
    fn listening(
        &self,
        ip: Ipv4Addr,
        ssh_options: &[String],
    ) -> Result<Vec<Listener>, GuestIoError>;
}

/// A listening socket in a guest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listener {
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// Bound address.
    pub addr: std::net::IpAddr,
    /// Port.
    pub port: u16,
}

/// Talking to a guest failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GuestIoError(pub String);

/// The files `listening` reads, in order, separated by a marker line.
pub const PROC_NET_FILES: [&str; 4] = ["tcp", "tcp6", "udp", "udp6"];
const MARKER: &str = "--banger-proc-net--";

/// Parses one `/proc/net/{tcp,udp}[6]` table: TCP sockets in LISTEN (0A) and unconnected UDP
/// sockets (07), deduplicated and sorted.
pub fn parse_proc_net(proto: &'static str, v6: bool, text: &str) -> Vec<Listener> {
    let want_state = if proto == "tcp" { "0A" } else { "07" };
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
            if proto == "udp" && !remote.ends_with(":0000") {
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
fn parse_hex_addr(hex: &str, v6: bool) -> Option<std::net::IpAddr> {
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
            let v6 = std::net::Ipv6Addr::from(bytes);
            Some(v6.to_ipv4_mapped().map_or(v6.into(), Into::into))
        }
        _ => None,
    }
}

/// Parses the output of the `listening` command (the four tables separated by markers).
pub fn parse_listening(output: &str) -> Vec<Listener> {
    let mut all: Vec<Listener> = output
        .split(MARKER)
        .skip(1)
        .zip(PROC_NET_FILES)
        .flat_map(|(text, file)| {
            let proto = if file.starts_with("tcp") {
                "tcp"
            } else {
                "udp"
            };
            parse_proc_net(proto, file.ends_with('6'), text.trim_start_matches('\n'))
        })
        .collect();
    all.sort();
    all.dedup();
    all
}

/// The real thing: a TCP probe for the ssh banner, `ssh … poweroff`.
#[derive(Debug, Clone)]
pub struct SshGuest {
    runner: Arc<dyn CommandRunner>,
}

impl SshGuest {
    /// Runs `ssh` through `runner`.
    pub fn new(runner: Arc<dyn CommandRunner>) -> Self {
        SshGuest { runner }
    }
}

/// Whether something at `addr` sends an ssh banner.
pub fn ssh_banner(addr: SocketAddr, connect_timeout: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, connect_timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8];
    s.read(&mut buf)
        .is_ok_and(|n| n >= 4 && &buf[..4] == b"SSH-")
}

impl GuestControl for SshGuest {
    fn wait_ready(
        &self,
        ip: Ipv4Addr,
        timeout: Duration,
        watch: &dyn WaitWatch,
    ) -> Result<(), GuestError> {
        let deadline = Instant::now() + timeout;
        let addr = SocketAddr::from((ip, 22));
        loop {
            if watch.cancelled() {
                return Err(GuestError::Cancelled);
            }
            if ssh_banner(addr, Duration::from_millis(300)) {
                return Ok(());
            }
            if !watch.vmm_alive() {
                return Err(GuestError::VmmExited);
            }
            if Instant::now() > deadline {
                return Err(GuestError::Timeout(timeout.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn request_poweroff(&self, ip: Ipv4Addr, ssh_options: &[String]) {
        let _ = self.runner.output(
            &Cmd::new("ssh")
                .args(ssh_options.iter().cloned())
                .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=2"])
                .arg(format!("root@{ip}"))
                .arg("sync; systemctl --no-block poweroff"),
        );
    }

    fn listening(
        &self,
        ip: Ipv4Addr,
        ssh_options: &[String],
    ) -> Result<Vec<Listener>, GuestIoError> {
        // A fixed script (no input in it): each table preceded by a marker line.
        let script: String = PROC_NET_FILES
            .iter()
            .map(|f| format!("echo {MARKER}; cat /proc/net/{f} 2>/dev/null; "))
            .collect();
        let out = self
            .runner
            .run(
                &Cmd::new("ssh")
                    .args(ssh_options.iter().cloned())
                    .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=5"])
                    .arg(format!("root@{ip}"))
                    .arg(script),
            )
            .map_err(|e| GuestIoError(e.to_string()))?;
        Ok(parse_listening(&out.stdout_str()))
    }
}

/// How a [`FakeGuest`] answers `wait_ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FakeReadiness {
    /// Ready at once.
    #[default]
    Ready,
    /// Never ready: waits out the timeout (or the VMM's death, or cancellation).
    Never,
    /// Ready after this many milliseconds (a stand-in for boot time).
    AfterMs(u64),
}

/// A fake guest for tests: readiness on command, poweroff requests recorded.
#[derive(Debug, Default)]
pub struct FakeGuest {
    /// How `wait_ready` answers.
    pub readiness: Mutex<FakeReadiness>,
    /// Guest IPs that were asked to power off.
    pub poweroffs: Mutex<Vec<Ipv4Addr>>,
    /// What `listening` returns.
    pub listeners: Mutex<Vec<Listener>>,
}

impl GuestControl for FakeGuest {
    fn wait_ready(
        &self,
        _ip: Ipv4Addr,
        timeout: Duration,
        watch: &dyn WaitWatch,
    ) -> Result<(), GuestError> {
        let mode = *self
            .readiness
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ready_at = match mode {
            FakeReadiness::Ready => return Ok(()),
            FakeReadiness::AfterMs(ms) => Some(Instant::now() + Duration::from_millis(ms)),
            FakeReadiness::Never => None,
        };
        let deadline = Instant::now() + timeout;
        loop {
            if ready_at.is_some_and(|t| Instant::now() >= t) {
                return Ok(());
            }
            if watch.cancelled() {
                return Err(GuestError::Cancelled);
            }
            if !watch.vmm_alive() {
                return Err(GuestError::VmmExited);
            }
            if Instant::now() > deadline {
                return Err(GuestError::Timeout(timeout.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn request_poweroff(&self, ip: Ipv4Addr, _ssh_options: &[String]) {
        self.poweroffs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(ip);
    }

    fn listening(
        &self,
        _ip: Ipv4Addr,
        _ssh_options: &[String],
    ) -> Result<Vec<Listener>, GuestIoError> {
        Ok(self
            .listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_listening_reads_all_four_tables() {
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
        let out = format!("{MARKER}\n{tcp}{MARKER}\n{tcp6}{MARKER}\n{udp}{MARKER}\n");
        let got: Vec<String> = parse_listening(&out)
            .iter()
            .map(|l| format!("{} {} {}", l.proto, l.addr, l.port))
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
    }

    struct Alive(bool);
    impl WaitWatch for Alive {
        fn vmm_alive(&self) -> bool {
            self.0
        }
    }

    #[test]
    fn test_banner_probe_sees_ssh_and_rejects_other_servers() {
        use std::io::Write as _;
        let ssh = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (a, b) = (ssh.local_addr().unwrap(), other.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut s, _) = ssh.accept().unwrap();
            s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
        });
        std::thread::spawn(move || {
            let (mut s, _) = other.accept().unwrap();
            s.write_all(b"HTTP/1.1 400\r\n").unwrap();
        });
        assert!(ssh_banner(a, Duration::from_secs(1)));
        assert!(!ssh_banner(b, Duration::from_secs(1)));
    }

    #[test]
    fn test_fake_guest_never_ready_reports_vmm_exit_and_timeout() {
        let g = FakeGuest::default();
        *g.readiness.lock().unwrap() = FakeReadiness::Never;
        let ip = Ipv4Addr::LOCALHOST;
        assert_eq!(
            g.wait_ready(ip, Duration::from_secs(5), &Alive(false)),
            Err(GuestError::VmmExited)
        );
        assert_eq!(
            g.wait_ready(ip, Duration::from_millis(30), &Alive(true)),
            Err(GuestError::Timeout(0))
        );
        *g.readiness.lock().unwrap() = FakeReadiness::Ready;
        assert_eq!(g.wait_ready(ip, Duration::ZERO, &Alive(false)), Ok(()));
    }
}
