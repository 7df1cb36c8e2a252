//! The built-in default image (`debian-bookworm`): built once with debootstrap from the
//! Debian mirror, and rebuilt when its recipe is outdated and no VM uses it.

use std::sync::Arc;

use banger_store::{ImageRecord, KernelRecord};
use tracing::info;

use super::publish::{Existing, Record, Staging};
use super::{DISTRO_KERNEL_NAME, ImageError, ImageService};
use crate::services::support::{blocking, new_id, random_suffix, with_store};

impl ImageService {
    /// Whether `image` is the built-in default built from an older recipe and no VM uses it
    /// (then it is rebuilt; images in use are kept).
    pub(super) async fn outdated_default(&self, image: &ImageRecord) -> Result<bool, ImageError> {
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

    /// Builds the default image `name` (and the distro kernel) unless a current one exists.
    pub(super) async fn build_default(
        &self,
        name: &str,
    ) -> Result<(ImageRecord, KernelRecord), ImageError> {
        let kernel = self.ensure_kernel(DISTRO_KERNEL_NAME).await?;
        let _build = self.build.lock().await;
        // Looked up without `lookup`: it refreshes initramfs images under `build`, held here.
        if let Some(image) = self.find_image(name).await?
            && std::path::Path::new(&image.rootfs_path).exists()
            && !self.outdated_default(&image).await?
        {
            return Ok((image, kernel));
        }
        info!(
            image = name,
            "building the default image with debootstrap (once)"
        );
        let images = self.infra.layout.images_dir();
        let mut staging = Staging::under(&images);
        let work = Staging::guard(
            self.infra
                .layout
                .cache_dir
                .join(format!("image-work-{}", random_suffix())),
        );
        let runner = Arc::clone(&self.infra.runner);
        let (st, wk) = (staging.path(), work.path());
        let size = blocking(move || -> Result<_, ImageError> {
            let mirror = banger_image::rootfs::configured_mirror();
            banger_image::rootfs::build_debian(runner.as_ref(), "bookworm", &mirror, &wk, &st)
                .map_err(ImageError::ImageBuild)
        })
        .await?;
        let final_dir = images.join(name);
        let record = ImageRecord {
            id: new_id(),
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
        self.publish(
            Record::Image(record.clone()),
            Some((&mut staging, &final_dir)),
            Existing::Replace,
        )
        .await?;
        info!(image = name, "image built");
        Ok((record, kernel))
    }
}
