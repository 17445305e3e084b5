//! bare-hyper PORT [BODY_FILE [CONTENT_TYPE]]: POST (any path) answers a fixed body (BODY_FILE's
//! bytes, or a tiny JSON-RPC result) as CONTENT_TYPE (default application/json); GET answers an SSE
//! stream that sends one `endpoint` event and stays open.
use std::{convert::Infallible, pin::Pin, task::{Context, Poll}};
use http_body_util::{BodyExt, Either, Full};
use hyper::{body::{Body, Bytes, Frame, Incoming}, server::conn::http1, service::service_fn, Method, Request, Response};
use hyper_util::rt::TokioIo;

/// One event, then pending forever (the connection's end drops it).
struct Sse(bool);
impl Body for Sse {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 { return Poll::Pending; }
        self.0 = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"event: endpoint\ndata: /sse/messages?sessionId=0\n\n")))))
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).expect("usage: bare-hyper PORT [BODY_FILE [CONTENT_TYPE]]");
    let body = Bytes::from(match args.next() {
        Some(f) => std::fs::read(f).expect("BODY_FILE is readable"),
        None => br#"{"jsonrpc":"2.0","id":1,"result":{}}"#.to_vec(),
    });
    let content_type: &'static str = Box::leak(args.next().unwrap_or_else(|| "application/json".into()).into_boxed_str());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let body = body.clone();
        tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(move |req: Request<Incoming>| {
            let body = body.clone();
            async move {
                let get = req.method() == Method::GET;
                let _ = req.into_body().collect().await; // read the request like a real server
                Ok::<_, Infallible>(if get {
                    Response::builder().header("content-type", "text/event-stream").body(Either::Right(Sse(false))).unwrap()
                } else {
                    Response::builder().header("content-type", content_type).body(Either::Left(Full::new(body))).unwrap()
                })
            }
        })));
    }
}
