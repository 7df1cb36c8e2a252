//! The daemon's methods, one unit struct each.
//!
//! `ALL` lists every method name; a daemon test pins its dispatch table against it.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{Empty, OperationsListResult, PingResult, VmInfo, VmListResult, VmRef};

/// A typed RPC method.
pub trait Method {
    /// Wire name, e.g. `vm.list`.
    const NAME: &'static str;
    /// Params type.
    type Params: Serialize + DeserializeOwned + Send + Sync;
    /// Result type.
    type Result: Serialize + DeserializeOwned + Send + Sync;
}

macro_rules! methods {
    ($($(#[$doc:meta])* $ty:ident = $name:literal ($params:ty) -> $result:ty;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub struct $ty;
            impl Method for $ty {
                const NAME: &'static str = $name;
                type Params = $params;
                type Result = $result;
            }
        )*
        /// Every method name the protocol defines.
        pub const ALL: &[&str] = &[$($name),*];
    };
}

methods! {
    /// Liveness and identity of the daemon.
    Ping = "ping" (Empty) -> PingResult;
    /// Asks the daemon to stop gracefully. Running VMs keep running.
    Shutdown = "shutdown" (Empty) -> Empty;
    /// All VMs.
    VmList = "vm.list" (Empty) -> VmListResult;
    /// One VM by name or id.
    VmShow = "vm.show" (VmRef) -> VmInfo;
    /// In-flight operations.
    OperationsList = "daemon.operations.list" (Empty) -> OperationsListResult;
}
