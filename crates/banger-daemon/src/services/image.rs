//! `ImageService`: images and kernels. Builds the default kernel (distro import) and image
//! (debootstrap) on first need. Slow work runs unlocked in a staging dir; publication (re-check,
//! atomic rename, row upsert) happens under `publication`, the image publication lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_api::types::{ImageInfo, KernelInfo};
use banger_api::{ErrorCode, RpcError};
use banger_store::{ImageRecord, KernelRecord, Store, StoreError};
use tokio::sync::Mutex;
use tracing::info;

use crate::daemon::Infra;
use crate::error::{chain, store_error};

/// The name the distro kernel is stored under.
pub const DISTRO_KERNEL_NAME: &str = "debian-cloud";

/// Images and kernels.
#[derive(Debug)]
pub struct ImageService {
    pub(crate) infra: Infra,
    /// Coalesces concurrent builds of the default kernel and image (one build at a time).
    pub(crate) build: Mutex<()>,
    /// Coalesces auto-pulls of catalog images (separate from `build`: a bundle pull may
    /// need `build` for its kernel).
    build_image: Mutex<()>,
    /// The image publication lock: held only across re-check + rename + upsert.
    pub(crate) publication: Mutex<()>,
    /// Pulls under way (a leaf lock: never held across I/O or another lock).
    pub(crate) inflight: std::sync::Mutex<super::image_pull::Inflight>,
    /// Pull operations (`image.pull.status`).
    pub(crate) pulls: crate::progress::AsyncOps,
}

/// Replaces `final_dir` with the finished `staging` dir (caller holds the publication lock).
pub(crate) fn swap_in(
    staging: &std::path::Path,
    final_dir: &std::path::Path,
) -> std::io::Result<()> {
    let _ = fs_err::remove_dir_all(final_dir);
    fs_err::rename(staging, final_dir)
}

pub(crate) fn failed(step: &str, e: &dyn std::error::Error) -> RpcError {
    RpcError::new(ErrorCode::OperationFailed, format!("{step}: {}", chain(e)))
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RpcError> + Send + 'static,
) -> Result<T, RpcError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        RpcError::new(
            ErrorCode::OperationFailed,
            format!("worker task failed: {e}"),
        )
    })?
}

pub(crate) async fn with_store<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, RpcError> {
    let store = Arc::clone(store);
    blocking(move || f(&store).map_err(|e| store_error(&e))).await
}

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

/// The busybox to put into initramfs images: it must be statically linked.
fn static_busybox() -> Result<PathBuf, RpcError> {
    for candidate in ["/bin/busybox", "/usr/bin/busybox"] {
        let path = Path::new(candidate);
        if let Ok(bytes) = std::fs::read(path) {
            let dynamic = bytes.windows(14).any(|w| w == b"/lib64/ld-linu");
            if !dynamic {
                return Ok(path.to_owned());
            }
        }
    }
    Err(RpcError::new(
        ErrorCode::OperationFailed,
        "no statically linked busybox found",
    )
    .with_hint("apt-get install busybox-static"))
}

pub(crate) fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
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

    /// All kernels.
    pub async fn list_kernels(&self) -> Result<Vec<KernelInfo>, RpcError> {
        let ks = with_store(&self.infra.store, Store::list_kernels).await?;
        Ok(ks.iter().map(kernel_info).collect())
    }

    /// All images.
    pub async fn list_images(&self) -> Result<Vec<ImageInfo>, RpcError> {
        let images = with_store(&self.infra.store, Store::list_images).await?;
        let kernels = with_store(&self.infra.store, Store::list_kernels).await?;
        Ok(images
            .into_iter()
            .map(|i| Self::info(i, &kernels))
            .collect())
    }

    /// Imports the distro kernel (`kernel import --from-distro`); reuses a stored one.
    pub async fn import_distro_kernel(&self, name: Option<String>) -> Result<KernelInfo, RpcError> {
        let name = name.unwrap_or_else(|| DISTRO_KERNEL_NAME.to_owned());
        Ok(kernel_info(&self.ensure_kernel(&name).await?))
    }

    /// The distro kernel `name`, importing it when missing.
    pub async fn ensure_kernel(&self, name: &str) -> Result<KernelRecord, RpcError> {
        let key = name.to_owned();
        if let Some(k) = with_store(&self.infra.store, move |s| s.get_kernel(&key)).await?
            && Path::new(&k.vmlinux_path).exists()
        {
            self.refresh_initramfs(&k).await?;
            return Ok(k);
        }
        let _build = self.build.lock().await;
        let key = name.to_owned();
        if let Some(k) = with_store(&self.infra.store, move |s| s.get_kernel(&key)).await?
            && Path::new(&k.vmlinux_path).exists()
        {
            return Ok(k);
        }
        info!(kernel = name, "importing the distro kernel");
        let busybox = static_busybox()?;
        let kernels = self.infra.layout.kernels_dir();
        let staging = kernels.join(format!(".staging-{}", random_suffix()));
        let work = self
            .infra
            .layout
            .cache_dir
            .join(format!("kernel-work-{}", random_suffix()));
        let runner = Arc::clone(&self.infra.runner);
        let name_owned = name.to_owned();
        let (st, wk) = (staging.clone(), work.clone());
        let built = blocking(move || {
            banger_image::kernel::import_from_distro(
                runner.as_ref(),
                &name_owned,
                &busybox,
                &wk,
                &st,
            )
            .map_err(|e| failed("kernel import", &e))
        })
        .await;
        let manifest = match built {
            Ok(m) => m,
            Err(e) => {
                let _ = fs_err::remove_dir_all(&staging);
                let _ = fs_err::remove_dir_all(&work);
                return Err(
                    e.with_hint("kernel import needs apt (Debian/Ubuntu) and busybox-static")
                );
            }
        };
        let final_dir = kernels.join(name);
        let rebase = |p: &str| {
            p.replace(
                &staging.display().to_string(),
                &final_dir.display().to_string(),
            )
        };
        let record = KernelRecord {
            id: random_suffix() + &random_suffix(),
            name: name.to_owned(),
            version: manifest.version.clone(),
            source: manifest.source.clone(),
            managed: true,
            vmlinux_path: rebase(&manifest.kernel),
            initrd_path: Some(rebase(&manifest.initrd)),
            modules_dir: Some(rebase(&manifest.modules)),
            sha256: manifest.sha256.clone(),
            created_at: self.infra.clock.now_rfc3339(),
        };
        let _publish = self.publication.lock().await;
        swap_in(&staging, &final_dir).map_err(|e| failed("kernel publish", &e))?;
        let rec = record.clone();
        with_store(&self.infra.store, move |s| s.upsert_kernel(&rec)).await?;
        info!(kernel = name, version = record.version, "kernel imported");
        Ok(record)
    }

    /// Rebuilds a distro kernel's initramfs made by an older [`banger_image::initramfs::VERSION`]
    /// (its modules are kept beside it), so boot features such as `init=` reach old kernels.
    async fn refresh_initramfs(&self, k: &KernelRecord) -> Result<(), RpcError> {
        let (Some(initrd), Some(modules)) = (&k.initrd_path, &k.modules_dir) else {
            return Ok(());
        };
        let (initrd, modules) = (PathBuf::from(initrd), PathBuf::from(modules));
        if !k.source.starts_with("distro:")
            || banger_image::initramfs::is_current(&initrd)
            || !modules.is_dir()
        {
            return Ok(());
        }
        let _build = self.build.lock().await;
        if banger_image::initramfs::is_current(&initrd) {
            return Ok(());
        }
        info!(kernel = k.name, "rebuilding an outdated initramfs");
        let busybox = static_busybox()?;
        blocking(move || {
            banger_image::initramfs::build(&busybox, &modules, &initrd)
                .map_err(|e| failed("initramfs", &e))
        })
        .await
    }

    /// Whether `image` is the built-in default built from an older recipe and no VM uses it
    /// (then it is rebuilt; images in use are kept).
    async fn outdated_default(&self, image: &ImageRecord) -> Result<bool, RpcError> {
        let recipe = image
            .config
            .get("recipe")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(1);
        if !image.source.starts_with("debootstrap:") || recipe >= banger_image::rootfs::RECIPE {
            return Ok(false);
        }
        let id = image.id.clone();
        let users = with_store(&self.infra.store, move |s| s.vms_using_image(&id)).await?;
        if users.is_empty() {
            info!(
                image = image.name,
                recipe, "default image recipe is outdated; rebuilding"
            );
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// The image `name`; the default image is built from the Debian mirror when missing.
    pub async fn ensure_image(&self, name: &str) -> Result<(ImageRecord, KernelRecord), RpcError> {
        if let Some(found) = self.lookup(name).await?
            && !self.outdated_default(&found.0).await?
        {
            return Ok(found);
        }
        if name.contains(['/', ':', '@']) {
            // An OCI reference (never a valid image name): pulled on first use and stored
            // under its default name.
            let image = banger_image::registry::parse_ref(name, false).map_err(|e| {
                RpcError::new(ErrorCode::BadRequest, e.to_string()).with_hint(
                    "an image name, or a reference such as docker.io/library/debian:bookworm",
                )
            })?;
            let local = banger_image::registry::default_name(&image.reference);
            if let Some(found) = self.lookup(&local).await? {
                return Ok(found);
            }
            let _build = self.build_image.lock().await;
            if let Some(found) = self.lookup(&local).await? {
                return Ok(found);
            }
            info!(image = local, reference = name, "pulling the missing image");
            // Booted with the default image's kernel when there is one (else the distro's).
            let default = self.infra.config.default_image_name.clone();
            let kernel = match self.lookup(&default).await {
                Ok(Some((_, k))) => Some(k.name),
                _ => None,
            };
            let params = banger_api::types::ImagePullParams {
                reference: name.to_owned(),
                name: Some(local.clone()),
                kernel,
                insecure: false,
            };
            if let Err(e) = self
                .pull(image, local.clone(), params, &Arc::default())
                .await
                && e.kind() != ErrorCode::AlreadyExists
            {
                return Err(e);
            }
            return self.lookup(&local).await?.ok_or_else(|| {
                RpcError::new(ErrorCode::OperationFailed, "the pulled image vanished")
            });
        }
        if let Some(entry) = self.image_entry(name) {
            // A catalog image: fetched on first use.
            info!(image = name, "pulling the missing image from the catalog");
            let _build = self.build_image.lock().await;
            if let Some(found) = self.lookup(name).await? {
                return Ok(found);
            }
            self.pull_bundle(&entry, name, None, &Arc::default())
                .await?;
            return self.lookup(name).await?.ok_or_else(|| {
                RpcError::new(ErrorCode::OperationFailed, "the pulled image vanished")
            });
        }
        if name != "debian-bookworm" {
            return Err(RpcError::new(ErrorCode::NotFound, format!("image {name:?} not found"))
                .with_hint("`banger image list` shows local images; the built-in default is debian-bookworm"));
        }
        let kernel = self.ensure_kernel(DISTRO_KERNEL_NAME).await?;
        let _build = self.build.lock().await;
        if let Some(found) = self.lookup(name).await?
            && !self.outdated_default(&found.0).await?
        {
            return Ok(found);
        }
        info!(
            image = name,
            "building the default image with debootstrap (once)"
        );
        let images = self.infra.layout.images_dir();
        let staging = images.join(format!(".staging-{}", random_suffix()));
        let work = self
            .infra
            .layout
            .cache_dir
            .join(format!("image-work-{}", random_suffix()));
        let runner = Arc::clone(&self.infra.runner);
        let (st, wk) = (staging.clone(), work.clone());
        let built = blocking(move || {
            let mirror = banger_image::rootfs::configured_mirror();
            banger_image::rootfs::build_debian(runner.as_ref(), "bookworm", &mirror, &wk, &st)
                .map_err(|e| failed("image build", &e))
        })
        .await;
        let size = match built {
            Ok(size) => size,
            Err(e) => {
                let _ = fs_err::remove_dir_all(&staging);
                let _ = fs_err::remove_dir_all(&work);
                return Err(e.with_hint(
                    "building the default image needs debootstrap and the Debian mirror",
                ));
            }
        };
        let final_dir = images.join(name);
        let record = ImageRecord {
            id: random_suffix() + &random_suffix(),
            name: name.to_owned(),
            source: "debootstrap:bookworm".to_owned(),
            managed: true,
            rootfs_path: final_dir.join("rootfs.ext4").display().to_string(),
            work_seed_path: Some(final_dir.join("work-seed").display().to_string()),
            kernel_id: Some(kernel.id.clone()),
            digest: None,
            config: serde_json::json!({"recipe": banger_image::rootfs::RECIPE}),
            size_bytes: size,
            created_at: self.infra.clock.now_rfc3339(),
        };
        let _publish = self.publication.lock().await;
        let stale = name.to_owned();
        with_store(&self.infra.store, move |s| {
            if let Some(old) = s.get_image(&stale)? {
                s.delete_image(&old.id)?;
            }
            Ok(())
        })
        .await?;
        swap_in(&staging, &final_dir).map_err(|e| failed("image publish", &e))?;
        let rec = record.clone();
        with_store(&self.infra.store, move |s| s.upsert_image(&rec)).await?;
        info!(image = name, "image built");
        Ok((record, kernel))
    }

    async fn lookup(&self, name: &str) -> Result<Option<(ImageRecord, KernelRecord)>, RpcError> {
        let key = name.to_owned();
        let Some(image) = with_store(&self.infra.store, move |s| s.get_image(&key)).await? else {
            return Ok(None);
        };
        if !Path::new(&image.rootfs_path).exists() {
            return Ok(None);
        }
        let Some(kid) = image.kernel_id.clone() else {
            return Err(RpcError::new(
                ErrorCode::OperationFailed,
                format!("image {name:?} has no kernel"),
            ));
        };
        let kernel = with_store(&self.infra.store, move |s| s.get_kernel(&kid))
            .await?
            .ok_or_else(|| {
                RpcError::new(
                    ErrorCode::OperationFailed,
                    format!("image {name:?} refers to a missing kernel"),
                )
            })?;
        self.refresh_initramfs(&kernel).await?;
        Ok(Some((image, kernel)))
    }
}
