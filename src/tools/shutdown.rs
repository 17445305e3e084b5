//! The end of the shutdown grace period as tool calls see it: a call still running then is
//! answered with a JSON-RPC error saying the server is shutting down, through the normal
//! response path, before the transports are closed (a cancelled transport would end it with a
//! non-JSON 500 or no answer at all).

use std::sync::LazyLock;

use rmcp::{ErrorData, model::ErrorCode};
use tokio_util::sync::CancellationToken;

/// The JSON-RPC error code of a call cut off by the shutdown (implementation-defined range).
pub(crate) const SHUTTING_DOWN: i32 = -32000;

static GRACE_OVER: LazyLock<CancellationToken> = LazyLock::new(CancellationToken::new);

/// Ends every running tool call with [`error`].
pub(crate) fn grace_over() {
    GRACE_OVER.cancel();
}

/// Resolves when the grace period is over.
pub(crate) async fn cut_off() {
    GRACE_OVER.cancelled().await;
}

pub(crate) fn error() -> ErrorData {
    ErrorData::new(
        ErrorCode(SHUTTING_DOWN),
        "server shutting down: the call did not finish within the shutdown grace period",
        None,
    )
}
