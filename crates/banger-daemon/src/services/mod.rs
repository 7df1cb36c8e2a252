//! The daemon's services. Each owns its own state and locks and returns its own typed error;
//! `support` holds what they all use and imports none of them.

pub mod image;
pub mod network;
pub mod support;
pub mod vm;
pub mod workspace;

pub use image::ImageService;
pub use network::HostNetwork;
pub use vm::{Lifecycle, VmService};
pub use workspace::WorkspaceService;
