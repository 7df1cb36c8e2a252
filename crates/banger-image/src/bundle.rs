//! Catalog bundles: tar+zstd files fetched from `https://`, `http://`, `file://` or an
//! absolute path. The download streams into a partial file while its sha256 is computed and
//! is checked before anything is unpacked; unpacking accepts only the expected entries
//! (regular files and, for kernels, a `modules/` tree), never a link, device, `..` or
//! absolute path. `image export` writes image bundles.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Errors fetching or unpacking a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The download failed.
    #[error("cannot fetch {url}: {why}")]
    Fetch {
        /// Where from.
        url: String,
        /// Why.
        why: String,
    },
    /// The bytes are not the ones the catalog names.
    #[error("{url}: sha256 mismatch: the catalog says {expected}, got {got}")]
    Digest {
        /// Where from.
        url: String,
        /// What the catalog says.
        expected: String,
        /// What arrived.
        got: String,
    },
    /// An entry that is not allowed in this kind of bundle.
    #[error("bundle entry {path:?} refused: {why}")]
    Entry {
        /// The entry path.
        path: String,
        /// Why.
        why: String,
    },
    /// File error.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BundleError {
    let context = context.into();
    move |source| BundleError::Io { context, source }
}

/// What an image bundle's `manifest.json` says.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageBundleManifest {
    /// Image name.
    pub name: String,
    /// Distro.
    #[serde(default)]
    pub distro: String,
    /// Architecture.
    #[serde(default)]
    pub arch: String,
    /// Kernel to boot it with.
    #[serde(default)]
    pub kernel_ref: String,
}

/// Downloads `url` into `dest` (created), checking `sha256` (hex) and, when non-zero,
/// `size`. `on_bytes` sees each chunk's length. On any error `dest` is removed.
pub async fn download(
    url: &str,
    sha256: &str,
    size: u64,
    dest: &Path,
    on_bytes: &(dyn Fn(u64) + Send + Sync),
) -> Result<(), BundleError> {
    let result = download_inner(url, sha256, size, dest, on_bytes).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(dest).await;
    }
    result
}

async fn download_inner(
    url: &str,
    sha256: &str,
    size: u64,
    dest: &Path,
    on_bytes: &(dyn Fn(u64) + Send + Sync),
) -> Result<(), BundleError> {
    let fetch = |why: String| BundleError::Fetch {
        url: url.to_owned(),
        why,
    };
    let mut out = tokio::io::BufWriter::with_capacity(
        1 << 20,
        tokio::fs::File::create(dest)
            .await
            .map_err(io(format!("create {}", dest.display())))?,
    );
    let mut hash = Sha256::new();
    let mut got = 0u64;
    let mut write = async |chunk: &[u8], hash: &mut Sha256, got: &mut u64| {
        *got += chunk.len() as u64;
        if size > 0 && *got > size {
            return Err(fetch(format!(
                "more than the {size} bytes the catalog says"
            )));
        }
        hash.update(chunk);
        out.write_all(chunk)
            .await
            .map_err(io(format!("write {}", dest.display())))?;
        on_bytes(chunk.len() as u64);
        Ok(())
    };
    if url.starts_with("http://") || url.starts_with("https://") {
        let resp = reqwest::get(url)
            .await
            .map_err(|e| fetch(e.to_string()))?
            .error_for_status()
            .map_err(|e| fetch(e.to_string()))?;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| fetch(e.to_string()))?;
            write(&chunk, &mut hash, &mut got).await?;
        }
    } else {
        let path = url.strip_prefix("file://").unwrap_or(url);
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| fetch(e.to_string()))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| fetch(e.to_string()))?;
            if n == 0 {
                break;
            }
            write(&buf[..n], &mut hash, &mut got).await?;
        }
    }
    out.flush()
        .await
        .map_err(io(format!("write {}", dest.display())))?;
    if size > 0 && got != size {
        return Err(fetch(format!("truncated: {got} of {size} bytes")));
    }
    let got_hex = format!("{:x}", hash.finalize());
    if !got_hex.eq_ignore_ascii_case(sha256) {
        return Err(BundleError::Digest {
            url: url.to_owned(),
            expected: sha256.to_owned(),
            got: got_hex,
        });
    }
    Ok(())
}

/// The entry's path relative to the bundle root, refusing absolute paths and `..`.
fn rel_path(raw: &Path) -> Result<PathBuf, BundleError> {
    let refuse = |why: &str| BundleError::Entry {
        path: raw.display().to_string(),
        why: why.to_owned(),
    };
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(refuse("absolute path")),
            Component::ParentDir => return Err(refuse("'..' in path")),
        }
    }
    Ok(out)
}

/// What a bundle may hold at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowed {
    /// A regular file.
    File,
    /// A regular file or a directory.
    FileOrDir,
}

/// Unpacks a bundle into `dest`, letting `allow` decide each entry (`None`: refused).
fn unpack(
    bundle: &Path,
    dest: &Path,
    allow: impl Fn(&Path) -> Option<Allowed>,
) -> Result<Vec<PathBuf>, BundleError> {
    let file = std::fs::File::open(bundle).map_err(io(format!("open {}", bundle.display())))?;
    let zstd =
        zstd::stream::read::Decoder::new(std::io::BufReader::new(file)).map_err(io("zstd"))?;
    let mut archive = tar::Archive::new(zstd);
    let mut seen = Vec::new();
    for entry in archive.entries().map_err(io("read bundle"))? {
        let mut entry = entry.map_err(io("read bundle"))?;
        let raw = entry.path().map_err(io("entry path"))?.into_owned();
        let rel = rel_path(&raw)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let refuse = |why: &str| BundleError::Entry {
            path: raw.display().to_string(),
            why: why.to_owned(),
        };
        let kind = entry.header().entry_type();
        let target = dest.join(&rel);
        match (allow(&rel), kind) {
            (Some(Allowed::FileOrDir), k) if k.is_dir() => {
                fs_err::create_dir_all(&target).map_err(io("mkdir"))?;
            }
            (Some(_), k) if k.is_file() => {
                if seen.contains(&rel) {
                    return Err(refuse("duplicate entry"));
                }
                if let Some(parent) = target.parent() {
                    fs_err::create_dir_all(parent).map_err(io("mkdir"))?;
                }
                let mut out = std::fs::File::create(&target)
                    .map_err(io(format!("create {}", target.display())))?;
                std::io::copy(&mut entry, &mut out)
                    .map_err(io(format!("write {}", target.display())))?;
                seen.push(rel);
            }
            (None, _) => return Err(refuse("not expected in this kind of bundle")),
            _ => return Err(refuse("only regular files and directories are allowed")),
        }
    }
    Ok(seen)
}

/// Unpacks an image bundle: exactly `rootfs.ext4` and `manifest.json`.
pub fn unpack_image(bundle: &Path, dest: &Path) -> Result<ImageBundleManifest, BundleError> {
    let seen = unpack(bundle, dest, |p| {
        (p == Path::new("rootfs.ext4") || p == Path::new("manifest.json")).then_some(Allowed::File)
    })?;
    for required in ["rootfs.ext4", "manifest.json"] {
        if !seen.iter().any(|p| p == Path::new(required)) {
            return Err(BundleError::Entry {
                path: required.to_owned(),
                why: "missing from the bundle".to_owned(),
            });
        }
    }
    let text = fs_err::read_to_string(dest.join("manifest.json")).map_err(io("manifest.json"))?;
    serde_json::from_str(&text).map_err(|e| BundleError::Entry {
        path: "manifest.json".into(),
        why: format!("not a valid manifest: {e}"),
    })
}

/// Unpacks a kernel bundle: `vmlinux`, optional `initrd.img` and a `modules/` tree.
pub fn unpack_kernel(bundle: &Path, dest: &Path) -> Result<(), BundleError> {
    let seen = unpack(bundle, dest, |p| {
        if p == Path::new("vmlinux") || p == Path::new("initrd.img") {
            Some(Allowed::File)
        } else if p.starts_with("modules") {
            Some(Allowed::FileOrDir)
        } else {
            None
        }
    })?;
    if !seen.iter().any(|p| p == Path::new("vmlinux")) {
        return Err(BundleError::Entry {
            path: "vmlinux".into(),
            why: "missing from the bundle".into(),
        });
    }
    Ok(())
}

/// Writes an image bundle of `rootfs` and `manifest` to `out` (tar + zstd).
pub fn write_image(
    rootfs: &Path,
    manifest: &ImageBundleManifest,
    out: &Path,
) -> Result<(), BundleError> {
    let file = std::fs::File::create(out).map_err(io(format!("create {}", out.display())))?;
    let zstd = zstd::stream::write::Encoder::new(file, 3).map_err(io("zstd"))?;
    let mut tar = tar::Builder::new(zstd);
    let text = serde_json::to_vec_pretty(manifest).unwrap_or_default();
    let mut h = tar::Header::new_gnu();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "manifest.json", text.as_slice())
        .map_err(io("write bundle"))?;
    let mut f = std::fs::File::open(rootfs).map_err(io(format!("open {}", rootfs.display())))?;
    let len = f.metadata().map_err(io("stat rootfs"))?.len();
    let mut h = tar::Header::new_gnu();
    h.set_size(len);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "rootfs.ext4", (&mut f).take(len))
        .map_err(io("write bundle"))?;
    let zstd = tar.into_inner().map_err(io("write bundle"))?;
    zstd.finish().map_err(io("write bundle"))?;
    Ok(())
}
