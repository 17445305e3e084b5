//! sysom-mcp: a systemd-native MCP server for Alibaba Cloud SysOM OS diagnoses.
//!
//! The binary (`main.rs`) is a thin shell; everything lives in these modules, one concern each.
#![deny(unsafe_code)]

pub mod app;
pub mod audit;
pub mod auth;
pub mod check;
pub mod config;
pub mod credentials;
pub mod http;
pub mod json_limits;
pub mod local;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod signing;
pub mod systemd;
pub mod tasks;
pub mod tools;
pub mod upstream;
