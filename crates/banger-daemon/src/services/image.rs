//! `ImageService`: images and kernels (pull, register, promote, delete, kernel import).

use crate::daemon::Infra;

/// Images and kernels.
#[derive(Debug)]
pub struct ImageService {
    #[allow(dead_code)]
    infra: Infra,
}

impl ImageService {
    /// A new service.
    pub fn new(infra: Infra) -> Self {
        ImageService { infra }
    }
}
