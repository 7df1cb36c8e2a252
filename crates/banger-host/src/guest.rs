//! Talking to a guest from the host: readiness (its sshd answers) and a graceful poweroff
//! request. Behind a trait so control-plane tests never send traffic to a guest address.

use std::fmt;
use std::io::{BufRead as _, BufReader, Read as _, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use banger_agent_proto::{
    AGENT_PORT, MAX_LINE, Request, Response, fallback_script, parse_fallback,
};
pub use banger_agent_proto::{GuestFile, Identity, Listener, Proto, Stats};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::exec::{ExecChannel, ExecSpec, ExitStatus, GuestFrame, HostFrame, MAX_EXEC_PAYLOAD};
use crate::runner::{Cmd, CmdOutput, CommandRunner};

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

/// How to reach one guest: its address and ssh options, and the VMM's hybrid-vsock socket
/// when the guest has vsock (then the agent is tried first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestAddr {
    /// The guest's IPv4 address.
    pub ip: Ipv4Addr,
    /// ssh options (key, pinned host key).
    pub ssh_options: Vec<String>,
    /// The VMM's vsock unix socket.
    pub vsock: Option<PathBuf>,
    /// The protocol of the agent seen at readiness (`None`: none answered).
    pub agent: Option<u32>,
}

impl GuestAddr {
    /// The vsock socket, when the guest's agent runs commands ([`crate::exec`]).
    pub fn agent_exec(&self) -> Option<&Path> {
        self.vsock
            .as_deref()
            .filter(|_| self.agent.is_some_and(|p| p >= EXEC_PROTOCOL))
    }
}

/// The first agent protocol with exec.
pub const EXEC_PROTOCOL: u32 = 2;
/// The first agent protocol with reidentify.
pub const REIDENTIFY_PROTOCOL: u32 = 3;

/// What readiness learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ready {
    /// The agent's protocol, when an agent answered.
    pub agent: Option<u32>,
}

/// Host-to-guest control.
pub trait GuestControl: Send + Sync + fmt::Debug {
    /// Waits until the guest is ready for ssh (the agent says sshd listens, or sshd answers).
    fn wait_ready(
        &self,
        guest: &GuestAddr,
        timeout: Duration,
        watch: &dyn WaitWatch,
    ) -> Result<Ready, GuestError>;
    /// The protocol of the guest's agent, asked now (`None`: no agent answers).
    fn agent_protocol(&self, guest: &GuestAddr) -> Option<u32>;
    /// Starts `spec` in the guest through its agent ([`crate::exec`]).
    fn exec_stream(&self, guest: &GuestAddr, spec: &ExecSpec) -> Result<ExecChannel, GuestIoError>;
    /// Asks the guest to power off (best effort; the caller waits and kills).
    fn request_poweroff(&self, guest: &GuestAddr);
    /// Gives a guest restored from a snapshot its own identity through the agent
    /// (protocol ≥ [`REIDENTIFY_PROTOCOL`]); an error leaves the guest unusable.
    fn reidentify(&self, guest: &GuestAddr, id: &Identity) -> Result<(), GuestIoError>;
    /// The guest's listening sockets.
    fn listening(&self, guest: &GuestAddr) -> Result<Vec<Listener>, GuestIoError>;
    /// Load, memory, disk and uptime, and where they came from (`agent` or `ssh`).
    fn stats(&self, guest: &GuestAddr) -> Result<(Stats, &'static str), GuestIoError>;
    /// Runs the fixed `script` in the guest as root (through the agent when it runs
    /// commands, else over ssh), with stdin produced by
    /// `feed` (none: empty stdin) and stdout into `sink` (none: collected, bounded). Returns
    /// its exit code and stderr (and collected stdout) whatever the exit code.
    fn exec(
        &self,
        guest: &GuestAddr,
        script: &str,
        feed: Option<Feed<'_>>,
        sink: Option<Sink<'_>>,
    ) -> Result<CmdOutput, GuestIoError>;
}

/// Talking to a guest failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GuestIoError(pub String);

/// A socket read under one overall deadline: each read waits at most the time left, so a
/// guest that trickles bytes cannot stretch a call past it.
struct Deadlined {
    stream: UnixStream,
    deadline: std::time::Instant,
}

impl std::io::Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the guest did not answer in time",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

/// Longest handshake line (`OK <port>`) accepted from the VMM's vsock socket.
const MAX_HANDSHAKE: u64 = 128;

/// One request to the guest agent through the VMM's hybrid-vsock socket `uds`. The guest is
/// untrusted: the whole call (handshake, request, reply) gets `timeout`, the handshake line
/// at most 128 bytes and the reply at most [`MAX_LINE`]; anything else is an error.
pub fn agent_call(uds: &Path, req: &Request, timeout: Duration) -> Result<Response, GuestIoError> {
    let err = |what: &str, e: &dyn fmt::Display| GuestIoError(format!("agent {what}: {e}"));
    let deadline = std::time::Instant::now() + timeout;
    let mut s = UnixStream::connect(uds).map_err(|e| err("connect", &e))?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| err("connect", &e))?;
    s.write_all(format!("CONNECT {AGENT_PORT}\n").as_bytes())
        .map_err(|e| err("connect", &e))?;
    let mut reader = BufReader::new(Deadlined {
        stream: s.try_clone().map_err(|e| err("connect", &e))?,
        deadline,
    });
    let mut ok = Vec::new();
    (&mut reader)
        .take(MAX_HANDSHAKE)
        .read_until(b'\n', &mut ok)
        .map_err(|e| err("connect", &e))?;
    if !ok.starts_with(b"OK ") || !ok.ends_with(b"\n") {
        return Err(GuestIoError("the agent does not answer".into()));
    }
    s.write_all(&banger_agent_proto::encode(req))
        .map_err(|e| err("request", &e))?;
    let mut line = Vec::new();
    (&mut reader)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .map_err(|e| err("reply", &e))?;
    if !line.ends_with(b"\n") {
        return Err(GuestIoError(format!(
            "agent reply: {}",
            if line.len() >= MAX_LINE {
                "longer than the limit"
            } else {
                "cut short"
            }
        )));
    }
    let resp: Response = serde_json::from_slice(&line).map_err(|e| err("reply", &e))?;
    if let Response::Error { message } = resp {
        return Err(GuestIoError(format!("agent: {message}")));
    }
    Ok(resp)
}

/// Writes a command's stdin.
pub type Feed<'a> = &'a mut (dyn FnMut(&mut dyn Write) -> std::io::Result<()> + Send);

/// Takes a command's stdout as it comes (instead of collecting it); an error stops reading
/// (the command then dies of a broken pipe).
pub type Sink<'a> = &'a mut (dyn FnMut(&[u8]) -> std::io::Result<()> + Send);

/// Most stdout collected from a guest command without a sink (the rest is read and dropped).
pub const MAX_COLLECTED_STDOUT: usize = 16 << 20;
/// Most stderr kept from a guest command (its start; the rest is read and dropped).
pub const MAX_STDERR: usize = 64 << 10;

/// Reads `r` to its end keeping at most `max` bytes.
fn read_bounded(r: &mut dyn std::io::Read, max: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        let room = max.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

/// Runs `cmd` with stdin written by `feed` while stdout (into `sink`, or collected up to
/// [`MAX_COLLECTED_STDOUT`]) and stderr (up to [`MAX_STDERR`]) are drained on threads.
pub fn run_fed(
    cmd: &Cmd,
    feed: Option<Feed<'_>>,
    sink: Option<Sink<'_>>,
) -> Result<CmdOutput, GuestIoError> {
    use std::process::{Command, Stdio};
    let err = |e: std::io::Error| GuestIoError(format!("cannot run {}: {e}", cmd.program));
    let mut child = Command::new(&cmd.program)
        .args(&cmd.args)
        .stdin(if feed.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(err)?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (fed, (out, sunk), errout) = std::thread::scope(|s| {
        let o = s.spawn(move || {
            let Some(r) = stdout.as_mut() else {
                return (Vec::new(), Ok(()));
            };
            let Some(sink) = sink else {
                return (read_bounded(r, MAX_COLLECTED_STDOUT), Ok(()));
            };
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => return (Vec::new(), Ok(())),
                    Ok(n) => {
                        if let Err(e) = sink(&buf[..n]) {
                            // Dropping stdout ends the command with a broken pipe.
                            return (Vec::new(), Err(e));
                        }
                    }
                }
            }
        });
        let e = s.spawn(move || {
            stderr
                .as_mut()
                .map(|r| read_bounded(r, MAX_STDERR))
                .unwrap_or_default()
        });
        let fed = match (feed, child.stdin.take()) {
            (Some(f), Some(mut stdin)) => {
                let r = f(&mut stdin);
                drop(stdin);
                r
            }
            _ => Ok(()),
        };
        (
            fed,
            o.join().unwrap_or_else(|_| (Vec::new(), Ok(()))),
            e.join().unwrap_or_default(),
        )
    });
    if let Err(e) = sunk {
        let _ = child.kill();
        let _ = child.wait();
        return Err(GuestIoError(format!(
            "the output's receiver went away: {e}"
        )));
    }
    let status = child.wait().map_err(err)?;
    let output = CmdOutput {
        code: status.code().unwrap_or(-1),
        stdout: out,
        stderr: errout,
    };
    // A broken pipe means the remote side stopped reading: its exit status says why.
    if let Err(e) = fed
        && output.code == 0
    {
        return Err(GuestIoError(format!("cannot send to the guest: {e}")));
    }
    Ok(output)
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

impl SshGuest {
    fn ssh(guest: &GuestAddr, connect_timeout: u32) -> Cmd {
        Cmd::new("ssh")
            .args(guest.ssh_options.iter().cloned())
            .args(["-o", "BatchMode=yes", "-o"])
            .arg(format!("ConnectTimeout={connect_timeout}"))
            .arg(format!("root@{}", guest.ip))
    }

    /// Listeners and stats over ssh, for guests without the agent.
    fn fallback(&self, guest: &GuestAddr) -> Result<(Vec<Listener>, Option<Stats>), GuestIoError> {
        let out = self
            .runner
            .run(&Self::ssh(guest, 5).arg(fallback_script()))
            .map_err(|e| GuestIoError(e.to_string()))?;
        Ok(parse_fallback(&out.stdout_str()))
    }

    fn agent(guest: &GuestAddr, req: &Request) -> Option<Response> {
        let uds = guest.vsock.as_deref()?;
        agent_call(uds, req, Duration::from_secs(5)).ok()
    }
}

impl GuestControl for SshGuest {
    fn reidentify(&self, guest: &GuestAddr, id: &Identity) -> Result<(), GuestIoError> {
        let uds = guest
            .vsock
            .as_deref()
            .ok_or_else(|| GuestIoError("the VM has no agent channel".into()))?;
        match agent_call(
            uds,
            &Request::Reidentify(id.clone()),
            Duration::from_secs(20),
        )? {
            Response::Ok => Ok(()),
            Response::Error { message } => Err(GuestIoError(format!("reidentify: {message}"))),
            other => Err(GuestIoError(format!("reidentify: unexpected {other:?}"))),
        }
    }

    fn wait_ready(
        &self,
        guest: &GuestAddr,
        timeout: Duration,
        watch: &dyn WaitWatch,
    ) -> Result<Ready, GuestError> {
        let deadline = Instant::now() + timeout;
        let addr = SocketAddr::from((guest.ip, 22));
        let mut round = 0u32;
        loop {
            round += 1;
            if watch.cancelled() {
                return Err(GuestError::Cancelled);
            }
            let health = guest
                .vsock
                .as_deref()
                .and_then(|uds| agent_call(uds, &Request::Health, Duration::from_millis(500)).ok());
            let agent = match health {
                Some(Response::Health {
                    ssh: true,
                    protocol,
                    ..
                }) => {
                    return Ok(Ready {
                        agent: Some(protocol),
                    });
                }
                Some(Response::Health { protocol, .. }) => Some(protocol),
                _ => None,
            };
            // An agent channel is polled every 20 ms (a restored guest answers within a
            // few); sshd, for guests without an agent, every fifth round.
            let try_ssh = guest.vsock.is_none() || agent.is_some() || round.is_multiple_of(5);
            if try_ssh && ssh_banner(addr, Duration::from_millis(300)) {
                return Ok(Ready { agent });
            }
            if !watch.vmm_alive() {
                return Err(GuestError::VmmExited);
            }
            if Instant::now() > deadline {
                return Err(GuestError::Timeout(timeout.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(if try_ssh { 100 } else { 20 }));
        }
    }

    fn agent_protocol(&self, guest: &GuestAddr) -> Option<u32> {
        crate::exec::agent_protocol(guest.vsock.as_deref()?, Duration::from_secs(2))
    }

    fn exec_stream(&self, guest: &GuestAddr, spec: &ExecSpec) -> Result<ExecChannel, GuestIoError> {
        let uds = guest
            .agent_exec()
            .ok_or_else(|| GuestIoError("the guest's agent cannot run commands".into()))?;
        crate::exec::agent_exec(uds, spec, Duration::from_secs(5))
    }

    fn request_poweroff(&self, guest: &GuestAddr) {
        if matches!(Self::agent(guest, &Request::Poweroff), Some(Response::Ok)) {
            return;
        }
        let _ = self
            .runner
            .output(&Self::ssh(guest, 2).arg("sync; systemctl --no-block poweroff"));
    }

    fn listening(&self, guest: &GuestAddr) -> Result<Vec<Listener>, GuestIoError> {
        if let Some(Response::Ports { listeners }) = Self::agent(guest, &Request::Ports) {
            return Ok(listeners);
        }
        Ok(self.fallback(guest)?.0)
    }

    fn stats(&self, guest: &GuestAddr) -> Result<(Stats, &'static str), GuestIoError> {
        if let Some(Response::Stats(s)) = Self::agent(guest, &Request::Stats) {
            return Ok((s, "agent"));
        }
        self.fallback(guest)?
            .1
            .map(|s| (s, "ssh"))
            .ok_or_else(|| GuestIoError("cannot read the guest's /proc".into()))
    }

    fn exec(
        &self,
        guest: &GuestAddr,
        script: &str,
        feed: Option<Feed<'_>>,
        sink: Option<Sink<'_>>,
    ) -> Result<CmdOutput, GuestIoError> {
        if guest.agent_exec().is_some() {
            let spec = ExecSpec {
                argv: vec!["sh".into(), "-c".into(), script.to_owned()],
                env: Vec::new(),
                cwd: None,
                tty: None,
            };
            return run_channel(self.exec_stream(guest, &spec)?, feed, sink);
        }
        run_fed(&Self::ssh(guest, 5).arg(script), feed, sink)
    }
}

/// Writes what a [`Feed`] writes as stdin frames.
struct FrameWriter<'a>(&'a mut dyn crate::exec::ExecInput);

impl Write for FrameWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(MAX_EXEC_PAYLOAD);
        self.0.send(&HostFrame::Stdin(buf[..n].to_vec()))?;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// [`GuestControl::exec`] over an agent exec: stdin from `feed` (on this thread) while a
/// second thread takes stdout into `sink` (or collects it, bounded) and keeps the start of
/// stderr. A command killed by signal N exits 128+N, as a shell reports it.
pub fn run_channel(
    ch: ExecChannel,
    feed: Option<Feed<'_>>,
    sink: Option<Sink<'_>>,
) -> Result<CmdOutput, GuestIoError> {
    let ExecChannel {
        mut input,
        mut output,
        abort,
    } = ch;
    let (fed, read) = std::thread::scope(|s| {
        let reader = s.spawn(move || -> Result<CmdOutput, GuestIoError> {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let mut sink = sink;
            loop {
                match output.next()? {
                    GuestFrame::Stdout(d) => match sink.as_mut() {
                        Some(sink) => sink(&d).map_err(|e| {
                            abort.abort();
                            GuestIoError(format!("the output's receiver went away: {e}"))
                        })?,
                        None => {
                            let room = MAX_COLLECTED_STDOUT.saturating_sub(out.len());
                            out.extend_from_slice(&d[..d.len().min(room)]);
                        }
                    },
                    GuestFrame::Stderr(d) => {
                        let room = MAX_STDERR.saturating_sub(err.len());
                        err.extend_from_slice(&d[..d.len().min(room)]);
                    }
                    GuestFrame::Exit(status) => {
                        return Ok(CmdOutput {
                            code: match status {
                                ExitStatus::Code(c) => c,
                                ExitStatus::Signal(n) => 128 + n,
                            },
                            stdout: out,
                            stderr: err,
                        });
                    }
                }
            }
        });
        let fed = match feed {
            Some(f) => f(&mut FrameWriter(input.as_mut())),
            None => Ok(()),
        }
        .and_then(|()| input.send(&HostFrame::StdinClose));
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(GuestIoError("exec reader panicked".into())));
        (fed, read)
    });
    let output = read?;
    if let Err(e) = fed
        && output.code == 0
    {
        return Err(GuestIoError(format!("cannot send to the guest: {e}")));
    }
    Ok(output)
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
    /// What `stats` returns.
    pub stats: Mutex<Stats>,
    /// Every `exec`: the script and the bytes fed to it.
    pub execs: Mutex<Vec<(String, Vec<u8>)>>,
    /// What `exec` returns.
    pub exec_output: Mutex<CmdOutput>,
    /// When set, `exec` reports on the first sender and then blocks until the second
    /// channel yields (a stalled guest).
    pub exec_hold: Mutex<Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>>,
    /// The agent protocol readiness reports (`None`: no agent).
    pub agent: Mutex<Option<u32>>,
    /// Every `exec_stream`'s spec. The fake command echoes its stdin to stdout, writes its
    /// argv (space-joined) to stderr at end of input and exits with the number in its last
    /// argument (0 if none); a signal ends it as killed by that signal.
    pub exec_specs: Mutex<Vec<ExecSpec>>,
    /// Every identity given by `reidentify`.
    pub identities: Mutex<Vec<Identity>>,
}

impl FakeGuest {
    /// Makes the next `exec` stall: the first receiver yields once it started, and it
    /// returns once the sender sends (or is dropped).
    pub fn hold_exec(&self) -> (std::sync::mpsc::Receiver<()>, std::sync::mpsc::Sender<()>) {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        *lock(&self.exec_hold) = Some((started_tx, release_rx));
        (started_rx, release_tx)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl GuestControl for FakeGuest {
    fn reidentify(&self, _guest: &GuestAddr, id: &Identity) -> Result<(), GuestIoError> {
        lock(&self.identities).push(id.clone());
        Ok(())
    }

    fn wait_ready(
        &self,
        _guest: &GuestAddr,
        timeout: Duration,
        watch: &dyn WaitWatch,
    ) -> Result<Ready, GuestError> {
        let mode = *self
            .readiness
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ready = Ready {
            agent: *lock(&self.agent),
        };
        let ready_at = match mode {
            FakeReadiness::Ready => return Ok(ready),
            FakeReadiness::AfterMs(ms) => Some(Instant::now() + Duration::from_millis(ms)),
            FakeReadiness::Never => None,
        };
        let deadline = Instant::now() + timeout;
        loop {
            if ready_at.is_some_and(|t| Instant::now() >= t) {
                return Ok(ready);
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

    fn agent_protocol(&self, _guest: &GuestAddr) -> Option<u32> {
        *lock(&self.agent)
    }

    fn exec_stream(&self, guest: &GuestAddr, spec: &ExecSpec) -> Result<ExecChannel, GuestIoError> {
        if guest.agent.is_none_or(|p| p < EXEC_PROTOCOL) {
            return Err(GuestIoError("the guest's agent cannot run commands".into()));
        }
        lock(&self.exec_specs).push(spec.clone());
        let (host, mut agent) =
            UnixStream::pair().map_err(|e| GuestIoError(format!("socketpair: {e}")))?;
        let code: i32 = spec.argv.last().and_then(|a| a.parse().ok()).unwrap_or(0);
        let argv = spec.argv.join(" ");
        std::thread::spawn(move || {
            let exit = loop {
                match HostFrame::read(&mut agent) {
                    Ok(HostFrame::Stdin(d)) => {
                        if GuestFrame::Stdout(d).write(&mut agent).is_err() {
                            return;
                        }
                    }
                    Ok(HostFrame::StdinClose) => {
                        let _ = GuestFrame::Stderr(argv.into_bytes()).write(&mut agent);
                        break ExitStatus::Code(code);
                    }
                    Ok(HostFrame::Signal(n)) => break ExitStatus::Signal(n),
                    Ok(HostFrame::Resize { .. }) => {}
                    Err(_) => return,
                }
            };
            let _ = GuestFrame::Exit(exit).write(&mut agent);
        });
        let err = |e: std::io::Error| GuestIoError(e.to_string());
        let closer = host.try_clone().map_err(err)?;
        Ok(ExecChannel {
            input: Box::new(FakeInput(host.try_clone().map_err(err)?)),
            output: Box::new(FakeOutput(host)),
            abort: crate::exec::Aborter::new(move || {
                let _ = closer.shutdown(std::net::Shutdown::Both);
            }),
        })
    }

    fn request_poweroff(&self, guest: &GuestAddr) {
        self.poweroffs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(guest.ip);
    }

    fn stats(&self, _guest: &GuestAddr) -> Result<(Stats, &'static str), GuestIoError> {
        Ok((lock(&self.stats).clone(), "fake"))
    }

    fn listening(&self, _guest: &GuestAddr) -> Result<Vec<Listener>, GuestIoError> {
        Ok(self
            .listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone())
    }

    fn exec(
        &self,
        _guest: &GuestAddr,
        script: &str,
        feed: Option<Feed<'_>>,
        sink: Option<Sink<'_>>,
    ) -> Result<CmdOutput, GuestIoError> {
        let mut fed = Vec::new();
        if let Some(f) = feed {
            f(&mut fed).map_err(|e| GuestIoError(e.to_string()))?;
        }
        lock(&self.execs).push((script.to_owned(), fed));
        let hold = lock(&self.exec_hold).take();
        if let Some((started, release)) = hold {
            let _ = started.send(());
            let _ = release.recv();
        }
        let mut out = lock(&self.exec_output).clone();
        if let Some(sink) = sink {
            sink(&std::mem::take(&mut out.stdout)).map_err(|e| GuestIoError(e.to_string()))?;
        }
        Ok(out)
    }
}

struct FakeInput(UnixStream);

impl crate::exec::ExecInput for FakeInput {
    fn send(&mut self, f: &HostFrame) -> std::io::Result<()> {
        f.write(&mut self.0)
    }
}

struct FakeOutput(UnixStream);

impl crate::exec::ExecOutput for FakeOutput {
    fn next(&mut self) -> Result<GuestFrame, GuestIoError> {
        GuestFrame::read(&mut self.0).map_err(|e| GuestIoError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {

    /// A fake VMM vsock socket whose "agent" does `act` with each connection (after
    /// reading the `CONNECT` line).
    fn hostile(act: fn(&mut UnixStream)) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut line = String::new();
                    let _ = BufReader::new(s.try_clone().unwrap()).read_line(&mut line);
                    act(&mut s);
                });
            }
        });
        (dir, path)
    }

    fn call(path: &Path, timeout_ms: u64) -> (Result<Response, GuestIoError>, Duration) {
        let t = std::time::Instant::now();
        let r = agent_call(path, &Request::Health, Duration::from_millis(timeout_ms));
        (r, t.elapsed())
    }

    #[test]
    fn test_a_hostile_agent_cannot_hang_or_flood_the_caller() {
        // Never answers: the call ends at its deadline.
        let (_d, silent) = hostile(|_| std::thread::sleep(Duration::from_secs(30)));
        let (r, took) = call(&silent, 300);
        assert!(
            r.is_err() && took < Duration::from_secs(2),
            "{r:?} {took:?}"
        );
        // Floods a handshake without a newline: refused after 128 bytes, at once.
        let (_d, flood) = hostile(|s| {
            let junk = vec![b'x'; 1 << 16];
            while s.write_all(&junk).is_ok() {}
        });
        let (r, took) = call(&flood, 5_000);
        assert!(
            r.is_err() && took < Duration::from_secs(2),
            "{r:?} {took:?}"
        );
        // A reply longer than the limit: refused after MAX_LINE bytes.
        let (_d, long) = hostile(|s| {
            let _ = s.write_all(b"OK 1024\n");
            let junk = vec![b'{'; 1 << 16];
            while s.write_all(&junk).is_ok() {}
        });
        let (r, took) = call(&long, 5_000);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("longer than the limit"), "{e} after {took:?}");
        // Trickles one byte at a time: the overall deadline still ends the call.
        let (_d, trickle) = hostile(|s| {
            let _ = s.write_all(b"OK 1024\n");
            while s.write_all(b" ").is_ok() {
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let (r, took) = call(&trickle, 400);
        assert!(
            r.is_err() && took < Duration::from_secs(2),
            "{r:?} {took:?}"
        );
        // Garbage, and a reply cut short: errors, not panics.
        let (_d, garbage) = hostile(|s| {
            let _ = s.write_all(b"OK 1024\nnot json\n");
        });
        assert!(call(&garbage, 2_000).0.is_err());
        let (_d, cut) = hostile(|s| {
            let _ = s.write_all(b"OK 1024\n");
            let mut request = String::new();
            let _ = BufReader::new(s.try_clone().unwrap()).read_line(&mut request);
            let _ = s.write_all(b"{\"kind\":\"health\"");
        });
        let e = call(&cut, 2_000).0.unwrap_err().to_string();
        assert!(e.contains("cut short"), "{e}");
        // And an honest agent still works.
        let (_d, honest) = hostile(|s| {
            let _ = s.write_all(b"OK 1024\n");
            let mut request = String::new();
            let _ = BufReader::new(s.try_clone().unwrap()).read_line(&mut request);
            let _ = s.write_all(&banger_agent_proto::encode(&Response::Health {
                version: "test".into(),
                protocol: 2,
                ssh: true,
            }));
        });
        assert!(call(&honest, 2_000).0.is_ok());
    }
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
        let ip = &GuestAddr {
            ip: Ipv4Addr::LOCALHOST,
            ssh_options: Vec::new(),
            vsock: None,
            agent: None,
        };
        assert_eq!(
            g.wait_ready(ip, Duration::from_secs(5), &Alive(false)),
            Err(GuestError::VmmExited)
        );
        assert_eq!(
            g.wait_ready(ip, Duration::from_millis(30), &Alive(true)),
            Err(GuestError::Timeout(0))
        );
        *g.readiness.lock().unwrap() = FakeReadiness::Ready;
        assert_eq!(
            g.wait_ready(ip, Duration::ZERO, &Alive(false)),
            Ok(Ready::default())
        );
    }
}
