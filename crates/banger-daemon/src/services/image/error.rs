//! `ImageError`: what went wrong with an image or kernel; each variant names the step.

use banger_api::ErrorCode;
use banger_host::RunError;
use banger_host::disk::DiskError;
use banger_image::bundle::BundleError;
use banger_image::layers::LayerError;
use banger_image::registry::RegistryError;

use crate::services::support::{Cancelled, ServiceError, WorkerError};

/// Images or kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An image.
    Image,
    /// A kernel.
    Kernel,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Image => "image",
            Kind::Kernel => "kernel",
        })
    }
}

/// Errors of the image service.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No stored object by that name.
    #[error("{0} {1:?} not found")]
    NotFound(Kind, String),
    /// `vm create --image NAME`: neither stored, nor in the catalog, nor the built-in default.
    #[error("image {0:?} not found")]
    Unknown(String),
    /// A kernel name banger cannot pull.
    #[error("kernel {0:?} not found")]
    KernelNotPullable(String),
    /// `kernel pull NAME` of a name the catalog lacks.
    #[error("kernel {0:?} is not in the catalog")]
    KernelNotInCatalog(String),
    /// An image row without a kernel.
    #[error("image {0:?} has no kernel")]
    NoKernel(String),
    /// An image row whose kernel row is gone.
    #[error("image {0:?} refers to a missing kernel")]
    MissingKernel(String),
    /// What was just published is gone again.
    #[error("the pulled {0} vanished")]
    Vanished(Kind),
    /// A name that is not a file name and DNS label.
    #[error("invalid {0} name {1:?}")]
    InvalidName(Kind, String),
    /// A reference that does not parse.
    #[error(transparent)]
    BadReference(RegistryError),
    /// The name is taken.
    #[error("{0} {1:?} already exists")]
    NameTaken(Kind, String),
    /// Another pull is producing this name.
    #[error("image {name:?} is being pulled by {op}")]
    BeingPulled {
        /// The name.
        name: String,
        /// The pull's op id.
        op: String,
    },
    /// The name an OCI reference maps to is taken by images from other sources.
    #[error("no free local name for {reference}: {names} hold other images")]
    NoNameForReference {
        /// The reference.
        reference: String,
        /// The names tried.
        names: String,
    },
    /// The image or kernel changed while being promoted.
    #[error("image {0:?} changed while it was being promoted")]
    ChangedWhilePromoted(String),
    /// Still used by VMs or images.
    #[error("{kind} {name:?} is used by {users}")]
    InUse {
        /// Image or kernel.
        kind: Kind,
        /// Its name.
        name: String,
        /// Who uses it.
        users: String,
    },
    /// A path argument that is relative.
    #[error("{what} {path:?} is not an absolute path")]
    NotAbsolute {
        /// Which argument.
        what: &'static str,
        /// Its value.
        path: String,
    },
    /// A path argument that is not a file (or directory).
    #[error("{what} {path:?} is not {expected}")]
    NotThere {
        /// Which argument.
        what: &'static str,
        /// Its value.
        path: String,
        /// "a file" or "a directory".
        expected: &'static str,
    },
    /// Contradicting or missing arguments.
    #[error("{0}")]
    BadArguments(&'static str),
    /// An image is already managed.
    #[error("image {0:?} is already managed")]
    AlreadyManaged(String),
    /// Prune while a pull runs.
    #[error("a pull is under way; prune when it is done")]
    PullUnderWay,
    /// A layer digest banger cannot store.
    #[error("unsupported digest {0:?}")]
    UnsupportedDigest(String),
    /// Resolving the manifest and config.
    #[error("manifest")]
    Manifest {
        /// Cause.
        #[source]
        source: RegistryError,
        /// Whether the registry is Docker Hub (the hint differs).
        hub: bool,
    },
    /// Downloading a layer.
    #[error("download")]
    Download(#[source] RegistryError),
    /// Flattening the layers.
    #[error("cannot flatten the image")]
    Flatten(#[source] LayerError),
    /// Making the tree bootable.
    #[error("make bootable")]
    MakeBootable(#[source] banger_image::ImageError),
    /// Building the ext4.
    #[error("ext4")]
    Ext4(#[source] banger_image::ImageError),
    /// The layer cache.
    #[error("cache")]
    Cache(#[source] banger_image::ImageError),
    /// Fetching a catalog bundle.
    #[error("bundle download")]
    FetchBundle(#[source] BundleError),
    /// Unpacking or writing a bundle.
    #[error("bundle")]
    Bundle(#[source] BundleError),
    /// Importing the distro kernel.
    #[error("kernel import")]
    KernelImport(#[source] banger_image::ImageError),
    /// Building the default image.
    #[error("image build")]
    ImageBuild(#[source] banger_image::ImageError),
    /// Rebuilding an initramfs.
    #[error("initramfs")]
    Initramfs(#[source] banger_image::ImageError),
    /// No static busybox for the initramfs.
    #[error("no statically linked busybox found")]
    NoStaticBusybox,
    /// Copying a rootfs.
    #[error("copy rootfs")]
    CopyRootfs(#[source] DiskError),
    /// Disk work of a step (debugfs reads and writes).
    #[error("{step}")]
    Disk {
        /// The step.
        step: &'static str,
        /// Cause.
        #[source]
        source: DiskError,
    },
    /// A host command of a step (modules copy, work seed).
    #[error("{step}")]
    Command {
        /// The step.
        step: &'static str,
        /// Cause.
        #[source]
        source: RunError,
    },
    /// File work of a step (staging, kernel files, output, sha256).
    #[error("{step}")]
    Io {
        /// The step.
        step: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// File work of a step done by banger-image (hashing a file).
    #[error("{step}")]
    File {
        /// The step.
        step: &'static str,
        /// Cause.
        #[source]
        source: banger_image::ImageError,
    },
    /// The rename that publishes a staged dir.
    #[error("{0} publish")]
    Publish(Kind, #[source] std::io::Error),
    /// The store.
    #[error("store")]
    Store(#[from] crate::services::support::StoreCallError),
    /// The caller cancelled.
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
    /// A blocking step's worker failed.
    #[error(transparent)]
    Worker(#[from] WorkerError),
}

/// A file step's error.
pub(crate) fn io(step: &'static str) -> impl FnOnce(std::io::Error) -> ImageError {
    move |source| ImageError::Io { step, source }
}

/// A banger-image file step's error.
pub(crate) fn file(step: &'static str) -> impl FnOnce(banger_image::ImageError) -> ImageError {
    move |source| ImageError::File { step, source }
}

impl ServiceError for ImageError {
    fn code(&self) -> ErrorCode {
        use ImageError as E;
        match self {
            E::NotFound(..)
            | E::Unknown(_)
            | E::KernelNotPullable(_)
            | E::KernelNotInCatalog(_) => ErrorCode::NotFound,
            E::NameTaken(..)
            | E::BeingPulled { .. }
            | E::ChangedWhilePromoted(_)
            | E::NoNameForReference { .. } => ErrorCode::AlreadyExists,
            E::InvalidName(..)
            | E::BadReference(_)
            | E::InUse { .. }
            | E::NotAbsolute { .. }
            | E::NotThere { .. }
            | E::BadArguments(_)
            | E::AlreadyManaged(_)
            | E::PullUnderWay
            | E::UnsupportedDigest(_) => ErrorCode::BadRequest,
            E::Cancelled(_) => ErrorCode::Cancelled,
            _ => ErrorCode::OperationFailed,
        }
    }

    fn hint(&self) -> Option<String> {
        use ImageError as E;
        let h = match self {
            E::NotFound(Kind::Image, _) => "`banger image list` shows images".into(),
            E::NotFound(Kind::Kernel, _) => "`banger kernel list` shows kernels".into(),
            E::Unknown(_) => "`banger image list` shows local images; the built-in default is debian-bookworm; an OCI reference (e.g. docker.io/library/debian:bookworm) is pulled".into(),
            E::KernelNotPullable(_) => "`banger kernel list --available` shows kernels banger can pull".into(),
            E::KernelNotInCatalog(_) => "`banger kernel list --available`; add entries with [[kernel_catalog]] in config.toml".into(),
            E::InvalidName(..) => "use 1-64 of a-z, 0-9, '-', '_', '.', starting with a letter or digit".into(),
            E::BadReference(_) => "an image name, or a reference such as docker.io/library/debian:bookworm or 127.0.0.1:5000/team/app:v1".into(),
            E::NameTaken(Kind::Image, n) => format!("`banger image delete {n}` first, or pull under another --name"),
            E::NameTaken(Kind::Kernel, n) => format!("`banger kernel rm {n}` first"),
            E::BeingPulled { .. } => "pick another name with --name".into(),
            E::NoNameForReference { .. } => "pull it yourself under a free name: `banger image pull REF --name NAME`".into(),
            E::InUse { kind: Kind::Image, .. } => "delete those VMs first (`banger vm delete NAME`)".into(),
            E::InUse { kind: Kind::Kernel, .. } => "delete those images first (`banger image delete NAME`)".into(),
            E::NotAbsolute { .. } => "the CLI makes paths absolute; over the API pass absolute paths".into(),
            E::BadArguments(why) if why.contains("needs a kernel") => "--kernel PATH [--initrd PATH] [--modules DIR], or --kernel-ref NAME (`banger kernel list`)".into(),
            E::BadArguments(why) if why.contains("nothing to import") => "`banger kernel import --from-distro`, or NAME --vmlinux PATH [--initrd PATH] [--modules DIR]".into(),
            E::Manifest { hub: true, .. } => "check the name and tag; private images need `docker login`".into(),
            E::Manifest { hub: false, .. } => "check the reference; a registry without TLS needs --insecure (loopback ones are plain HTTP already)".into(),
            E::Flatten(_) => "the image's layers were refused; nothing was stored".into(),
            E::FetchBundle(_) => "check the catalog entry's url and sha256 (`banger image list --available`)".into(),
            E::KernelImport(_) => "kernel import needs apt (Debian/Ubuntu) and busybox-static".into(),
            E::ImageBuild(_) => "building the default image needs debootstrap and the Debian mirror".into(),
            E::NoStaticBusybox => "apt-get install busybox-static".into(),
            _ => return None,
        };
        Some(h)
    }
}
