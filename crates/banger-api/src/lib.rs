//! banger's wire protocol, shared by the CLI (`banger`) and the daemon (`bangerd`).
//!
//! The transport is line-delimited JSON-RPC 2.0 over a unix socket: every request and
//! every response is one JSON object on one line (see [`frame`]). Each request carries
//! [`PROTOCOL_VERSION`] in a top-level `protocol` member; the daemon answers a mismatch
//! with [`ErrorCode::BadVersion`]. Methods are typed: each is a unit struct implementing
//! [`Method`], which names its params and result types, so both ends agree at compile time.

pub mod client;
pub mod error;
pub mod frame;
pub mod methods;
pub mod schema;
pub mod types;

pub use client::{Client, ClientError};
pub use error::{ErrorCode, ErrorData, RpcError};
pub use frame::{MAX_FRAME_BYTES, Request, Response};
pub use methods::Method;

/// Version of the wire protocol. Bumped on any incompatible change of a method.
pub const PROTOCOL_VERSION: u32 = 2;

/// The crate version of this build (the CLI and the daemon compare it to detect a stale daemon).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit this build came from, or `unknown`.
pub const COMMIT: &str = env!("BANGER_BUILD_COMMIT");
