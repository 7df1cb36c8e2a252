//! banger's images and kernels.
//!
//! - [`kernel`]: import the distro's cloud kernel (apt download only), extract a bootable
//!   ELF `vmlinux` from its bzImage, and build a small initramfs ([`initramfs`]) that loads
//!   the virtio and vsock modules, mounts the root disk and `switch_root`s.
//! - [`rootfs`]: build the default Debian image with debootstrap into a read-only
//!   `rootfs.ext4` plus a work seed (its `/root`), tuned to boot fast.

pub mod bundle;
pub mod initramfs;
pub mod kernel;
pub mod layers;
pub mod oci;
pub mod registry;
pub mod rootfs;

use std::path::{Path, PathBuf};

use banger_host::RunError;

/// Errors building images and kernels.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A host command failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Filesystem error.
    #[error("file error at {path}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Something expected is missing or malformed.
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_owned(),
        source,
    }
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, ImageError> {
    use sha2::Digest as _;
    let mut file = fs_err::File::open(path).map_err(io_err(path))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io_err(path))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
