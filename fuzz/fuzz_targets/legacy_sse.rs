//! The legacy HTTP+SSE transport: one session is opened, then every input is split into
//! newline-separated POST bodies delivered to it, and the event stream is drained. Malformed,
//! out-of-order or duplicate messages must never panic or wedge the session registry.
#![no_main]
use std::{sync::Arc, time::Duration};

use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use sysom_mcp::{
    config,
    fuzzing::{Principal, Registry, Services, SysomServer, install_crypto},
};
use tokio_util::sync::CancellationToken;

fn server() -> SysomServer {
    install_crypto();
    // No config file, no environment: defaults, no credentials (tool calls answer without
    // reaching any network).
    let args = config::ServerArgs {
        config: Some("/dev/null".into()),
        ..Default::default()
    };
    let cfg = config::load(&args, &|_| None).expect("defaults are valid");
    SysomServer::new(Services::from_config(&cfg, None).expect("services build from defaults"))
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let registry = Arc::new(Registry::default());
        let shutdown = CancellationToken::new();
        let me = Principal::stdio();
        let resp = registry.open(
            server(),
            me.id(),
            "/mcp/messages",
            Duration::from_secs(30),
            Duration::from_secs(60),
            shutdown.clone(),
        );
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        let text = String::from_utf8_lossy(&first);
        let id = text.split("sessionId=").nth(1).unwrap().trim().to_string();
        for message in data.split(|b| *b == b'\n') {
            let _ = tokio::time::timeout(
                Duration::from_millis(50),
                registry.post(&id, &me, message, 1 << 20),
            )
            .await;
        }
        let _ = registry.post("no-such-session", &me, data, 1 << 20).await;
        // Drain what the session answered, then close it.
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(5), body.frame()).await {
        }
        shutdown.cancel();
    });
});
