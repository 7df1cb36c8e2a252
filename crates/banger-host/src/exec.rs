//! The host's end of an exec through the guest agent (`banger_agent_proto::exec`): one vsock
//! stream per command, stdin frames in, stdout/stderr/exit frames out.
//!
//! The guest is untrusted: the handshake is bounded in bytes and time, every frame in size
//! ([`MAX_EXEC_PAYLOAD`]); a command may legitimately stay silent for hours, so there is no
//! read timeout on output — the caller bounds it with [`Aborter::abort`], which closes the
//! stream and so unblocks a reader stuck on a guest that stalls mid-frame.

use std::fmt;
use std::io::{self, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use banger_agent_proto::exec::{ExitStatus, GuestFrame, HostFrame, MAX_EXEC_PAYLOAD};
use banger_agent_proto::{AGENT_PORT, Request};
pub use banger_agent_proto::{ExecSpec, WinSize};

use crate::guest::GuestIoError;

/// Sends the host's frames to a running command.
pub trait ExecInput: Send {
    /// Sends one frame (blocks while the guest does not read).
    fn send(&mut self, f: &HostFrame) -> io::Result<()>;
}

/// The frames a running command sends back.
pub trait ExecOutput: Send {
    /// The next frame; an error once the stream broke or was aborted.
    fn next(&mut self) -> Result<GuestFrame, GuestIoError>;
}

/// Ends an exec from anywhere: closes its stream, so both halves fail at once and the agent
/// kills the command.
#[derive(Clone)]
pub struct Aborter(Arc<dyn Fn() + Send + Sync>);

impl Aborter {
    /// An aborter that runs `f`.
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Self {
        Aborter(Arc::new(f))
    }

    /// Ends the exec.
    pub fn abort(&self) {
        (self.0)();
    }
}

impl fmt::Debug for Aborter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Aborter")
    }
}

/// One command running in a guest.
pub struct ExecChannel {
    /// Its input.
    pub input: Box<dyn ExecInput>,
    /// Its output.
    pub output: Box<dyn ExecOutput>,
    /// Ends it.
    pub abort: Aborter,
}

impl fmt::Debug for ExecChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExecChannel")
    }
}

struct SocketInput(UnixStream);

impl ExecInput for SocketInput {
    fn send(&mut self, f: &HostFrame) -> io::Result<()> {
        f.write(&mut self.0)?;
        self.0.flush()
    }
}

struct SocketOutput(BufReader<UnixStream>);

impl ExecOutput for SocketOutput {
    fn next(&mut self) -> Result<GuestFrame, GuestIoError> {
        GuestFrame::read(&mut self.0).map_err(|e| GuestIoError(format!("agent exec: {e}")))
    }
}

/// Longest handshake line (`OK <port>`) accepted from the VMM's vsock socket.
const MAX_HANDSHAKE: u64 = 128;

/// Starts `spec` in the guest behind the VMM's hybrid-vsock socket `uds`. Connecting and the
/// handshake get `timeout`; the command's output then has no deadline (see [`Aborter`]).
pub fn agent_exec(
    uds: &Path,
    spec: &ExecSpec,
    timeout: Duration,
) -> Result<ExecChannel, GuestIoError> {
    let err = |e: io::Error| GuestIoError(format!("agent exec: connect: {e}"));
    let deadline = Instant::now() + timeout;
    let mut s = UnixStream::connect(uds).map_err(err)?;
    s.set_write_timeout(Some(timeout)).map_err(err)?;
    s.write_all(format!("CONNECT {AGENT_PORT}\n").as_bytes())
        .map_err(err)?;
    // Read the handshake a byte at a time: nothing past its newline may be consumed here.
    let mut ok = Vec::new();
    let mut byte = [0u8; 1];
    while !ok.ends_with(b"\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || ok.len() as u64 >= MAX_HANDSHAKE {
            return Err(GuestIoError("the agent does not answer".into()));
        }
        s.set_read_timeout(Some(left)).map_err(err)?;
        match s.read(&mut byte) {
            Ok(1) => ok.push(byte[0]),
            Ok(_) => return Err(GuestIoError("the agent does not answer".into())),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(GuestIoError("the agent does not answer".into()));
            }
            Err(e) => return Err(err(e)),
        }
    }
    if !ok.starts_with(b"OK ") {
        return Err(GuestIoError("the agent does not answer".into()));
    }
    s.write_all(&banger_agent_proto::encode(&Request::Exec(spec.clone())))
        .map_err(err)?;
    s.set_read_timeout(None).map_err(err)?;
    // Writes may block while the command does not read its stdin (that is flow control);
    // abort is what bounds them.
    s.set_write_timeout(None).map_err(err)?;
    let input = s.try_clone().map_err(err)?;
    let closer = s.try_clone().map_err(err)?;
    Ok(ExecChannel {
        input: Box::new(SocketInput(input)),
        output: Box::new(SocketOutput(BufReader::with_capacity(
            MAX_EXEC_PAYLOAD + 5,
            s,
        ))),
        abort: Aborter::new(move || {
            let _ = closer.shutdown(std::net::Shutdown::Both);
        }),
    })
}

/// One request's answer from an agent at `uds`: its protocol version, or `None` when no agent
/// answers (then the guest is reached over ssh).
pub fn agent_protocol(uds: &Path, timeout: Duration) -> Option<u32> {
    match crate::guest::agent_call(uds, &Request::Health, timeout) {
        Ok(banger_agent_proto::Response::Health { protocol, .. }) => Some(protocol),
        _ => None,
    }
}

/// Reads a reply line through `reader` — used by tests of hostile agents.
#[cfg(test)]
fn read_line(reader: &mut BufReader<UnixStream>) -> Vec<u8> {
    use std::io::BufRead as _;
    let mut line = Vec::new();
    let _ = reader.read_until(b'\n', &mut line);
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake VMM vsock socket whose "agent" runs `act` after the handshake and the request
    /// (reading through the buffered reader that read the request, writing to the socket).
    fn agent(
        act: fn(&mut BufReader<UnixStream>, &mut UnixStream),
    ) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let l = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let mut s = s.unwrap();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let _ = read_line(&mut r);
                    s.write_all(b"OK 1024\n").unwrap();
                    let _ = read_line(&mut r);
                    act(&mut r, &mut s);
                });
            }
        });
        (dir, path)
    }

    fn spec() -> ExecSpec {
        ExecSpec {
            argv: vec!["x".into()],
            env: vec![],
            cwd: None,
            tty: None,
        }
    }

    #[test]
    fn test_exec_frames_flow_both_ways() {
        let (_d, path) = agent(|r, s| {
            let f = HostFrame::read(r).unwrap();
            let HostFrame::Stdin(data) = f else { panic!() };
            GuestFrame::Stdout(data).write(s).unwrap();
            GuestFrame::Exit(ExitStatus::Code(3)).write(s).unwrap();
        });
        let mut ch = agent_exec(&path, &spec(), Duration::from_secs(2)).unwrap();
        ch.input.send(&HostFrame::Stdin(b"hi".to_vec())).unwrap();
        assert_eq!(
            ch.output.next().unwrap(),
            GuestFrame::Stdout(b"hi".to_vec())
        );
        assert_eq!(
            ch.output.next().unwrap(),
            GuestFrame::Exit(ExitStatus::Code(3))
        );
    }

    #[test]
    fn test_a_hostile_agent_cannot_flood_or_hang_an_exec() {
        // A frame claiming 4 GiB is refused without reading it.
        let (_d, path) = agent(|_, s| {
            let _ = s.write_all(&[16, 0xff, 0xff, 0xff, 0xff]);
            std::thread::sleep(Duration::from_secs(5));
        });
        let mut ch = agent_exec(&path, &spec(), Duration::from_secs(2)).unwrap();
        assert!(ch.output.next().unwrap_err().0.contains("over the limit"));
        // Garbage kinds are refused.
        let (_d, path) = agent(|_, s| {
            let _ = s.write_all(b"{\"kind\":\"error\"}\n");
        });
        let mut ch = agent_exec(&path, &spec(), Duration::from_secs(2)).unwrap();
        assert!(ch.output.next().is_err());
        // Half a frame, then silence: abort unblocks the reader at once.
        let (_d, path) = agent(|_, s| {
            let _ = s.write_all(&[16, 0, 0, 1, 0, 1, 2]);
            std::thread::sleep(Duration::from_secs(30));
        });
        let mut ch = agent_exec(&path, &spec(), Duration::from_secs(2)).unwrap();
        let abort = ch.abort.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            abort.abort();
        });
        let started = Instant::now();
        assert!(ch.output.next().is_err());
        assert!(started.elapsed() < Duration::from_secs(3));
        t.join().unwrap();
    }

    #[test]
    fn test_a_silent_or_babbling_vsock_socket_fails_the_handshake_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let l = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for (i, s) in l.incoming().enumerate() {
                let mut s = s.unwrap();
                if i == 1 {
                    let _ = s.write_all(&[b'x'; 4096]);
                }
                held.push(s);
            }
        });
        for _ in 0..2 {
            let started = Instant::now();
            let e = agent_exec(&path, &spec(), Duration::from_millis(300)).unwrap_err();
            assert!(e.0.contains("does not answer"), "{e}");
            assert!(started.elapsed() < Duration::from_secs(2));
        }
    }
}
