//! `banger image ...` and `banger kernel ...`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use banger_api::methods::{
    ImageCachePrune, ImageDelete, ImageEnsure, ImageExport, ImageList, ImagePromote,
    ImagePullBegin, ImagePullCancel, ImagePullStatus, ImageRegister, ImageShow, KernelCatalog,
    KernelImport, KernelList, KernelPull, KernelRm, KernelShow,
};
use banger_api::types::{
    CachePruneParams, Empty, ImageEnsureParams, ImageExportParams, ImageInfo, ImagePullParams,
    ImageRegisterParams, KernelImportParams, KernelInfo, NameParams,
};
use banger_config::Layout;

use crate::connect::connect;
use crate::output;

fn absolute(p: &Path) -> anyhow::Result<String> {
    Ok(std::path::absolute(p)?.display().to_string())
}

fn abs_opt(p: Option<&PathBuf>) -> anyhow::Result<Option<String>> {
    p.map(|p| absolute(p)).transpose()
}

fn image_lines(i: &ImageInfo) -> String {
    let mut rows = vec![
        ("name", i.name.clone()),
        ("source", i.source.clone()),
        ("managed", i.managed.to_string()),
        ("kernel", i.kernel.clone().unwrap_or_else(|| "-".into())),
        ("rootfs", i.rootfs.clone()),
        ("size", output::size(i.size_bytes)),
        ("digest", i.digest.clone().unwrap_or_else(|| "-".into())),
        ("created", i.created_at.clone()),
    ];
    let list = |key: &str| {
        i.details.get(key).and_then(|v| v.as_array()).map(|a| {
            a.iter()
                .filter_map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
    };
    for key in ["entrypoint", "cmd", "env"] {
        if let Some(v) = list(key).filter(|v| !v.is_empty()) {
            rows.push((key, v));
        }
    }
    if let Some(w) = i.details.get("workdir").and_then(|v| v.as_str())
        && !w.is_empty()
    {
        rows.push(("workdir", w.to_owned()));
    }
    if let Some(init) = i.details.get("init").and_then(|v| v.as_str()) {
        rows.push(("first boot", format!("{init} installs systemd/sshd")));
    }
    rows.push((
        "used by",
        if i.used_by.is_empty() {
            "-".into()
        } else {
            i.used_by.join(", ")
        },
    ));
    rows.iter()
        .map(|(k, v)| format!("{k:<11} {v}\n"))
        .collect::<String>()
        .trim_end()
        .to_owned()
}

pub(crate) async fn pull(
    layout: &Layout,
    reference: String,
    name: Option<String>,
    kernel: Option<String>,
    insecure: bool,
) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let started = std::time::Instant::now();
    let begun = conn
        .client
        .call::<ImagePullBegin>(&ImagePullParams {
            reference: reference.clone(),
            name,
            kernel,
            insecure,
        })
        .await?;
    output::status(&format!("pulling {reference} ({})", begun.op_id));
    let status =
        crate::stages::follow::<ImagePullStatus, ImagePullCancel>(layout, conn, begun.op_id)
            .await?;
    if let Some(err) = status.error {
        return Err(err.into());
    }
    let image = status
        .image
        .ok_or_else(|| anyhow::anyhow!("the daemon reported success without an image"))?;
    output::status(&format!(
        "image {} ready in {:.1}s ({})",
        image.name,
        started.elapsed().as_secs_f64(),
        output::size(image.size_bytes)
    ));
    output::data(&image.name);
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn ensure(layout: &Layout, name: Option<String>) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    output::status(
        "making sure the image is available (the default one is built once with debootstrap)...",
    );
    let i = conn
        .client
        .call::<ImageEnsure>(&ImageEnsureParams { name })
        .await?;
    output::data(&format!("{} {}", i.name, i.rootfs));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn list(layout: &Layout, as_json: bool) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let images = conn.client.call::<ImageList>(&Empty {}).await?;
    if as_json {
        output::json(&images)?;
    } else {
        let rows = images
            .iter()
            .map(|i| {
                vec![
                    i.name.clone(),
                    i.source.clone(),
                    i.kernel.clone().unwrap_or_default(),
                    output::size(i.size_bytes),
                    if i.managed { "yes" } else { "no" }.to_owned(),
                ]
            })
            .collect();
        output::data(&output::table(
            &["NAME", "SOURCE", "KERNEL", "SIZE", "MANAGED"],
            rows,
        ));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn show(layout: &Layout, name: String, as_json: bool) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let i = conn.client.call::<ImageShow>(&NameParams { name }).await?;
    if as_json {
        output::json(&i)?;
    } else {
        output::data(&image_lines(&i));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) struct Register {
    pub(crate) name: String,
    pub(crate) rootfs: PathBuf,
    pub(crate) kernel: Option<PathBuf>,
    pub(crate) initrd: Option<PathBuf>,
    pub(crate) modules: Option<PathBuf>,
    pub(crate) kernel_ref: Option<String>,
}

pub(crate) async fn register(layout: &Layout, r: Register) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let i = conn
        .client
        .call::<ImageRegister>(&ImageRegisterParams {
            name: r.name,
            rootfs: absolute(&r.rootfs)?,
            kernel: abs_opt(r.kernel.as_ref())?,
            initrd: abs_opt(r.initrd.as_ref())?,
            modules: abs_opt(r.modules.as_ref())?,
            kernel_ref: r.kernel_ref,
        })
        .await?;
    output::status(&format!(
        "image {} registered (unmanaged: the files stay where they are)",
        i.name
    ));
    output::data(&i.name);
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn promote(layout: &Layout, name: String) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    output::status(&format!("copying image {name} into banger's storage..."));
    let i = conn
        .client
        .call::<ImagePromote>(&NameParams { name })
        .await?;
    output::data(&format!("{} {}", i.name, i.rootfs));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn delete(layout: &Layout, name: String) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let i = conn
        .client
        .call::<ImageDelete>(&NameParams { name })
        .await?;
    output::status(&format!("image {} deleted", i.name));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn cache_prune(
    layout: &Layout,
    dry_run: bool,
    all: bool,
) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let r = conn
        .client
        .call::<ImageCachePrune>(&CachePruneParams { dry_run, all })
        .await?;
    for b in &r.blobs {
        output::data(b);
    }
    output::status(&format!(
        "{} {} blob(s), {}",
        if r.dry_run { "would free" } else { "freed" },
        r.blobs.len(),
        output::size(r.bytes)
    ));
    Ok(ExitCode::SUCCESS)
}

pub(crate) struct KernelFiles {
    pub(crate) name: Option<String>,
    pub(crate) from_distro: bool,
    pub(crate) vmlinux: Option<PathBuf>,
    pub(crate) initrd: Option<PathBuf>,
    pub(crate) modules: Option<PathBuf>,
}

pub(crate) async fn kernel_import(layout: &Layout, k: KernelFiles) -> anyhow::Result<ExitCode> {
    if !k.from_distro && k.vmlinux.is_none() {
        return Err(crate::output::Hinted::new(
            "nothing to import",
            "`banger kernel import --from-distro`, or `banger kernel import NAME --vmlinux PATH`",
        )
        .into());
    }
    if k.vmlinux.is_some() && k.name.is_none() {
        return Err(crate::output::Hinted::new(
            "a kernel imported from files needs a NAME",
            "`banger kernel import NAME --vmlinux PATH`",
        )
        .into());
    }
    let mut conn = connect(layout).await?;
    if k.from_distro {
        output::status(
            "importing the distro kernel (apt download, vmlinux extraction, initramfs)...",
        );
    }
    let info = conn
        .client
        .call::<KernelImport>(&KernelImportParams {
            from_distro: k.from_distro,
            name: k.name,
            vmlinux: abs_opt(k.vmlinux.as_ref())?,
            initrd: abs_opt(k.initrd.as_ref())?,
            modules: abs_opt(k.modules.as_ref())?,
        })
        .await?;
    output::data(&format!("{} {} {}", info.name, info.version, info.kernel));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn kernel_list(
    layout: &Layout,
    available: bool,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    if available {
        let cat = conn.client.call::<KernelCatalog>(&Empty {}).await?;
        if as_json {
            output::json(&cat)?;
        } else if cat.is_empty() {
            output::status(
                "the kernel catalog is empty; add [[kernel_catalog]] entries to config.toml",
            );
        } else {
            let rows = cat
                .iter()
                .map(|k| {
                    vec![
                        k.name.clone(),
                        k.version.clone(),
                        if k.pulled { "pulled" } else { "available" }.to_owned(),
                        output::size(k.size_bytes),
                        k.url.clone(),
                    ]
                })
                .collect();
            output::data(&output::table(
                &["NAME", "VERSION", "STATE", "SIZE", "URL"],
                rows,
            ));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let ks = conn.client.call::<KernelList>(&Empty {}).await?;
    if as_json {
        output::json(&ks)?;
    } else {
        let rows = ks
            .iter()
            .map(|k| {
                vec![
                    k.name.clone(),
                    k.version.clone(),
                    k.source.clone(),
                    k.kernel.clone(),
                ]
            })
            .collect();
        output::data(&output::table(
            &["NAME", "VERSION", "SOURCE", "KERNEL"],
            rows,
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn kernel_lines(k: &KernelInfo) -> String {
    format!(
        "name        {}\nversion     {}\nsource      {}\nkernel      {}\ninitrd      {}\nsha256      {}",
        k.name,
        k.version,
        k.source,
        k.kernel,
        k.initrd.as_deref().unwrap_or("-"),
        k.sha256
    )
}

pub(crate) async fn kernel_show(
    layout: &Layout,
    name: String,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let k = conn.client.call::<KernelShow>(&NameParams { name }).await?;
    if as_json {
        output::json(&k)?;
    } else {
        output::data(&kernel_lines(&k));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn kernel_rm(layout: &Layout, name: String) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let k = conn.client.call::<KernelRm>(&NameParams { name }).await?;
    output::status(&format!("kernel {} removed", k.name));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn kernel_pull(layout: &Layout, name: String) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    output::status(&format!("pulling kernel {name} from the catalog..."));
    let k = conn.client.call::<KernelPull>(&NameParams { name }).await?;
    output::data(&format!("{} {} {}", k.name, k.version, k.kernel));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn export(layout: &Layout, name: String, out: &Path) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    output::status(&format!("writing image {name} as a bundle..."));
    let r = conn
        .client
        .call::<ImageExport>(&ImageExportParams {
            name,
            output: absolute(out)?,
        })
        .await?;
    output::status(&format!("{} ({})", r.path, output::size(r.size)));
    output::data(&r.sha256);
    Ok(ExitCode::SUCCESS)
}
