//! `bangerd`: the daemon that owns banger's state (SQLite) and does the host work.
//!
//! [`Daemon`] is the composition root: it holds infrastructure (layout, config, store,
//! clock, op registry) and the four services built by [`wire_services`]. RPC dispatch
//! ([`dispatch`]) forwards each method to a service; [`edge`] is the one place a service's
//! typed error becomes the wire's `RpcError`; no behaviour lives on `Daemon` itself.
//! [`server`] serves line-delimited JSON-RPC on the unix socket.

pub mod crashpoint;
pub mod daemon;
pub mod dispatch;
pub mod dns;
pub mod edge;
pub mod infra;
pub mod layers;
pub mod logging;
pub mod ops;
pub mod progress;
pub mod server;
pub mod services;
pub mod stream;

pub use daemon::{Daemon, Services, wire_services};
pub use infra::Infra;
pub use server::{bind_socket, serve};
