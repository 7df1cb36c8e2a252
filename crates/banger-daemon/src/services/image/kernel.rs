//! Kernels: the distro kernel (imported on first need), kernels from files, show/rm, and the
//! refresh of initramfs images an older banger built.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_api::types::{KernelImportParams, KernelInfo};
use banger_store::{KernelRecord, Store};
use tracing::info;

use super::error::io;
use super::publish::{Existing, Record, Staging};
use super::{
    DISTRO_KERNEL_NAME, ImageError, ImageService, Kind, absolute_file, kernel_info, validate_name,
};
use crate::services::support::{blocking, new_id, random_suffix, with_store};

/// The busybox to put into initramfs images: it must be statically linked.
fn static_busybox() -> Result<PathBuf, ImageError> {
    for candidate in ["/bin/busybox", "/usr/bin/busybox"] {
        let path = Path::new(candidate);
        if let Ok(bytes) = std::fs::read(path) {
            let dynamic = bytes.windows(14).any(|w| w == b"/lib64/ld-linu");
            if !dynamic {
                return Ok(path.to_owned());
            }
        }
    }
    Err(ImageError::NoStaticBusybox)
}

impl ImageService {
    /// `kernel import` (`--from-distro`, or files).
    pub async fn import_kernel(&self, p: KernelImportParams) -> Result<KernelInfo, ImageError> {
        if p.from_distro {
            let name = p.name.unwrap_or_else(|| DISTRO_KERNEL_NAME.to_owned());
            Ok(kernel_info(&self.ensure_kernel(&name).await?))
        } else if p.vmlinux.is_some() {
            self.import_kernel_files(p).await
        } else {
            Err(ImageError::BadArguments("nothing to import"))
        }
    }

    /// The distro kernel `name`, importing it when missing.
    pub async fn ensure_kernel(&self, name: &str) -> Result<KernelRecord, ImageError> {
        if let Some(k) = self.find_kernel(name).await?
            && Path::new(&k.vmlinux_path).exists()
        {
            self.refresh_initramfs(&k).await?;
            return Ok(k);
        }
        let _build = self.build.lock().await;
        if let Some(k) = self.find_kernel(name).await?
            && Path::new(&k.vmlinux_path).exists()
        {
            return Ok(k);
        }
        info!(kernel = name, "importing the distro kernel");
        let busybox = static_busybox()?;
        let kernels = self.infra.layout.kernels_dir();
        let mut staging = Staging::under(&kernels);
        let work = Staging::guard(
            self.infra
                .layout
                .cache_dir
                .join(format!("kernel-work-{}", random_suffix())),
        );
        let runner = Arc::clone(&self.infra.runner);
        let name_owned = name.to_owned();
        let (st, wk) = (staging.path(), work.path());
        let manifest = blocking(move || -> Result<_, ImageError> {
            banger_image::kernel::import_from_distro(
                runner.as_ref(),
                &name_owned,
                &busybox,
                &wk,
                &st,
            )
            .map_err(ImageError::KernelImport)
        })
        .await?;
        let final_dir = kernels.join(name);
        let (from, to) = (
            staging.path().display().to_string(),
            final_dir.display().to_string(),
        );
        let rebase = |p: &str| p.replace(&from, &to);
        let record = KernelRecord {
            id: new_id(),
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
        self.publish(
            Record::Kernel(record.clone()),
            Some((&mut staging, &final_dir)),
            Existing::Replace,
        )
        .await?;
        info!(kernel = name, version = record.version, "kernel imported");
        Ok(record)
    }

    /// Rebuilds a distro kernel's initramfs made by an older
    /// [`banger_image::initramfs::VERSION`] (its modules are kept beside it), so boot
    /// features such as `init=` reach old kernels. Takes `build`: never call it holding
    /// `build`.
    pub(super) async fn refresh_initramfs(&self, k: &KernelRecord) -> Result<(), ImageError> {
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
        blocking(move || -> Result<_, ImageError> {
            banger_image::initramfs::build(&busybox, &modules, &initrd)
                .map_err(ImageError::Initramfs)
        })
        .await
    }

    /// One kernel.
    pub async fn kernel_show(&self, name: &str) -> Result<KernelInfo, ImageError> {
        Ok(kernel_info(&self.get_kernel(name).await?))
    }

    /// Removes a kernel; refused while an image uses it (naming them).
    pub async fn kernel_rm(&self, name: &str) -> Result<KernelInfo, ImageError> {
        let _publish = self.publication.lock().await;
        let k = self.get_kernel(name).await?;
        let images = with_store(&self.infra.store, Store::list_images).await?;
        let users: Vec<String> = images
            .into_iter()
            .filter(|i| i.kernel_id.as_deref() == Some(k.id.as_str()))
            .map(|i| i.name)
            .collect();
        if !users.is_empty() {
            return Err(ImageError::InUse {
                kind: Kind::Kernel,
                name: name.to_owned(),
                users: format!("image(s) {}", users.join(", ")),
            });
        }
        let id = k.id.clone();
        with_store(&self.infra.store, move |s| s.delete_kernel(&id)).await?;
        if k.managed {
            let _ = fs_err::remove_dir_all(self.infra.layout.kernels_dir().join(&k.name));
        }
        Ok(kernel_info(&k))
    }

    /// Imports a kernel from files (copied into banger's storage).
    pub async fn import_kernel_files(
        &self,
        p: KernelImportParams,
    ) -> Result<KernelInfo, ImageError> {
        let name = p
            .name
            .clone()
            .ok_or(ImageError::BadArguments("a kernel import needs a NAME"))?;
        validate_name(Kind::Kernel, &name)?;
        let vmlinux = absolute_file(
            "kernel",
            p.vmlinux
                .as_deref()
                .ok_or(ImageError::BadArguments("--vmlinux is required"))?,
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
        if self.find_kernel(&name).await?.is_some() {
            return Err(ImageError::NameTaken(Kind::Kernel, name));
        }
        let kernels = self.infra.layout.kernels_dir();
        let mut staging = Staging::under(&kernels);
        let runner = Arc::clone(&self.infra.runner);
        let st = staging.path();
        let (sha, (file, version)) = blocking(move || -> Result<_, ImageError> {
            fs_err::create_dir_all(&st).map_err(io("staging"))?;
            let bytes = fs_err::read(&vmlinux).map_err(io("kernel"))?;
            let (file, body) = if bytes.starts_with(b"\x7fELF") {
                ("vmlinux", bytes)
            } else if let Some(elf) = banger_image::kernel::extract_vmlinux(&bytes) {
                ("vmlinux", elf)
            } else {
                ("vmlinuz", bytes)
            };
            fs_err::write(st.join(file), &body).map_err(io("kernel"))?;
            if let Some(i) = &initrd {
                fs_err::copy(i, st.join("initrd.img")).map_err(io("initrd"))?;
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
                    .map_err(|source| ImageError::Command {
                        step: "modules",
                        source,
                    })?;
                version = m
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
            }
            let sha =
                banger_image::sha256_file(&st.join(file)).map_err(super::error::file("kernel"))?;
            Ok((sha, (file, version)))
        })
        .await?;
        let final_dir = kernels.join(&name);
        let record = KernelRecord {
            id: new_id(),
            name: name.clone(),
            version,
            source: "import".into(),
            managed: true,
            vmlinux_path: final_dir.join(file).display().to_string(),
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
        self.publish(
            Record::Kernel(record.clone()),
            Some((&mut staging, &final_dir)),
            Existing::Refuse,
        )
        .await?;
        Ok(kernel_info(&record))
    }
}
