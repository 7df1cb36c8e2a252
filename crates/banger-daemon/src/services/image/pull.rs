//! OCI pulls: `image.pull.begin/status/cancel` as asynchronous operations.
//!
//! A pull resolves the manifest, downloads missing layer blobs into the cache (sha256
//! checked while streaming), flattens them into a staging dir, makes the tree bootable and
//! builds the ext4 — all without a lock — then publishes. Two pulls of one reference and
//! name share one operation; a pull whose name another pull is producing fails at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_api::types::{ImageInfo, ImagePullParams, OpBegun, OpStatus};
use banger_image::layers::LayerError;
use banger_image::oci;
use banger_image::registry::{self, Puller};
use banger_store::ImageRecord;
use tracing::info;

use super::error::io;
use super::publish::{Existing, Record, Staging};
use super::{DISTRO_KERNEL_NAME, ImageError, ImageService, Kind, oci_source, validate_name};
use crate::ops::OpRegistry;
use crate::progress::{AsyncOps, OpError, OpOutput, Progress};
use crate::services::support::{Cancelled, blocking, lock, mb, new_id, random_suffix};

/// Pulls under way: `(source, name)` → op id, and the names they are producing.
#[derive(Debug, Default)]
pub(crate) struct Inflight {
    by_key: HashMap<(String, String), String>,
    names: HashMap<String, String>,
}

impl Inflight {
    /// Whether any pull runs.
    pub(crate) fn busy(&self) -> bool {
        !self.by_key.is_empty()
    }

    /// The op already pulling `key`, or an error when another pull produces its name.
    fn joinable(&self, key: &(String, String)) -> Result<Option<OpBegun>, ImageError> {
        if let Some(op_id) = self.by_key.get(key) {
            info!(op_id, reference = key.0, "joining the pull under way");
            return Ok(Some(OpBegun {
                op_id: op_id.clone(),
            }));
        }
        if let Some(other) = self.names.get(&key.1) {
            return Err(ImageError::BeingPulled {
                name: key.1.clone(),
                op: other.clone(),
            });
        }
        Ok(None)
    }
}

/// Releases a pull's in-flight entries when the pull ends (whatever way).
struct InflightGuard {
    service: Arc<ImageService>,
    key: (String, String),
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut inflight = lock(&self.service.inflight);
        inflight.by_key.remove(&self.key);
        inflight.names.remove(&self.key.1);
    }
}

/// The blobs a failed flatten shows to be bad (their bytes do not unpack or hash right):
/// not worth keeping in the cache.
fn bad_blobs(e: &ImageError) -> Option<&str> {
    match e {
        ImageError::Flatten(LayerError::Digest { layer, .. } | LayerError::Io { layer, .. }) => {
            Some(layer)
        }
        _ => None,
    }
}

impl ImageService {
    async fn name_free(&self, name: &str) -> Result<(), ImageError> {
        if self.find_image(name).await?.is_some() {
            return Err(ImageError::NameTaken(Kind::Image, name.to_owned()));
        }
        Ok(())
    }

    /// Registers a pull of `key` (source, name) and runs `work` as its operation, unless one
    /// is already under way (then its op is returned). The op is registered first, then the
    /// in-flight map is checked and filled under its own lock alone; a begin that lost the
    /// race discards its op and joins the winner.
    fn start_pull<F>(
        self: &Arc<Self>,
        key: (String, String),
        ops: &Arc<OpRegistry>,
        work: impl FnOnce(Arc<Self>, Arc<Progress>) -> F,
    ) -> Result<OpBegun, ImageError>
    where
        F: std::future::Future<Output = Result<ImageInfo, ImageError>> + Send + 'static,
    {
        let op = self
            .pulls
            .begin(ops, "image.pull", self.infra.clock.now_rfc3339());
        let joined = {
            let mut inflight = lock(&self.inflight);
            match inflight.joinable(&key) {
                Ok(None) => {
                    inflight.by_key.insert(key.clone(), op.op_id.clone());
                    inflight.names.insert(key.1.clone(), op.op_id.clone());
                    Ok(None)
                }
                other => other,
            }
        };
        match joined {
            Ok(None) => {}
            Ok(Some(begun)) => {
                self.pulls.discard(&op.op_id);
                return Ok(begun);
            }
            Err(e) => {
                self.pulls.discard(&op.op_id);
                return Err(e);
            }
        }
        let release = InflightGuard {
            service: Arc::clone(self),
            key,
        };
        let fut = work(Arc::clone(self), Arc::clone(&op.progress));
        let op_id = op.op_id.clone();
        AsyncOps::run(
            op,
            "image.pull",
            |i| OpOutput::Image(Box::new(i)),
            async move {
                let _release = release;
                fut.await
            },
        );
        Ok(OpBegun { op_id })
    }

    /// Begins a pull, or joins the one already pulling this reference to this name.
    pub async fn begin_pull(
        self: &Arc<Self>,
        p: ImagePullParams,
        ops: &Arc<OpRegistry>,
    ) -> Result<OpBegun, ImageError> {
        if let Some(entry) = self.image_entry(&p.reference) {
            let name = p.name.clone().unwrap_or_else(|| entry.name.clone());
            validate_name(Kind::Image, &name)?;
            let key = (format!("catalog:{}", entry.name), name.clone());
            if let Some(begun) = lock(&self.inflight).joinable(&key)? {
                return Ok(begun);
            }
            self.name_free(&name).await?;
            return self.start_pull(key, ops, move |this, progress| async move {
                this.pull_bundle(&entry, &name, p.kernel.as_deref(), &progress)
                    .await
            });
        }
        let image =
            registry::parse_ref(&p.reference, p.insecure).map_err(ImageError::BadReference)?;
        let name = p
            .name
            .clone()
            .unwrap_or_else(|| registry::default_name(&image.reference));
        validate_name(Kind::Image, &name)?;
        let key = (image.reference.whole(), name.clone());
        if let Some(begun) = lock(&self.inflight).joinable(&key)? {
            return Ok(begun);
        }
        self.name_free(&name).await?;
        if let Some(k) = &p.kernel {
            self.get_kernel(k).await?;
        }
        self.start_pull(key, ops, move |this, progress| async move {
            this.pull(image, name, p, &progress).await
        })
    }

    /// Progress of a pull (long-poll).
    pub async fn pull_status(
        &self,
        op_id: &str,
        seen: usize,
        wait: Duration,
    ) -> Result<OpStatus, OpError> {
        self.pulls.status(op_id, seen, wait).await
    }

    /// Cancels a pull.
    pub fn pull_cancel(&self, op_id: &str) -> Result<OpStatus, OpError> {
        self.pulls.cancel(op_id)
    }

    /// Pulls `image` as `name` (see the module doc).
    pub(super) async fn pull(
        &self,
        image: registry::ImageRef,
        name: String,
        p: ImagePullParams,
        progress: &Arc<Progress>,
    ) -> Result<ImageInfo, ImageError> {
        let started = Instant::now();
        let kernel = match &p.kernel {
            Some(k) => self.get_kernel(k).await?,
            None => {
                progress.stage("kernel")?;
                self.ensure_kernel(DISTRO_KERNEL_NAME).await?
            }
        };
        progress.stage("manifest")?;
        let puller = Puller::new(image.clone(), registry::docker_config_path().as_deref());
        let resolved = puller
            .resolve()
            .await
            .map_err(|source| ImageError::Manifest {
                source,
                hub: image.reference.registry().contains("docker.io"),
            })?;
        let cache = self.cache();
        let total_layers = resolved.layers.len();
        let mut blobs = Vec::new();
        let mut downloaded = 0u64;
        for (i, layer) in resolved.layers.iter().enumerate() {
            let label = format!(
                "layer {}/{total_layers} {} {}",
                i + 1,
                oci::short(&layer.digest),
                mb(layer.size)
            );
            let path = cache
                .path(&layer.digest)
                .ok_or_else(|| ImageError::UnsupportedDigest(layer.digest.clone()))?;
            if cache.has(&layer.digest, layer.size) {
                progress.stage(&format!("{label} (cached)"))?;
                blobs.push((layer.clone(), path));
                continue;
            }
            progress.stage(&label)?;
            let partial = cache.partial(&layer.digest).map_err(ImageError::Cache)?;
            let on_bytes = progress.byte_meter(layer.size);
            let fetch = puller.fetch_blob(layer, &partial, &on_bytes);
            tokio::select! {
                r = fetch => r.map_err(ImageError::Download)?,
                () = progress.cancelled() => {
                    let _ = fs_err::remove_file(&partial);
                    return Err(Cancelled.into());
                }
            }
            downloaded += layer.size;
            let path = cache
                .commit(&partial, &layer.digest)
                .map_err(ImageError::Cache)?;
            blobs.push((layer.clone(), path));
        }
        progress.stage("flatten")?;
        let images = self.infra.layout.images_dir();
        fs_err::create_dir_all(&images).map_err(io("images dir"))?;
        let mut staging = Staging::under(&images);
        let runner = Arc::clone(&self.infra.runner);
        let prog = Arc::clone(progress);
        let st = staging.path();
        let layers_for_flatten = blobs.clone();
        // The tree goes to tmpfs when there is room (several times faster than disk); the
        // ext4 is built next to its final place either way.
        let unpacked: u64 = resolved
            .layers
            .iter()
            .map(|l| match registry::compression(&l.media_type) {
                Some(registry::Compression::None) => l.size,
                _ => l.size.saturating_mul(3),
            })
            .sum();
        let tree = match oci::fast_staging_root(unpacked) {
            Some(root) => root.join(format!("{}{}", self.tmpfs_prefix(), random_suffix())),
            None => st.join("tree"),
        };
        let _tree_guard = Staging::guard(tree.clone());
        let (boot, size) = blocking(move || -> Result<_, ImageError> {
            fs_err::create_dir_all(&tree).map_err(io("staging"))?;
            oci::flatten(&tree, &layers_for_flatten).map_err(ImageError::Flatten)?;
            let boot = oci::make_bootable(&tree).map_err(ImageError::MakeBootable)?;
            prog.stage("ext4")?;
            let size = oci::build_rootfs(runner.as_ref(), &tree, &st).map_err(ImageError::Ext4)?;
            fs_err::remove_dir_all(&tree).map_err(io("staging"))?;
            Ok((boot, size))
        })
        .await
        .inspect_err(|e| {
            if let Some(layer) = bad_blobs(e) {
                for (l, _) in blobs.iter().filter(|(l, _)| oci::short(&l.digest) == layer) {
                    cache.evict(&l.digest);
                }
            }
        })?;
        progress.stage("publish")?;
        let final_dir = images.join(&name);
        let whole = image.reference.whole();
        let details = serde_json::json!({
            "reference": whole,
            "entrypoint": resolved.config.entrypoint,
            "cmd": resolved.config.cmd,
            "env": resolved.config.env,
            "workdir": resolved.config.workdir,
            "user": resolved.config.user,
            "layers": resolved.layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>(),
            "systemd": boot.systemd,
            "sshd": boot.sshd,
            "init": boot.needs_first_boot().then_some(oci::FIRST_BOOT_INIT),
        });
        let record = ImageRecord {
            id: new_id(),
            name: name.clone(),
            source: oci_source(&whole),
            managed: true,
            rootfs_path: final_dir.join("rootfs.ext4").display().to_string(),
            work_seed_path: Some(final_dir.join("work-seed").display().to_string()),
            kernel_id: Some(kernel.id.clone()),
            digest: Some(resolved.manifest_digest.clone()),
            config: details,
            size_bytes: size,
            created_at: self.infra.clock.now_rfc3339(),
        };
        self.publish(
            Record::Image(record.clone()),
            Some((&mut staging, &final_dir)),
            Existing::Refuse,
        )
        .await?;
        info!(
            image = name,
            reference = whole,
            layers = total_layers,
            downloaded,
            secs = started.elapsed().as_secs_f64(),
            "image pulled"
        );
        self.info_of(record).await
    }
}
