//! The exec stream: after an [`crate::Request::Exec`] line, both ends of the vsock stream
//! speak binary frames until the command has exited.
//!
//! A frame is `kind: u8`, `len: u32` (big-endian), then `len` payload bytes, at most
//! [`MAX_EXEC_PAYLOAD`]. The host sends [`HostFrame`]s (stdin, stdin closed, a signal, a
//! window size); the agent sends [`GuestFrame`]s (stdout, stderr, then exactly one exit).
//! Either end that reads a frame it does not know, or one over the size limit, stops.
//! The host closing the stream kills the command (its whole process group).

use std::io::{self, Read, Write};

/// Largest payload of one frame.
pub const MAX_EXEC_PAYLOAD: usize = 64 << 10;

/// What the host sends while a command runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostFrame {
    /// Bytes for the command's stdin.
    Stdin(Vec<u8>),
    /// No more stdin (the command reads end of file).
    StdinClose,
    /// Deliver this signal to the command's process group (the terminal's foreground group
    /// when it has a PTY).
    Signal(i32),
    /// The terminal's new size (PTY only).
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

/// What the agent sends while a command runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestFrame {
    /// Bytes the command wrote to stdout (with a PTY: everything it wrote to the terminal).
    Stdout(Vec<u8>),
    /// Bytes the command wrote to stderr.
    Stderr(Vec<u8>),
    /// The command ended; the last frame.
    Exit(ExitStatus),
}

const STDIN: u8 = 1;
const STDIN_CLOSE: u8 = 2;
const SIGNAL: u8 = 3;
const RESIZE: u8 = 4;
const STDOUT: u8 = 16;
const STDERR: u8 = 17;
const EXIT_CODE: u8 = 18;
const EXIT_SIGNAL: u8 = 19;

/// A frame that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed or ended mid-frame.
    #[error("exec stream: {0}")]
    Io(#[from] io::Error),
    /// The stream ended between frames.
    #[error("exec stream ended")]
    Eof,
    /// A frame longer than [`MAX_EXEC_PAYLOAD`].
    #[error("exec frame of {0} bytes is over the limit")]
    Oversize(u32),
    /// An unknown kind, or a payload that does not fit its kind.
    #[error("malformed exec frame (kind {0})")]
    Malformed(u8),
}

fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l as usize <= MAX_EXEC_PAYLOAD)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "exec frame too long"))?;
    let mut buf = Vec::with_capacity(5 + payload.len());
    buf.push(kind);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)
}

/// Reads one frame's kind and payload (bounded).
fn read_frame(r: &mut impl Read) -> Result<(u8, Vec<u8>), FrameError> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Eof),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len as usize > MAX_EXEC_PAYLOAD {
        return Err(FrameError::Oversize(len));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    Ok((head[0], payload))
}

fn int(kind: u8, p: &[u8]) -> Result<i32, FrameError> {
    <[u8; 4]>::try_from(p)
        .map(i32::from_be_bytes)
        .map_err(|_| FrameError::Malformed(kind))
}

impl HostFrame {
    /// Writes the frame (stdin longer than [`MAX_EXEC_PAYLOAD`] is split).
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        match self {
            HostFrame::Stdin(data) => {
                for piece in data.chunks(MAX_EXEC_PAYLOAD) {
                    write_frame(w, STDIN, piece)?;
                }
                Ok(())
            }
            HostFrame::StdinClose => write_frame(w, STDIN_CLOSE, &[]),
            HostFrame::Signal(n) => write_frame(w, SIGNAL, &n.to_be_bytes()),
            HostFrame::Resize { rows, cols } => {
                let mut p = rows.to_be_bytes().to_vec();
                p.extend_from_slice(&cols.to_be_bytes());
                write_frame(w, RESIZE, &p)
            }
        }
    }

    /// Reads the next frame.
    pub fn read(r: &mut impl Read) -> Result<Self, FrameError> {
        let (kind, p) = read_frame(r)?;
        Ok(match (kind, p.len()) {
            (STDIN, _) => HostFrame::Stdin(p),
            (STDIN_CLOSE, 0) => HostFrame::StdinClose,
            (SIGNAL, _) => HostFrame::Signal(int(kind, &p)?),
            (RESIZE, 4) => HostFrame::Resize {
                rows: u16::from_be_bytes([p[0], p[1]]),
                cols: u16::from_be_bytes([p[2], p[3]]),
            },
            _ => return Err(FrameError::Malformed(kind)),
        })
    }
}

impl GuestFrame {
    /// Writes the frame (output longer than [`MAX_EXEC_PAYLOAD`] is split).
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        match self {
            GuestFrame::Stdout(data) | GuestFrame::Stderr(data) => {
                let kind = if matches!(self, GuestFrame::Stdout(_)) {
                    STDOUT
                } else {
                    STDERR
                };
                for piece in data.chunks(MAX_EXEC_PAYLOAD) {
                    write_frame(w, kind, piece)?;
                }
                Ok(())
            }
            GuestFrame::Exit(ExitStatus::Code(c)) => write_frame(w, EXIT_CODE, &c.to_be_bytes()),
            GuestFrame::Exit(ExitStatus::Signal(s)) => {
                write_frame(w, EXIT_SIGNAL, &s.to_be_bytes())
            }
        }
    }

    /// Reads the next frame.
    pub fn read(r: &mut impl Read) -> Result<Self, FrameError> {
        let (kind, p) = read_frame(r)?;
        Ok(match kind {
            STDOUT => GuestFrame::Stdout(p),
            STDERR => GuestFrame::Stderr(p),
            EXIT_CODE => GuestFrame::Exit(ExitStatus::Code(int(kind, &p)?)),
            EXIT_SIGNAL => GuestFrame::Exit(ExitStatus::Signal(int(kind, &p)?)),
            _ => return Err(FrameError::Malformed(kind)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_frames_round_trip_and_big_payloads_split() {
        let mut buf = Vec::new();
        let big = vec![9u8; MAX_EXEC_PAYLOAD + 3];
        for f in [
            HostFrame::Stdin(b"abc".to_vec()),
            HostFrame::StdinClose,
            HostFrame::Signal(2),
            HostFrame::Resize {
                rows: 40,
                cols: 120,
            },
            HostFrame::Stdin(big.clone()),
        ] {
            f.write(&mut buf).unwrap();
        }
        let mut r = io::Cursor::new(buf);
        let mut got = Vec::new();
        while let Ok(f) = HostFrame::read(&mut r) {
            got.push(f);
        }
        assert_eq!(got.len(), 6);
        assert_eq!(
            got[3],
            HostFrame::Resize {
                rows: 40,
                cols: 120
            }
        );
        assert_eq!(got[4], HostFrame::Stdin(big[..MAX_EXEC_PAYLOAD].to_vec()));
        let mut buf = Vec::new();
        GuestFrame::Stderr(b"e".to_vec()).write(&mut buf).unwrap();
        GuestFrame::Exit(ExitStatus::Signal(9))
            .write(&mut buf)
            .unwrap();
        let mut r = io::Cursor::new(buf);
        assert_eq!(
            GuestFrame::read(&mut r).unwrap(),
            GuestFrame::Stderr(b"e".to_vec())
        );
        assert_eq!(
            GuestFrame::read(&mut r).unwrap(),
            GuestFrame::Exit(ExitStatus::Signal(9))
        );
        assert!(matches!(GuestFrame::read(&mut r), Err(FrameError::Eof)));
    }

    #[test]
    fn test_hostile_frames_are_refused_without_allocating_their_claimed_size() {
        let mut r = io::Cursor::new([STDOUT, 0xff, 0xff, 0xff, 0xff].to_vec());
        assert!(matches!(
            GuestFrame::read(&mut r),
            Err(FrameError::Oversize(u32::MAX))
        ));
        let mut r = io::Cursor::new([77u8, 0, 0, 0, 0].to_vec());
        assert!(matches!(
            GuestFrame::read(&mut r),
            Err(FrameError::Malformed(77))
        ));
        let mut r = io::Cursor::new([EXIT_CODE, 0, 0, 0, 1, 5].to_vec());
        assert!(matches!(
            GuestFrame::read(&mut r),
            Err(FrameError::Malformed(EXIT_CODE))
        ));
        let mut r = io::Cursor::new([STDOUT, 0, 0, 0, 9, 1].to_vec());
        assert!(matches!(GuestFrame::read(&mut r), Err(FrameError::Io(_))));
        let mut r = io::Cursor::new([RESIZE, 0, 0, 0, 1, 1].to_vec());
        assert!(HostFrame::read(&mut r).is_err());
    }

    proptest::proptest! {
        #[test]
        fn prop_frame_readers_never_panic(bytes in proptest::collection::vec(0u8..=255, 0..64)) {
            let mut r = io::Cursor::new(bytes.clone());
            while GuestFrame::read(&mut r).is_ok() {}
            let mut r = io::Cursor::new(bytes);
            while HostFrame::read(&mut r).is_ok() {}
        }
    }
}
