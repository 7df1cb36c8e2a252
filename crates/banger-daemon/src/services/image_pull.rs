//! `ImageService`, part two: OCI pulls, register/promote/delete/show, the layer cache, and
//! kernel show/rm/import-from-files.
//!
//! A pull resolves the manifest, downloads missing layer blobs into the cache (sha256
//! checked while streaming), flattens them into a staging dir, makes the tree bootable and
//! builds the ext4 — all without a lock. Only publication (re-check the name, rename the
//! staging dir, upsert the row) holds the image publication lock. Two pulls of one
//! reference and name share one operation; a pull whose name another pull is producing
//! fails at once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_api::types::{
    CachePruneParams, CachePruneResult, CreateStatus, ImageInfo, ImagePullParams,
    ImageRegisterParams, KernelImportParams, KernelInfo, OpBegun,
};
use banger_api::{ErrorCode, RpcError};
use banger_image::oci::{self, BlobCache};
use banger_image::registry::{self, Puller};
use banger_store::{ImageRecord, KernelRecord};
use tracing::{info, warn};

use super::image::{
    DISTRO_KERNEL_NAME, ImageService, blocking, failed, kernel_info, random_suffix, swap_in,
    with_store,
};
use crate::error::chain;
use crate::ops::OpRegistry;
use crate::progress::{OpOutput, Progress, lock, mb};

/// Pulls under way: `(reference, name)` → op id, and the names they are producing.
#[derive(Debug, Default)]
pub(crate) struct Inflight {
    by_key: HashMap<(String, String), String>,
    names: HashMap<String, String>,
}

fn bad(msg: impl Into<String>) -> RpcError {
    RpcError::new(ErrorCode::BadRequest, msg)
}

/// Image and kernel names: what a file name and a DNS label can both hold.
pub(crate) fn validate_name(kind: &str, name: &str) -> Result<(), RpcError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(bad(format!("invalid {kind} name {name:?}"))
            .with_hint("use 1-64 of a-z, 0-9, '-', '_', '.', starting with a letter or digit"))
    }
}

fn absolute_file(what: &str, path: &str, dir: bool) -> Result<PathBuf, RpcError> {
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(bad(format!("{what} {path:?} is not an absolute path"))
            .with_hint("the CLI makes paths absolute; over the API pass absolute paths"));
    }
    let ok = if dir { p.is_dir() } else { p.is_file() };
    if !ok {
        return Err(bad(format!(
            "{what} {path:?} is not {}",
            if dir { "a directory" } else { "a file" }
        )));
    }
    Ok(p)
}

/// Removes a staging dir when dropped, unless published.
pub(crate) struct Staging(pub(crate) Option<PathBuf>);

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs_err::remove_dir_all(p);
        }
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

impl ImageService {
    pub(crate) fn info(i: ImageRecord, kernels: &[KernelRecord]) -> ImageInfo {
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

    async fn info_of(&self, rec: ImageRecord) -> Result<ImageInfo, RpcError> {
        let kernels = with_store(&self.infra.store, banger_store::Store::list_kernels).await?;
        Ok(Self::info(rec, &kernels))
    }

    /// Removes what a killed daemon left: staging dirs of images and kernels, partial
    /// downloads. Runs at start, before anything is served.
    pub fn clean_leftovers(&self) -> usize {
        let mut removed = 0;
        for dir in [
            self.infra.layout.images_dir(),
            self.infra.layout.kernels_dir(),
        ] {
            if let Ok(entries) = fs_err::read_dir(&dir) {
                for e in entries.filter_map(Result::ok) {
                    if e.file_name().to_string_lossy().starts_with(".staging-")
                        && fs_err::remove_dir_all(e.path()).is_ok()
                    {
                        removed += 1;
                    }
                }
            }
        }
        if let Ok(entries) = fs_err::read_dir("/dev/shm") {
            let prefix = self.tmpfs_prefix();
            for e in entries.filter_map(Result::ok) {
                if e.file_name().to_string_lossy().starts_with(&prefix)
                    && fs_err::remove_dir_all(e.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        removed += self.cache().clean_partials();
        if removed > 0 {
            info!(removed, "removed leftovers of interrupted image work");
        }
        removed
    }

    /// Name prefix of this daemon's flatten dirs on tmpfs.
    fn tmpfs_prefix(&self) -> String {
        // Per uid and per state dir: two daemons never clean each other's dirs.
        let home = self.infra.layout.images_dir().display().to_string();
        let tag = home.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!(
            "banger-{}-{:08x}-staging-",
            banger_config::layout::current_uid(),
            tag as u32
        )
    }

    pub(crate) fn cache(&self) -> BlobCache {
        BlobCache::new(self.infra.layout.cache_dir.join("blobs"))
    }

    /// The op already pulling `key`, or an error when another pull produces `name`.
    fn joinable(&self, key: &(String, String)) -> Result<Option<OpBegun>, RpcError> {
        Self::joinable_in(&lock(&self.inflight), key)
    }

    fn joinable_in(
        inflight: &Inflight,
        key: &(String, String),
    ) -> Result<Option<OpBegun>, RpcError> {
        if let Some(op_id) = inflight.by_key.get(key) {
            info!(op_id, reference = key.0, "joining the pull under way");
            return Ok(Some(OpBegun {
                op_id: op_id.clone(),
            }));
        }
        if let Some(other) = inflight.names.get(&key.1) {
            return Err(RpcError::new(
                ErrorCode::AlreadyExists,
                format!("image {:?} is being pulled by {other}", key.1),
            )
            .with_hint("pick another name with --name"));
        }
        Ok(None)
    }

    async fn name_free(&self, name: &str) -> Result<(), RpcError> {
        let taken = name.to_owned();
        if with_store(&self.infra.store, move |s| s.get_image(&taken))
            .await?
            .is_some()
        {
            return Err(RpcError::new(
                ErrorCode::AlreadyExists,
                format!("image {name:?} already exists"),
            )
            .with_hint(format!(
                "`banger image delete {name}` first, or pull under another --name"
            )));
        }
        Ok(())
    }

    /// Registers a pull of `key` (reference, name) and runs `work` as its operation, unless
    /// one is already under way (then its op is returned).
    fn start_pull<F>(
        self: &Arc<Self>,
        key: (String, String),
        ops: &Arc<OpRegistry>,
        work: impl FnOnce(Arc<Self>, Arc<Progress>) -> F,
    ) -> Result<OpBegun, RpcError>
    where
        F: std::future::Future<Output = Result<ImageInfo, RpcError>> + Send + 'static,
    {
        let op_id = crate::ops::new_op_id();
        let op = {
            let mut inflight = lock(&self.inflight);
            // Re-checked under the lock that inserts: another begin may have raced since the
            // first look.
            if let Some(begun) = Self::joinable_in(&inflight, &key)? {
                return Ok(begun);
            }
            inflight.by_key.insert(key.clone(), op_id.clone());
            inflight.names.insert(key.1.clone(), op_id.clone());
            let guard = ops.begin(&op_id, "image.pull", self.infra.clock.now_rfc3339());
            self.pulls.insert(&op_id, guard)
        };
        let release = InflightGuard {
            service: Arc::clone(self),
            key,
        };
        let fut = work(Arc::clone(self), Arc::clone(&op.progress));
        let span = tracing::info_span!("op", op_id = %op_id, method = "image.pull");
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let _release = release;
                let result = fut.await;
                if let Err(e) = &result {
                    warn!("pull failed: {}", e.message);
                }
                op.complete(
                    result
                        .map(|i| OpOutput::Image(Box::new(i)))
                        .map_err(|e| e.with_op_id(op.op_id.clone())),
                );
            },
            span,
        ));
        Ok(OpBegun { op_id })
    }

    /// Begins a pull, or joins the one already pulling this reference to this name.
    pub async fn begin_pull(
        self: &Arc<Self>,
        p: ImagePullParams,
        ops: &Arc<OpRegistry>,
    ) -> Result<OpBegun, RpcError> {
        if let Some(entry) = self.image_entry(&p.reference) {
            let name = p.name.clone().unwrap_or_else(|| entry.name.clone());
            validate_name("image", &name)?;
            let key = (format!("catalog:{}", entry.name), name.clone());
            if let Some(begun) = self.joinable(&key)? {
                return Ok(begun);
            }
            self.name_free(&name).await?;
            return self.start_pull(key, ops, move |this, progress| async move {
                this.pull_bundle(&entry, &name, p.kernel.as_deref(), &progress)
                    .await
            });
        }
        let image = registry::parse_ref(&p.reference, p.insecure).map_err(|e| {
            bad(e.to_string())
                .with_hint("e.g. docker.io/library/debian:bookworm or 127.0.0.1:5000/team/app:v1")
        })?;
        let name = p
            .name
            .clone()
            .unwrap_or_else(|| registry::default_name(&image.reference));
        validate_name("image", &name)?;
        let key = (image.reference.whole(), name.clone());
        if let Some(begun) = self.joinable(&key)? {
            return Ok(begun);
        }
        self.name_free(&name).await?;
        if let Some(k) = &p.kernel {
            let k = k.clone();
            if with_store(&self.infra.store, move |s| s.get_kernel(&k))
                .await?
                .is_none()
            {
                return Err(RpcError::new(
                    ErrorCode::NotFound,
                    format!("kernel {:?} not found", p.kernel.as_deref().unwrap_or("")),
                )
                .with_hint("`banger kernel list` shows kernels"));
            }
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
    ) -> Result<CreateStatus, RpcError> {
        self.pulls.status(op_id, seen, wait).await
    }

    /// Cancels a pull.
    pub fn pull_cancel(&self, op_id: &str) -> Result<CreateStatus, RpcError> {
        self.pulls.cancel(op_id)
    }

    pub(crate) async fn pull(
        &self,
        image: registry::ImageRef,
        name: String,
        p: ImagePullParams,
        progress: &Arc<Progress>,
    ) -> Result<ImageInfo, RpcError> {
        let started = Instant::now();
        let kernel = match &p.kernel {
            Some(k) => {
                let k = k.clone();
                with_store(&self.infra.store, move |s| s.get_kernel(&k))
                    .await?
                    .ok_or_else(|| RpcError::new(ErrorCode::NotFound, "kernel not found"))?
            }
            None => {
                progress.stage("kernel")?;
                self.ensure_kernel(DISTRO_KERNEL_NAME).await?
            }
        };
        progress.stage("manifest")?;
        let puller = Puller::new(image.clone(), registry::docker_config_path().as_deref());
        let resolved = puller.resolve().await.map_err(|e| {
            let hint = if image.reference.registry().contains("docker.io") {
                "check the name and tag; private images need `docker login`"
            } else {
                "check the reference; a registry without TLS needs --insecure (loopback ones are plain HTTP already)"
            };
            RpcError::new(ErrorCode::OperationFailed, chain(&e)).with_hint(hint)
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
                .ok_or_else(|| bad(format!("unsupported digest {:?}", layer.digest)))?;
            if cache.has(&layer.digest, layer.size) {
                progress.stage(&format!("{label} (cached)"))?;
                blobs.push((layer.clone(), path));
                continue;
            }
            progress.stage(&label)?;
            let partial = cache
                .partial(&layer.digest)
                .map_err(|e| failed("cache", &e))?;
            let on_bytes = progress.byte_meter(layer.size);
            let fetch = puller.fetch_blob(layer, &partial, &on_bytes);
            tokio::select! {
                r = fetch => r.map_err(|e| RpcError::new(ErrorCode::OperationFailed, chain(&e)))?,
                () = progress.cancelled() => {
                    let _ = fs_err::remove_file(&partial);
                    return Err(crate::progress::cancelled());
                }
            }
            downloaded += layer.size;
            let path = cache
                .commit(&partial, &layer.digest)
                .map_err(|e| failed("cache", &e))?;
            blobs.push((layer.clone(), path));
        }
        progress.stage("flatten")?;
        let images = self.infra.layout.images_dir();
        fs_err::create_dir_all(&images).map_err(|e| failed("images dir", &e))?;
        let staging_dir = images.join(format!(".staging-{}", random_suffix()));
        let mut staging = Staging(Some(staging_dir.clone()));
        let runner = Arc::clone(&self.infra.runner);
        let prog = Arc::clone(progress);
        let st = staging_dir.clone();
        let layers_for_flatten = blobs.clone();
        // The tree goes to tmpfs when there is room (several times faster than disk); the
        // ext4 is built next to its final place either way.
        let unpacked: u64 = resolved
            .layers
            .iter()
            .map(
                |l| match banger_image::registry::compression(&l.media_type) {
                    Some(banger_image::registry::Compression::None) => l.size,
                    _ => l.size.saturating_mul(3),
                },
            )
            .sum();
        let tree = match oci::fast_staging_root(unpacked) {
            Some(root) => root.join(format!("{}{}", self.tmpfs_prefix(), random_suffix())),
            None => staging_dir.join("tree"),
        };
        let _tree_guard = Staging(Some(tree.clone()));
        let (boot, size) = blocking(move || {
            fs_err::create_dir_all(&tree).map_err(|e| failed("staging", &e))?;
            oci::flatten(&tree, &layers_for_flatten).map_err(|e| {
                RpcError::new(
                    ErrorCode::OperationFailed,
                    format!("cannot flatten the image: {}", chain(&e)),
                )
                .with_hint("the image's layers were refused; nothing was stored")
            })?;
            let boot = oci::make_bootable(&tree).map_err(|e| failed("make bootable", &e))?;
            prog.stage("ext4")?;
            let size =
                oci::build_rootfs(runner.as_ref(), &tree, &st).map_err(|e| failed("ext4", &e))?;
            fs_err::remove_dir_all(&tree).map_err(|e| failed("staging", &e))?;
            Ok((boot, size))
        })
        .await
        .inspect_err(|e| {
            // A blob that does not unpack is not worth keeping.
            if e.message.contains("digest mismatch") || e.message.contains("cannot read") {
                for (l, _) in &blobs {
                    if e.message.contains(&oci::short(&l.digest)) {
                        cache.evict(&l.digest);
                    }
                }
            }
        })?;
        progress.stage("publish")?;
        let final_dir = images.join(&name);
        let details = serde_json::json!({
            "reference": image.reference.whole(),
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
            id: random_suffix() + &random_suffix(),
            name: name.clone(),
            source: format!("oci:{}", image.reference.whole()),
            managed: true,
            rootfs_path: final_dir.join("rootfs.ext4").display().to_string(),
            work_seed_path: Some(final_dir.join("work-seed").display().to_string()),
            kernel_id: Some(kernel.id.clone()),
            digest: Some(resolved.manifest_digest.clone()),
            config: details,
            size_bytes: size,
            created_at: self.infra.clock.now_rfc3339(),
        };
        self.publish(&mut staging, &final_dir, &record).await?;
        info!(
            image = name,
            reference = image.reference.whole(),
            layers = total_layers,
            downloaded,
            secs = started.elapsed().as_secs_f64(),
            "image pulled"
        );
        self.info_of(record).await
    }

    /// Publishes a finished image: under the publication lock, re-checks that its name is
    /// free, renames `staging` to `final_dir` and stores the row (removing the dir again when
    /// the row cannot be written).
    pub(crate) async fn publish(
        &self,
        staging: &mut Staging,
        final_dir: &Path,
        record: &ImageRecord,
    ) -> Result<(), RpcError> {
        let _publish = self.publication.lock().await;
        let key = record.name.clone();
        if with_store(&self.infra.store, move |s| s.get_image(&key))
            .await?
            .is_some()
        {
            return Err(RpcError::new(
                ErrorCode::AlreadyExists,
                format!("image {:?} was stored while this pull ran", record.name),
            ));
        }
        let Some(staging_dir) = staging.0.take() else {
            return Err(RpcError::new(ErrorCode::OperationFailed, "nothing staged"));
        };
        if let Err(e) = swap_in(&staging_dir, final_dir) {
            staging.0 = Some(staging_dir);
            return Err(failed("image publish", &e));
        }
        let rec = record.clone();
        if let Err(e) = with_store(&self.infra.store, move |s| s.upsert_image(&rec)).await {
            let _ = fs_err::remove_dir_all(final_dir);
            return Err(e);
        }
        Ok(())
    }

    /// One image with the VMs using it.
    pub async fn show(&self, name: &str) -> Result<ImageInfo, RpcError> {
        let rec = self.get_image(name).await?;
        let id = rec.id.clone();
        let users = with_store(&self.infra.store, move |s| s.vms_using_image(&id)).await?;
        let mut info = self.info_of(rec).await?;
        info.used_by = users;
        Ok(info)
    }

    async fn get_image(&self, name: &str) -> Result<ImageRecord, RpcError> {
        let key = name.to_owned();
        with_store(&self.infra.store, move |s| s.get_image(&key))
            .await?
            .ok_or_else(|| {
                RpcError::new(ErrorCode::NotFound, format!("image {name:?} not found"))
                    .with_hint("`banger image list` shows images")
            })
    }

    /// Deletes an image and, when managed, its files. Refused while a VM uses it.
    pub async fn delete(&self, name: &str) -> Result<ImageInfo, RpcError> {
        let _publish = self.publication.lock().await;
        let rec = self.get_image(name).await?;
        let id = rec.id.clone();
        let users = with_store(&self.infra.store, move |s| s.vms_using_image(&id)).await?;
        if !users.is_empty() {
            return Err(RpcError::new(
                ErrorCode::BadRequest,
                format!("image {name:?} is used by {}", users.join(", ")),
            )
            .with_hint("delete those VMs first (`banger vm delete NAME`)"));
        }
        let id = rec.id.clone();
        with_store(&self.infra.store, move |s| s.delete_image(&id)).await?;
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
    pub async fn register(&self, p: ImageRegisterParams) -> Result<ImageInfo, RpcError> {
        validate_name("image", &p.name)?;
        let rootfs = absolute_file("rootfs", &p.rootfs, false)?;
        let kernel = match (&p.kernel, &p.kernel_ref) {
            (Some(_), Some(_)) => {
                return Err(bad("give either --kernel or --kernel-ref, not both"));
            }
            (None, None) => {
                return Err(bad("an image needs a kernel")
                    .with_hint("--kernel PATH [--initrd PATH] [--modules DIR], or --kernel-ref NAME (`banger kernel list`)"));
            }
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
            id: random_suffix() + &random_suffix(),
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
        let _publish = self.publication.lock().await;
        let key = p.name.clone();
        if with_store(&self.infra.store, move |s| s.get_image(&key))
            .await?
            .is_some()
        {
            return Err(RpcError::new(
                ErrorCode::AlreadyExists,
                format!("image {:?} already exists", p.name),
            ));
        }
        let rec = record.clone();
        with_store(&self.infra.store, move |s| s.upsert_image(&rec)).await?;
        self.info_of(record).await
    }

    /// Copies an unmanaged image's rootfs into banger's storage and marks it managed.
    pub async fn promote(&self, name: &str) -> Result<ImageInfo, RpcError> {
        let rec = self.get_image(name).await?;
        if rec.managed {
            return Err(bad(format!("image {name:?} is already managed")));
        }
        let images = self.infra.layout.images_dir();
        let staging_dir = images.join(format!(".staging-{}", random_suffix()));
        let mut staging = Staging(Some(staging_dir.clone()));
        let runner = Arc::clone(&self.infra.runner);
        let (src, st) = (PathBuf::from(&rec.rootfs_path), staging_dir.clone());
        blocking(move || {
            fs_err::create_dir_all(&st).map_err(|e| failed("staging", &e))?;
            banger_host::disk::cow_copy(runner.as_ref(), &src, &st.join("rootfs.ext4"))
                .map_err(|e| failed("copy rootfs", &e))
        })
        .await?;
        let final_dir = images.join(name);
        let mut promoted = rec.clone();
        promoted.managed = true;
        promoted.rootfs_path = final_dir.join("rootfs.ext4").display().to_string();
        let _publish = self.publication.lock().await;
        let current = self.get_image(name).await?;
        if current.id != rec.id || current.managed {
            return Err(RpcError::new(
                ErrorCode::AlreadyExists,
                format!("image {name:?} changed while it was being promoted"),
            ));
        }
        swap_in(&staging_dir, &final_dir).map_err(|e| failed("image publish", &e))?;
        staging.0 = None;
        let r = promoted.clone();
        with_store(&self.infra.store, move |s| s.upsert_image(&r)).await?;
        self.info_of(promoted).await
    }

    /// Removes cached blobs: those no stored image was pulled from, or all with `all`.
    pub async fn cache_prune(&self, p: CachePruneParams) -> Result<CachePruneResult, RpcError> {
        let images = with_store(&self.infra.store, banger_store::Store::list_images).await?;
        let mut keep: HashSet<String> = HashSet::new();
        if !p.all {
            for i in &images {
                if let Some(layers) = i.config.get("layers").and_then(|l| l.as_array()) {
                    keep.extend(layers.iter().filter_map(|d| d.as_str().map(str::to_owned)));
                }
            }
        }
        // Blobs of pulls under way stay.
        let busy = !lock(&self.inflight).by_key.is_empty();
        if busy && !p.dry_run {
            return Err(RpcError::new(
                ErrorCode::BadRequest,
                "a pull is under way; prune when it is done",
            ));
        }
        let cache = self.cache();
        let dry = p.dry_run;
        let report = blocking(move || Ok(cache.prune(&keep, dry))).await?;
        Ok(CachePruneResult {
            blobs: report.blobs,
            bytes: report.bytes,
            dry_run: p.dry_run,
        })
    }

    async fn get_kernel(&self, name: &str) -> Result<KernelRecord, RpcError> {
        let key = name.to_owned();
        with_store(&self.infra.store, move |s| s.get_kernel(&key))
            .await?
            .ok_or_else(|| {
                RpcError::new(ErrorCode::NotFound, format!("kernel {name:?} not found"))
                    .with_hint("`banger kernel list` shows kernels")
            })
    }

    /// One kernel.
    pub async fn kernel_show(&self, name: &str) -> Result<KernelInfo, RpcError> {
        Ok(kernel_info(&self.get_kernel(name).await?))
    }

    /// Removes a kernel; refused while an image uses it (naming them).
    pub async fn kernel_rm(&self, name: &str) -> Result<KernelInfo, RpcError> {
        let _publish = self.publication.lock().await;
        let k = self.get_kernel(name).await?;
        let images = with_store(&self.infra.store, banger_store::Store::list_images).await?;
        let users: Vec<String> = images
            .into_iter()
            .filter(|i| i.kernel_id.as_deref() == Some(k.id.as_str()))
            .map(|i| i.name)
            .collect();
        if !users.is_empty() {
            return Err(RpcError::new(
                ErrorCode::BadRequest,
                format!("kernel {name:?} is used by image(s) {}", users.join(", ")),
            )
            .with_hint("delete those images first (`banger image delete NAME`)"));
        }
        let id = k.id.clone();
        with_store(&self.infra.store, move |s| s.delete_kernel(&id)).await?;
        if k.managed {
            let _ = fs_err::remove_dir_all(self.infra.layout.kernels_dir().join(&k.name));
        }
        Ok(kernel_info(&k))
    }

    /// Imports a kernel from files (copied into banger's storage).
    pub async fn import_kernel_files(&self, p: KernelImportParams) -> Result<KernelInfo, RpcError> {
        let name = p
            .name
            .clone()
            .ok_or_else(|| bad("a kernel import needs a NAME"))?;
        validate_name("kernel", &name)?;
        let vmlinux = absolute_file(
            "kernel",
            p.vmlinux
                .as_deref()
                .ok_or_else(|| bad("--vmlinux is required"))?,
            false,
        )?;
        let initrd = p
            .initrd
            .as_deref()
            .map(|i| absolute_file("initrd", i, false))
            .transpose()?;
        let modules = p
            .modules
            .as_deref()
            .map(|m| absolute_file("modules", m, true))
            .transpose()?;
        let key = name.clone();
        if with_store(&self.infra.store, move |s| s.get_kernel(&key))
            .await?
            .is_some()
        {
            return Err(RpcError::new(
                ErrorCode::AlreadyExists,
                format!("kernel {name:?} already exists"),
            )
            .with_hint(format!("`banger kernel rm {name}` first")));
        }
        let kernels = self.infra.layout.kernels_dir();
        let staging_dir = kernels.join(format!(".staging-{}", random_suffix()));
        let mut staging = Staging(Some(staging_dir.clone()));
        let runner = Arc::clone(&self.infra.runner);
        let st = staging_dir.clone();
        let (sha, version) = blocking(move || {
            fs_err::create_dir_all(&st).map_err(|e| failed("staging", &e))?;
            let bytes = fs_err::read(&vmlinux).map_err(|e| failed("kernel", &e))?;
            let (file, body) = if bytes.starts_with(b"\x7fELF") {
                ("vmlinux", bytes)
            } else if let Some(elf) = banger_image::kernel::extract_vmlinux(&bytes) {
                ("vmlinux", elf)
            } else {
                ("vmlinuz", bytes)
            };
            fs_err::write(st.join(file), &body).map_err(|e| failed("kernel", &e))?;
            if let Some(i) = &initrd {
                fs_err::copy(i, st.join("initrd.img")).map_err(|e| failed("initrd", &e))?;
            }
            let mut version = String::new();
            if let Some(m) = &modules {
                runner
                    .run(
                        &banger_host::Cmd::new("cp")
                            .args(["-a"])
                            .arg(m.display().to_string())
                            .arg(st.join("modules").display().to_string()),
                    )
                    .map_err(|e| failed("modules", &e))?;
                version = m
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
            }
            let sha =
                banger_image::sha256_file(&st.join(file)).map_err(|e| failed("kernel", &e))?;
            Ok((sha, (file, version)))
        })
        .await?;
        let final_dir = kernels.join(&name);
        let record = KernelRecord {
            id: random_suffix() + &random_suffix(),
            name: name.clone(),
            version: version.1,
            source: "import".into(),
            managed: true,
            vmlinux_path: final_dir.join(version.0).display().to_string(),
            initrd_path: p
                .initrd
                .as_ref()
                .map(|_| final_dir.join("initrd.img").display().to_string()),
            modules_dir: p
                .modules
                .as_ref()
                .map(|_| final_dir.join("modules").display().to_string()),
            sha256: sha,
            created_at: self.infra.clock.now_rfc3339(),
        };
        let _publish = self.publication.lock().await;
        let key = name.clone();
        if with_store(&self.infra.store, move |s| s.get_kernel(&key))
            .await?
            .is_some()
        {
            return Err(RpcError::new(
                ErrorCode::AlreadyExists,
                format!("kernel {name:?} already exists"),
            ));
        }
        swap_in(&staging_dir, &final_dir).map_err(|e| failed("kernel publish", &e))?;
        staging.0 = None;
        let rec = record.clone();
        with_store(&self.infra.store, move |s| s.upsert_kernel(&rec)).await?;
        Ok(kernel_info(&record))
    }
}
