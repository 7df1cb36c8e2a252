//! Disk layers: what a disk file is (raw, or a qcow2 overlay and the file it is backed by)
//! read from its header, and new overlays made with `qemu-img create`.
//!
//! A QEMU VM's disk becomes a chain once it has been snapshotted while running: the file it
//! wrote until then is frozen (never written again) and the VM, and every copy started
//! from the snapshot, writes its own small overlay on top. The header is the only part of
//! an image read here (at most 1 KiB of backing file name, as qcow2 allows).
//!
//! A file's format is its name's (`.qcow2`, else raw), never guessed from its content: a
//! guest writes the first bytes of its raw disk, and a raw disk read as qcow2 would name
//! any host file as its backing (QEMU's own warning about probing raw images).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::runner::{Cmd, CommandRunner};

/// The qcow2 magic, `QFI\xfb`.
const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Longest backing file name qcow2 allows.
const MAX_BACKING_NAME: u32 = 1023;
/// Longest chain followed (a loop or a runaway chain is refused, not followed forever).
pub const MAX_CHAIN: usize = 256;

/// A disk file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A plain image (ext4 here).
    Raw,
    /// A qcow2 image.
    Qcow2,
}

impl Format {
    /// The format of the file at `path`, by its name.
    pub fn of(path: &Path) -> Format {
        if path.extension().is_some_and(|e| e == "qcow2") {
            Format::Qcow2
        } else {
            Format::Raw
        }
    }

    /// The extension banger names such a file with (`Format::of` reads it back).
    pub fn extension(self) -> &'static str {
        match self {
            Format::Raw => "ext4",
            Format::Qcow2 => "qcow2",
        }
    }

    /// The name QEMU knows it by.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }
}

/// What a disk file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    /// Its format.
    pub format: Format,
    /// Size the guest sees, bytes.
    pub virtual_size: u64,
    /// The file a qcow2 image reads what it does not hold from.
    pub backing: Option<PathBuf>,
}

/// Errors reading or making layers.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The file could not be read.
    #[error("cannot read disk {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Its qcow2 header is not one QEMU would write.
    #[error("disk {path} has a bad qcow2 header: {why}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: &'static str,
    },
    /// `qemu-img` failed.
    #[error(transparent)]
    Run(#[from] crate::runner::RunError),
}

/// Where a qcow2 header says its backing file name is: (offset, length).
type NameAt = Option<(u64, u32)>;

/// Parses a qcow2 header's fixed part (`head`: the file's first bytes) into the virtual size
/// and where the backing file name is, or `None` when `head` is not qcow2.
fn parse_header(head: &[u8]) -> Result<Option<(u64, NameAt)>, &'static str> {
    if head.len() < 4 || head[..4] != MAGIC {
        return Ok(None);
    }
    let be64 = |at: usize| -> Result<u64, &'static str> {
        head.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or("header too short")
    };
    let be32 = |at: usize| -> Result<u32, &'static str> {
        head.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or("header too short")
    };
    let version = be32(4)?;
    if !(2..=3).contains(&version) {
        return Err("unknown version");
    }
    let (offset, len, size) = (be64(8)?, be32(16)?, be64(24)?);
    let backing = match (offset, len) {
        (0, _) | (_, 0) => None,
        (_, len) if len > MAX_BACKING_NAME => return Err("backing file name too long"),
        (offset, len) => Some((offset, len)),
    };
    Ok(Some((size, backing)))
}

/// What `path` is: a qcow2 image (named `.qcow2`, its header read) or raw (its length is
/// its size).
pub fn inspect(path: &Path) -> Result<DiskInfo, LayerError> {
    let io = |source| LayerError::Io {
        path: path.to_owned(),
        source,
    };
    let bad = |why| LayerError::BadHeader {
        path: path.to_owned(),
        why,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    if Format::of(path) == Format::Raw {
        let len = file.metadata().map_err(io)?.len();
        return Ok(DiskInfo {
            format: Format::Raw,
            virtual_size: len,
            backing: None,
        });
    }
    let mut head = Vec::with_capacity(104);
    (&mut file).take(104).read_to_end(&mut head).map_err(io)?;
    let Some((virtual_size, backing)) = parse_header(&head).map_err(bad)? else {
        return Err(bad("no qcow2 magic"));
    };
    let backing = match backing {
        None => None,
        Some((offset, len)) => {
            use std::io::{Seek as _, SeekFrom};
            file.seek(SeekFrom::Start(offset)).map_err(io)?;
            let mut name = Vec::new();
            (&mut file)
                .take(u64::from(len))
                .read_to_end(&mut name)
                .map_err(io)?;
            if name.len() != len as usize {
                return Err(bad("backing file name cut short"));
            }
            let name = PathBuf::from(
                <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(name),
            );
            // A relative name is relative to the overlay's own directory.
            Some(match path.parent() {
                Some(dir) if name.is_relative() => dir.join(name),
                _ => name,
            })
        }
    };
    Ok(DiskInfo {
        format: Format::Qcow2,
        virtual_size,
        backing,
    })
}

/// The files `path` reads through, nearest first (not `path` itself). Stops at a file that
/// cannot be read, and refuses a chain longer than [`MAX_CHAIN`] (a loop).
pub fn backing_chain(path: &Path) -> Result<Vec<PathBuf>, LayerError> {
    let mut chain: Vec<PathBuf> = Vec::new();
    let mut at = path.to_owned();
    while let Some(next) = inspect(&at)?.backing {
        if chain.len() >= MAX_CHAIN {
            return Err(LayerError::BadHeader {
                path: path.to_owned(),
                why: "backing chain too long (a loop?)",
            });
        }
        chain.push(next.clone());
        if !next.exists() {
            break;
        }
        at = next;
    }
    Ok(chain)
}

/// A new qcow2 overlay at `overlay` that reads through to `backing` (which it names by its
/// absolute path) until written; `backing` is never opened by `qemu-img` (`-u`), so it may
/// be a running VM's disk.
pub fn create_overlay(
    runner: &dyn CommandRunner,
    qemu_img: &Path,
    backing: &Path,
    overlay: &Path,
) -> Result<(), LayerError> {
    let info = inspect(backing)?;
    runner.run(
        &Cmd::new(qemu_img.display().to_string())
            .args(["create", "-q", "-f", "qcow2", "-u", "-b"])
            .arg(backing.display().to_string())
            .args(["-F", info.format.as_str()])
            .arg(overlay.display().to_string())
            .arg(info.virtual_size.to_string()),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::RecordingRunner;

    /// A qcow2 v3 header naming `backing` (what `qemu-img create` writes, fixed part only).
    fn header(size: u64, backing: Option<&str>) -> Vec<u8> {
        let mut h = vec![0u8; 104];
        h[..4].copy_from_slice(&MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&size.to_be_bytes());
        if let Some(b) = backing {
            h[8..16].copy_from_slice(&512u64.to_be_bytes());
            h[16..20].copy_from_slice(&u32::try_from(b.len()).unwrap().to_be_bytes());
            h.resize(512, 0);
            h.extend_from_slice(b.as_bytes());
        }
        h
    }

    #[test]
    fn test_raw_and_qcow2_files_are_told_apart_with_size_and_backing() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("root.ext4");
        std::fs::write(&raw, vec![7u8; 4096]).unwrap();
        let top = dir.path().join("top.qcow2");
        std::fs::write(&top, header(1 << 30, Some(&raw.display().to_string()))).unwrap();
        let rel = dir.path().join("rel.qcow2");
        std::fs::write(&rel, header(1 << 30, Some("top.qcow2"))).unwrap();

        assert_eq!(
            inspect(&raw).unwrap(),
            DiskInfo {
                format: Format::Raw,
                virtual_size: 4096,
                backing: None
            }
        );
        let t = inspect(&top).unwrap();
        assert_eq!(
            (t.format, t.virtual_size, t.backing.as_deref()),
            (Format::Qcow2, 1 << 30, Some(raw.as_path()))
        );
        assert_eq!(backing_chain(&rel).unwrap(), vec![top.clone(), raw.clone()]);
        // Content never makes a raw file qcow2: only its name does.
        let fake = dir.path().join("guest-wrote-this.ext4");
        std::fs::write(&fake, header(1 << 40, Some("/etc/shadow"))).unwrap();
        assert_eq!(inspect(&fake).unwrap().format, Format::Raw);
        assert_eq!(backing_chain(&fake).unwrap(), Vec::<PathBuf>::new());
        let missing_magic = dir.path().join("zero.qcow2");
        std::fs::write(&missing_magic, [0u8; 104]).unwrap();
        assert!(matches!(
            inspect(&missing_magic),
            Err(LayerError::BadHeader { .. })
        ));
    }

    #[test]
    fn test_bad_headers_and_loops_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.qcow2");
        let mut h = header(1, Some("x"));
        h[16..20].copy_from_slice(&5000u32.to_be_bytes());
        std::fs::write(&p, &h).unwrap();
        assert!(matches!(inspect(&p), Err(LayerError::BadHeader { .. })));
        let mut h = header(1, None);
        h[4..8].copy_from_slice(&9u32.to_be_bytes());
        std::fs::write(&p, &h).unwrap();
        assert!(matches!(inspect(&p), Err(LayerError::BadHeader { .. })));
        std::fs::write(&p, MAGIC).unwrap();
        assert!(matches!(inspect(&p), Err(LayerError::BadHeader { .. })));
        // A name promised past the end of the file.
        let mut h = header(1, Some("abc"));
        h.truncate(513);
        std::fs::write(&p, &h).unwrap();
        assert!(matches!(inspect(&p), Err(LayerError::BadHeader { .. })));
        // An overlay backed by itself.
        std::fs::write(&p, header(1, Some("d.qcow2"))).unwrap();
        assert!(matches!(
            backing_chain(&p),
            Err(LayerError::BadHeader { .. })
        ));
    }

    #[test]
    fn test_an_overlay_is_made_by_argument_vector_with_the_backings_format_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("a b,c.ext4");
        std::fs::write(&base, vec![0u8; 8192]).unwrap();
        let runner = RecordingRunner::default();
        let top = dir.path().join("top.qcow2");
        create_overlay(&runner, Path::new("/usr/bin/qemu-img"), &base, &top).unwrap();
        let calls = runner.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].program, "/usr/bin/qemu-img");
        assert_eq!(
            calls[0].args,
            [
                "create",
                "-q",
                "-f",
                "qcow2",
                "-u",
                "-b",
                &base.display().to_string(),
                "-F",
                "raw",
                &top.display().to_string(),
                "8192"
            ]
        );
    }

    /// The real `qemu-img` writes what `inspect` reads.
    #[test]
    fn test_qemu_img_overlays_chain_through_to_the_raw_base() {
        banger_testkit::require!(banger_testkit::require::tool("qemu-img"));
        let qemu_img = crate::process::find_in_path("qemu-img").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.ext4");
        std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
        let (mid, top) = (dir.path().join("mid.qcow2"), dir.path().join("top.qcow2"));
        let runner = crate::runner::RealRunner;
        create_overlay(&runner, &qemu_img, &base, &mid).unwrap();
        create_overlay(&runner, &qemu_img, &mid, &top).unwrap();
        let t = inspect(&top).unwrap();
        assert_eq!((t.format, t.virtual_size), (Format::Qcow2, 1 << 20));
        assert_eq!(backing_chain(&top).unwrap(), vec![mid, base]);
    }
}
