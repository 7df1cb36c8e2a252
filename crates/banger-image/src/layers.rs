//! Flattening OCI/Docker image layers into a staging directory, safely.
//!
//! Layers apply oldest first. Whiteouts (`.wh.<name>`) delete from lower layers, an opaque
//! marker (`.wh..wh..opq`) empties its directory of lower-layer content; hard links,
//! symlinks, modes (setuid kept) and owners are reproduced. Hostile entries are refused with
//! an error naming the layer and path: absolute paths, `..`, device nodes, and anything whose
//! parent resolves outside the root through a symlink. Symlinks in parents are resolved
//! *inside* the root (as a chroot would), so `bin -> usr/bin` images work and nothing is ever
//! written outside it. Each blob's sha256 is checked while it streams.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Why a layer was refused.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// An entry that could write outside the root or create a device.
    #[error("layer {layer}: refusing {path:?}: {why}")]
    Unsafe {
        /// Which layer (its digest).
        layer: String,
        /// The entry's path as in the tar.
        path: String,
        /// Why.
        why: &'static str,
    },
    /// The blob's content does not match its digest.
    #[error("layer {layer}: digest mismatch: got sha256:{got}")]
    Digest {
        /// Which layer.
        layer: String,
        /// What the bytes hash to.
        got: String,
    },
    /// Reading the tar (e.g. truncated) or writing the staging dir failed.
    #[error("layer {layer}: {context}")]
    Io {
        /// Which layer.
        layer: String,
        /// What was being done.
        context: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Reads the chunks another thread sends (the hashing/decompressing side of a layer).
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The sender finished: end of stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads `blob` to the end on its own thread (decompression and sha256 happen there, on
/// another core than the unpacking), handing the bytes to `consume`. Returns what `consume`
/// returned and the hash (`None` when reading failed or `consume` stopped early).
fn hashed_pipeline<T>(
    blob: impl Read + Send,
    consume: impl FnOnce(ChannelReader) -> T,
) -> (T, Option<String>) {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(16);
        let reader = s.spawn(move || {
            let mut blob = blob;
            let mut hash = Sha256::new();
            loop {
                let mut buf = vec![0u8; 1 << 20];
                match blob.read(&mut buf) {
                    Ok(0) => return Some(format!("{:x}", hash.finalize())),
                    Ok(n) => {
                        buf.truncate(n);
                        hash.update(&buf);
                        if tx.send(Ok(buf)).is_err() {
                            return None;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return None;
                    }
                }
            }
        });
        let out = consume(ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        });
        (out, reader.join().ok().flatten())
    })
}

/// The normalized relative path of a tar entry, or why it is refused.
fn clean(path: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
            Component::ParentDir => return Err("'..' in path"),
        }
    }
    Ok(out)
}

/// Resolves `rel` (a clean relative path) inside `root`, following symlinks in every
/// component but the last as a chroot would; `Err` when that would leave `root`.
fn resolve_parent(root: &Path, rel: &Path) -> Result<PathBuf, &'static str> {
    let Some(parent) = rel.parent() else {
        return Ok(root.to_owned());
    };
    let mut stack: Vec<std::ffi::OsString> = parent
        .components()
        .rev()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut hops = 0;
    while let Some(part) = stack.pop() {
        if part == ".." {
            if resolved.pop().is_none() {
                return Err("a symlink in its path leads outside the root");
            }
            continue;
        }
        if part == "." || part.is_empty() {
            continue;
        }
        let here: PathBuf = root.join(resolved.iter().collect::<PathBuf>()).join(&part);
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err("too many symlinks in its path");
                }
                let target =
                    std::fs::read_link(&here).map_err(|_| "unreadable symlink in its path")?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(p) => stack.push(p.to_owned()),
                        Component::ParentDir => stack.push("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(m) if !m.is_dir() => return Err("a parent in its path is not a directory"),
            _ => resolved.push(part),
        }
    }
    Ok(root.join(resolved.iter().collect::<PathBuf>()))
}

/// Extended attributes a pax header carries (`SCHILY.xattr.<name>`).
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return Vec::new();
    };
    exts.filter_map(Result::ok)
        .filter_map(|ext| {
            let key = ext.key().ok()?.strip_prefix("SCHILY.xattr.")?.to_owned();
            Some((key, ext.value_bytes().to_vec()))
        })
        .collect()
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn chown(path: &Path, uid: u64, gid: u64) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, u32::try_from(uid).ok(), u32::try_from(gid).ok())
}

/// Applies one layer (an uncompressed tar stream whose sha256 must be `digest`, hex) onto
/// `root`. `layer` names it in errors. Ownership is reproduced when running as root. The
/// stream is read and hashed on a second thread while this one unpacks.
pub fn apply_layer(
    root: &Path,
    layer: &str,
    digest: &str,
    blob: impl Read + Send,
) -> Result<(), LayerError> {
    let (applied, hash) = hashed_pipeline(blob, |reader| apply_entries(root, layer, reader));
    applied?;
    let got = hash.ok_or_else(|| LayerError::Io {
        layer: layer.to_owned(),
        context: "cannot read the layer".into(),
        source: std::io::Error::other("the stream ended early"),
    })?;
    if got != digest.trim_start_matches("sha256:") {
        return Err(LayerError::Digest {
            layer: layer.to_owned(),
            got,
        });
    }
    Ok(())
}

fn apply_entries(root: &Path, layer: &str, blob: impl Read) -> Result<(), LayerError> {
    let as_root = banger_host::process::running_as_root();
    let io = |context: String| {
        let layer = layer.to_owned();
        move |source| LayerError::Io {
            layer,
            context,
            source,
        }
    };
    let unsafe_entry = |path: &Path, why| LayerError::Unsafe {
        layer: layer.to_owned(),
        path: path.display().to_string(),
        why,
    };
    let mut blob = blob;
    let mut archive = tar::Archive::new(&mut blob);
    // Paths this layer created: an opaque marker must not remove them.
    let mut created: HashSet<PathBuf> = HashSet::new();
    let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
    for entry in archive
        .entries()
        .map_err(io("cannot read the layer".into()))?
    {
        let mut entry = entry.map_err(io("cannot read the layer".into()))?;
        let raw = entry
            .path()
            .map_err(io("bad entry path".into()))?
            .into_owned();
        let rel = clean(&raw).map_err(|why| unsafe_entry(&raw, why))?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let parent = resolve_parent(root, &rel).map_err(|why| unsafe_entry(&raw, why))?;
        let name = rel
            .file_name()
            .map(std::ffi::OsStr::to_owned)
            .unwrap_or_default();
        let name_str = name.to_string_lossy();
        // Whiteouts act on lower layers and leave nothing behind themselves.
        if name_str == ".wh..wh..opq" {
            if let Ok(children) = std::fs::read_dir(&parent) {
                for child in children.flatten() {
                    let rel_child = rel.with_file_name(child.file_name());
                    if !created.contains(&rel_child) {
                        remove_any(&child.path())
                            .map_err(io(format!("opaque {}", raw.display())))?;
                    }
                }
            }
            continue;
        }
        if let Some(hidden) = name_str.strip_prefix(".wh.") {
            remove_any(&parent.join(hidden)).map_err(io(format!("whiteout {}", raw.display())))?;
            continue;
        }
        let dst = parent.join(&name);
        let xattrs = pax_xattrs(&mut entry);
        let header = entry.header().clone();
        let kind = header.entry_type();
        if kind.is_character_special() || kind.is_block_special() {
            return Err(unsafe_entry(&raw, "device node"));
        }
        let mode = header.mode().map_err(io("bad mode".into()))? & 0o7777;
        let (uid, gid) = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
        if kind.is_dir() {
            match std::fs::symlink_metadata(&dst) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    remove_any(&dst).map_err(io(format!("replace {}", raw.display())))?;
                    std::fs::create_dir(&dst).map_err(io(format!("mkdir {}", raw.display())))?;
                }
                Err(_) => {
                    std::fs::create_dir(&dst).map_err(io(format!("mkdir {}", raw.display())))?;
                }
            }
            // Modes of directories last: a read-only directory must still take its children.
            dir_modes.push((dst.clone(), mode));
        } else if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(io("bad link".into()))?
                .ok_or_else(|| unsafe_entry(&raw, "symlink without a target"))?
                .into_owned();
            remove_any(&dst).map_err(io(format!("replace {}", raw.display())))?;
            std::os::unix::fs::symlink(&target, &dst)
                .map_err(io(format!("symlink {}", raw.display())))?;
        } else if kind.is_hard_link() {
            let target_raw = entry
                .link_name()
                .map_err(io("bad link".into()))?
                .ok_or_else(|| unsafe_entry(&raw, "hard link without a target"))?
                .into_owned();
            let target_rel = clean(&target_raw).map_err(|why| unsafe_entry(&raw, why))?;
            let target_parent =
                resolve_parent(root, &target_rel).map_err(|why| unsafe_entry(&raw, why))?;
            let target = target_parent.join(target_rel.file_name().unwrap_or_default());
            match std::fs::symlink_metadata(&target) {
                Ok(m) if m.is_file() => {}
                _ => {
                    return Err(unsafe_entry(
                        &raw,
                        "hard link to something that is not a file in the image",
                    ));
                }
            }
            remove_any(&dst).map_err(io(format!("replace {}", raw.display())))?;
            std::fs::hard_link(&target, &dst).map_err(io(format!("link {}", raw.display())))?;
            created.insert(rel);
            continue;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            remove_any(&dst).map_err(io(format!("replace {}", raw.display())))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&dst)
                .map_err(io(format!("create {}", raw.display())))?;
            std::io::copy(&mut entry, &mut f).map_err(io(format!("write {}", raw.display())))?;
        } else if kind.is_fifo() {
            return Err(unsafe_entry(&raw, "fifo (not supported)"));
        } else {
            // pax/GNU metadata entries are consumed by the tar reader; anything else is odd.
            continue;
        }
        if as_root {
            chown(&dst, uid, gid).map_err(io(format!("chown {}", raw.display())))?;
        }
        for (key, value) in &xattrs {
            // Best effort: a namespace the staging filesystem or an unprivileged daemon
            // cannot hold (trusted.*) is skipped, as container runtimes do.
            if let Err(e) =
                rustix::fs::lsetxattr(&dst, key.as_str(), value, rustix::fs::XattrFlags::empty())
            {
                tracing::warn!(path = %raw.display(), xattr = key, "xattr not kept: {e}");
            }
        }
        if !kind.is_symlink() && !kind.is_dir() {
            // After chown: chown clears setuid/setgid bits.
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))
                .map_err(io(format!("chmod {}", raw.display())))?;
        }
        created.insert(rel);
    }
    for (dir, mode) in dir_modes.into_iter().rev() {
        // Without root the unpacker is the owner of every directory and, unlike root, cannot
        // write into one without u+w; later layers must still be able to.
        let mode = if as_root { mode } else { mode | 0o700 };
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
            .map_err(io(format!("chmod {}", dir.display())))?;
    }
    // Drain what the tar reader left (padding) so the digest covers the whole blob.
    let _ = archive.into_inner();
    std::io::copy(&mut blob, &mut std::io::sink()).map_err(io("cannot read the layer".into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_host::{Cmd, CommandRunner as _, RealRunner};

    #[derive(Clone)]
    enum E {
        Dir(&'static str, u32),
        File(&'static str, &'static str, u32, u64),
        Link(&'static str, &'static str),
        Hard(&'static str, &'static str),
        Dev(&'static str),
    }

    fn layer(entries: &[E]) -> (Vec<u8>, String) {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            match e {
                E::Dir(p, mode) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    b.append_data(&mut h, p, std::io::empty()).unwrap();
                }
                E::File(p, body, mode, owner) => {
                    h.set_mode(*mode);
                    h.set_uid(*owner);
                    h.set_gid(*owner);
                    h.set_size(body.len() as u64);
                    b.append_data(&mut h, p, body.as_bytes()).unwrap();
                }
                E::Link(p, target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, p, target).unwrap();
                }
                E::Hard(p, target) => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_mode(0o644);
                    h.set_size(0);
                    b.append_link(&mut h, p, target).unwrap();
                }
                E::Dev(p) => {
                    h.set_entry_type(tar::EntryType::Char);
                    h.set_mode(0o600);
                    h.set_size(0);
                    b.append_data(&mut h, p, std::io::empty()).unwrap();
                }
            }
        }
        let bytes = b.into_inner().unwrap();
        let digest = format!("{:x}", Sha256::digest(&bytes));
        (bytes, digest)
    }

    fn apply(root: &Path, name: &str, entries: &[E]) -> Result<(), LayerError> {
        let (bytes, digest) = layer(entries);
        apply_layer(root, name, &digest, bytes.as_slice())
    }

    /// Raw tar bytes with one entry whose name is `path` (the tar crate refuses to write
    /// hostile names, so they are written into the header by hand).
    fn raw_entry(path: &str) -> Vec<u8> {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_mode(0o644);
        h.set_size(1);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(b"x");
        out.resize(out.len() + 511, 0);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    #[test]
    fn test_layers_flatten_with_whiteouts_opaque_dirs_links_and_modes_into_a_valid_ext4() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        apply(
            &root,
            "base",
            &[
                E::Dir("usr", 0o755),
                E::Dir("usr/bin", 0o755),
                E::Link("bin", "usr/bin"),
                E::File("usr/bin/tool", "v1", 0o755, 0),
                E::File("usr/bin/su", "suid", 0o4755, 0),
                E::Dir("etc", 0o755),
                E::File("etc/keep", "k", 0o644, 0),
                E::File("etc/gone", "g", 0o644, 0),
                E::Dir("opt", 0o755),
                E::Dir("opt/app", 0o755),
                E::File("opt/app/old", "o", 0o644, 0),
                E::File("home-file", "h", 0o600, 1000),
            ],
        )
        .unwrap();
        apply(
            &root,
            "top",
            &[
                E::File("etc/.wh.gone", "", 0o644, 0),
                E::File("opt/app/new", "n", 0o644, 0),
                E::File("opt/app/.wh..wh..opq", "", 0o644, 0),
                // Through the bin -> usr/bin symlink, inside the root.
                E::File("bin/tool2", "v2", 0o755, 0),
                E::Hard("usr/bin/tool-hard", "usr/bin/tool"),
            ],
        )
        .unwrap();
        let exists = |p: &str| std::fs::symlink_metadata(root.join(p)).is_ok();
        assert!(!exists("etc/gone") && exists("etc/keep"), "whiteout");
        assert!(
            !exists("opt/app/old") && exists("opt/app/new"),
            "opaque dir"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("usr/bin/tool2")).unwrap(),
            "v2"
        );
        use std::os::unix::fs::MetadataExt as _;
        let ino = |p: &str| std::fs::metadata(root.join(p)).unwrap().ino();
        assert_eq!(ino("usr/bin/tool"), ino("usr/bin/tool-hard"), "hard link");
        assert_eq!(
            std::fs::read_link(root.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        let su = std::fs::metadata(root.join("usr/bin/su")).unwrap();
        assert_eq!(su.mode() & 0o7777, 0o4755, "setuid kept");
        if banger_host::process::running_as_root() {
            assert_eq!(
                std::fs::metadata(root.join("home-file")).unwrap().uid(),
                1000
            );
        }
        // Into ext4 without mounting; e2fsck is clean and the tree reads back.
        let img = dir.path().join("rootfs.ext4");
        banger_host::disk::make_ext4(&RealRunner, &img, 64 << 20, "rootfs", Some(&root)).unwrap();
        RealRunner
            .run(&Cmd::new("e2fsck").arg("-fn").arg(img.display().to_string()))
            .unwrap();
        let stat = |p: &str| {
            RealRunner
                .run(
                    &Cmd::new("debugfs")
                        .args(["-R", &format!("stat {p}")])
                        .arg(img.display().to_string()),
                )
                .unwrap()
                .stdout_str()
        };
        assert!(
            stat("/usr/bin/su").contains("Mode:  04755"),
            "{}",
            stat("/usr/bin/su")
        );
        assert!(stat("/etc/keep").contains("User:     0"));
        let listing = RealRunner
            .run(
                &Cmd::new("debugfs")
                    .args(["-R", "ls -l /opt/app"])
                    .arg(img.display().to_string()),
            )
            .unwrap()
            .stdout_str();
        assert!(
            listing.contains("new") && !listing.contains("old"),
            "{listing}"
        );
    }

    #[test]
    fn test_hostile_layers_are_refused_naming_layer_and_path() {
        let cases: Vec<(&str, Vec<u8>, String)> = {
            let mut v = Vec::new();
            for (name, bytes) in [
                ("abs", raw_entry("/etc/passwd")),
                ("dotdot", raw_entry("a/../../x")),
            ] {
                let d = format!("{:x}", Sha256::digest(&bytes));
                v.push((name, bytes, d));
            }
            let (b, d) = layer(&[E::Dev("dev/sda")]);
            v.push(("device", b, d));
            // A symlink out of the root, then a write through it.
            let (b, d) = layer(&[
                E::Link("escape", "/../../../tmp"),
                E::File("escape/owned", "x", 0o644, 0),
            ]);
            v.push(("escape", b, d));
            let (b, d) = layer(&[E::Link("up", "../.."), E::File("up/x", "x", 0o644, 0)]);
            v.push(("escape-relative", b, d));
            v
        };
        for (name, bytes, digest) in cases {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("root");
            std::fs::create_dir(&root).unwrap();
            let err = apply_layer(&root, name, &digest, bytes.as_slice()).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, LayerError::Unsafe { .. }), "{name}: {text}");
            assert!(text.contains(&format!("layer {name}")), "{text}");
            assert!(!dir.path().join("owned").exists() && !dir.path().join("x").exists());
        }
        // Absolute symlinks resolve inside the root (as in a chroot): allowed, and stays in.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        apply(
            &root,
            "abs-link",
            &[
                E::Dir("data", 0o755),
                E::Link("d", "/data"),
                E::File("d/f", "x", 0o644, 0),
            ],
        )
        .unwrap();
        assert!(root.join("data/f").exists());
    }

    #[test]
    fn test_pax_xattrs_are_kept_and_reach_the_ext4() {
        // A pax header (`SCHILY.xattr.user.banger=hello`) before a regular file.
        let record = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            let mut n = body.len() + 1;
            while format!("{n}{body}").len() != n {
                n += 1;
            }
            format!("{n}{body}")
        };
        let pax = record("SCHILY.xattr.user.banger", "hello");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(pax.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, "PaxHeaders/tagged", pax.as_bytes())
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(2);
        h.set_cksum();
        b.append_data(&mut h, "tagged", &b"hi"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let digest = format!("{:x}", Sha256::digest(&tar));
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        apply_layer(&root, "xattrs", &digest, tar.as_slice()).unwrap();
        let mut buf = [0u8; 16];
        let n = rustix::fs::getxattr(root.join("tagged"), "user.banger", &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        let img = dir.path().join("x.ext4");
        banger_host::disk::make_ext4(&RealRunner, &img, 16 << 20, "x", Some(&root)).unwrap();
        let out = RealRunner
            .run(
                &Cmd::new("debugfs")
                    .args(["-R", "ea_get /tagged user.banger"])
                    .arg(img.display().to_string()),
            )
            .unwrap()
            .stdout_str();
        assert!(out.contains("hello"), "{out}");
    }

    #[test]
    fn test_digest_mismatch_and_truncated_blobs_are_refused() {
        let (bytes, digest) = layer(&[E::File("a", "hello", 0o644, 0)]);
        let dir = tempfile::tempdir().unwrap();
        let err = apply_layer(dir.path(), "l1", &"0".repeat(64), bytes.as_slice()).unwrap_err();
        assert!(matches!(err, LayerError::Digest { .. }), "{err}");
        let cut = &bytes[..700];
        let dir = tempfile::tempdir().unwrap();
        let err = apply_layer(dir.path(), "l2", &digest, cut).unwrap_err();
        assert!(
            matches!(err, LayerError::Io { .. } | LayerError::Digest { .. }),
            "{err}"
        );
    }
}
