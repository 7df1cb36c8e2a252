//! Running a command for the host ([`banger_agent_proto::Request::Exec`]): the process gets
//! its own process group (or, with a PTY, its own session with the PTY as its controlling
//! terminal); threads copy stdin in and stdout/stderr out as frames; the host closing the
//! stream kills the whole group.

use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_agent_proto::ExecSpec;
use banger_agent_proto::exec::{ExitStatus, FrameError, GuestFrame, HostFrame, MAX_EXEC_PAYLOAD};
use rustix::process::{Pid, Signal};

/// A byte stream to the host that can be split (vsock in the guest, unix sockets in tests).
pub(crate) trait Conn: Read + Write + Send + Sized + 'static {
    /// A second handle on the same stream.
    fn split(&self) -> io::Result<Self>;
    /// Ends the stream both ways (unblocks a reader on another handle).
    fn close(&self);
    /// Sets (or clears) the read timeout.
    fn read_timeout(&self, t: Option<Duration>);
}

impl Conn for vsock::VsockStream {
    fn split(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn close(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
    fn read_timeout(&self, t: Option<Duration>) {
        let _ = self.set_read_timeout(t);
    }
}

impl Conn for std::os::unix::net::UnixStream {
    fn split(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn close(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
    fn read_timeout(&self, t: Option<Duration>) {
        let _ = self.set_read_timeout(t);
    }
}

/// How long output still draining after the command exited is waited for (a background
/// process it left behind may hold its stdout open for ever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The frames to the host: one writer at a time, and none after the exit frame.
struct Out<C: Conn>(Mutex<Option<C>>);

impl<C: Conn> Out<C> {
    fn send(&self, f: &GuestFrame) -> bool {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match guard.as_mut() {
            Some(c) => f.write(c).and_then(|()| c.flush()).is_ok(),
            None => false,
        }
    }

    fn finish(&self, status: ExitStatus) {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(mut c) = guard.take() {
            let _ = GuestFrame::Exit(status).write(&mut c);
            let _ = c.flush();
            c.close();
        }
    }
}

/// What the host-reading thread writes the command's input to.
enum Input {
    Pipe(Option<std::process::ChildStdin>),
    Pty(std::fs::File),
}

/// Runs `spec` for the host on `conn` until the command exits or the host goes away;
/// `early` holds bytes of the host's first frames already read with the request.
pub(crate) fn serve<C: Conn>(conn: C, spec: &ExecSpec, early: Vec<u8>) {
    conn.read_timeout(None);
    let Ok(reader) = conn.split() else { return };
    let reader = io::Cursor::new(early).chain(reader);
    let out = Arc::new(Out(Mutex::new(Some(conn))));
    let started = match spawn(spec) {
        Ok(s) => s,
        Err(e) => {
            let code = if e.kind() == io::ErrorKind::PermissionDenied {
                126
            } else {
                127
            };
            let what = spec.argv.first().map_or("", String::as_str);
            let msg = format!("banger-agent: cannot run {what:?}: {e}\n");
            out.send(&GuestFrame::Stderr(msg.into_bytes()));
            out.finish(ExitStatus::Code(code));
            return;
        }
    };
    let Started {
        mut child,
        input,
        stdout,
        stderr,
        master,
    } = started;
    let pgid = Pid::from_child(&child);
    let done = Arc::new(AtomicBool::new(false));
    let (drained_tx, drained_rx) = std::sync::mpsc::channel::<()>();
    let mut pumps = 0;
    for (src, is_err) in [(stdout, false), (stderr, true)] {
        let Some(mut src) = src else { continue };
        pumps += 1;
        let out = Arc::clone(&out);
        let tx = drained_tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; MAX_EXEC_PAYLOAD];
            // A PTY's master reads EIO once the last process holding the terminal is gone.
            while let Ok(n) = src.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let data = buf[..n].to_vec();
                let frame = if is_err {
                    GuestFrame::Stderr(data)
                } else {
                    GuestFrame::Stdout(data)
                };
                if !out.send(&frame) {
                    break;
                }
            }
            let _ = tx.send(());
        });
    }
    drop(drained_tx);
    {
        let done = Arc::clone(&done);
        std::thread::spawn(move || host_input(reader, input, master.as_deref(), Some(pgid), &done));
    }
    let status = child.wait();
    for _ in 0..pumps {
        if drained_rx.recv_timeout(DRAIN_AFTER_EXIT).is_err() {
            break;
        }
    }
    done.store(true, Ordering::SeqCst);
    out.finish(match status {
        Ok(s) => s.code().map_or_else(
            || ExitStatus::Signal(s.signal().unwrap_or(0)),
            ExitStatus::Code,
        ),
        Err(_) => ExitStatus::Code(-1),
    });
}

/// Reads the host's frames: stdin into the command, signals to its group, window sizes to
/// its terminal. The host going away kills the group.
fn host_input<C: Conn>(
    mut conn: io::Chain<io::Cursor<Vec<u8>>, C>,
    mut input: Input,
    master: Option<&std::fs::File>,
    pgid: Option<Pid>,
    done: &AtomicBool,
) {
    let signal_group = |sig: i32| {
        if done.load(Ordering::SeqCst) {
            return;
        }
        // With a terminal, the foreground job gets it (as a typed Ctrl-C would).
        let target = master
            .as_ref()
            .and_then(|m| rustix::termios::tcgetpgrp(m).ok())
            .or(pgid);
        if let (Some(pid), Some(sig)) = (target, Signal::from_named_raw(sig)) {
            let _ = rustix::process::kill_process_group(pid, sig);
        }
    };
    loop {
        match HostFrame::read(&mut conn) {
            Ok(HostFrame::Stdin(data)) => {
                let written = match &mut input {
                    Input::Pipe(Some(p)) => p.write_all(&data),
                    Input::Pipe(None) => Ok(()),
                    Input::Pty(f) => f.write_all(&data),
                };
                if written.is_err() {
                    // The command closed its stdin: later input has nowhere to go.
                    input = Input::Pipe(None);
                }
            }
            Ok(HostFrame::StdinClose) => {
                if let Input::Pipe(p) = &mut input {
                    p.take();
                }
            }
            Ok(HostFrame::Signal(sig)) => signal_group(sig),
            Ok(HostFrame::Resize { rows, cols }) => {
                if let Some(m) = &master {
                    let _ = rustix::termios::tcsetwinsize(m, winsize(rows, cols));
                }
            }
            Err(FrameError::Eof | FrameError::Io(_)) => {
                signal_group(libc_sigkill());
                return;
            }
            Err(_) => {
                signal_group(libc_sigkill());
                conn.get_ref().1.close();
                return;
            }
        }
    }
}

const fn libc_sigkill() -> i32 {
    9
}

fn winsize(rows: u16, cols: u16) -> rustix::termios::Winsize {
    rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

struct Started {
    child: Child,
    input: Input,
    stdout: Option<Box<dyn Read + Send>>,
    stderr: Option<Box<dyn Read + Send>>,
    master: Option<Arc<std::fs::File>>,
}

fn spawn(spec: &ExecSpec) -> io::Result<Started> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .env("HOME", "/root")
        .env("USER", "root")
        .env("LOGNAME", "root")
        .env("SHELL", "/bin/sh");
    if spec.tty.is_some() {
        cmd.env("TERM", "xterm-256color");
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    let Some(size) = spec.tty else {
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        return Ok(Started {
            input: Input::Pipe(child.stdin.take()),
            stdout: child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            stderr: child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child,
            master: None,
        });
    };
    use rustix::pty::OpenptFlags;
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    rustix::termios::tcsetwinsize(&master, winsize(size.rows, size.cols))?;
    // O_NOCTTY: the agent is a session leader (systemd made it one); without it, opening
    // the terminal would make it the agent's controlling terminal, and its hangup when the
    // command ends would kill the agent.
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name.as_bytes()))?;
    cmd.stdin(slave.try_clone()?)
        .stdout(slave.try_clone()?)
        .stderr(slave);
    pty_session(&mut cmd);
    let child = cmd.spawn()?;
    // `cmd` (and its copies of the terminal) are dropped here: only the child holds it.
    drop(cmd);
    let master = std::fs::File::from(master);
    let reader = master.try_clone()?;
    let writer = master.try_clone()?;
    Ok(Started {
        child,
        input: Input::Pty(writer),
        stdout: Some(Box::new(reader)),
        stderr: None,
        master: Some(Arc::new(master)),
    })
}

/// Makes the child a session leader whose controlling terminal is its stdin (the PTY).
#[allow(unsafe_code)]
fn pty_session(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only makes two system
    // calls (setsid, ioctl TIOCSCTTY) through rustix, which neither allocate nor take locks,
    // so it is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(std::io::stdin())?;
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// Runs `spec` through [`serve`] on a socket pair; sends `input`; returns every frame.
    fn run(spec: ExecSpec, input: &[HostFrame]) -> Vec<GuestFrame> {
        let (host, agent) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve(agent, &spec, Vec::new()));
        let mut w = host.try_clone().unwrap();
        for f in input {
            f.write(&mut w).unwrap();
        }
        let mut r = host;
        let mut frames = Vec::new();
        while let Ok(f) = GuestFrame::read(&mut r) {
            frames.push(f);
        }
        t.join().unwrap();
        frames
    }

    fn spec(argv: &[&str]) -> ExecSpec {
        ExecSpec {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            env: vec![("X".into(), "y z".into())],
            cwd: Some("/".into()),
            tty: None,
        }
    }

    fn collect(frames: &[GuestFrame]) -> (Vec<u8>, Vec<u8>, Option<ExitStatus>) {
        let (mut o, mut e, mut x) = (Vec::new(), Vec::new(), None);
        for f in frames {
            match f {
                GuestFrame::Stdout(d) => o.extend_from_slice(d),
                GuestFrame::Stderr(d) => e.extend_from_slice(d),
                GuestFrame::Exit(s) => x = Some(*s),
            }
        }
        (o, e, x)
    }

    #[test]
    fn test_exec_keeps_streams_apart_and_reports_codes_and_signals() {
        let f = run(
            spec(&[
                "sh",
                "-c",
                "echo out; echo err >&2; echo \"$X\" \"$PWD\"; exit 7",
            ]),
            &[],
        );
        let (o, e, x) = collect(&f);
        assert_eq!(o, b"out\ny z /\n");
        assert_eq!(e, b"err\n");
        assert_eq!(x, Some(ExitStatus::Code(7)));
        assert!(matches!(f.last(), Some(GuestFrame::Exit(_))));
        let (_, _, x) = collect(&run(spec(&["sh", "-c", "kill -TERM $$"]), &[]));
        assert_eq!(x, Some(ExitStatus::Signal(15)));
        let (_, e, x) = collect(&run(spec(&["/no/such/program"]), &[]));
        assert_eq!(x, Some(ExitStatus::Code(127)));
        assert!(String::from_utf8_lossy(&e).contains("/no/such/program"));
    }

    #[test]
    fn test_stdin_streams_in_byte_exact_and_closes() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (o, _, x) = collect(&run(
            spec(&["cat"]),
            &[HostFrame::Stdin(data.clone()), HostFrame::StdinClose],
        ));
        assert_eq!(x, Some(ExitStatus::Code(0)));
        assert_eq!(o, data);
    }

    #[test]
    fn test_a_signal_reaches_the_group_and_a_pty_is_a_terminal() {
        let (_, _, x) = collect(&run(spec(&["sleep", "100"]), &[HostFrame::Signal(2)]));
        assert_eq!(x, Some(ExitStatus::Signal(2)));
        let mut s = spec(&["sh", "-c", "tty; stty size"]);
        s.tty = Some(banger_agent_proto::WinSize {
            rows: 33,
            cols: 101,
        });
        let (o, _, x) = collect(&run(s, &[]));
        let text = String::from_utf8_lossy(&o);
        assert!(text.starts_with("/dev/pts/"), "{text}");
        assert!(text.contains("33 101"), "{text}");
        assert_eq!(x, Some(ExitStatus::Code(0)));
    }

    #[test]
    fn test_the_host_going_away_kills_the_command() {
        let (host, agent) = UnixStream::pair().unwrap();
        let marker = tempfile::NamedTempFile::new().unwrap();
        let path = marker.path().display().to_string();
        let spec = spec(&["sh", "-c", &format!("echo $$ > {path}; exec sleep 100")]);
        let t = std::thread::spawn(move || serve(agent, &spec, Vec::new()));
        let mut r = host.try_clone().unwrap();
        // Wait until the command runs, then hang up.
        while std::fs::read_to_string(marker.path())
            .unwrap()
            .trim()
            .is_empty()
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(host);
        drop(r.shutdown(std::net::Shutdown::Both));
        let started = std::time::Instant::now();
        t.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        let _ = GuestFrame::read(&mut r);
    }
}
