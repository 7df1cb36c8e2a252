//! banger's directory layout ([`Layout`]), environment variables ([`env`]) and
//! `config.toml` ([`Config`]).

pub mod catalog;
pub mod config;
pub mod env;
pub mod layout;

pub use catalog::{ImageCatalogEntry, KernelCatalogEntry};
pub use config::{
    Config, ConfigError, FileSync, LogLevel, McpConfig, VmDefaults, VmmKind, auto_memory_mib,
    auto_vcpu, parse_duration,
};
pub use layout::{Layout, LayoutError};
