//! The daemon's services. Each owns its own state and locks.

mod image;
mod network;
mod vm;
mod workspace;

pub use image::ImageService;
pub use network::HostNetwork;
pub use vm::VmService;
pub use workspace::WorkspaceService;
