//! Disks: copy-on-write system disks, ext4 work disks, and writing files into an ext4
//! image without mounting it (debugfs).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::runner::{Cmd, CommandRunner, RunError};

/// Errors of disk operations.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A host command failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A file could not be created or sized.
    #[error("cannot prepare {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// debugfs reported errors.
    #[error("debugfs could not update {image}: {detail}")]
    Debugfs {
        /// The image.
        image: PathBuf,
        /// What debugfs said.
        detail: String,
    },
}

/// A per-VM copy of `src` at `dst`: a reflink where the filesystem supports it, else a
/// sparse copy (holes stay holes).
pub fn cow_copy(runner: &dyn CommandRunner, src: &Path, dst: &Path) -> Result<(), DiskError> {
    runner.run(
        &Cmd::new("cp")
            .args(["--reflink=auto", "--sparse=always"])
            .arg(src.display().to_string())
            .arg(dst.display().to_string()),
    )?;
    Ok(())
}

/// A sparse ext4 image of `size_bytes` at `path`, filled from `from_dir` when given.
pub fn make_ext4(
    runner: &dyn CommandRunner,
    path: &Path,
    size_bytes: u64,
    label: &str,
    from_dir: Option<&Path>,
) -> Result<(), DiskError> {
    make_ext4_with(runner, path, size_bytes, label, from_dir, Owners::Keep)
}

/// Like [`make_ext4`], but every entry of `from_dir` is root's inside the image (the per-VM
/// work disk: `/root` and its `authorized_keys` must be root's for sshd).
pub fn make_ext4_root_owned(
    runner: &dyn CommandRunner,
    path: &Path,
    size_bytes: u64,
    label: &str,
    from_dir: &Path,
) -> Result<(), DiskError> {
    make_ext4_with(
        runner,
        path,
        size_bytes,
        label,
        Some(from_dir),
        Owners::Root,
    )
}

/// Who owns the files `mkfs.ext4 -d` copies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owners {
    /// The tree's owners — except that a daemon not running as root (which could not chown
    /// while staging) maps its own uid to root.
    Keep,
    /// Everything root's.
    Root,
}

fn make_ext4_with(
    runner: &dyn CommandRunner,
    path: &Path,
    size_bytes: u64,
    label: &str,
    from_dir: Option<&Path>,
    owners: Owners,
) -> Result<(), DiskError> {
    let io = |source| DiskError::Io {
        path: path.to_owned(),
        source,
    };
    let file = fs_err::File::create(path).map_err(io)?;
    file.set_len(size_bytes).map_err(io)?;
    drop(file);
    let mut cmd = Cmd::new("mkfs.ext4").args([
        "-q",
        "-F",
        "-L",
        label,
        "-E",
        "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1",
    ]);
    if let Some(dir) = from_dir {
        cmd = cmd.arg("-d").arg(dir.display().to_string());
    }
    runner.run(&cmd.arg(path.display().to_string()))?;
    if let Some(dir) = from_dir {
        let only_uid = match owners {
            Owners::Root => None,
            Owners::Keep if crate::process::running_as_root() => return Ok(()),
            Owners::Keep => Some(rustix::process::geteuid().as_raw()),
        };
        own_by_root(runner, path, dir, only_uid)?;
    }
    Ok(())
}

/// `mkfs.ext4 -d` copies the tree's owners; a daemon running as its owner (not root) would
/// hand the guest files owned by that uid (and sshd refuses an authorized_keys that is not
/// root's). Entries of `tree` not owned by root (only those owned by `only_uid`, when given)
/// are made root's inside `image`; when there are none nothing runs.
fn own_by_root(
    runner: &dyn CommandRunner,
    image: &Path,
    tree: &Path,
    only_uid: Option<u32>,
) -> Result<(), DiskError> {
    use std::os::unix::fs::MetadataExt as _;
    let bad = |detail: String| DiskError::Debugfs {
        image: image.to_owned(),
        detail,
    };
    let mut script = String::new();
    for entry in walkdir::WalkDir::new(tree).follow_links(false) {
        let entry = entry.map_err(|e| bad(e.to_string()))?;
        let meta = entry.metadata().map_err(|e| bad(e.to_string()))?;
        if (meta.uid() == 0 && meta.gid() == 0) || only_uid.is_some_and(|u| meta.uid() != u) {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(tree)
            .map_err(|e| bad(e.to_string()))?;
        let p = format!("/{}", rel.display());
        // debugfs reads a quoted name literally (backslashes included, as in systemd's
        // `system-systemd\x2dcryptsetup.slice`) but cannot quote `"` or a newline: such an
        // entry keeps its owner.
        if p.contains(['"', '\n', '\r']) {
            tracing::warn!(path = p, "owner not changed: debugfs cannot name this path");
            continue;
        }
        let _ = writeln!(script, "sif \"{p}\" uid 0\nsif \"{p}\" gid 0");
    }
    if script.is_empty() {
        return Ok(());
    }
    runner.run(
        &Cmd::new("debugfs")
            .args(["-w", "-f", "-"])
            .arg(image.display().to_string())
            .stdin(script),
    )?;
    Ok(())
}

/// `s` as one double-quoted debugfs argument (debugfs reads a quoted name literally,
/// spaces, commas and backslashes included); `"` and newlines cannot be quoted and are
/// refused.
fn dq(image: &Path, s: &str) -> Result<String, DiskError> {
    if s.contains(['"', '\n', '\r']) {
        return Err(DiskError::Debugfs {
            image: image.to_owned(),
            detail: format!("refusing path {s:?}: debugfs cannot quote it"),
        });
    }
    Ok(format!("\"{s}\""))
}

/// Copies directory `dir` of the ext4 `image` (recursively, as `rdump` does) into the host
/// directory `into` (as `into/<last component of dir>`).
pub fn rdump(
    runner: &dyn CommandRunner,
    image: &Path,
    dir: &str,
    into: &Path,
) -> Result<(), DiskError> {
    let request = format!(
        "rdump {} {}",
        dq(image, dir)?,
        dq(image, &into.display().to_string())?
    );
    runner.run(
        &Cmd::new("debugfs")
            .arg("-R")
            .arg(request)
            .arg(image.display().to_string()),
    )?;
    Ok(())
}

/// A file to place into an ext4 image, owned by root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// Absolute path inside the image.
    pub guest_path: String,
    /// The content, staged in a host file.
    pub host_path: PathBuf,
    /// Permission bits, e.g. `0o644`.
    pub mode: u32,
}

/// Writes `files` into the ext4 `image` (replacing existing ones) with debugfs, creating
/// missing parent directories. Paths must be absolute and free of `..`; every path is
/// quoted, so spaces and commas are fine (`"` and newlines are refused).
pub fn write_files(
    runner: &dyn CommandRunner,
    image: &Path,
    files: &[ImageFile],
) -> Result<(), DiskError> {
    write_entries(runner, image, files, &[])
}

/// Like [`write_files`], then makes each `(path, target)` in `links` a symlink (replacing
/// what was there; parents must exist or be made by `files`).
pub fn write_entries(
    runner: &dyn CommandRunner,
    image: &Path,
    files: &[ImageFile],
    links: &[(&str, &str)],
) -> Result<(), DiskError> {
    let bad = |detail: String| DiskError::Debugfs {
        image: image.to_owned(),
        detail,
    };
    let mut script = String::new();
    let mut dirs: Vec<String> = Vec::new();
    for f in files {
        let p = &f.guest_path;
        if !p.starts_with('/') || p.split('/').any(|c| c == "..") {
            return Err(bad(format!("refusing path {p:?}")));
        }
        let host = dq(image, &f.host_path.display().to_string())?;
        let mut parent = String::new();
        for comp in p
            .trim_start_matches('/')
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            parent.push('/');
            parent.push_str(comp);
            if !dirs.contains(&parent) {
                dirs.push(parent.clone());
                let _ = writeln!(script, "mkdir {}", dq(image, &parent)?);
            }
        }
        let p = dq(image, p)?;
        let _ = write!(
            script,
            "rm {p}\nwrite {host} {p}\nsif {p} mode 0{:o}\nsif {p} uid 0\nsif {p} gid 0\n",
            0o100_000 | (f.mode & 0o7777)
        );
    }
    for (path, target) in links {
        for p in [path, target] {
            if !p.starts_with('/') || p.split('/').any(|c| c == "..") {
                return Err(bad(format!("refusing link path {p:?}")));
            }
        }
        let (path, target) = (dq(image, path)?, dq(image, target)?);
        let _ = writeln!(script, "rm {path}\nsymlink {path} {target}");
    }
    let out = runner.run(
        &Cmd::new("debugfs")
            .args(["-w", "-f", "-"])
            .arg(image.display().to_string())
            .stdin(script),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            !l.starts_with("debugfs ")
                && !l.trim().is_empty()
                && !l.contains("File not found by ext2_lookup")
                && !l.contains("Ext2 directory already exists")
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(bad(errors.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::RealRunner;

    use banger_testkit::require::{self, tool};

    #[test]
    fn test_make_ext4_write_files_and_read_back() {
        banger_testkit::require!(tool("mkfs.ext4"), tool("debugfs"));
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed");
        std::fs::create_dir_all(seed.join("etc")).unwrap();
        std::fs::write(seed.join("etc/hostname"), "old\n").unwrap();
        let img = dir.path().join("disk.ext4");
        make_ext4(&RealRunner, &img, 64 << 20, "test", Some(&seed)).unwrap();
        let staged = dir.path().join("hostname");
        std::fs::write(&staged, "new-name\n").unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "secret\n").unwrap();
        write_entries(
            &RealRunner,
            &img,
            &[
                ImageFile {
                    guest_path: "/etc/hostname".into(),
                    host_path: staged,
                    mode: 0o644,
                },
                ImageFile {
                    guest_path: "/etc/ssh/deep/key".into(),
                    host_path: key,
                    mode: 0o600,
                },
            ],
            &[("/etc/ssh/deep/link", "/etc/ssh/deep/key")],
        )
        .unwrap();
        let link = RealRunner
            .run(
                &Cmd::new("debugfs")
                    .args(["-R", "stat /etc/ssh/deep/link"])
                    .arg(img.display().to_string()),
            )
            .unwrap()
            .stdout_str();
        assert!(
            link.contains("Type: symlink") && link.contains("/etc/ssh/deep/key"),
            "{link}"
        );
        let cat = RealRunner
            .run(
                &Cmd::new("debugfs")
                    .args(["-R", "cat /etc/hostname"])
                    .arg(img.display().to_string()),
            )
            .unwrap();
        assert_eq!(cat.stdout_str(), "new-name\n");
        let stat = RealRunner
            .run(
                &Cmd::new("debugfs")
                    .args(["-R", "stat /etc/ssh/deep/key"])
                    .arg(img.display().to_string()),
            )
            .unwrap();
        assert!(
            stat.stdout_str().contains("Mode:  0600"),
            "{}",
            stat.stdout_str()
        );
        RealRunner
            .run(
                &Cmd::new("e2fsck")
                    .args(["-fn"])
                    .arg(img.display().to_string()),
            )
            .unwrap();
        let copy = dir.path().join("copy.ext4");
        cow_copy(&RealRunner, &img, &copy).unwrap();
        assert_eq!(std::fs::metadata(&copy).unwrap().len(), 64 << 20);
    }

    #[test]
    fn test_a_tree_owned_by_another_user_lands_owned_by_root() {
        banger_testkit::require!(tool("mkfs.ext4"), require::root());
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed");
        std::fs::create_dir_all(seed.join(".ssh")).unwrap();
        std::fs::write(seed.join(".ssh/authorized_keys"), "ssh-ed25519 AAAA k\n").unwrap();
        std::fs::write(seed.join("a file"), "x").unwrap();
        for p in [
            seed.clone(),
            seed.join(".ssh"),
            seed.join(".ssh/authorized_keys"),
            seed.join("a file"),
        ] {
            std::os::unix::fs::lchown(&p, Some(4242), Some(4242)).unwrap();
        }
        let img = dir.path().join("w.ext4");
        make_ext4_root_owned(&RealRunner, &img, 32 << 20, "w", &seed).unwrap();
        for p in ["/", "/.ssh", "/.ssh/authorized_keys", "/a file"] {
            let stat = RealRunner
                .run(
                    &Cmd::new("debugfs")
                        .args(["-R", &format!("stat \"{p}\"")])
                        .arg(img.display().to_string()),
                )
                .unwrap()
                .stdout_str();
            assert!(stat.contains("User:     0   Group:     0"), "{p}: {stat}");
        }
    }

    #[test]
    fn test_write_files_refuses_traversal() {
        let err = write_files(
            &RealRunner,
            Path::new("/nonexistent.ext4"),
            &[ImageFile {
                guest_path: "/etc/../x".into(),
                host_path: "/tmp/x".into(),
                mode: 0o644,
            }],
        )
        .unwrap_err();
        assert!(err.to_string().contains("refusing"), "{err}");
    }
}
