//! sysom-mcp: a systemd-native MCP server for Alibaba Cloud SysOM OS diagnoses.
//!
//! The binary (`main.rs`) is a thin shell; everything lives in these modules, one concern each.
//! The module graph reads bottom-up: `secret` and `signing` are leaves, `signed_request` sits on
//! them, `credentials` and `upstream` on that, `tools` on `upstream`, `http` and `systemd` on
//! `tools`, and `app` is the root that only wires modes together. Only `app::main` is public, so
//! the compiler reports dead code.
#![deny(unsafe_code)]

pub mod app;
// `config`, `json_limits` and `signing` are public for the fuzz targets and tests/fuzz_replay.rs.
pub mod config;
pub mod json_limits;
pub mod signing;

mod audit;
mod auth;
mod check;
mod credentials;
mod exit;
mod http;
// The local engine has parts not wired in yet (recorded roots for tests, finding titles).
#[allow(dead_code, unused_imports)]
mod local;
mod logging;
mod metrics;
mod proxy;
mod secret;
mod signed_request;
mod systemd;
// Sealed task handles, not wired into the tools yet: allowed to be unused until they are.
#[allow(dead_code)]
mod tasks;
mod tools;
mod upstream;

/// What the fuzz targets (fuzz/fuzz_targets) drive beyond the public modules, so the modules
/// themselves stay private. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::auth::{Principal, tokens::Tokens};
    pub use crate::http::legacy_sse::Registry;
    pub use crate::proxy::legacy_sse::fuzz_check as proxy_sse;
    pub use crate::tools::{Services, SysomServer};

    /// The process-wide rustls crypto provider, as `app::main` installs it.
    pub fn install_crypto() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
