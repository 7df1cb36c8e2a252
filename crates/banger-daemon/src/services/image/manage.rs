//! Managing stored images: register (unmanaged, paths kept), promote (copied into banger's
//! storage) and delete (refused while a VM uses the image).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_api::types::{ImageInfo, ImageRegisterParams, KernelImportParams};
use banger_store::ImageRecord;
use tracing::info;

use super::error::io;
use super::publish::{Existing, Record, Staging};
use super::{ImageError, ImageService, Kind, absolute_file, validate_name};
use crate::services::support::{blocking, new_id, with_store};

impl ImageService {
    /// Deletes an image and, when managed, its files. Refused while a VM uses it.
    pub async fn delete(&self, name: &str) -> Result<ImageInfo, ImageError> {
        let _publish = self.publication.lock().await;
        let rec = self.get_image(name).await?;
        let id = rec.id.clone();
        let users = with_store(&self.infra.store, move |s| s.vms_using_image(&id)).await?;
        if !users.is_empty() {
            return Err(ImageError::InUse {
                kind: Kind::Image,
                name: name.to_owned(),
                users: users.join(", "),
            });
        }
        let id = rec.id.clone();
        let snaps = with_store(&self.infra.store, move |s| s.snapshots_of_image(&id)).await?;
        if !snaps.is_empty() {
            return Err(ImageError::InUse {
                kind: Kind::Image,
                name: name.to_owned(),
                users: format!("snapshot(s) {}", snaps.join(", ")),
            });
        }
        // Its warm-start templates go with it (rows first; a kill leaves dirs the next
        // start sweeps).
        let id = rec.id.clone();
        let templates = with_store(&self.infra.store, move |s| {
            let t = s.delete_image_templates(&id)?;
            s.delete_image(&id)?;
            Ok(t)
        })
        .await?;
        for t in templates {
            let _ = fs_err::remove_dir_all(self.infra.layout.state_dir.join("snapshots").join(t));
        }
        // The disk layers only they read through go with them.
        let layers = std::sync::Arc::clone(&self.infra.layers);
        let _ = tokio::task::spawn_blocking(move || layers.collect()).await;
        if rec.managed
            && let Some(dir) = Path::new(&rec.rootfs_path).parent()
            && dir.starts_with(self.infra.layout.images_dir())
        {
            let _ = fs_err::remove_dir_all(dir);
        }
        info!(image = name, "image deleted");
        self.info_of(rec).await
    }

    /// Registers an unmanaged image (absolute paths stored; nothing copied).
    pub async fn register(&self, p: ImageRegisterParams) -> Result<ImageInfo, ImageError> {
        validate_name(Kind::Image, &p.name)?;
        let rootfs = absolute_file("rootfs", &p.rootfs, false)?;
        let kernel = match (&p.kernel, &p.kernel_ref) {
            (Some(_), Some(_)) => {
                return Err(ImageError::BadArguments(
                    "give either --kernel or --kernel-ref, not both",
                ));
            }
            (None, None) => return Err(ImageError::BadArguments("an image needs a kernel")),
            (None, Some(k)) => self.get_kernel(k).await?,
            (Some(path), None) => {
                let kname = format!("{}-kernel", p.name);
                self.import_kernel_files(KernelImportParams {
                    from_distro: false,
                    name: Some(kname.clone()),
                    vmlinux: Some(path.clone()),
                    initrd: p.initrd.clone(),
                    modules: p.modules.clone(),
                })
                .await?;
                self.get_kernel(&kname).await?
            }
        };
        let size = fs_err::metadata(&rootfs).map_or(0, |m| m.len());
        let record = ImageRecord {
            id: new_id(),
            name: p.name.clone(),
            source: "register".into(),
            managed: false,
            rootfs_path: rootfs.display().to_string(),
            work_seed_path: None,
            kernel_id: Some(kernel.id.clone()),
            digest: None,
            config: serde_json::json!({}),
            size_bytes: size,
            created_at: self.infra.clock.now_rfc3339(),
        };
        self.publish(Record::Image(record.clone()), None, Existing::Refuse)
            .await?;
        self.info_of(record).await
    }

    /// Copies an unmanaged image's rootfs into banger's storage and marks it managed.
    pub async fn promote(&self, name: &str) -> Result<ImageInfo, ImageError> {
        let rec = self.get_image(name).await?;
        if rec.managed {
            return Err(ImageError::AlreadyManaged(name.to_owned()));
        }
        let images = self.infra.layout.images_dir();
        let mut staging = Staging::under(&images);
        let runner = Arc::clone(&self.infra.runner);
        let (src, st) = (PathBuf::from(&rec.rootfs_path), staging.path());
        blocking(move || -> Result<_, ImageError> {
            fs_err::create_dir_all(&st).map_err(io("staging"))?;
            banger_host::disk::cow_copy(runner.as_ref(), &src, &st.join("rootfs.ext4"))
                .map_err(ImageError::CopyRootfs)
        })
        .await?;
        let final_dir = images.join(name);
        let mut promoted = rec.clone();
        promoted.managed = true;
        promoted.rootfs_path = final_dir.join("rootfs.ext4").display().to_string();
        self.publish(
            Record::Image(promoted.clone()),
            Some((&mut staging, &final_dir)),
            Existing::Unmanaged(rec.id.clone()),
        )
        .await?;
        self.info_of(promoted).await
    }
}
