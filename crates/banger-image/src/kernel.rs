//! Importing the distro's cloud kernel: `apt-get download` (no install), `dpkg-deb -x`,
//! ELF `vmlinux` extraction from the bzImage's LZ4 payload, and the initramfs.

use std::path::{Path, PathBuf};

use banger_host::{Cmd, CommandRunner};
use serde::{Deserialize, Serialize};

use crate::{ImageError, initramfs, io_err, sha256_file};

/// The package providing the kernel (a metapackage depending on the versioned one).
pub const DISTRO_KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";

/// `manifest.json` of a stored kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelManifest {
    /// Kernel name in banger.
    pub name: String,
    /// Kernel release.
    pub version: String,
    /// Where it came from.
    pub source: String,
    /// sha256 of the boot kernel file.
    pub sha256: String,
    /// The kernel banger boots (ELF vmlinux when it could be extracted, else the bzImage).
    pub kernel: String,
    /// The initramfs.
    pub initrd: String,
    /// Extracted modules directory.
    pub modules: String,
}

/// The versioned package the metapackage points to.
fn resolve_package(runner: &dyn CommandRunner) -> Result<String, ImageError> {
    let out = runner.run(&Cmd::new("apt-cache").args(["depends", DISTRO_KERNEL_PACKAGE]))?;
    Ok(out
        .stdout_str()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|d| d.starts_with("linux-image-"))
        .map_or_else(|| DISTRO_KERNEL_PACKAGE.to_owned(), str::to_owned))
}

/// Extracts the ELF kernel from a bzImage whose payload is LZ4 (legacy frame format).
pub fn extract_vmlinux(bzimage: &[u8]) -> Option<Vec<u8>> {
    const MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
    const BLOCK_MAX: usize = 8 << 20;
    let start = bzimage.windows(4).position(|w| w == MAGIC)? + 4;
    let mut pos = start;
    let mut out = Vec::new();
    let mut block = vec![0u8; BLOCK_MAX];
    while pos + 4 <= bzimage.len() {
        let size = u32::from_le_bytes(bzimage[pos..pos + 4].try_into().ok()?) as usize;
        if size == 0 || size == u32::from_le_bytes(MAGIC) as usize || pos + 4 + size > bzimage.len()
        {
            break;
        }
        match lz4_flex::block::decompress_into(&bzimage[pos + 4..pos + 4 + size], &mut block) {
            Ok(n) => out.extend_from_slice(&block[..n]),
            Err(_) => break,
        }
        pos += 4 + size;
    }
    (out.get(..4) == Some(b"\x7fELF")).then_some(out)
}

/// Imports the distro kernel into `dest` (created; must not exist), staging in `work`.
pub fn import_from_distro(
    runner: &dyn CommandRunner,
    name: &str,
    busybox: &Path,
    work: &Path,
    dest: &Path,
) -> Result<KernelManifest, ImageError> {
    fs_err::create_dir_all(work).map_err(io_err(work))?;
    let package = resolve_package(runner)?;
    runner.run(
        &Cmd::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root"])
            .arg(package.clone())
            .cwd(work),
    )?;
    let deb = fs_err::read_dir(work)
        .map_err(io_err(work))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| {
            ImageError::Invalid(format!("apt-get download {package} produced no .deb"))
        })?;
    let tree = work.join("tree");
    runner.run(
        &Cmd::new("dpkg-deb")
            .arg("-x")
            .arg(deb.display().to_string())
            .arg(tree.display().to_string()),
    )?;
    let boot = tree.join("boot");
    let vmlinuz = fs_err::read_dir(&boot)
        .map_err(io_err(&boot))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| ImageError::Invalid(format!("no vmlinuz in {package}")))?;
    let version = vmlinuz
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_start_matches("vmlinuz-")
                .to_owned()
        })
        .unwrap_or_default();
    let modules_src = tree.join("lib/modules").join(&version);

    fs_err::create_dir_all(dest).map_err(io_err(dest))?;
    let bz = fs_err::read(&vmlinuz).map_err(io_err(&vmlinuz))?;
    let kernel: PathBuf = match extract_vmlinux(&bz) {
        Some(elf) => {
            let p = dest.join("vmlinux");
            fs_err::write(&p, elf).map_err(io_err(&p))?;
            p
        }
        None => {
            let p = dest.join("vmlinuz");
            fs_err::write(&p, &bz).map_err(io_err(&p))?;
            p
        }
    };
    let initrd = dest.join("initrd.img");
    initramfs::build(busybox, &modules_src, &initrd)?;
    let modules = dest.join("modules");
    fs_err::rename(&modules_src, &modules).map_err(io_err(&modules))?;
    let manifest = KernelManifest {
        name: name.to_owned(),
        version,
        source: format!("distro:{package}"),
        sha256: sha256_file(&kernel)?,
        kernel: kernel.display().to_string(),
        initrd: initrd.display().to_string(),
        modules: modules.display().to_string(),
    };
    let mpath = dest.join("manifest.json");
    let text =
        serde_json::to_string_pretty(&manifest).map_err(|e| ImageError::Invalid(e.to_string()))?;
    fs_err::write(&mpath, text).map_err(io_err(&mpath))?;
    let _ = fs_err::remove_dir_all(work);
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_extract_vmlinux_from_legacy_lz4_payload() {
        let elf: Vec<u8> = b"\x7fELF"
            .iter()
            .copied()
            .chain((0..100_000u32).map(|i| (i % 251) as u8))
            .collect();
        let block = lz4_flex::block::compress(&elf);
        let mut bz = b"MZ setup code".to_vec();
        bz.extend_from_slice(&[0x02, 0x21, 0x4c, 0x18]);
        bz.extend_from_slice(&(block.len() as u32).to_le_bytes());
        bz.extend_from_slice(&block);
        bz.extend_from_slice(&(elf.len() as u32).to_le_bytes()); // trailing size, as in bzImage
        assert_eq!(extract_vmlinux(&bz).unwrap(), elf);
    }

    #[test]
    fn test_extract_vmlinux_without_payload_is_none() {
        assert!(extract_vmlinux(b"no payload here").is_none());
    }
}
