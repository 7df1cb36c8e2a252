//! A small QMP client: the capabilities handshake, commands with JSON arguments, and file
//! descriptors passed with `getfd` (`SCM_RIGHTS`), so migration streams go to files banger
//! opened itself — no shell, no paths in URIs. Every read has a deadline and a size bound.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// Longest QMP line read (replies here are small; events too).
const MAX_QMP_LINE: u64 = 1 << 20;

/// QMP failures.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Socket I/O.
    #[error("qmp {0}")]
    Io(String, #[source] std::io::Error),
    /// QEMU answered with an error.
    #[error("qmp {command}: {desc}")]
    Command {
        /// Command.
        command: String,
        /// QEMU's description.
        desc: String,
    },
    /// Not QMP.
    #[error("qmp: unexpected reply {0}")]
    Protocol(String),
}

/// One QMP session.
#[derive(Debug)]
pub struct Qmp {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Qmp {
    /// Connects and negotiates capabilities; each reply must come within `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let io = |what: &str| {
            let what = format!("{what} {}", socket.display());
            move |e| QmpError::Io(what, e)
        };
        let stream = UnixStream::connect(socket).map_err(io("connect"))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(io("connect"))?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(io("connect"))?;
        let reader = BufReader::new(stream.try_clone().map_err(io("connect"))?);
        let mut q = Qmp { stream, reader };
        let greeting = q.read_line()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(greeting.to_string()));
        }
        q.execute("qmp_capabilities", Value::Null)?;
        Ok(q)
    }

    fn read_line(&mut self) -> Result<Value, QmpError> {
        let mut line = Vec::new();
        (&mut self.reader)
            .take(MAX_QMP_LINE)
            .read_until(b'\n', &mut line)
            .map_err(|e| QmpError::Io("read".into(), e))?;
        if line.is_empty() {
            return Err(QmpError::Io(
                "read".into(),
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        serde_json::from_slice(&line)
            .map_err(|_| QmpError::Protocol(String::from_utf8_lossy(&line).into_owned()))
    }

    /// Runs `command` with `args` (`Null` for none); returns its `return` value.
    pub fn execute(&mut self, command: &str, args: Value) -> Result<Value, QmpError> {
        self.execute_with_fd(command, args, None)
    }

    /// Like [`Qmp::execute`], passing `fd` along (for `getfd`).
    pub fn execute_with_fd(
        &mut self,
        command: &str,
        args: Value,
        fd: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if !args.is_null() {
            msg["arguments"] = args;
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(b'\n');
        match fd {
            None => self
                .stream
                .write_all(&bytes)
                .map_err(|e| QmpError::Io(format!("send {command}"), e))?,
            Some(fd) => send_with_fd(&self.stream, &bytes, fd)
                .map_err(|e| QmpError::Io(format!("send {command}"), e))?,
        }
        loop {
            let reply = self.read_line()?;
            if let Some(r) = reply.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = reply.get("error") {
                return Err(QmpError::Command {
                    command: command.to_owned(),
                    desc: e
                        .get("desc")
                        .and_then(Value::as_str)
                        .unwrap_or("error")
                        .to_owned(),
                });
            }
            // An asynchronous event: skip it.
        }
    }

    /// Hands QEMU `fd` under `name` (`getfd`), for a `fd:NAME` migration URI.
    pub fn pass_fd(&mut self, name: &str, fd: impl AsFd) -> Result<(), QmpError> {
        self.execute_with_fd("getfd", json!({ "fdname": name }), Some(fd.as_fd()))
            .map(drop)
    }
}

/// Sends `bytes` with `fd` attached (`SCM_RIGHTS`).
fn send_with_fd(
    stream: &UnixStream,
    bytes: &[u8],
    fd: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    let fds = [fd];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    if !cmsg.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("no room for the descriptor"));
    }
    let iov = [std::io::IoSlice::new(bytes)];
    let sent = sendmsg(stream, &iov, &mut cmsg, SendFlags::empty())?;
    // The descriptor went with the first byte; the rest of the line (if any) follows.
    let mut w = stream;
    w.write_all(&bytes[sent..])
}

/// Runs one command (after the handshake); returns its reply as text. Best effort, for
/// callers that only fire a command (powerdown).
pub fn qmp_command(socket: &Path, command: &str) -> std::io::Result<String> {
    let mut q = Qmp::connect(socket, Duration::from_secs(5)).map_err(std::io::Error::other)?;
    q.execute(command, Value::Null)
        .map(|v| v.to_string())
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn test_commands_events_errors_and_fd_passing_against_a_fake_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"{\"QMP\":{\"version\":{}}}\n").unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("qmp_capabilities"), "{line}");
            s.write_all(b"{\"return\":{}}\n").unwrap();
            // getfd: the descriptor arrives with the line.
            use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut cmsg = RecvAncillaryBuffer::new(&mut space);
            let mut buf = [0u8; 256];
            let n = {
                let mut iov = [std::io::IoSliceMut::new(&mut buf)];
                recvmsg(&s, &mut iov, &mut cmsg, RecvFlags::empty())
                    .unwrap()
                    .bytes
            };
            assert!(String::from_utf8_lossy(&buf[..n]).contains("getfd"));
            let mut got = None;
            for m in cmsg.drain() {
                if let RecvAncillaryMessage::ScmRights(fds) = m {
                    got = fds.into_iter().next();
                }
            }
            let mut f = std::fs::File::from(got.expect("a descriptor"));
            f.write_all(b"through the fd").unwrap();
            s.write_all(b"{\"event\":\"STOP\"}\n{\"return\":{}}\n")
                .unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            s.write_all(b"{\"error\":{\"class\":\"GenericError\",\"desc\":\"nope\"}}\n")
                .unwrap();
        });
        let mut q = Qmp::connect(&sock, Duration::from_secs(5)).unwrap();
        let file = dir.path().join("out");
        let f = std::fs::File::create(&file).unwrap();
        q.pass_fd("snap", &f).unwrap();
        let e = q.execute("cont", Value::Null).unwrap_err();
        assert_eq!(e.to_string(), "qmp cont: nope");
        t.join().unwrap();
        assert_eq!(std::fs::read_to_string(file).unwrap(), "through the fd");
    }
}
