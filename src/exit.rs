//! Exit statuses, decided here and only here: 0 ok, 1 runtime failure, 2 usage or
//! configuration error. Every mode returns a [`StartError`], which knows its status.

use std::process::ExitCode;

use crate::config::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Ok = 0,
    Failure = 1,
    Config = 2,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// Why a mode could not start, or ended badly.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("socket activation: {0}")]
    SocketActivation(String),
    #[error(
        "--stdio was given but systemd passed listening sockets; drop --stdio or the socket unit"
    )]
    StdioWithSockets,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Tokens(String),
    #[error(
        "refusing to serve on a non-loopback address without a bearer token. Put tokens (one per \
         line) in a file and pass --token-file FILE (or SYSOM_MCP_TOKEN_FILE); the packaged \
         service reads /etc/sysom-mcp/credentials/mcp-tokens (create it with mode 0600). Or opt \
         out explicitly with --allow-unauthenticated."
    )]
    NoTokenBeyondLoopback,
    #[error("{0}")]
    Tls(String),
    /// The task key file exists but cannot be used.
    #[error("{0}")]
    TaskKeys(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Listen(String),
    #[error("MCP handshake on stdio failed: {0}")]
    StdioHandshake(String),
    #[error("stdio session failed: {0}")]
    StdioSession(String),
    #[error("proxy: {0}")]
    ProxyTokenFile(String),
    #[error("proxy: {0:?} is not a URL (expected e.g. http://host:7140/mcp/unified)")]
    ProxyUrl(String),
    #[error("proxy: cannot connect to {url}: Streamable HTTP: {streamable}; SSE: {sse}")]
    ProxyConnect {
        url: String,
        streamable: String,
        sse: String,
    },
    /// `sysom-mcp token new|list` could not parse its scopes or use the tokens file.
    #[error("{0}")]
    TokenCommand(String),
    /// `sysom-mcp reload`: the server rejected the new configuration or did not answer.
    #[error("reload: {0}")]
    ReloadFailed(String),
    #[error("check: {0} problem(s) found")]
    CheckFailed(usize),
}

impl StartError {
    pub(crate) fn exit(&self) -> Exit {
        match self {
            Self::SocketActivation(_)
            | Self::StdioWithSockets
            | Self::Config(_)
            | Self::Tokens(_)
            | Self::NoTokenBeyondLoopback
            | Self::Tls(_)
            | Self::TaskKeys(_)
            | Self::ProxyTokenFile(_)
            | Self::ProxyUrl(_)
            | Self::TokenCommand(_) => Exit::Config,
            Self::Runtime(_)
            | Self::Listen(_)
            | Self::StdioHandshake(_)
            | Self::StdioSession(_)
            | Self::ProxyConnect { .. }
            | Self::ReloadFailed(_)
            | Self::CheckFailed(_) => Exit::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_are_two_runtime_failures_one() {
        assert_eq!(StartError::StdioWithSockets.exit(), Exit::Config);
        assert_eq!(StartError::ProxyUrl("x".into()).exit(), Exit::Config);
        assert_eq!(StartError::Listen("busy".into()).exit(), Exit::Failure);
        assert_eq!(StartError::CheckFailed(1).exit(), Exit::Failure);
    }
}
