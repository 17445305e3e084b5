//! A minimal legacy HTTP+SSE client transport for the proxy: GET the stream, learn the message
//! URL from the `endpoint` event, POST outgoing messages there, read replies as `message`
//! events. Events are parsed by `sse-stream` (the parser rmcp uses), which decodes UTF-8 per
//! line, so a character split across TCP chunks survives, as do split CRLFs and multi-line
//! `data:`.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, Stream, StreamExt, channel::mpsc};
use rmcp::{
    ServiceExt,
    model::{ClientJsonRpcMessage, ServerJsonRpcMessage},
};
use sse_stream::{Sse, SseStream};
use url::Url;

use super::{ProgressRelay, Remote};

/// The most an event may hold before the stream is dropped: a remote that never ends an event
/// must not grow our memory without bound. The largest honest event (the tool list, ~34 KB)
/// is far below this.
pub(super) const MAX_EVENT_BYTES: usize = 4 << 20;

/// Why the stream of events ended early.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    #[error("reading the SSE stream failed: {0}")]
    Body(String),
    #[error("an SSE event grew beyond {0} bytes without ending; dropping the stream")]
    TooLarge(usize),
}

/// Counts the bytes since the last blank line (the end of an event, or of a keep-alive
/// comment). `sse-stream` has no size limit of its own, so this counts ahead of it; it only
/// looks for line ends, the parsing stays with `sse-stream`.
#[derive(Default)]
struct EventSize {
    since_boundary: usize,
    /// The last byte ended a line (so another line end makes a blank line).
    at_line_start: bool,
    /// The last byte was CR (so an LF right after it belongs to the same line end).
    after_cr: bool,
}

impl EventSize {
    /// Accounts for `chunk`; false once an event outgrows `max`, even if it also ends within
    /// the chunk (a whole oversized event may arrive in one read).
    fn feed(&mut self, chunk: &[u8], max: usize) -> bool {
        let mut within = true;
        for &b in chunk {
            self.since_boundary += 1;
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    if self.at_line_start {
                        self.since_boundary = 0;
                    }
                    self.at_line_start = true;
                    self.after_cr = b == b'\r';
                }
                _ => {
                    self.at_line_start = false;
                    self.after_cr = false;
                }
            }
            within &= self.since_boundary <= max;
        }
        within
    }
}

/// The SSE events of a byte stream, ending with [`ReadError::TooLarge`] when an event outgrows
/// `max` bytes. Linear in the input: each byte is looked at once here and once by the parser.
pub(super) fn events<S, E>(bytes: S, max: usize) -> impl Stream<Item = Result<Sse, ReadError>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display,
{
    let mut size = EventSize::default();
    let bounded = bytes.map(move |chunk| {
        let chunk = chunk.map_err(|e| ReadError::Body(e.to_string()))?;
        if size.feed(&chunk, max) {
            Ok(chunk)
        } else {
            Err(ReadError::TooLarge(max))
        }
    });
    SseStream::from_bytes_stream(bounded).map(|item| {
        item.map_err(|e| match e {
            sse_stream::Error::Body(inner) => match inner.downcast::<ReadError>() {
                Ok(read) => *read,
                Err(other) => ReadError::Body(other.to_string()),
            },
            other => ReadError::Body(other.to_string()),
        })
    })
}

/// The URL to POST messages to, from the `endpoint` event's data. The bearer token goes along
/// with every POST, so the endpoint must be same-origin with the URL the user gave: a remote
/// (or whoever can inject into its stream) must not be able to send the token elsewhere.
pub(super) fn message_endpoint(stream_url: &Url, data: &str) -> Result<Url, String> {
    let url = stream_url
        .join(data.trim())
        .map_err(|e| format!("the endpoint event {data:?} is not a URL: {e}"))?;
    if url.origin() != stream_url.origin() {
        return Err(format!(
            "the remote named a message endpoint on another origin ({}); refusing to send the \
             token there",
            url.origin().ascii_serialization()
        ));
    }
    Ok(url)
}

/// The fuzzing oracle of this parser (fuzz/fuzz_targets/proxy_sse.rs, tests/fuzz_replay.rs):
/// the first byte of `data` picks a chunk size, the rest is the remote's stream. The events
/// must not depend on how the stream was cut into chunks, no event may outgrow the limit, and
/// no `endpoint` event may name a URL on another origin than the stream's.
pub fn fuzz_check(data: &[u8]) {
    /// Small, so that short inputs reach the size limit too.
    const MAX: usize = 1024;
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    // The events up to the first error, and whether there was one.
    let read = |chunk: usize| -> (Vec<Sse>, bool) {
        let chunks: Vec<Result<Bytes, std::io::Error>> = stream
            .chunks(chunk.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let all: Vec<Result<Sse, ReadError>> =
            futures::executor::block_on(events(futures::stream::iter(chunks), MAX).collect());
        let failed = all.iter().any(Result::is_err);
        (all.into_iter().map_while(Result::ok).collect(), failed)
    };
    let (whole, whole_failed) = read(stream.len());
    let (pieces, pieces_failed) = read(usize::from(seed % 16) + 1);
    for event in whole.iter().chain(&pieces) {
        assert!(
            event.data.as_ref().is_none_or(|d| d.len() <= MAX),
            "an event outgrew the limit"
        );
    }
    // The size check runs per chunk, so where an oversized event is cut off may differ; a
    // stream read without any error must give the same events however it was cut.
    if !whole_failed && !pieces_failed {
        assert_eq!(whole, pieces, "the events depend on the chunking");
    }
    let base = Url::parse("http://mcp.example:7140/mcp/unified").expect("a valid URL");
    for event in whole
        .iter()
        .filter(|e| e.event.as_deref() == Some("endpoint"))
    {
        if let Ok(url) = message_endpoint(&base, event.data.as_deref().unwrap_or_default()) {
            assert_eq!(url.origin(), base.origin(), "an endpoint on another origin");
        }
    }
}

pub(super) async fn connect(
    url: &str,
    token: Option<&str>,
    handler: ProgressRelay,
) -> Result<Remote, String> {
    let http = reqwest::Client::new();
    let base = Url::parse(url).map_err(|e| e.to_string())?;
    let mut get = http.get(base.clone()).header("accept", "text/event-stream");
    if let Some(t) = token {
        get = get.bearer_auth(t);
    }
    let resp = get.send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("SSE GET answered {}", resp.status()));
    }
    let (in_tx, in_rx) = mpsc::channel::<ServerJsonRpcMessage>(32);
    let (out_tx, mut out_rx) = mpsc::channel::<ClientJsonRpcMessage>(32);
    let (endpoint_tx, endpoint_rx) = tokio::sync::oneshot::channel::<Result<Url, String>>();
    tokio::spawn(async move {
        let mut in_tx = in_tx;
        let mut endpoint_tx = Some(endpoint_tx);
        let events = events(resp.bytes_stream(), MAX_EVENT_BYTES);
        tokio::pin!(events);
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "the remote SSE stream ended");
                    return;
                }
            };
            let data = event.data.unwrap_or_default();
            if event.event.as_deref() == Some("endpoint") {
                if let Some(tx) = endpoint_tx.take() {
                    let _ = tx.send(message_endpoint(&base, &data));
                }
            } else if let Ok(msg) = serde_json::from_str::<ServerJsonRpcMessage>(&data)
                && in_tx.send(msg).await.is_err()
            {
                return;
            }
        }
    });
    let endpoint = tokio::time::timeout(Duration::from_secs(10), endpoint_rx)
        .await
        .map_err(|_| "no endpoint event within 10 s".to_string())?
        .map_err(|_| "SSE stream ended before the endpoint event".to_string())??;
    let token = token.map(str::to_string);
    tokio::spawn(async move {
        while let Some(msg) = out_rx.next().await {
            let mut post = http.post(endpoint.clone()).json(&msg);
            if let Some(t) = &token {
                post = post.bearer_auth(t);
            }
            if let Err(e) = post.send().await {
                tracing::warn!(error = %e, "posting to the remote SSE session failed");
            }
        }
    });
    let sink = out_tx.sink_map_err(|e| std::io::Error::new(std::io::ErrorKind::BrokenPipe, e));
    handler
        .serve((sink, in_rx))
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&[u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + use<> {
        let owned: Vec<Result<Bytes, std::io::Error>> = parts
            .iter()
            .map(|p| Ok(Bytes::copy_from_slice(p)))
            .collect();
        futures::stream::iter(owned)
    }

    async fn collect(parts: &[&[u8]], max: usize) -> Vec<Result<Sse, ReadError>> {
        events(chunks(parts), max).collect().await
    }

    #[tokio::test]
    async fn a_character_split_across_chunks_survives() {
        let text = "data: {\"诊断\":\"内存\"}\r\n\r\n".as_bytes();
        // Split inside the first Chinese character and between CR and LF.
        let cut = text.iter().position(|&b| b >= 0x80).unwrap() + 1;
        let crlf = text.len() - 3;
        let got = collect(&[&text[..cut], &text[cut..crlf], &text[crlf..]], 1024).await;
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].as_ref().unwrap().data.as_deref(),
            Some("{\"诊断\":\"内存\"}")
        );
    }

    #[tokio::test]
    async fn multi_line_data_is_joined_with_newlines() {
        let got = collect(&[b"event: message\ndata: {\"a\":\ndata: 1}\n\n"], 1024).await;
        let event = got[0].as_ref().unwrap();
        assert_eq!(event.event.as_deref(), Some("message"));
        assert_eq!(event.data.as_deref(), Some("{\"a\":\n1}"));
    }

    // 17.8: a remote that never ends an event used to grow the buffer forever (and rescan it
    // for every chunk). Now the stream ends with an error once the event outgrows the limit.
    #[tokio::test]
    async fn an_event_that_never_ends_is_cut_off() {
        let line = [b'x'; 100];
        let mut parts: Vec<&[u8]> = vec![b"data: "];
        parts.extend(std::iter::repeat_n(&line[..], 50));
        let got = collect(&parts, 1000).await;
        assert!(
            matches!(got.last(), Some(Err(ReadError::TooLarge(1000)))),
            "the oversized event ends the stream"
        );
        assert!(got.iter().all(Result::is_err));
    }

    // Found by fuzz/fuzz_targets/proxy_sse.rs (corpus/proxy_sse/oversized): the size was only
    // checked at the end of each chunk, so an oversized event that also ended in its chunk got
    // through.
    #[tokio::test]
    async fn an_oversized_event_within_one_chunk_is_cut_off() {
        let mut event = b"data: ".to_vec();
        event.extend([b'x'; 3000]);
        event.extend(b"\n\ndata: after\n\n");
        let got = collect(&[&event], 1000).await;
        assert!(
            matches!(got.first(), Some(Err(ReadError::TooLarge(1000)))),
            "{got:?}"
        );
    }

    #[test]
    fn keep_alive_comments_do_not_add_up() {
        let mut size = EventSize::default();
        for _ in 0..1000 {
            assert!(size.feed(b": keep-alive\r\n\r\n", 100));
        }
        assert!(size.feed(b"data: 1\n\n", 100));
        assert_eq!(size.since_boundary, 0);
    }

    // 17.10: the token travels with every POST, so the endpoint must stay on the user's origin.
    #[test]
    fn message_endpoint_must_be_same_origin() {
        let base = Url::parse("http://mcp.example:7140/mcp/unified").unwrap();
        assert_eq!(
            message_endpoint(&base, "/mcp/unified/messages?sessionId=1")
                .unwrap()
                .as_str(),
            "http://mcp.example:7140/mcp/unified/messages?sessionId=1"
        );
        for elsewhere in [
            "http://evil.example/collect",
            "//evil.example/collect",
            "https://mcp.example:7140/mcp/unified/messages",
            "http://mcp.example:7141/mcp/unified/messages",
        ] {
            let err = message_endpoint(&base, elsewhere).unwrap_err();
            assert!(err.contains("another origin"), "{elsewhere}: {err}");
        }
    }
}
