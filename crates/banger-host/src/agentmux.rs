//! The host end of the agent's serial channel (`bangerd --agent-mux`): a helper process that
//! lives and dies with one QEMU VM. It listens on the chardev socket QEMU connects its
//! virtio-serial port to, and on the VM's agent socket, where each client speaks
//! Firecracker's hybrid-vsock handshake (`CONNECT <port>\n` → `OK <id>\n`) and then the
//! agent protocol; every client becomes one virtual connection of
//! [`banger_agent_proto::mux`]. A client is refused (closed before `OK`) while no agent
//! answers, as a vsock connection is refused while nothing listens.

use std::io::{self, Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use banger_agent_proto::mux::{Mux, Role};

/// Longest `CONNECT` line.
const MAX_CONNECT: usize = 64;

/// Reads `CONNECT <port>\n` byte by byte (nothing past it is consumed).
fn read_connect(s: &mut UnixStream) -> Option<u32> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < MAX_CONNECT {
        if s.read(&mut b).ok()? == 0 {
            return None;
        }
        if b[0] == b'\n' {
            let text = std::str::from_utf8(&line).ok()?;
            let port = text.strip_prefix("CONNECT ")?.trim().parse().ok()?;
            s.set_read_timeout(None).ok()?;
            return Some(port);
        }
        line.push(b[0]);
    }
    None
}

fn serve_client(mux: &Mux, mut s: UnixStream) {
    let Some(port) = read_connect(&mut s) else {
        return;
    };
    let Ok(ours) = s.try_clone() else { return };
    if let Ok(id) = mux.connect(port, ours) {
        // The data flows once `OK` is out; the mux threads own the stream now.
        if s.write_all(format!("OK {id}\n").as_bytes()).is_err() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Runs the helper: binds both sockets, takes QEMU's connection on `chardev`, resets the
/// guest's side and serves `uds` until QEMU goes away.
pub fn run(chardev: &Path, uds: &Path) -> io::Result<()> {
    let _ = std::fs::remove_file(chardev);
    let _ = std::fs::remove_file(uds);
    let qemu_listener = UnixListener::bind(chardev)?;
    let clients = UnixListener::bind(uds)?;
    let (qemu, _) = qemu_listener.accept()?;
    drop(qemu_listener);
    let _ = std::fs::remove_file(chardev);
    let mux = Mux::new(Role::Host, Box::new(qemu.try_clone()?), None);
    let nonce = format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    mux.reset(&nonce)?;
    let m = mux.clone();
    std::thread::spawn(move || {
        for c in clients.incoming() {
            let Ok(c) = c else { continue };
            let m = m.clone();
            std::thread::spawn(move || serve_client(&m, c));
        }
    });
    mux.run(qemu);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead as _, BufReader};

    #[test]
    fn test_helper_carries_a_client_to_a_guest_mux_and_refuses_before_it_answers() {
        let dir = tempfile::tempdir().unwrap();
        let (chardev, uds) = (
            dir.path().join("serial.sock"),
            dir.path().join("agent.sock"),
        );
        let (c2, u2) = (chardev.clone(), uds.clone());
        std::thread::spawn(move || run(&c2, &u2));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !chardev.exists() || !uds.exists() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        // "QEMU" connects; no agent yet: a client is refused.
        let qemu = UnixStream::connect(&chardev).unwrap();
        let mut c = UnixStream::connect(&uds).unwrap();
        c.write_all(b"CONNECT 1024\n").unwrap();
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).unwrap();
        assert!(buf.is_empty(), "{buf:?}");
        // The agent starts: a guest mux that answers "pong" to each connection.
        let guest = Mux::new(
            Role::Guest,
            Box::new(qemu.try_clone().unwrap()),
            Some(Box::new(|port, mut s| {
                std::thread::spawn(move || {
                    let mut line = String::new();
                    BufReader::new(s.try_clone().unwrap())
                        .read_line(&mut line)
                        .unwrap();
                    write!(s, "{port} {line}").unwrap();
                });
            })),
        );
        let g = guest.clone();
        std::thread::spawn(move || g.run(qemu));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut c = UnixStream::connect(&uds).unwrap();
            c.write_all(b"CONNECT 1024\nping\n").unwrap();
            let mut r = BufReader::new(c);
            let mut ok = String::new();
            // A refusal closes the socket (a reset, with "ping" unread).
            if r.read_line(&mut ok).is_ok() && ok.starts_with("OK ") {
                let mut reply = String::new();
                r.read_line(&mut reply).unwrap();
                assert_eq!(reply, "1024 ping\n");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never answered");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
