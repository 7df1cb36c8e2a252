//! `ImageService`: images and kernels.
//!
//! One file per job: [`resolve`](ImageService::ensure_image) here (what `--image X` means),
//! `kernel` (distro kernel, kernels from files, show/rm, initramfs refresh), `default` (the
//! debootstrap image), `pull` (OCI pulls as async ops), `catalog` (bundles, `kernel pull`,
//! `image export`), `manage` (register/promote/delete), `cache` (layer cache, leftovers) and
//! `publish` (the one publication step every path uses). Slow work runs unlocked in a
//! staging dir; only publication holds `publication`.

mod cache;
mod catalog;
mod default;
mod error;
mod kernel;
mod manage;
mod publish;
mod pull;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_api::types::{ImageInfo, KernelInfo};
use banger_store::{ImageRecord, KernelRecord, Store};
use tokio::sync::Mutex;
use tracing::info;

pub use error::{ImageError, Kind};
pub(crate) use pull::Inflight;

use super::support::with_store;
use crate::infra::Infra;

/// The name the distro kernel is stored under.
pub const DISTRO_KERNEL_NAME: &str = "debian-cloud";

/// The built-in default image's name.
pub const DEFAULT_IMAGE_NAME: &str = "debian-bookworm";

/// Images and kernels.
#[derive(Debug)]
pub struct ImageService {
    infra: Infra,
    /// Serializes builds of the default kernel and image, kernel pulls and initramfs
    /// refreshes (a second caller waits, then finds the result).
    build: Mutex<()>,
    /// Coalesces auto-pulls of catalog and OCI images (separate from `build`: such a pull
    /// may need `build` for its kernel).
    build_image: Mutex<()>,
    /// The image publication lock: held only across re-check + rename + upsert.
    publication: Mutex<()>,
    /// Pulls under way (a leaf lock: never held across I/O or another lock).
    inflight: std::sync::Mutex<Inflight>,
    /// Pull operations (`image.pull.status`).
    pulls: crate::progress::AsyncOps,
}

/// The wire form of a kernel.
pub(crate) fn kernel_info(k: &KernelRecord) -> KernelInfo {
    KernelInfo {
        name: k.name.clone(),
        version: k.version.clone(),
        source: k.source.clone(),
        kernel: k.vmlinux_path.clone(),
        initrd: k.initrd_path.clone(),
        sha256: k.sha256.clone(),
    }
}

/// Image and kernel names: what a file name and a DNS label can both hold.
pub(crate) fn validate_name(kind: Kind, name: &str) -> Result<(), ImageError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(ImageError::InvalidName(kind, name.to_owned()))
    }
}

/// An absolute path to an existing file (or directory, with `dir`).
fn absolute_file(what: &'static str, path: &str, dir: bool) -> Result<PathBuf, ImageError> {
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(ImageError::NotAbsolute {
            what,
            path: path.to_owned(),
        });
    }
    let ok = if dir { p.is_dir() } else { p.is_file() };
    if !ok {
        return Err(ImageError::NotThere {
            what,
            path: path.to_owned(),
            expected: if dir { "a directory" } else { "a file" },
        });
    }
    Ok(p)
}

/// The `source` an image pulled from `reference` records.
fn oci_source(reference: &str) -> String {
    format!("oci:{reference}")
}

/// A short, stable tag of `text` (FNV-1a, 8 hex digits): tells names of other sources apart.
fn short_tag(text: &str) -> String {
    let h = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{:08x}", h as u32)
}

impl ImageService {
    /// A new service.
    pub fn new(infra: Infra) -> Self {
        ImageService {
            infra,
            build: Mutex::new(()),
            build_image: Mutex::new(()),
            publication: Mutex::new(()),
            inflight: std::sync::Mutex::default(),
            pulls: crate::progress::AsyncOps::default(),
        }
    }

    /// The wire form of an image (`kernels` to name its kernel).
    pub fn info(i: ImageRecord, kernels: &[KernelRecord]) -> ImageInfo {
        ImageInfo {
            kernel: i
                .kernel_id
                .as_ref()
                .and_then(|id| kernels.iter().find(|k| &k.id == id))
                .map(|k| k.name.clone()),
            name: i.name,
            source: i.source,
            rootfs: i.rootfs_path,
            size_bytes: i.size_bytes,
            managed: i.managed,
            digest: i.digest,
            created_at: i.created_at,
            used_by: Vec::new(),
            details: i.config,
        }
    }

    async fn info_of(&self, rec: ImageRecord) -> Result<ImageInfo, ImageError> {
        let kernels = with_store(&self.infra.store, Store::list_kernels).await?;
        Ok(Self::info(rec, &kernels))
    }

    /// All kernels.
    pub async fn list_kernels(&self) -> Result<Vec<KernelInfo>, ImageError> {
        let ks = with_store(&self.infra.store, Store::list_kernels).await?;
        Ok(ks.iter().map(kernel_info).collect())
    }

    /// All images.
    pub async fn list_images(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let images = with_store(&self.infra.store, Store::list_images).await?;
        let kernels = with_store(&self.infra.store, Store::list_kernels).await?;
        Ok(images
            .into_iter()
            .map(|i| Self::info(i, &kernels))
            .collect())
    }

    /// One image with the VMs using it.
    pub async fn show(&self, name: &str) -> Result<ImageInfo, ImageError> {
        let rec = self.get_image(name).await?;
        let id = rec.id.clone();
        let users = with_store(&self.infra.store, move |s| s.vms_using_image(&id)).await?;
        let mut info = self.info_of(rec).await?;
        info.used_by = users;
        Ok(info)
    }

    async fn find_image(&self, name: &str) -> Result<Option<ImageRecord>, ImageError> {
        let key = name.to_owned();
        Ok(with_store(&self.infra.store, move |s| s.get_image(&key)).await?)
    }

    async fn find_kernel(&self, name: &str) -> Result<Option<KernelRecord>, ImageError> {
        let key = name.to_owned();
        Ok(with_store(&self.infra.store, move |s| s.get_kernel(&key)).await?)
    }

    async fn get_image(&self, name: &str) -> Result<ImageRecord, ImageError> {
        self.find_image(name)
            .await?
            .ok_or_else(|| ImageError::NotFound(Kind::Image, name.to_owned()))
    }

    async fn get_kernel(&self, name: &str) -> Result<KernelRecord, ImageError> {
        self.find_kernel(name)
            .await?
            .ok_or_else(|| ImageError::NotFound(Kind::Kernel, name.to_owned()))
    }

    /// A stored image whose rootfs exists, with its kernel (initramfs refreshed).
    async fn lookup(&self, name: &str) -> Result<Option<(ImageRecord, KernelRecord)>, ImageError> {
        let Some(image) = self.find_image(name).await? else {
            return Ok(None);
        };
        if !Path::new(&image.rootfs_path).exists() {
            return Ok(None);
        }
        let Some(kid) = image.kernel_id.clone() else {
            return Err(ImageError::NoKernel(name.to_owned()));
        };
        let kernel = with_store(&self.infra.store, move |s| s.get_kernel(&kid))
            .await?
            .ok_or_else(|| ImageError::MissingKernel(name.to_owned()))?;
        self.refresh_initramfs(&kernel).await?;
        Ok(Some((image, kernel)))
    }

    /// What `--image NAME` means: a stored image; an OCI reference (pulled once, and always
    /// that image: never a local image that happens to share its default name); a catalog
    /// image (fetched on first use); or the built-in default (built from the Debian mirror).
    pub async fn ensure_image(
        &self,
        name: &str,
    ) -> Result<(ImageRecord, KernelRecord), ImageError> {
        if name.contains(['/', ':', '@']) {
            return self.ensure_oci(name).await;
        }
        if let Some(found) = self.lookup(name).await?
            && !self.outdated_default(&found.0).await?
        {
            return Ok(found);
        }
        if let Some(entry) = self.image_entry(name) {
            info!(image = name, "pulling the missing image from the catalog");
            let _build = self.build_image.lock().await;
            if let Some(found) = self.lookup(name).await? {
                return Ok(found);
            }
            self.pull_bundle(&entry, name, None, &Arc::default())
                .await?;
            return self
                .lookup(name)
                .await?
                .ok_or(ImageError::Vanished(Kind::Image));
        }
        if name != DEFAULT_IMAGE_NAME {
            return Err(ImageError::Unknown(name.to_owned()));
        }
        self.build_default(name).await
    }

    /// The local name for OCI `reference`: its default name, or that name with a tag of the
    /// reference when an image from another source holds it. `Ok((name, true))` when an
    /// image pulled from this reference is stored under it.
    async fn local_name_for(
        &self,
        reference: &banger_image::registry::ImageRef,
    ) -> Result<(String, bool), ImageError> {
        let whole = reference.reference.whole();
        let base = banger_image::registry::default_name(&reference.reference);
        let candidates = [base.clone(), format!("{base}-{}", short_tag(&whole))];
        for name in &candidates {
            match self.find_image(name).await? {
                None => return Ok((name.clone(), false)),
                Some(i) if i.source == oci_source(&whole) => return Ok((name.clone(), true)),
                Some(_) => {}
            }
        }
        Err(ImageError::NoNameForReference {
            reference: whole,
            names: candidates.join(", "),
        })
    }

    /// An OCI reference: the image pulled from it, pulled now when missing.
    async fn ensure_oci(&self, reference: &str) -> Result<(ImageRecord, KernelRecord), ImageError> {
        let image = banger_image::registry::parse_ref(reference, false)
            .map_err(ImageError::BadReference)?;
        if let (local, true) = self.local_name_for(&image).await?
            && let Some(found) = self.lookup(&local).await?
        {
            return Ok(found);
        }
        let _build = self.build_image.lock().await;
        let (local, stored) = self.local_name_for(&image).await?;
        if stored && let Some(found) = self.lookup(&local).await? {
            return Ok(found);
        }
        info!(image = local, reference, "pulling the missing image");
        // Booted with the default image's kernel when there is one (else the distro's).
        let default = self.infra.config.default_image_name.clone();
        let kernel = match self.lookup(&default).await {
            Ok(Some((_, k))) => Some(k.name),
            _ => None,
        };
        let params = banger_api::types::ImagePullParams {
            reference: reference.to_owned(),
            name: Some(local.clone()),
            kernel,
            insecure: false,
        };
        match self
            .pull(image, local.clone(), params, &Arc::default())
            .await
        {
            Ok(_) | Err(ImageError::NameTaken(..)) => {}
            Err(e) => return Err(e),
        }
        self.lookup(&local)
            .await?
            .ok_or(ImageError::Vanished(Kind::Image))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_short_tag_is_stable_and_tells_references_apart() {
        let a = short_tag("ghcr.io/a/app:v1");
        assert_eq!(a, short_tag("ghcr.io/a/app:v1"));
        assert_ne!(a, short_tag("docker.io/b/app:v1"));
        assert_eq!(a.len(), 8);
        assert!(validate_name(Kind::Image, &format!("app-v1-{a}")).is_ok());
    }
}
