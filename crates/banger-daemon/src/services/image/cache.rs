//! The layer blob cache (`image cache prune`) and the leftovers a killed daemon leaves
//! (staging dirs, tmpfs flatten dirs, partial downloads), removed at start.

use std::collections::HashSet;

use banger_api::types::{CachePruneParams, CachePruneResult};
use banger_image::oci::BlobCache;
use banger_store::Store;
use tracing::info;

use super::{ImageError, ImageService};
use crate::services::support::{blocking, lock, with_store};

impl ImageService {
    /// The layer and bundle cache.
    pub(super) fn cache(&self) -> BlobCache {
        BlobCache::new(self.infra.layout.cache_dir.join("blobs"))
    }

    /// Name prefix of this daemon's flatten dirs on tmpfs: per uid and per state dir, so
    /// two daemons never clean each other's dirs.
    pub(super) fn tmpfs_prefix(&self) -> String {
        let home = self.infra.layout.images_dir().display().to_string();
        format!(
            "banger-{}-{}-staging-",
            banger_config::layout::current_uid(),
            super::short_tag(&home)
        )
    }

    /// Removes what a killed daemon left: staging dirs of images and kernels, tmpfs flatten
    /// dirs, partial downloads. Runs at start, before anything is served.
    pub fn clean_leftovers(&self) -> usize {
        let mut removed = 0;
        let remove_matching = |dir: &std::path::Path, prefix: &str| {
            let mut n = 0;
            if let Ok(entries) = fs_err::read_dir(dir) {
                for e in entries.filter_map(Result::ok) {
                    if e.file_name().to_string_lossy().starts_with(prefix)
                        && fs_err::remove_dir_all(e.path()).is_ok()
                    {
                        n += 1;
                    }
                }
            }
            n
        };
        for dir in [
            self.infra.layout.images_dir(),
            self.infra.layout.kernels_dir(),
        ] {
            removed += remove_matching(&dir, ".staging-");
        }
        // A workspace prepare's staging repository (a tempdir a kill leaves behind).
        removed += remove_matching(&self.infra.layout.cache_dir, ".workspace-");
        removed += remove_matching(std::path::Path::new("/dev/shm"), &self.tmpfs_prefix());
        removed += self.cache().clean_partials();
        if removed > 0 {
            info!(
                removed,
                "removed leftovers of interrupted image and workspace work"
            );
        }
        removed
    }

    /// Removes cached blobs: those no stored image was pulled from, or all with `all`.
    pub async fn cache_prune(&self, p: CachePruneParams) -> Result<CachePruneResult, ImageError> {
        let images = with_store(&self.infra.store, Store::list_images).await?;
        let mut keep: HashSet<String> = HashSet::new();
        if !p.all {
            for i in &images {
                if let Some(layers) = i.config.get("layers").and_then(|l| l.as_array()) {
                    keep.extend(layers.iter().filter_map(|d| d.as_str().map(str::to_owned)));
                }
            }
        }
        // Blobs of pulls under way stay.
        let busy = lock(&self.inflight).busy();
        if busy && !p.dry_run {
            return Err(ImageError::PullUnderWay);
        }
        let cache = self.cache();
        let dry = p.dry_run;
        let report = blocking(move || Ok::<_, ImageError>(cache.prune(&keep, dry))).await?;
        Ok(CachePruneResult {
            blobs: report.blobs,
            bytes: report.bytes,
            dry_run: p.dry_run,
        })
    }
}
