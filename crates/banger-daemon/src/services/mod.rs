//! The daemon's services. Each owns its own state and locks.

pub mod image;
pub mod image_catalog;
pub mod image_pull;
pub mod network;
pub mod vm;
pub mod workspace;

pub use image::ImageService;
pub use network::HostNetwork;
pub use vm::{Lifecycle, VmService};
pub use workspace::WorkspaceService;
