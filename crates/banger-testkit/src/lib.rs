//! Dev-only test support for banger.
//!
//! [`spec`] loads Firecracker's OpenAPI (Swagger 2.0) spec and validates requests against it;
//! [`fake_firecracker`] is an API server that answers the way Firecracker does (status codes
//! and `fault_message` error bodies included), checks every request against the spec and
//! journals it, so contract tests can assert that banger only sends valid requests.
//! [`daemon`] wires a `bangerd` with recording fakes (the test bed of the daemon's tests and
//! benches); [`dns`] queries its `.vm` server; [`registry`] writes OCI images.

pub mod daemon;
pub mod dns;
pub mod fake_firecracker;
pub mod git;
pub mod registry;
pub mod require;
pub mod spec;

pub use fake_firecracker::{FakeFirecracker, JournalEntry};
pub use spec::{ApiSpec, SpecError};
