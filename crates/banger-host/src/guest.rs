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
}

#[cfg(test)]
mod tests {
    use super::*;

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
