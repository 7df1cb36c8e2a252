//! Agent connections multiplexed over one byte stream.
//!
//! Under QEMU the agent's channel is a virtio-serial port (its state migrates with the VM,
//! where `vhost-user-vsock`'s does not), and a serial port is one byte stream. A host helper
//! (`bangerd --agent-mux`) offers the same `CONNECT <port>` unix socket Firecracker's vsock
//! does and carries each connection over the port as a numbered virtual connection.
//!
//! The stream is text lines (`\n`-terminated, at most [`MAX_MUX_LINE`] bytes), so a reader
//! that joins mid-line — a VM restored from a snapshot taken while a line was in flight —
//! loses at most that line:
//!
//! | line | meaning |
//! |---|---|
//! | `O <id> <port>` | host → guest: open connection `id` to `port` |
//! | `D <id> <base64>` | data for `id` (at most [`CHUNK`] bytes) |
//! | `C <id> <n>` | the receiver wrote `n` more bytes of `id` out: the sender may send `n` more |
//! | `E <id>` | the sender has no more data for `id` (half close) |
//! | `X <id>` | the sender stops reading `id`: the receiver stops sending (data already sent is still delivered) |
//! | `R <nonce>` | host → guest: forget every connection, answer `A <nonce>` |
//! | `A <nonce>` | guest → host: reset done |
//! | `H` | guest → host: a (re)started agent; the host forgets every connection |
//!
//! Flow control: each side may have at most [`WINDOW`] bytes of a connection unacknowledged
//! by `C`; a peer that sends more loses the connection. One connection that is not read
//! never blocks the others.

use std::collections::HashMap;
use std::io::{self, BufRead as _, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};

/// The name of the agent's virtio-serial port (`/sys/class/virtio-ports/*/name`).
pub const PORT_NAME: &str = "org.banger.agent";
/// Unacknowledged bytes allowed per connection and direction.
pub const WINDOW: usize = 256 * 1024;
/// Bytes of data per `D` line.
pub const CHUNK: usize = 48 * 1024;
/// Longest line accepted (a `D` line of [`CHUNK`] bytes plus its header).
pub const MAX_MUX_LINE: usize = CHUNK / 3 * 4 + 64;
/// Connections open at once; more are refused.
pub const MAX_CONNS: usize = 256;

/// One line of the mux stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Open a connection to a port.
    Open(u32, u32),
    /// Data.
    Data(u32, Vec<u8>),
    /// Credit.
    Credit(u32, usize),
    /// End of data.
    Eof(u32),
    /// Stop sending.
    Stop(u32),
    /// Forget every connection.
    Reset(String),
    /// Reset done.
    Ack(String),
    /// An agent (re)started.
    Hello,
}

fn b64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn b64_decode(s: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

impl Line {
    /// The line's bytes, `\n` included.
    pub fn encode(&self) -> Vec<u8> {
        let s = match self {
            Line::Open(id, port) => format!("O {id} {port}\n"),
            Line::Data(id, data) => format!("D {id} {}\n", b64_encode(data)),
            Line::Credit(id, n) => format!("C {id} {n}\n"),
            Line::Eof(id) => format!("E {id}\n"),
            Line::Stop(id) => format!("X {id}\n"),
            Line::Reset(nonce) => format!("\nR {nonce}\n"),
            Line::Ack(nonce) => format!("\nA {nonce}\n"),
            Line::Hello => "\nH\n".to_owned(),
        };
        s.into_bytes()
    }

    /// Parses one line (without its `\n`); `None` for anything malformed.
    pub fn parse(line: &[u8]) -> Option<Line> {
        let mut parts = line.split(|&b| b == b' ');
        let kind = parts.next()?;
        let a = parts.next();
        let b = parts.next();
        if parts.next().is_some() {
            return None;
        }
        let num = |x: Option<&[u8]>| -> Option<u64> {
            let x = x?;
            if x.is_empty() || x.len() > 10 || !x.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(x).ok()?.parse().ok()
        };
        let id = || num(a).and_then(|n| u32::try_from(n).ok());
        let word = |x: Option<&[u8]>| -> Option<String> {
            let x = x?;
            (!x.is_empty() && x.len() <= 64 && x.iter().all(u8::is_ascii_alphanumeric))
                .then(|| String::from_utf8_lossy(x).into_owned())
        };
        Some(match (kind, b) {
            (b"O", Some(_)) => Line::Open(id()?, u32::try_from(num(b)?).ok()?),
            (b"D", Some(data)) if data.len() <= CHUNK.div_ceil(3) * 4 => {
                let bytes = b64_decode(data)?;
                if bytes.is_empty() {
                    return None;
                }
                Line::Data(id()?, bytes)
            }
            (b"C", Some(_)) => Line::Credit(id()?, usize::try_from(num(b)?).ok()?),
            (b"E", None) => Line::Eof(id()?),
            (b"X", None) => Line::Stop(id()?),
            (b"R", None) => Line::Reset(word(a)?),
            (b"A", None) => Line::Ack(word(a)?),
            (b"H", None) if a.is_none() => Line::Hello,
            _ => return None,
        })
    }
}

/// Which end of the stream this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens connections (`bangerd --agent-mux`).
    Host,
    /// Accepts them (the agent).
    Guest,
}

/// What the guest does with an opened connection: serve `stream` for `port`.
pub type OnOpen = Box<dyn Fn(u32, UnixStream) + Send + Sync>;

/// One end of a multiplexed stream.
#[derive(Clone)]
pub struct Mux {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Mux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mux")
            .field("role", &self.inner.role)
            .finish_non_exhaustive()
    }
}

struct Inner {
    role: Role,
    out: Mutex<Box<dyn Write + Send>>,
    conns: Mutex<HashMap<u32, Arc<Conn>>>,
    next_id: AtomicU32,
    /// Host: the guest answered the last reset (or said hello); connections may open.
    synced: AtomicBool,
    nonce: Mutex<String>,
    on_open: Option<OnOpen>,
}

struct Conn {
    id: u32,
    /// Our end of the local socket (the client's on the host, the agent's on the guest).
    local: UnixStream,
    /// Inbound data for the writer thread; `None` once the peer sent `E`/`X`.
    tx: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    /// Inbound bytes not written out yet (bounded by [`WINDOW`]).
    queued: AtomicUsize,
    /// Bytes we may still send.
    credit: Mutex<usize>,
    cv: Condvar,
    /// The peer stops reading, or the connection was reset.
    stopped: AtomicBool,
    /// Threads finished (2 = forget the connection).
    done: AtomicU8,
}

fn seed_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ std::process::id().rotate_left(16)) & 0x3fff_ffff | 1
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Mux {
    /// A mux writing its lines to `out`. The guest passes `on_open`.
    pub fn new(role: Role, out: Box<dyn Write + Send>, on_open: Option<OnOpen>) -> Mux {
        Mux {
            inner: Arc::new(Inner {
                role,
                out: Mutex::new(out),
                conns: Mutex::new(HashMap::new()),
                // Ids of a new host never meet a restored guest's old ones.
                next_id: AtomicU32::new(seed_id()),
                synced: AtomicBool::new(false),
                nonce: Mutex::new(String::new()),
                on_open,
            }),
        }
    }

    fn send(&self, line: &Line) -> io::Result<()> {
        let mut out = lock(&self.inner.out);
        out.write_all(&line.encode())?;
        out.flush()
    }

    /// Host: forgets every connection and asks the guest to do the same; connections open
    /// again once it answers.
    pub fn reset(&self, nonce: &str) -> io::Result<()> {
        self.inner.synced.store(false, Ordering::SeqCst);
        nonce.clone_into(&mut lock(&self.inner.nonce));
        self.forget_all();
        self.send(&Line::Reset(nonce.to_owned()))
    }

    /// Guest: tells the host an agent (re)started.
    pub fn hello(&self) -> io::Result<()> {
        self.send(&Line::Hello)
    }

    /// Host: whether the guest answered.
    pub fn synced(&self) -> bool {
        self.inner.synced.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open_conns(&self) -> usize {
        lock(&self.inner.conns).len()
    }

    /// Host: carries `stream` to the guest's `port`; returns the connection's id.
    pub fn connect(&self, port: u32, stream: UnixStream) -> io::Result<u32> {
        if !self.synced() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "no agent answers on the serial port",
            ));
        }
        if self.open_conns() >= MAX_CONNS {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "too many agent connections",
            ));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::SeqCst);
        self.send(&Line::Open(id, port))?;
        self.add(id, stream)?;
        Ok(id)
    }

    /// Resets every connection (both directions, queued data dropped).
    pub fn forget_all(&self) {
        let conns: Vec<Arc<Conn>> = lock(&self.inner.conns).drain().map(|(_, c)| c).collect();
        for c in conns {
            c.kill();
        }
    }

    fn add(&self, id: u32, local: UnixStream) -> io::Result<()> {
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let conn = Arc::new(Conn {
            id,
            local: local.try_clone()?,
            tx: Mutex::new(Some(tx)),
            queued: AtomicUsize::new(0),
            credit: Mutex::new(WINDOW),
            cv: Condvar::new(),
            stopped: AtomicBool::new(false),
            done: AtomicU8::new(0),
        });
        lock(&self.inner.conns).insert(id, Arc::clone(&conn));
        let (m, c) = (self.clone(), Arc::clone(&conn));
        let reader = local.try_clone()?;
        std::thread::spawn(move || m.uplink(&c, reader));
        let (m, c) = (self.clone(), conn);
        std::thread::spawn(move || m.downlink(&c, local, &rx));
        Ok(())
    }

    /// Local socket → `D` lines, within the credit.
    fn uplink(&self, c: &Conn, mut local: UnixStream) {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let allowed = {
                let mut credit = lock(&c.credit);
                while *credit == 0 && !c.stopped.load(Ordering::SeqCst) {
                    credit = c.cv.wait(credit).unwrap_or_else(PoisonError::into_inner);
                }
                if c.stopped.load(Ordering::SeqCst) {
                    break;
                }
                (*credit).min(CHUNK)
            };
            match local.read(&mut buf[..allowed]) {
                Ok(0) => {
                    let _ = self.send(&Line::Eof(c.id));
                    break;
                }
                Ok(n) => {
                    *lock(&c.credit) -= n;
                    if self.send(&Line::Data(c.id, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // Our side cannot be read: end our data.
                    let _ = self.send(&Line::Eof(c.id));
                    break;
                }
            }
        }
        self.finished(c);
    }

    /// Queued `D` data → local socket, then `C` credit back.
    fn downlink(&self, c: &Conn, mut local: UnixStream, rx: &mpsc::Receiver<Vec<u8>>) {
        let mut broken = false;
        for chunk in rx {
            if broken {
                continue;
            }
            if local.write_all(&chunk).is_err() {
                // Nobody reads our side: tell the peer to stop sending.
                broken = true;
                let _ = self.send(&Line::Stop(c.id));
                continue;
            }
            c.queued.fetch_sub(chunk.len(), Ordering::SeqCst);
            let _ = self.send(&Line::Credit(c.id, chunk.len()));
        }
        let _ = local.shutdown(std::net::Shutdown::Write);
        self.finished(c);
    }

    fn finished(&self, c: &Conn) {
        if c.done.fetch_add(1, Ordering::SeqCst) == 1 {
            let mut conns = lock(&self.inner.conns);
            if conns
                .get(&c.id)
                .is_some_and(|x| std::ptr::eq(Arc::as_ptr(x), c))
            {
                conns.remove(&c.id);
            }
        }
    }

    fn conn(&self, id: u32) -> Option<Arc<Conn>> {
        lock(&self.inner.conns).get(&id).cloned()
    }

    /// Reads lines from `input` and acts on them until it ends; then every connection is
    /// reset.
    pub fn run(&self, input: impl Read) {
        let mut reader = BufReader::with_capacity(2 * MAX_MUX_LINE, input);
        let mut line = Vec::with_capacity(MAX_MUX_LINE);
        loop {
            line.clear();
            match (&mut reader)
                .take(MAX_MUX_LINE as u64)
                .read_until(b'\n', &mut line)
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if line.last() != Some(&b'\n') {
                // Longer than any valid line: skip to its end.
                let mut sink = Vec::new();
                loop {
                    sink.clear();
                    match (&mut reader).take(4096).read_until(b'\n', &mut sink) {
                        Ok(0) | Err(_) => {
                            self.forget_all();
                            return;
                        }
                        Ok(_) if sink.last() == Some(&b'\n') => break,
                        Ok(_) => {}
                    }
                }
                continue;
            }
            line.pop();
            if let Some(l) = Line::parse(&line) {
                self.handle(l);
            }
        }
        self.forget_all();
    }

    fn handle(&self, line: Line) {
        let host = self.inner.role == Role::Host;
        if host && !self.synced() {
            // Until the guest answers the reset, anything else is from before it.
            match line {
                Line::Ack(n) if n == *lock(&self.inner.nonce) => {
                    self.inner.synced.store(true, Ordering::SeqCst);
                }
                Line::Hello => {
                    self.inner.synced.store(true, Ordering::SeqCst);
                }
                _ => {}
            }
            return;
        }
        match line {
            Line::Open(id, port) if !host => {
                let Some(on_open) = &self.inner.on_open else {
                    return;
                };
                if self.conn(id).is_some() || self.open_conns() >= MAX_CONNS {
                    let _ = self.send(&Line::Stop(id));
                    let _ = self.send(&Line::Eof(id));
                    return;
                }
                let Ok((ours, theirs)) = UnixStream::pair() else {
                    let _ = self.send(&Line::Stop(id));
                    let _ = self.send(&Line::Eof(id));
                    return;
                };
                if self.add(id, ours).is_ok() {
                    on_open(port, theirs);
                }
            }
            Line::Data(id, data) => {
                let Some(c) = self.conn(id) else {
                    let _ = self.send(&Line::Stop(id));
                    return;
                };
                let len = data.len();
                if c.queued.fetch_add(len, Ordering::SeqCst) + len > WINDOW {
                    // Over the window: the peer ignores flow control.
                    lock(&self.inner.conns).remove(&id);
                    c.kill();
                    let _ = self.send(&Line::Stop(id));
                    return;
                }
                match &*lock(&c.tx) {
                    Some(tx) => {
                        let _ = tx.send(data);
                    }
                    None => {
                        c.queued.fetch_sub(len, Ordering::SeqCst);
                    }
                }
            }
            Line::Credit(id, n) => {
                if let Some(c) = self.conn(id) {
                    let mut credit = lock(&c.credit);
                    *credit = credit.saturating_add(n).min(WINDOW);
                    c.cv.notify_all();
                }
            }
            Line::Eof(id) => {
                if let Some(c) = self.conn(id) {
                    lock(&c.tx).take();
                }
            }
            Line::Stop(id) => {
                if let Some(c) = self.conn(id) {
                    c.stop_sending();
                }
            }
            Line::Reset(nonce) if !host => {
                self.forget_all();
                let _ = self.send(&Line::Ack(nonce));
            }
            Line::Hello if host => self.forget_all(),
            _ => {}
        }
    }
}

impl Conn {
    /// The peer stops reading: stop our uplink.
    fn stop_sending(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = self.local.shutdown(std::net::Shutdown::Read);
        let _guard = lock(&self.credit);
        self.cv.notify_all();
    }

    /// Reset: both directions end now.
    fn kill(&self) {
        lock(&self.tx).take();
        self.stop_sending();
        let _ = self.local.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn test_lines_round_trip_and_garbage_is_refused() {
        for l in [
            Line::Open(1, 1024),
            Line::Data(7, b"hello\n\0\xff".to_vec()),
            Line::Data(7, vec![1; CHUNK]),
            Line::Credit(3, 4096),
            Line::Eof(2),
            Line::Stop(2),
            Line::Reset("n0nce".into()),
            Line::Ack("n0nce".into()),
            Line::Hello,
        ] {
            let bytes = l.encode();
            let text = bytes.strip_prefix(b"\n").unwrap_or(&bytes);
            let text = text.strip_suffix(b"\n").unwrap();
            assert_eq!(Line::parse(text), Some(l.clone()), "{l:?}");
            assert!(bytes.len() <= MAX_MUX_LINE + 2);
        }
        for bad in [
            &b""[..],
            b"D 1",
            b"D 1 !!!!",
            b"D 1 QQ=",
            b"D x QUJD",
            b"O 1",
            b"O 99999999999 1",
            b"C 1 -3",
            b"E 1 2",
            b"R ",
            b"R a b",
            b"R a;b",
            b"Z 1",
            b"3 D abc12 D xyz",
        ] {
            assert_eq!(Line::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        for n in 0..10 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37) as u8).collect();
            assert_eq!(b64_decode(b64_encode(&data).as_bytes()), Some(data));
        }
    }

    /// A host and a guest mux joined by a socket pair; the guest echoes every connection
    /// in upper case... or whatever `serve` does.
    fn pair(serve: fn(u32, UnixStream)) -> (Mux, Mux, UnixStream) {
        let (h, g) = UnixStream::pair().unwrap();
        let host = Mux::new(Role::Host, Box::new(h.try_clone().unwrap()), None);
        let guest = Mux::new(
            Role::Guest,
            Box::new(g.try_clone().unwrap()),
            Some(Box::new(move |port, s| {
                std::thread::spawn(move || serve(port, s));
            })),
        );
        let (hm, gm) = (host.clone(), guest.clone());
        let hr = h.try_clone().unwrap();
        std::thread::spawn(move || hm.run(hr));
        std::thread::spawn(move || gm.run(g));
        host.reset("abc").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !host.synced() {
            assert!(std::time::Instant::now() < deadline, "never synced");
            std::thread::sleep(Duration::from_millis(1));
        }
        (host, guest, h)
    }

    fn echo(_port: u32, mut s: UnixStream) {
        let mut r = s.try_clone().unwrap();
        let _ = io::copy(&mut r, &mut s);
        let _ = s.shutdown(std::net::Shutdown::Write);
    }

    fn open(host: &Mux, port: u32) -> UnixStream {
        let (client, ours) = UnixStream::pair().unwrap();
        host.connect(port, ours).unwrap();
        client
    }

    #[test]
    fn test_connections_carry_bytes_both_ways_with_half_close() {
        let (host, _guest, _h) = pair(echo);
        let mut c = open(&host, 1024);
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = c.try_clone().unwrap();
        let d2 = data.clone();
        let t = std::thread::spawn(move || {
            w.write_all(&d2).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        t.join().unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while host.open_conns() > 0 {
            assert!(std::time::Instant::now() < deadline, "conn never forgotten");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn test_a_connection_nobody_reads_does_not_block_the_others() {
        // The guest never reads connection 1; connection 2 still echoes.
        fn serve(port: u32, s: UnixStream) {
            if port == 1 {
                std::thread::sleep(Duration::from_secs(30));
                drop(s);
            } else {
                echo(port, s);
            }
        }
        let (host, _guest, _h) = pair(serve);
        let stuck = open(&host, 1);
        let mut w = stuck.try_clone().unwrap();
        std::thread::spawn(move || {
            let junk = vec![7u8; 1 << 20];
            for _ in 0..64 {
                if w.write_all(&junk).is_err() {
                    return;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        let mut c = open(&host, 2);
        c.write_all(b"ping").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = String::new();
        c.read_to_string(&mut back).unwrap();
        assert_eq!(back, "ping");
    }

    #[test]
    fn test_reset_forgets_connections_and_a_late_joiner_resyncs() {
        let (host, guest, h) = pair(echo);
        let mut c = open(&host, 1024);
        c.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        c.read_exact(&mut one).unwrap();
        assert_eq!(guest.open_conns(), 1, "the guest has the connection");
        // Half a line on the wire, as a snapshot taken mid-write leaves it.
        (&h).write_all(b"D 1 QUJD").unwrap();
        host.reset("second").unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(c.read(&mut buf).unwrap(), 0, "the old connection ends");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !host.synced() || guest.open_conns() > 0 {
            assert!(std::time::Instant::now() < deadline, "never resynced");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut c = open(&host, 1024);
        c.write_all(b"again").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = String::new();
        c.read_to_string(&mut back).unwrap();
        assert_eq!(back, "again");
    }

    #[test]
    fn test_a_peer_ignoring_the_window_loses_its_connection_only() {
        let (g, hostile) = UnixStream::pair().unwrap();
        let guest = Mux::new(
            Role::Guest,
            Box::new(g.try_clone().unwrap()),
            Some(Box::new(|_port, s| {
                // Never reads.
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(30));
                    drop(s);
                });
            })),
        );
        let gm = guest.clone();
        std::thread::spawn(move || gm.run(g));
        let mut h = hostile;
        h.write_all(&Line::Open(5, 1).encode()).unwrap();
        let mut w = h.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..200 {
                if w.write_all(&Line::Data(5, vec![0; CHUNK]).encode())
                    .is_err()
                {
                    return;
                }
            }
        });
        let mut reader = BufReader::new(h.try_clone().unwrap());
        let mut lines = Vec::new();
        while !lines.iter().any(|l| l == "X 5\n") {
            let mut got = String::new();
            assert!(reader.read_line(&mut got).unwrap() > 0, "{lines:?}");
            assert!(
                got == "X 5\n" || got == "E 5\n" || got.starts_with("C 5 "),
                "{got:?}"
            );
            lines.push(got);
        }
        assert_eq!(guest.open_conns(), 0);
    }

    #[test]
    fn test_host_refuses_connections_until_the_guest_answers() {
        let (h, _g) = UnixStream::pair().unwrap();
        let host = Mux::new(Role::Host, Box::new(h), None);
        let (_c, ours) = UnixStream::pair().unwrap();
        let e = host.connect(1024, ours).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }
}
