//! Catalog bundles. `image pull NAME` of a catalog name (and
//! `vm create --image NAME` when the image is missing) fetches the bundle (sha256 checked,
//! cached by digest), unpacks exactly `rootfs.ext4` + `manifest.json`, resolves the kernel
//! (stored, pulled from the kernel catalog, or the distro default) and publishes a managed
//! image. `kernel pull NAME` does the same for kernel bundles; `image export` writes bundles.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_api::types::{ImageExportResult, ImageInfo, KernelCatalogInfo, KernelInfo};
use banger_config::{ImageCatalogEntry, KernelCatalogEntry, catalog};
use banger_image::bundle;
use banger_store::{ImageRecord, KernelRecord, Store};
use tracing::info;

use super::error::{file, io};
use super::publish::{Existing, Record, Staging};
use super::{DISTRO_KERNEL_NAME, ImageError, ImageService, Kind, kernel_info};
use crate::progress::Progress;
use crate::services::support::{Cancelled, blocking, mb, new_id, with_store};

impl ImageService {
    /// The image catalog entry `name`, if any.
    pub(crate) fn image_entry(&self, name: &str) -> Option<ImageCatalogEntry> {
        catalog::images(&self.infra.config.image_catalog)
            .into_iter()
            .find(|e| e.name == name)
    }

    fn kernel_entry(&self, name: &str) -> Option<KernelCatalogEntry> {
        catalog::kernels(&self.infra.config.kernel_catalog)
            .into_iter()
            .find(|e| e.name == name)
    }

    /// Downloads a bundle into the blob cache (keyed by its sha256) unless it is there;
    /// returns its path.
    async fn fetch_bundle(
        &self,
        url: &str,
        sha256: &str,
        size: u64,
        progress: &Arc<Progress>,
    ) -> Result<PathBuf, ImageError> {
        let digest = format!("sha256:{}", sha256.to_ascii_lowercase());
        let cache = self.cache();
        let path = cache
            .path(&digest)
            .ok_or_else(|| ImageError::UnsupportedDigest(digest.clone()))?;
        if path.is_file() && (size == 0 || cache.has(&digest, size)) {
            return Ok(path);
        }
        let partial = cache.partial(&digest).map_err(ImageError::Cache)?;
        let on_bytes = progress.byte_meter(size);
        tokio::select! {
            r = bundle::download(url, sha256, size, &partial, &on_bytes) => r.map_err(ImageError::FetchBundle)?,
            () = progress.cancelled() => {
                let _ = fs_err::remove_file(&partial);
                return Err(Cancelled.into());
            }
        }
        cache.commit(&partial, &digest).map_err(ImageError::Cache)
    }

    /// A kernel by name: stored, else pulled from the kernel catalog, else (for the distro
    /// kernel's name) imported from the distro.
    pub(crate) async fn kernel_by_ref(
        &self,
        name: &str,
        progress: &Arc<Progress>,
    ) -> Result<KernelRecord, ImageError> {
        if let Some(k) = self.find_kernel(name).await?
            && Path::new(&k.vmlinux_path).exists()
        {
            return Ok(k);
        }
        if self.kernel_entry(name).is_some() {
            self.kernel_pull(name, progress).await?;
            return self
                .find_kernel(name)
                .await?
                .ok_or(ImageError::Vanished(Kind::Kernel));
        }
        if name == DISTRO_KERNEL_NAME {
            return self.ensure_kernel(name).await;
        }
        Err(ImageError::KernelNotPullable(name.to_owned()))
    }

    /// Pulls the catalog image `entry` as `name`.
    pub(crate) async fn pull_bundle(
        &self,
        entry: &ImageCatalogEntry,
        name: &str,
        kernel: Option<&str>,
        progress: &Arc<Progress>,
    ) -> Result<ImageInfo, ImageError> {
        progress.stage("kernel")?;
        let kernel = self
            .kernel_by_ref(kernel.unwrap_or(&entry.kernel_ref), progress)
            .await?;
        progress.stage(&format!("bundle {}", mb(entry.size)))?;
        let file = self
            .fetch_bundle(&entry.url, &entry.sha256, entry.size, progress)
            .await?;
        progress.stage("unpack")?;
        let images = self.infra.layout.images_dir();
        fs_err::create_dir_all(&images).map_err(io("images dir"))?;
        let mut guard = Staging::under(&images);
        let staging = guard.path();
        let (st, runner) = (staging.clone(), Arc::clone(&self.infra.runner));
        let (manifest, size) = blocking(move || -> Result<_, ImageError> {
            fs_err::create_dir_all(&st).map_err(io("staging"))?;
            let manifest = bundle::unpack_image(&file, &st).map_err(ImageError::Bundle)?;
            let rootfs = st.join("rootfs.ext4");
            // The image's /root becomes its work seed.
            banger_host::disk::rdump(runner.as_ref(), &rootfs, "/root", &st).map_err(|source| {
                ImageError::Disk {
                    step: "work seed",
                    source,
                }
            })?;
            if st.join("root").is_dir() {
                fs_err::rename(st.join("root"), st.join("work-seed")).map_err(io("work seed"))?;
            }
            let size = fs_err::metadata(&rootfs).map_or(0, |m| m.len());
            Ok((manifest, size))
        })
        .await?;
        progress.stage("publish")?;
        let final_dir = images.join(name);
        let work_seed = final_dir.join("work-seed");
        let record = ImageRecord {
            id: new_id(),
            name: name.to_owned(),
            source: format!("catalog:{}", entry.name),
            managed: true,
            rootfs_path: final_dir.join("rootfs.ext4").display().to_string(),
            work_seed_path: staging
                .join("work-seed")
                .is_dir()
                .then(|| work_seed.display().to_string()),
            kernel_id: Some(kernel.id.clone()),
            digest: Some(format!("sha256:{}", entry.sha256)),
            config: serde_json::json!({
                "bundle": entry.url,
                "distro": manifest.distro,
                "layers": [format!("sha256:{}", entry.sha256.to_ascii_lowercase())],
            }),
            size_bytes: size,
            created_at: self.infra.clock.now_rfc3339(),
        };
        self.publish(
            Record::Image(record.clone()),
            Some((&mut guard, &final_dir)),
            Existing::Refuse,
        )
        .await?;
        info!(image = name, bundle = entry.url, "catalog image pulled");
        self.info_of(record).await
    }

    /// `kernel pull NAME`: fetches a kernel bundle from the catalog (coalesced with other
    /// kernel work through the build lock).
    pub async fn kernel_pull(
        &self,
        name: &str,
        progress: &Arc<Progress>,
    ) -> Result<KernelInfo, ImageError> {
        let entry = self
            .kernel_entry(name)
            .ok_or_else(|| ImageError::KernelNotInCatalog(name.to_owned()))?;
        let _build = self.build.lock().await;
        if let Some(k) = self.find_kernel(name).await?
            && Path::new(&k.vmlinux_path).exists()
        {
            return Ok(kernel_info(&k));
        }
        let file = self
            .fetch_bundle(&entry.url, &entry.sha256, entry.size, progress)
            .await?;
        let kernels = self.infra.layout.kernels_dir();
        fs_err::create_dir_all(&kernels).map_err(io("kernels dir"))?;
        let mut guard = Staging::under(&kernels);
        let staging = guard.path();
        let st = staging.clone();
        let sha = blocking(move || -> Result<_, ImageError> {
            fs_err::create_dir_all(&st).map_err(io("staging"))?;
            bundle::unpack_kernel(&file, &st).map_err(ImageError::Bundle)?;
            banger_image::sha256_file(&st.join("vmlinux")).map_err(super::error::file("kernel"))
        })
        .await?;
        let final_dir = kernels.join(name);
        let record = KernelRecord {
            id: new_id(),
            name: name.to_owned(),
            version: entry.version.clone(),
            source: format!("catalog:{}", entry.url),
            managed: true,
            vmlinux_path: final_dir.join("vmlinux").display().to_string(),
            initrd_path: staging
                .join("initrd.img")
                .is_file()
                .then(|| final_dir.join("initrd.img").display().to_string()),
            modules_dir: staging
                .join("modules")
                .is_dir()
                .then(|| final_dir.join("modules").display().to_string()),
            sha256: sha,
            created_at: self.infra.clock.now_rfc3339(),
        };
        self.publish(
            Record::Kernel(record.clone()),
            Some((&mut guard, &final_dir)),
            Existing::Replace,
        )
        .await?;
        info!(kernel = name, "kernel pulled");
        Ok(kernel_info(&record))
    }

    /// The kernel catalog with what is pulled.
    pub async fn kernel_catalog(&self) -> Result<Vec<KernelCatalogInfo>, ImageError> {
        let stored = with_store(&self.infra.store, Store::list_kernels).await?;
        Ok(catalog::kernels(&self.infra.config.kernel_catalog)
            .into_iter()
            .map(|e| KernelCatalogInfo {
                pulled: stored.iter().any(|k| k.name == e.name),
                name: e.name,
                version: e.version,
                size_bytes: e.size,
                url: e.url,
            })
            .collect())
    }

    /// Writes image `name` as a bundle to `output` (absolute path): its rootfs with the work
    /// seed put back under /root, and a manifest; with its sha256 for a catalog entry.
    pub async fn export(&self, name: &str, output: &str) -> Result<ImageExportResult, ImageError> {
        let out = PathBuf::from(output);
        if !out.is_absolute() {
            return Err(ImageError::NotAbsolute {
                what: "output",
                path: output.to_owned(),
            });
        }
        let image = self.get_image(name).await?;
        let kernels = with_store(&self.infra.store, Store::list_kernels).await?;
        let kernel_ref = image
            .kernel_id
            .as_ref()
            .and_then(|id| kernels.iter().find(|k| &k.id == id))
            .map(|k| k.name.clone())
            .unwrap_or_default();
        let runner = Arc::clone(&self.infra.runner);
        let scratch_root = self.infra.layout.cache_dir.clone();
        let manifest = bundle::ImageBundleManifest {
            name: image.name.clone(),
            distro: image
                .config
                .get("distro")
                .and_then(|d| d.as_str())
                .unwrap_or_default()
                .to_owned(),
            arch: "amd64".into(),
            kernel_ref,
        };
        let (path, out_path) = (output.to_owned(), out.clone());
        let sha256 = blocking(move || -> Result<_, ImageError> {
            fs_err::create_dir_all(&scratch_root).map_err(io("scratch"))?;
            let scratch = tempfile::tempdir_in(&scratch_root).map_err(io("scratch"))?;
            let rootfs = scratch.path().join("rootfs.ext4");
            banger_host::disk::cow_copy(runner.as_ref(), Path::new(&image.rootfs_path), &rootfs)
                .map_err(ImageError::CopyRootfs)?;
            if let Some(seed) = image.work_seed_path.as_deref().map(Path::new)
                && seed.is_dir()
            {
                seed_into(runner.as_ref(), seed, &rootfs)?;
            }
            let tmp = out.with_extension("partial");
            let written = bundle::write_image(&rootfs, &manifest, &tmp)
                .map_err(ImageError::Bundle)
                .and_then(|()| fs_err::rename(&tmp, &out).map_err(io("output")));
            if written.is_err() {
                let _ = fs_err::remove_file(&tmp);
            }
            written?;
            banger_image::sha256_file(&out).map_err(file("sha256"))
        })
        .await?;
        let size = fs_err::metadata(&out_path).map_or(0, |m| m.len());
        Ok(ImageExportResult { path, sha256, size })
    }
}

/// Writes the files and symlinks of `seed` under /root in `rootfs`.
fn seed_into(
    runner: &dyn banger_host::CommandRunner,
    seed: &Path,
    rootfs: &Path,
) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut files = Vec::new();
    let mut links: Vec<(String, String)> = Vec::new();
    for e in walkdir::WalkDir::new(seed)
        .min_depth(1)
        .into_iter()
        .filter_map(Result::ok)
    {
        let rel = e.path().strip_prefix(seed).unwrap_or(e.path());
        let guest = format!("/root/{}", rel.display());
        let Ok(meta) = e.path().symlink_metadata() else {
            continue;
        };
        if meta.file_type().is_symlink() {
            if let Ok(t) = fs_err::read_link(e.path()) {
                links.push((guest, t.display().to_string()));
            }
        } else if meta.is_file() {
            files.push(banger_host::disk::ImageFile {
                guest_path: guest,
                host_path: e.path().to_owned(),
                mode: meta.permissions().mode() & 0o7777,
            });
        }
    }
    let links: Vec<(&str, &str)> = links
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    banger_host::disk::write_entries(runner, rootfs, &files, &links).map_err(|source| {
        ImageError::Disk {
            step: "work seed",
            source,
        }
    })
}
