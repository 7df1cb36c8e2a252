//! `bangerd`: the daemon that owns banger's state (SQLite) and does the host work.
//!
//! [`Daemon`] is the composition root: it holds infrastructure (layout, config, store,
//! clock, op registry) and the four services built by [`wire_services`]. RPC dispatch
//! ([`dispatch`]) is a pure forwarder from method to service; no behaviour lives on
//! `Daemon` itself. [`server`] serves line-delimited JSON-RPC on the unix socket.

pub mod daemon;
pub mod dispatch;
pub mod dns;
pub mod error;
pub mod logging;
pub mod ops;
pub mod progress;
pub mod server;
pub mod services;
pub mod testbed;

pub use daemon::{Daemon, Infra, Services, wire_services};
pub use server::{bind_socket, serve};
